"""``clca-edge doctor``: the environment checks, as a table or JSON; non-zero when capture is blocked."""

from __future__ import annotations

import json
import sys

import click

from ..core.errors import ExitCode
from ._common import console, main


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of findings.")
@click.option("--disk-path", default=".", show_default=True, help="Where capture will write its logs.")
def doctor(as_json: bool, disk_path: str) -> None:
    """Check Python, JetPack, TensorRT, CUDA, ONNX Runtime, OpenCV, cameras, disk, power mode, swap.

    Exit code 1 when something blocks `capture`; missing GPU pieces are warnings (CPU fallback).
    """
    from ..doctor import FAIL, INFO, OK, WARN, findings_to_json, run_checks

    findings = run_checks(disk_path=disk_path)
    if as_json:
        click.echo(json.dumps(findings_to_json(findings), indent=1))
    else:
        from rich.table import Table

        style = {OK: "green", INFO: "cyan", WARN: "yellow", FAIL: "bold red"}
        table = Table(title="clca-edge doctor")
        for col in ("check", "status", "value", "fix"):
            table.add_column(col)
        for f in findings:
            table.add_row(f.check, f"[{style[f.status]}]{f.status}[/]", f.value, f.hint)
        console().print(table)
    if any(f.blocks_capture for f in findings):
        sys.exit(ExitCode.FAILED)
