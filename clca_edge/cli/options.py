"""Option groups: options that together make one typed config, declared once and shared by the
commands that take them (``predict``, ``capture``, ``robustness``; ``deploy``, ``build-engine``,
``benchmark``, ``eval``, ``data synth`` and ``fleet publish`` declare theirs next to the command). A command
decorated with a group receives the built config (``QualityConfig``, ``RuntimeConfig``,
``SourceConfig``, ``CaptureConfig``, ``OutputConfig``, ``DisplayConfig``...) under the group's name
instead of the raw values; it is built and validated once, before the command's body runs (a
ConfigError is the usual one-line error: put ``@reports_errors`` right under ``@main.command()``).
Builders import lazily: ``clca-edge --help`` loads no runtime."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from .trust_cmds import trusted_keys_option

BACKEND_CHOICES = ["auto", "tensorrt", "ort-gpu", "ort-cpu"]
PRECISION_CHOICES = ["auto", "fp32", "fp16", "int8"]
# runtime.device_cache.CACHE_DIR_ENV, spelled out so that importing the CLI stays light.
CACHE_DIR_ENV = "CLCA_EDGE_CACHE_DIR"


class OptionGroup:
    """``options`` (click.option decorators) whose values ``build(**values)`` turns into the one
    config the command receives as ``dest``.

    An option group among ``options`` is built first and reaches ``build`` as its own ``dest``
    (``deploy``'s gate options -> ``GateRule``, inside its ``DeployConfig``). ``passes`` names
    options declared among ``options`` (so that ``--help`` lists them where they always were) that
    ``build`` does not take: the command receives their raw values."""

    def __init__(self, dest: str, options: Sequence[Callable], build: Callable[..., Any],
                 passes: Sequence[str] = ()):
        self.dest, self.options, self.build, self.passes = dest, list(options), build, tuple(passes)
        probe = self._apply(lambda: None)
        declared = [p.name for p in probe.__click_params__]
        inner = [g for g in self.options if isinstance(g, OptionGroup)]
        taken_inside = {n for g in inner for n in g.names}
        unknown = set(self.passes) - set(declared)
        if unknown:
            raise ValueError(f"option group {dest!r}: {sorted(unknown)} pass through but are not declared")
        self.names = [n for n in declared if n not in taken_inside and n not in self.passes] + [g.dest for g in inner]

    def _apply(self, fn: Callable) -> Callable:
        for opt in reversed(self.options):
            fn = opt(fn)
        return fn

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def with_config(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in self.names}
            kwargs[self.dest] = self.build(**values)
            return fn(*args, **kwargs)

        return self._apply(with_config)


top_k_option = click.option("--top-k", "top_k", type=click.IntRange(min=1), default=3, show_default=True,
                            help="Classes shown per image (at most the bundle's).")


# ------------------------------------------------------------------ the quality guard
def _quality_config(quality, min_luminance, max_luminance, min_sharpness, max_ood, max_cast):
    from ..capture.quality import QualityConfig

    return QualityConfig(enabled=quality == "on", min_luminance=min_luminance, max_luminance=max_luminance,
                         min_sharpness=min_sharpness, max_ood=max_ood, max_cast=max_cast)


quality_options = OptionGroup("quality", [
    click.option("--quality", "quality", type=click.Choice(["on", "off"]), default="on", show_default=True,
                 help="Frame-quality guard: too dark, overexposed, blurred or out of distribution "
                      "(thresholds from the bundle's training-image statistics)."),
    click.option("--min-luminance", type=click.FloatRange(0, 1), default=None,
                 help="Refuse a crop whose mean grey level (0..1) is below this "
                      "[default: from the bundle, <= 0.1]."),
    click.option("--max-luminance", type=click.FloatRange(0, 1), default=None,
                 help="Refuse a crop whose mean grey level (0..1) is above this "
                      "[default: from the bundle, >= 0.9]."),
    click.option("--min-sharpness", type=click.FloatRange(min=0), default=None,
                 help="Refuse a crop whose Laplacian variance (green channel) is below this; 0: no blur check "
                      "[default: 1/4 of the training images' (or training views') 5th percentile]."),
    click.option("--max-ood", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="Refuse a crop whose colour statistics are further than this (Mahalanobis) from the "
                      "training images'; inf: no such check [default: 1.5x their own 99th percentile]."),
    click.option("--max-cast", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="Refuse a crop whose colour cast (red and blue means against green; exposure leaves it "
                      "alone) is further than this (Mahalanobis) from the training images'; inf: no such check "
                      "[default: 1.5x their own 99th percentile]."),
], _quality_config)


def describe_guard(guard, notes: bool = True) -> str:
    """One line: the thresholds in force (and where they came from, unless the capture run logs that)."""
    if guard is None:
        return "quality guard off"
    t = guard.thresholds
    ood = "no OOD check" if t.max_ood is None else f"OOD <= {t.max_ood:.2f}"
    if t.max_cast is not None:
        ood += f", cast <= {t.max_cast:.2f}"
    return (f"quality guard: luminance {t.min_luminance:.2f}..{t.max_luminance:.2f}, sharpness >= "
            f"{t.min_sharpness:.1f}, {ood}" + ("".join(f"; {n}" for n in guard.notes) if notes else ""))


# ------------------------------------------------------------------ opening a bundle on the device
def _runtime_config(bundle, backend, precision, threads, force_variant, trusted_keys, cache_dir):
    from ..runtime.open import RuntimeConfig

    return RuntimeConfig(bundle=bundle, backend=backend, precision=precision, threads=threads,
                         force_variant=force_variant, trusted_keys=trusted_keys, cache_dir=cache_dir)


cache_dir_option = click.option(
    "--cache-dir", "cache_dir", type=click.Path(path_type=Path), default=None, envvar=CACHE_DIR_ENV,
    show_envvar=True, help="This device's cache folder (self-check verdicts, CPU latencies, the TensorRT engines "
                           "build-engine builds); a bundle is never written "
                           "[default: $XDG_CACHE_HOME/clca-edge, ~/.cache/clca-edge].")

runtime_options = OptionGroup("runtime", [
    # No exists=True: a missing bundle is a bundle error (exit 8, as the README's table says), not click's 2.
    click.option("--bundle", "bundle", required=True, type=click.Path(),
                 help="Deploy bundle folder or .tar (every file's sha256 is verified)."),
    click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True,
                 help="auto tries tensorrt -> ort-gpu -> ort-cpu; a named one must work or the command fails."),
    click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto", show_default=True,
                 help="Model variant; auto: the bundle's default engine on TensorRT, fp16 on ort-gpu, fp32 on the CPU."),
    click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
                 help="ONNX Runtime CPU threads (0: one per core)."),
    click.option("--force-variant", "force_variant", is_flag=True,
                 help="Use the --precision given even if it fails the device self-check (loudly; never with auto)."),
    trusted_keys_option,
    cache_dir_option,
], _runtime_config)


# ------------------------------------------------------------------ capture's source, loop, outputs, display
def _source_config(camera, source, width, height, fps):
    from ..capture.sources import parse_source

    if (camera is None) == (source is None):
        raise click.UsageError("give exactly one of --camera N or --source ...")
    return parse_source(str(camera) if camera is not None else source, width, height, fps)


source_options = OptionGroup("source", [
    click.option("--camera", type=click.IntRange(min=0), default=None, help="Camera index (V4L2 /dev/videoN)."),
    click.option("--source", default=None,
                 help="/dev/videoN, csi://N, rtsp://..., a video file, an image folder or a glob."),
    click.option("--width", type=click.IntRange(min=1), default=None, help="Camera frame width (CSI default 1280)."),
    click.option("--height", type=click.IntRange(min=1), default=None, help="Camera frame height (CSI default 720)."),
    click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="Camera frame rate (CSI default 30)."),
], _source_config)


def _capture_config(top_k, every, interval, max_frames, duration, smooth, min_conf, open_timeout, stall_timeout,
                    reconnect_max):
    from ..capture.config import CaptureConfig
    from ..capture.grabber import ReconnectPolicy

    return CaptureConfig(top_k=top_k, every=every, interval_s=interval, max_frames=max_frames, duration_s=duration,
                         smooth=smooth, min_conf=min_conf, open_timeout_s=open_timeout,
                         reconnect=ReconnectPolicy(max_s=max(reconnect_max, 0.5), stall_s=stall_timeout))


loop_options = OptionGroup("loop", [
    top_k_option,
    click.option("--every", type=click.IntRange(min=1), default=1, show_default=True, help="Classify every Nth frame."),
    click.option("--interval", type=click.FloatRange(min=0), default=0.0, show_default=True,
                 help="At most one classification per this many seconds (source time)."),
    click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop after this many classified frames."),
    click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="Stop after this many seconds."),
    click.option("--smooth", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Average probabilities over the last N classified frames."),
    click.option("--min-conf", type=click.FloatRange(0, 1), default=0.0, show_default=True,
                 help="Below this smoothed confidence the decision is 'uncertain'."),
    click.option("--open-timeout", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
                 help="Seconds a live source may take to open at start before the run fails (exit 6)."),
    click.option("--stall-timeout", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
                 help="Seconds without a frame from a connected camera before a stall is logged; a single "
                      "read blocked 3x this long counts as a lost camera (reconnect)."),
    click.option("--reconnect-max", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
                 help="Longest wait between reconnection attempts (back-off doubles from 0.5 s)."),
], _capture_config)


def _output_config(run_dir, log_path, log_format, save_frames, max_disk_mb, min_free_mb):
    from ..capture.config import OutputConfig
    from ..capture.frames import FrameSaveConfig

    return OutputConfig(run_dir=run_dir, log_path=log_path, log_format=log_format,
                        frames=FrameSaveConfig(policy=save_frames, max_disk_mb=max_disk_mb, min_free_mb=min_free_mb))


output_options = OptionGroup("output", [
    click.option("--run-dir", type=click.Path(), default="runs/capture", show_default=True,
                 help="Each run gets a timestamped folder here (log, saved frames)."),
    click.option("--log", "log_path", type=click.Path(), default=None,
                 help="Field log path (default: RUN_FOLDER/log.jsonl or log.sqlite). Appended to if it exists."),
    click.option("--log-format", type=click.Choice(["jsonl", "sqlite"]), default="jsonl", show_default=True),
    click.option("--save-frames", type=click.Choice(["none", "uncertain", "all"]), default="none", show_default=True),
    click.option("--max-disk-mb", type=click.FloatRange(min=0), default=1024.0, show_default=True,
                 help="Quota for saved frames of this run."),
    click.option("--min-free-mb", type=click.FloatRange(min=0), default=512.0, show_default=True,
                 help="Stop saving frames when the disk has less free space than this."),
], _output_config)


def _display_config(show, live):
    from ..capture.config import DisplayConfig

    return DisplayConfig(show=show, live=live)


display_options = OptionGroup("display", [
    click.option("--show", is_flag=True, help="Overlay window with class, confidence and FPS (needs a display)."),
    click.option("--live/--no-live", default=None, help="Rich live panel (default: when stdout is a terminal)."),
], _display_config)
