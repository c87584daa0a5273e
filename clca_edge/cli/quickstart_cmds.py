"""``clca-edge quickstart``: the whole mission on built-in synthetic data, end to end."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import console, emit_json, main, model_options, reports_errors


@main.command()
@click.option("--out", default="runs/quickstart", show_default=True, type=click.Path(),
              help="Everything goes here; a rerun replaces what the previous one wrote.")
@click.option("--epochs", default=15, show_default=True, type=click.IntRange(min=1))
@model_options("model", "model_kwargs", "method", "keep_rate", "locations", "img_size", "clca",
               model="vit_tiny_patch16_224", model_kwargs="depth=4,embed_dim=64,num_heads=2", keep_rate="0.25",
               img_size=64)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON at the end.")
@reports_errors
def quickstart(out, epochs, as_json, **model) -> None:
    """Synthetic leaves -> train a tiny CLCA model -> eval -> deploy a cpu bundle (fp32/fp16/INT8,
    accuracy-gated) -> capture on a video of held-out leaves (headless) -> key figures.

    Each stage prints the clca-edge command that does the same, then what it did."""
    from ..quickstart import QuickstartConfig, render_summary, run_quickstart, summary_dict

    con = console()

    def say(msg: str) -> None:
        con.print(f"\n[bold cyan]{msg}[/]" if msg.startswith("$ ") else msg, highlight=False)

    cfg = QuickstartConfig(out=Path(out), epochs=epochs, **model)
    res = run_quickstart(cfg, say=say, console=con)
    render_summary(res, con)
    if as_json:
        emit_json(summary_dict(res))
