"""Model inspection commands: ``flops`` and ``zoo``."""

from __future__ import annotations


import click

from ._common import console, emit_json, main, model_config, model_options, reports_errors


@main.command()
@model_options()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@reports_errors
def flops(as_json, **options) -> None:
    """GFLOPs (multiply-accumulates, batch 1), parameters and tokens per block of one model
    (--model-kwargs costs the exact model you trained, e.g. a tiny one)."""
    from ..models.flops import cost_report

    config = model_config(**options)
    report = cost_report(config)
    if as_json:
        out = report.to_dict()
        out.update(model=config.backbone, method=config.method, keep_rate=list(config.keep_rate),
                   img_size=config.img_size, num_classes=config.num_classes, clca=options["clca"],
                   model_kwargs=dict(config.backbone_kwargs))
        emit_json(out)
        return
    con = console()
    con.print(f"[bold]{config.backbone}[/] {config.method} r={options['keep_rate']} {'+CLCA' if options['clca'] else ''}"
              f" @ {config.img_size}px")
    con.print(f"GFLOPs (MACs, batch 1): [bold]{report.gflops:.2f}[/]   "
              f"(attention products {report.attention_gflops:.2f})   params: {report.params_m:.2f} M")
    con.print("tokens per block (entering attention): " + ", ".join(map(str, report.tokens_per_block)))


@main.command()
@click.option("--methods", default=None, help="Comma-separated methods (default: every implemented one).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@reports_errors
def zoo(methods, as_json) -> None:
    """Cost table of the paper's model zoo (ViT-B/16 at 448) against the reference figures."""
    from rich.table import Table

    from ..models.flops import cost_report
    from ..models.reduction import list_methods
    from ..models.zoo import REFERENCE_WITHOUT_ATTENTION, reference_gflops, zoo_configs

    names = methods.split(",") if methods else list_methods()
    rows = []
    for config in zoo_configs(names):
        rep = cost_report(config)
        ref = reference_gflops(config.method, config.keep_rate[0], config.clca.enabled)
        no_attn = config.method in REFERENCE_WITHOUT_ATTENTION
        compared = rep.gflops_without_attention if no_attn else rep.gflops
        rows.append({
            "method": config.method, "keep_rate": config.keep_rate[0], "clca": config.clca.enabled,
            "gflops": round(rep.gflops, 3), "gflops_without_attention": round(rep.gflops_without_attention, 3),
            "reference": ref, "reference_without_attention": no_attn,
            "diff_pct": None if ref is None else round(100 * (compared / ref - 1), 2),
            "params_m": round(rep.params_m, 2), "tokens_per_block": rep.tokens_per_block,
        })
    if as_json:
        emit_json(rows)
        return
    table = Table(title="ViT-B/16 @ 448, 200 classes, locations [3, 6, 9]: GFLOPs (MACs, batch 1)")
    for col in ("method", "keep rate", "CLCA", "GFLOPs", "w/o attn", "reference", "diff", "params (M)"):
        table.add_column(col, justify="right" if col not in ("method", "CLCA") else "left")
    for r in rows:
        diff = "" if r["diff_pct"] is None else f"{r['diff_pct']:+.1f}%" + ("*" if r["reference_without_attention"] else "")
        table.add_row(r["method"], f"{r['keep_rate']:g}", "yes" if r["clca"] else "no", f"{r['gflops']:.2f}",
                      f"{r['gflops_without_attention']:.2f}",
                      "" if r["reference"] is None else f"{r['reference']:.2f}", diff, f"{r['params_m']:.2f}")
    con = console()
    con.print(table)
    con.print("* compared without attention products: the reference's counter missed them for these methods "
              "(fused attention); the GFLOPs column is the real cost.")

