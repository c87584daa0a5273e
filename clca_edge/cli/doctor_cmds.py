"""``clca-edge doctor``: the environment checks, as a table or JSON; non-zero when capture is blocked."""

from __future__ import annotations

import sys

import click

from ..core.errors import ExitCode
from ._common import console, emit_json, main, reports_errors
from .options import cache_dir_option


@main.command()
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON list of findings (with --bundle: an object of findings and self-check rows).")
@click.option("--disk-path", default=".", show_default=True, help="Where capture will write its logs.")
@click.option("--bundle", "bundle", default=None, type=click.Path(),
              help="Also run the device self-check of every backend/precision this machine can run for this bundle.")
@cache_dir_option
@reports_errors
def doctor(as_json: bool, disk_path: str, bundle, cache_dir) -> None:
    """Check Python, JetPack, TensorRT, CUDA, ONNX Runtime, OpenCV, cameras, disk, power mode, swap.

    Exit code 1 when something blocks `capture`; missing GPU pieces are warnings (CPU fallback).
    With --bundle, exit 14 when no backend/precision passes the bundle's device self-check.
    """
    from ..doctor import FAIL, INFO, OK, WARN, findings_to_json, run_checks

    findings = run_checks(disk_path=disk_path, cache_dir=cache_dir)
    rows = _self_check_rows(bundle, cache_dir) if bundle is not None else None
    if as_json:
        out = findings_to_json(findings)
        if rows is not None:
            out = {"findings": out, "self_check": {"bundle": str(bundle), "rows": [r.to_dict() for r in rows]}}
        emit_json(out, indent=1)
    else:
        from rich.table import Table

        style = {OK: "green", INFO: "cyan", WARN: "yellow", FAIL: "bold red"}
        table = Table(title="clca-edge doctor")
        for col in ("check", "status", "value", "fix"):
            table.add_column(col)
        for f in findings:
            table.add_row(f.check, f"[{style[f.status]}]{f.status}[/]", f.value, f.hint)
        console().print(table)
        if rows is not None:
            _print_self_check(bundle, rows)
    if any(f.blocks_capture for f in findings):
        sys.exit(ExitCode.FAILED)
    if rows is not None and any(r.status in ("passed", "failed") for r in rows) \
            and not any(r.status == "passed" for r in rows):
        sys.exit(ExitCode.SELF_CHECK)


def _self_check_rows(bundle, cache_dir):
    """Every backend/precision's self-check on ``bundle``; a bundle that cannot be opened is the
    one-line error and exit code of any other command."""
    from ..core.errors import ClcaEdgeError
    from ..runtime.model import load_model
    from ..runtime.selfcheck import survey

    try:
        return survey(load_model(bundle, cache_dir=cache_dir))
    except ClcaEdgeError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(e.exit_code)


def _print_self_check(bundle, rows) -> None:
    from rich.table import Table

    style = {"passed": "green", "failed": "bold red", "skipped": "yellow", "failed to run": "yellow",
             "unavailable": "dim"}
    table = Table(title=f"device self-check: {bundle}")
    for col in ("backend", "precision", "top-1 agreement", "max logit distance", "latency ms", "verdict"):
        table.add_column(col)
    for r in rows:
        res = r.result
        f, b = (res.figures, res.bounds) if res is not None else (None, None)
        agree = f"{f.top1_agreement:.1f}% (>= {b.min_top1_agreement:g}%)" if f and b else "-"
        dist = f"{f.max_logit_distance:.4f} (<= {b.max_logit_distance:g})" if f and b else "-"
        lat = f"{res.latency_ms:.2f}" if res is not None and res.latency_ms is not None else "-"
        verdict = f"[{style.get(r.status, 'white')}]{r.status}[/]" + (f": {r.reason}" if r.reason else "")
        table.add_row(r.backend, r.precision, agree, dist, lat, verdict)
    console().print(table)
