"""`clca-edge predict` and `clca-edge capture`: the device runtime. No torch on this path."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from pathlib import Path
from typing import Optional

import click

from ._common import console, emit_json, main, reports_errors
from .quality_opts import describe_guard, quality_config, quality_options
from .trust_cmds import trusted_keys_option

log = logging.getLogger(__name__)

BACKEND_CHOICES = ["auto", "tensorrt", "ort-gpu", "ort-cpu"]
PRECISION_CHOICES = ["auto", "fp32", "fp16", "int8"]


def _err_console():
    return console(stderr=True)


def _open_runtime(bundle: str, backend: str, precision: str, threads: int, force_variant: bool = False,
                  trusted_keys=None):
    from ..runtime.backends import select_classifier
    from ..runtime.model import load_model

    if force_variant and precision == "auto":
        raise click.UsageError("--force-variant needs an explicit --precision (auto only runs variants that pass "
                               "the device self-check)")
    from .trust_cmds import load_trusted

    model = load_model(bundle, trusted_keys=load_trusted(trusted_keys))
    # Fallbacks are said here, once (not also logged as warnings); those the bundle's target implies
    # (a cpu bundle on a machine without TensorRT) only under -v.
    sel = select_classifier(model.files, backend, precision, threads, force=force_variant, on_fallback=_said_below)
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


def backend_options(fn):
    for opt in reversed([
        # No exists=True: a missing bundle is a bundle error (exit 8, as the README's table says), not click's 2.
        click.option("--bundle", "bundle", required=True, type=click.Path(),
                     help="Deploy bundle folder or .tar (every file's sha256 is verified)."),
        click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True,
                     help="auto tries tensorrt -> ort-gpu -> ort-cpu; a named one must work or the command fails."),
        click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto", show_default=True,
                     help="Model variant; auto: the bundle's default engine on TensorRT, fp16 on ort-gpu, fp32 on the CPU."),
        click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
                     help="ONNX Runtime CPU threads (0: one per core)."),
        click.option("--top-k", "top_k", type=click.IntRange(min=1), default=3, show_default=True),
        click.option("--force-variant", "force_variant", is_flag=True,
                     help="Use the --precision given even if it fails the device self-check (loudly; never with auto)."),
        trusted_keys_option,
    ]):
        fn = opt(fn)
    return fn


@main.command()
@backend_options
@quality_options
@click.argument("paths", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
@reports_errors
def predict(bundle, backend, precision, threads, top_k, force_variant, trusted_keys, quality, min_luminance, max_luminance,
            min_sharpness, max_ood, max_cast, paths, as_json):
    """Classify image files, folders (recursively) and globs with a deploy bundle.

    Unreadable images are reported and skipped. Images the quality guard would refuse in capture
    are still classified, and flagged with the reason. Exit 0 if at least one image was
    classified, 7 if none could be."""
    from ..capture.quality import QualityGuard
    from ..core.errors import NoInputError
    from ..runtime.predict import expand_inputs, predict_files

    qconfig = quality_config(quality, min_luminance, max_luminance, min_sharpness, max_ood, max_cast)
    model, sel = _open_runtime(bundle, backend, precision, threads, force_variant, trusted_keys)
    top_k = _clamp_top_k(top_k, model)
    guard = QualityGuard.for_bundle(model.quality_reference, qconfig)
    try:
        inputs = expand_inputs(paths)
        con = _err_console()
        for arg in inputs.unmatched:
            con.print(f"[yellow]warning[/]: {arg!r} matches no image file", highlight=False)
        if not inputs.files:
            raise NoInputError(f"no image files found in {', '.join(map(repr, paths))}")
        results = list(predict_files(model, sel.classifier, inputs.files, top_k,
                                     judge=guard.check if guard is not None else None))
    finally:
        sel.classifier.close()   # frees the engine / session (GPU memory) before printing
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
        con.print(describe_guard(guard), highlight=False)
    flagged = sum(r.flagged for r in ok)
    if flagged:
        con.print(f"[yellow]{flagged} of {len(ok)} image(s) flagged by the quality guard[/] (classified anyway; "
                  "capture would refuse them)", highlight=False)
    for r in bad:
        con.print(f"[red]skipped[/] {r.path}: {r.error}", highlight=False)
    if bad:
        con.print(f"{len(bad)} of {len(results)} file(s) unreadable and skipped", highlight=False)
    if not ok:
        raise NoInputError(f"none of the {len(results)} file(s) could be read as an image")


@main.command()
@backend_options
@quality_options
@click.option("--camera", type=click.IntRange(min=0), default=None, help="Camera index (V4L2 /dev/videoN).")
@click.option("--source", default=None,
              help="/dev/videoN, csi://N, rtsp://..., a video file, an image folder or a glob.")
@click.option("--width", type=click.IntRange(min=1), default=None, help="Camera frame width (CSI default 1280).")
@click.option("--height", type=click.IntRange(min=1), default=None, help="Camera frame height (CSI default 720).")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=None, help="Camera frame rate (CSI default 30).")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True, help="Classify every Nth frame.")
@click.option("--interval", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="At most one classification per this many seconds (source time).")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop after this many classified frames.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None, help="Stop after this many seconds.")
@click.option("--smooth", type=click.IntRange(min=1), default=1, show_default=True,
              help="Average probabilities over the last N classified frames.")
@click.option("--min-conf", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Below this smoothed confidence the decision is 'uncertain'.")
@click.option("--run-dir", type=click.Path(), default="runs/capture", show_default=True,
              help="Each run gets a timestamped folder here (log, saved frames).")
@click.option("--log", "log_path", type=click.Path(), default=None,
              help="Field log path (default: RUN_FOLDER/log.jsonl or log.sqlite). Appended to if it exists.")
@click.option("--log-format", type=click.Choice(["jsonl", "sqlite"]), default="jsonl", show_default=True)
@click.option("--save-frames", type=click.Choice(["none", "uncertain", "all"]), default="none", show_default=True)
@click.option("--max-disk-mb", type=click.FloatRange(min=0), default=1024.0, show_default=True,
              help="Quota for saved frames of this run.")
@click.option("--min-free-mb", type=click.FloatRange(min=0), default=512.0, show_default=True,
              help="Stop saving frames when the disk has less free space than this.")
@click.option("--show", is_flag=True, help="Overlay window with class, confidence and FPS (needs a display).")
@click.option("--live/--no-live", default=None, help="Rich live panel (default: when stdout is a terminal).")
@click.option("--open-timeout", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Seconds a live source may take to open at start before the run fails (exit 6).")
@click.option("--stall-timeout", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="Seconds without a frame from a connected camera before a stall is logged; a single "
                   "read blocked 3x this long counts as a lost camera (reconnect).")
@click.option("--reconnect-max", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Longest wait between reconnection attempts (back-off doubles from 0.5 s).")
@reports_errors
def capture(bundle, backend, precision, threads, top_k, force_variant, trusted_keys, quality, min_luminance, max_luminance,
            min_sharpness, max_ood, max_cast, camera, source, width, height, fps, every, interval,
            max_frames, duration, smooth, min_conf, run_dir, log_path, log_format, save_frames, max_disk_mb,
            min_free_mb, show, live, open_timeout, stall_timeout, reconnect_max):
    """Classify what a camera (or a video, or images) sees, and log every decision durably.

    Runs headless until the source ends, --max-frames/--duration, or SIGINT/SIGTERM (clean stop
    with a summary). Camera loss: reconnect with back-off, the run goes on. Frames the quality
    guard refuses (too dark, overexposed, blurred, out of distribution) are logged with the
    reason, never classified."""
    from ..capture.frames import FrameSaveConfig
    from ..capture.grabber import ReconnectPolicy
    from ..capture.loop import CaptureConfig
    from ..capture.sources import parse_source

    if (camera is None) == (source is None):
        raise click.UsageError("give exactly one of --camera N or --source ...")
    policy = ReconnectPolicy(max_s=max(reconnect_max, 0.5), stall_s=stall_timeout)
    # A read blocked as long as the grabber's stall-then-loss time makes OpenCV give up too.
    src_cfg = parse_source(str(camera) if camera is not None else source, width, height, fps,
                           timeout_s=policy.lost_after_s)
    config = CaptureConfig(top_k=top_k, every=every, interval_s=interval, max_frames=max_frames,
                           duration_s=duration, smooth=smooth, min_conf=min_conf, open_timeout_s=open_timeout,
                           reconnect=policy,
                           quality=quality_config(quality, min_luminance, max_luminance, min_sharpness, max_ood, max_cast))
    save_cfg = FrameSaveConfig(policy=save_frames, max_disk_mb=max_disk_mb, min_free_mb=min_free_mb)
    model, sel = _open_runtime(bundle, backend, precision, threads, force_variant, trusted_keys)
    if top_k > len(model.class_names):
        import dataclasses

        config = dataclasses.replace(config, top_k=_clamp_top_k(top_k, model))
    try:
        summary, log_file = _run_capture_cmd(model, sel, src_cfg, config, save_cfg, run_dir, log_path, log_format,
                                             show, live)
    finally:
        sel.classifier.close()
    _print_summary(summary, log_file)


def _run_capture_cmd(model, sel, src_cfg, config, save_cfg, run_dir, log_path, log_format, show, live):
    from ..capture.display import LivePanel, OverlayWindow
    from ..capture.fieldlog import open_log
    from ..capture.frames import FrameSaver
    from ..capture.loop import StopRequest, run_capture, stop_on_signals
    from ..capture.sources import make_source
    from ..core.output_paths import make_dirs, missing_dirs, remove_empty_dirs, removes_empty_dirs, writable_parent

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    folder = Path(run_dir) / f"capture-{stamp}"
    log_file = Path(log_path) if log_path else folder / ("log.sqlite" if log_format == "sqlite" else "log.jsonl")
    # The folders this run creates; whichever stay empty (a --log elsewhere, no frames saved) go again.
    created = missing_dirs(folder / "frames")
    try:
        make_dirs(run_dir, "--run-dir")
        writable_parent(log_file, "--log")
        flog = open_log(log_file, log_format)
        saver = FrameSaver(folder / "frames", save_cfg)
    except BaseException:
        remove_empty_dirs(created)
        raise
    con = _err_console()
    con.print(f"capture: {src_cfg.kind} {src_cfg.uri} -> {log_file} ({sel.classifier.describe()})", highlight=False)
    from ..capture.quality import QualityGuard

    # The loop logs the guard's notes (an older bundle's missing reference at WARNING): said once.
    con.print(describe_guard(QualityGuard.for_bundle(model.quality_reference, config.quality), notes=False),
              highlight=False)

    overlay = OverlayWindow() if show else None
    use_live = sys.stdout.isatty() if live is None else live
    stop = StopRequest()
    panel: Optional[LivePanel] = None

    def on_record(record, summary, bgr):
        if panel is not None:
            panel.update(record, summary)
        if overlay is not None:
            return overlay.show(bgr, record)
        return True

    with removes_empty_dirs(created), stop_on_signals(stop), flog:
        try:
            if use_live:
                from rich.console import Console

                panel = LivePanel(Console(), f"clca-edge capture: {src_cfg.uri}")
                with panel:
                    summary = run_capture(model, sel.classifier, make_source(src_cfg), flog, config, saver,
                                          tuple(sel.fallbacks), stop, on_record, checks=sel.checks)
            else:
                summary = run_capture(model, sel.classifier, make_source(src_cfg), flog, config, saver,
                                      tuple(sel.fallbacks), stop, on_record, checks=sel.checks)
        finally:
            if overlay is not None:
                overlay.close()
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
