"""``clca-edge quickstart``: the whole mission on built-in synthetic data, end to end."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import console, emit_json, main, reports_errors


@main.command()
@click.option("--out", default="runs/quickstart", show_default=True, type=click.Path(),
              help="Everything goes here; a rerun replaces what the previous one wrote.")
@click.option("--epochs", default=15, show_default=True, type=click.IntRange(min=1))
@click.option("--method", default="evit", show_default=True)
@click.option("--keep-rate", default=0.25, show_default=True, type=click.FloatRange(0, 1, min_open=True))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON at the end.")
@reports_errors
def quickstart(out, epochs, method, keep_rate, as_json) -> None:
    """Synthetic leaves -> train a tiny CLCA model -> eval -> deploy a cpu bundle (fp32/fp16/INT8,
    accuracy-gated) -> capture on a video of held-out leaves (headless) -> key figures."""
    from ..quickstart import QuickstartConfig, render_summary, run_quickstart, summary_dict

    con = console()
    cfg = QuickstartConfig(out=Path(out), epochs=epochs, method=method, keep_rate=keep_rate)
    res = run_quickstart(cfg, say=lambda msg: con.print(f"\n[bold cyan]{msg}[/]", highlight=False))
    render_summary(res, con)
    if as_json:
        emit_json(summary_dict(res))
