"""``clca-edge benchmark``: the accuracy/cost trade-off sweep of the paper, on this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import click

from ._common import console, main, model_options, reports_errors
from .options import OptionGroup

if TYPE_CHECKING:
    from ..benchmark.config import SweepConfig


def _sweep_config(model, model_kwargs, methods, keep_rates, clca_mode, backends, **fields):
    """``fields``: the options named as SweepConfig's fields."""
    from ..benchmark.config import SweepConfig
    from ..models.config import parse_keep_rates, parse_model_kwargs
    from ..models.reduction import list_methods

    names = tuple(list_methods()[1:]) if methods == "all" else tuple(methods.split(","))
    return SweepConfig(backbone=model, methods=names, keep_rates=parse_keep_rates(keep_rates),
                       clca={"on": (True,), "off": (False,), "both": (False, True)}[clca_mode],
                       backends=tuple(backends.split(",")), backbone_kwargs=parse_model_kwargs(model_kwargs), **fields)


# What is swept; --pretrained and --lr (the accuracy runs' training) and --out pass to the command.
sweep_options = OptionGroup("sweep", [
    model_options("model", "model_kwargs", "img_size", "num_classes", model="vit_small_patch16_224"),
    click.option("--methods", default="evit", show_default=True, help="Comma-separated, or 'all'."),
    click.option("--keep-rates", default="0.1,0.25,0.5,0.7,1.0", show_default=True),
    click.option("--clca", "clca_mode", type=click.Choice(["on", "off", "both"]), default="on", show_default=True),
    click.option("--backends", default="ort", show_default=True, help="Comma-separated: torch, ort, ort-int8."),
    click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1), help="Throughput batch."),
    click.option("--repeats", default=20, show_default=True, type=click.IntRange(min=1)),
    click.option("--warmup", default=3, show_default=True, type=click.IntRange(min=0)),
    click.option("--device", default="cpu", show_default=True, help="torch backend device (cpu, cuda)."),
    click.option("--threads", default=0, show_default=True, help="CPU threads (0: library default)."),
    click.option("--data", type=click.Path(exists=True, file_okay=False), help="Dataset for accuracy."),
    click.option("--train-epochs", default=0, show_default=True, help="Train each model this long on --data."),
    click.option("--pretrained", default="none", show_default=True,
                 help="Weights for --data runs: none, hub or a file."),
    click.option("--lr", default=1e-3, show_default=True, help="Learning rate of the --data runs."),
    click.option("--isolate/--no-isolate", default=True, show_default=True,
                 help="One subprocess per model, so peak memory is that model's own."),
], _sweep_config, passes=("pretrained", "lr"))


@main.command()
@reports_errors
@sweep_options
@click.option("--out", type=click.Path(), help="Write results.csv, tradeoff.png, meta.json here.")
def benchmark(sweep: SweepConfig, pretrained: str, lr: float, out: Optional[str]) -> None:
    """Sweep keep rates x methods x CLCA x backends: GFLOPs, params, latency p50/p90 (batch 1),
    throughput (batch N), peak memory and, with --data, accuracy; plain ViT as the baseline."""
    from ..benchmark.report import machine_description, rich_table, write_csv, write_plot
    from ..benchmark.sweep import run_sweep

    if out:
        from ..core.output_paths import check_writable_dir

        check_writable_dir(out, "--out")   # before hours of sweeping, not after
    accuracy = None
    if sweep.data:
        from ..benchmark.accuracy import accuracy_fn

        accuracy = accuracy_fn(sweep, Path(out) / "runs" if out else None, pretrained=pretrained, lr=lr)
    con = console()
    meta = machine_description()
    with con.status("benchmarking") as status:
        rows = run_sweep(sweep, progress=lambda msg: status.update(f"benchmarking {msg}"), accuracy=accuracy)
    title = f"{sweep.backbone} @ {sweep.img_size}px — {meta['machine']} — {meta['date']}"
    con.print(rich_table(rows, title))
    con.print(f"[dim]{meta['versions']}; python {meta['python']}[/]")
    if out:
        from ..core.output_paths import make_dirs

        out = make_dirs(out, "--out")
        csv_path = write_csv(rows, out / "results.csv")
        png = write_plot(rows, out / "tradeoff.png", title)
        (out / "meta.json").write_text(json.dumps({**meta, "sweep": {k: v for k, v in sweep.__dict__.items()}},
                                                  indent=1, default=str))
        con.print(f"wrote {csv_path}" + (f", {png}" if png else " (no matplotlib: no plot)"))
