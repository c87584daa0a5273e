"""The ``clca-edge`` command line: thin click commands over library functions.

Imports stay lazy: ``clca-edge --help`` must not import torch or tensorrt. Library errors
(``ClcaEdgeError``) become a one-line message and the error's exit code, never a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from typing import Any, Callable

import click

from . import __version__
from .errors import ClcaEdgeError

log = logging.getLogger("clca_edge")


def _reports_errors(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ClcaEdgeError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(e.exit_code)

    return wrapper


def _console():
    from rich.console import Console

    return Console()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="clca-edge")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """CLCA token-reduced Vision Transformers for ultra-fine-grained leaf recognition on Jetson."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _model_options(fn: Callable) -> Callable:
    opts = [
        click.option("--model", "backbone", default="vit_base_patch16_224", show_default=True,
                     help="timm ViT name (vit_*, deit3_*, CLIP, DINO, MAE variants)."),
        click.option("--method", default="evit", show_default=True, help="Token reduction method."),
        click.option("--keep-rate", default="0.1", show_default=True,
                     help="Keep rate in (0, 1]: one value, or one per location separated by commas."),
        click.option("--locations", default=None,
                     help="Reduction block indices, comma separated (default: depth * [3,6,9]/12)."),
        click.option("--img-size", default=224, show_default=True, type=click.IntRange(min=1)),
        click.option("--num-classes", default=200, show_default=True, type=click.IntRange(min=1)),
        click.option("--clca/--no-clca", default=True, show_default=True, help="CLA head + CLC cache."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _model_config(backbone, method, keep_rate, locations, img_size, num_classes, clca):
    from .models.config import ClcaConfig, ModelConfig, parse_keep_rates
    from .errors import ConfigError

    locs = None
    if locations:
        try:
            locs = tuple(int(v) for v in locations.split(","))
        except ValueError:
            raise ConfigError(f"--locations {locations!r} must be comma-separated block indices") from None
    return ModelConfig(
        backbone=backbone, method=method, keep_rate=parse_keep_rates(keep_rate), locations=locs,
        clca=ClcaConfig() if clca else ClcaConfig.off(), num_classes=num_classes, img_size=img_size,
    )


@main.command()
@_model_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_reports_errors
def flops(backbone, method, keep_rate, locations, img_size, num_classes, clca, as_json) -> None:
    """GFLOPs (multiply-accumulates, batch 1), parameters and tokens per block of one model."""
    from .models.flops import cost_report

    config = _model_config(backbone, method, keep_rate, locations, img_size, num_classes, clca)
    report = cost_report(config)
    if as_json:
        out = report.to_dict()
        out.update(model=backbone, method=method, keep_rate=list(config.keep_rate), img_size=img_size,
                   num_classes=num_classes, clca=clca)
        click.echo(json.dumps(out))
        return
    console = _console()
    console.print(f"[bold]{backbone}[/] {method} r={keep_rate} {'+CLCA' if clca else ''} @ {img_size}px")
    console.print(f"GFLOPs (MACs, batch 1): [bold]{report.gflops:.2f}[/]   params: {report.params_m:.2f} M")
    console.print("tokens per block (entering attention): " + ", ".join(map(str, report.tokens_per_block)))


@main.command()
@click.option("--methods", default=None, help="Comma-separated methods (default: every implemented one).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@_reports_errors
def zoo(methods, as_json) -> None:
    """Cost table of the paper's model zoo (ViT-B/16 at 448) against the reference figures."""
    from rich.table import Table

    from .models.flops import cost_report
    from .models.reduction.registry import list_methods
    from .models.zoo import reference_gflops, zoo_configs

    names = methods.split(",") if methods else list_methods(implemented_only=True)
    rows = []
    for config in zoo_configs(names):
        rep = cost_report(config)
        ref = reference_gflops(config.method, config.keep_rate[0], config.clca.enabled)
        rows.append({
            "method": config.method, "keep_rate": config.keep_rate[0], "clca": config.clca.enabled,
            "gflops": round(rep.gflops, 3), "reference": ref, "params_m": round(rep.params_m, 2),
            "tokens_per_block": rep.tokens_per_block,
        })
    if as_json:
        click.echo(json.dumps(rows))
        return
    table = Table(title="ViT-B/16 @ 448, 200 classes, locations [3, 6, 9]: GFLOPs (MACs, batch 1)")
    for col in ("method", "keep rate", "CLCA", "GFLOPs", "reference", "diff", "params (M)"):
        table.add_column(col, justify="right" if col not in ("method", "CLCA") else "left")
    for r in rows:
        diff = "" if r["reference"] is None else f"{100 * (r['gflops'] / r['reference'] - 1):+.1f}%"
        table.add_row(r["method"], f"{r['keep_rate']:g}", "yes" if r["clca"] else "no", f"{r['gflops']:.2f}",
                      "" if r["reference"] is None else f"{r['reference']:.2f}", diff, f"{r['params_m']:.2f}")
    _console().print(table)


if __name__ == "__main__":  # pragma: no cover
    main()
