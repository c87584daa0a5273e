"""`clca-edge predict` and `clca-edge capture`: the device runtime. No torch on this path."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import sys
from pathlib import Path


import click

from ._common import console, emit_json, main, reports_errors
from .fleet_cmds import (fleet_observers, fleet_option, load_fleet_option, log_predictions, start_fleet_agent,
                         stop_fleet_agent)
from .options import (describe_guard, display_options, loop_options, output_options, quality_options, runtime_options,
                      source_options, top_k_option)

log = logging.getLogger(__name__)


def _err_console():
    return console(stderr=True)


def _open_runtime(config):
    """``runtime.open.open_runtime`` for a command: each fallback and failed self-check said once,
    on stderr."""
    from ..runtime.open import open_runtime

    # Fallbacks are said here, once (not also logged as warnings); those the bundle's target implies
    # (a cpu bundle on a machine without TensorRT) only under -v.
    model, sel = open_runtime(config, on_fallback=_said_below)
    con = _err_console()
    for fb in sel.fallbacks:
        if fb.expected:
            log.info("%s not used: %s (the bundle targets %s)", fb.backend, fb.reason, model.files.target)
        else:
            con.print(f"[bold red]FALLBACK[/]: {fb.backend} unavailable ({fb.reason})", highlight=False)
    for check in sel.rejected:
        if check.forced:
            con.print(f"[bold red]FORCED[/]: {check.summary()}; used anyway (--force-variant)", highlight=False)
        else:
            con.print(f"[bold red]SELF-CHECK FAILED[/]: {check.summary()}; not used", highlight=False)
    if sel.classifier.selection_note:  # ort-cpu auto: fp32 vs INT8 as measured on this device
        con.print(f"ort-cpu: {sel.classifier.selection_note}", highlight=False)
    if any(not fb.expected for fb in sel.fallbacks) or sel.rejected:
        con.print(f"[bold yellow]running on {sel.classifier.describe()}[/]", highlight=False)
    return model, sel


def _said_below(fallback) -> None:
    """select_classifier's on_fallback for the CLI: _open_runtime says each fallback itself."""


def _clamp_top_k(top_k: int, model) -> int:
    """--top-k beyond the bundle's classes shows them all, without empty columns."""
    n = len(model.class_names)
    if top_k > n:
        _err_console().print(f"--top-k {top_k}: the bundle has {n} classes; showing {n}", highlight=False)
    return min(top_k, n)


@main.command()
@reports_errors
@runtime_options
@top_k_option
@quality_options
@click.argument("paths", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
@click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Append a decision record per image to this field log (JSON lines); with --fleet, the outbox.")
@fleet_option
def predict(runtime, top_k, quality, paths, as_json, log_path, fleet):
    """Classify image files, folders (recursively) and globs with a deploy bundle.

    Unreadable images are reported and skipped. Images the quality guard would refuse in capture
    are still classified, and flagged with the reason. Exit 0 if at least one image was
    classified, 7 if none could be."""
    from ..capture.quality import QualityGuard
    from ..core.errors import NoInputError
    from ..runtime.predict import expand_inputs, predict_files

    fleet_cfg = load_fleet_option(fleet)
    if fleet_cfg is not None and log_path is None:
        raise click.UsageError("--fleet needs --log FILE: the field log predict's decisions are kept and sent from")
    model, sel = _open_runtime(runtime)
    top_k = _clamp_top_k(top_k, model)
    guard = QualityGuard.for_bundle(model.quality_reference, quality)
    try:
        inputs = expand_inputs(paths)
        for arg in inputs.unmatched:
            _err_console().print(f"[yellow]warning[/]: {arg!r} matches no image file", highlight=False)
        if not inputs.files:
            raise NoInputError(f"no image files found in {', '.join(map(repr, paths))}")
        results = list(predict_files(model, sel.classifier, inputs.files, top_k,
                                     judge=guard.check if guard is not None else None))
    finally:
        sel.classifier.close()   # frees the engine / session (GPU memory) before printing
    log_predictions(results, model, sel.classifier, log_path, fleet_cfg)
    ok = [r for r in results if r.topk is not None]
    bad = [r for r in results if r.topk is None]
    if as_json:
        emit_json({
            "backend": sel.classifier.backend, "precision": sel.classifier.precision, "bundle_sha": model.sha,
            "fallbacks": [f.to_dict() for f in sel.fallbacks], "self_check": [c.to_dict() for c in sel.checks],
            "temperature": model.temperature,
            "quality": guard.describe() if guard is not None else {"enabled": False},
            "flagged": sum(r.flagged for r in ok),
            "predictions": [r.to_dict() for r in ok], "skipped": [r.to_dict() for r in bad]}, indent=2)
    else:
        _print_predictions(ok, top_k, guard, sel)
    _print_predict_notes(ok, bad, len(results))


def _print_predictions(ok, top_k: int, guard, sel) -> None:
    from rich.table import Table

    table = Table(title=f"{len(ok)} image(s), {sel.classifier.describe()}")
    table.add_column("file")
    for i in range(top_k):
        table.add_column(f"top-{i + 1}")
    if guard is not None:
        table.add_column("quality")
    for r in ok:
        cells = [f"{c} {p:.3f}" for c, p in r.topk]
        flag = []
        if guard is not None:
            flag = [f"[yellow]flagged: {', '.join(r.quality['reasons'])}[/]" if r.flagged else "ok"]
        table.add_row(str(r.path), *cells, *[""] * (top_k - len(cells)), *flag)
    console().print(table)
    _err_console().print(describe_guard(guard), highlight=False)


def _print_predict_notes(ok, bad, total: int) -> None:
    from ..core.errors import NoInputError

    con = _err_console()
    flagged = sum(r.flagged for r in ok)
    if flagged:
        con.print(f"[yellow]{flagged} of {len(ok)} image(s) flagged by the quality guard[/] (classified anyway; "
                  "capture would refuse them)", highlight=False)
    for r in bad:
        con.print(f"[red]skipped[/] {r.path}: {r.error}", highlight=False)
    if bad:
        con.print(f"{len(bad)} of {total} file(s) unreadable and skipped", highlight=False)
    if not ok:
        raise NoInputError(f"none of the {total} file(s) could be read as an image")


@main.command()
@reports_errors
@runtime_options
@quality_options
@source_options
@loop_options
@output_options
@display_options
@fleet_option
def capture(runtime, quality, source, loop, output, display, fleet):
    """Classify what a camera (or a video, or images) sees, and log every decision durably.

    Runs headless until the source ends, --max-frames/--duration, or SIGINT/SIGTERM (clean stop
    with a summary). Camera loss: reconnect with back-off, the run goes on. Frames the quality
    guard refuses (too dark, overexposed, blurred, out of distribution) are logged with the
    reason, never classified."""
    config = dataclasses.replace(loop, quality=quality)
    # A read blocked as long as the grabber's stall-then-loss time makes OpenCV give up too.
    source = dataclasses.replace(source, timeout_s=config.reconnect.lost_after_s)
    fleet_cfg = load_fleet_option(fleet)
    runtime, switch = _follow_agent(runtime, config)
    model, sel = _open_runtime(runtime)
    if config.top_k > len(model.class_names):
        config = dataclasses.replace(config, top_k=_clamp_top_k(config.top_k, model))
    try:
        summary, log_file = _run_capture_cmd(model, sel, source, config, output, display, fleet_cfg, switch)
    finally:
        sel.classifier.close()
        if switch is not None:
            switch.close()
    _print_summary(summary, log_file)


def _follow_agent(runtime, config):
    """--bundle DIR/current of a rollout agent (``clca-edge agent --bundles DIR``): open the bundle it
    names now, and follow the agent's switches between two frames (fleet/switch.py)."""
    from ..fleet.switch import PointerSwitch, resolve_pointer

    runtime, pointer = resolve_pointer(runtime)
    if pointer is None:
        return runtime, None
    _err_console().print(f"capture: following the agent's {pointer} (now {runtime.bundle})", highlight=False)
    return runtime, PointerSwitch(pointer, runtime, config.quality).start()


def _open_outputs(output):
    """(run folder, log file, open field log, frame saver, the folders this run created)."""
    from ..capture.fieldlog import open_log
    from ..capture.frames import FrameSaver
    from ..core.output_paths import make_dirs, missing_dirs, remove_empty_dirs, writable_parent

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    folder = Path(output.run_dir) / f"capture-{stamp}"
    log_file = (Path(output.log_path) if output.log_path
                else folder / ("log.sqlite" if output.log_format == "sqlite" else "log.jsonl"))
    # The folders this run creates; whichever stay empty (a --log elsewhere, no frames saved) go again.
    created = missing_dirs(folder / "frames")
    try:
        make_dirs(output.run_dir, "--run-dir")
        writable_parent(log_file, "--log")
        flog = open_log(log_file, output.log_format)
        saver = FrameSaver(folder / "frames", output.frames)
    except BaseException:
        remove_empty_dirs(created)
        raise
    return log_file, flog, saver, created


def _run_capture_cmd(model, sel, src_cfg, config, output, display, fleet_cfg=None, switch=None):
    from ..capture import loop
    from ..capture.bundle_runtime import BundleRuntime
    from ..capture.display import DisplayObserver, LivePanel, OverlayWindow
    from ..capture.stop import StopRequest, stop_on_signals
    from ..capture.sources import make_source
    from ..core.output_paths import removes_empty_dirs

    runtime = BundleRuntime.create(model, sel, config.quality, switch.label(switch.target) if switch is not None else "")
    log_file, flog, saver, created = _open_outputs(output)
    con = _err_console()
    con.print(f"capture: {src_cfg.kind} {src_cfg.uri} -> {log_file} ({sel.classifier.describe()})", highlight=False)
    # The run logs the guard's notes (an older bundle's missing reference at WARNING): said once.
    con.print(describe_guard(runtime.guard, notes=False), highlight=False)
    use_live = sys.stdout.isatty() if display.live is None else display.live
    panel = overlay = None
    if use_live:
        from rich.console import Console

        panel = LivePanel(Console(), f"clca-edge capture: {src_cfg.uri}")
    if display.show:
        overlay = OverlayWindow()
    observers = (DisplayObserver(panel, overlay),) if panel is not None or overlay is not None else ()
    stop = StopRequest()
    agent = None
    with removes_empty_dirs(created), stop_on_signals(stop), flog:
        try:
            agent = start_fleet_agent(fleet_cfg, log_file)
            observers += fleet_observers(agent)
            with (panel if panel is not None else contextlib.nullcontext()):
                # A runtime the switch gave goes back to it (closed) when the run ends.
                summary = loop.run_capture(runtime, make_source(src_cfg), flog, config, saver, stop, observers, switch)
        finally:
            if overlay is not None:
                overlay.close()
            stop_fleet_agent(agent)
    return summary, log_file


def _print_summary(summary, log_file: Path) -> None:
    from rich.table import Table

    t = Table(title="capture summary", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("stopped by", summary.stop_reason)
    t.add_row("frames classified", f"{summary.frames} in {summary.duration_s:.1f} s ({summary.fps:.1f} fps)")
    t.add_row("classes", ", ".join(f"{c}: {n}" for c, n in summary.class_counts.most_common()) or "-")
    reasons = ", ".join(f"{r}: {n}" for r, n in summary.refused_reasons.most_common())
    t.add_row("refused (quality)", f"{summary.refused} ({reasons})" if summary.refused else "0")
    t.add_row("backend", f"{summary.backend} ({summary.precision})")
    t.add_row("fallbacks", "; ".join(f"{f['backend']}: {f['reason']}" for f in summary.fallbacks
                                     if not f.get("expected")) or "none")
    t.add_row("self-check", "; ".join(f"{c['backend']} {c['precision']}: {c['status']}"
                                      + (" (forced)" if c.get("forced") else "") for c in summary.self_checks) or "-")
    t.add_row("dropped (stale) frames", str(summary.dropped))
    t.add_row("not triggered", str(summary.not_triggered))
    if summary.unreadable:
        t.add_row("unreadable images", str(summary.unreadable))
    t.add_row("camera", f"lost {summary.camera_lost}, reconnected {summary.reconnected}, stalls {summary.stalls}")
    t.add_row("frames saved", str(summary.frames_saved) + (f" (stopped: {summary.frames_stopped})"
                                                           if summary.frames_stopped else ""))
    if summary.log_failures:
        t.add_row("[red]log write failures[/]", str(summary.log_failures))
    t.add_row("log", str(log_file))
    console().print(t)
