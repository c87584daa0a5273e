"""The capture frame-quality guard's options and their one-line description, shared by
``predict``, ``capture`` (cli/runtime_cmds.py) and ``robustness`` (cli/robustness_cmds.py)."""

from __future__ import annotations

import click


def quality_options(fn):
    """The frame-quality guard's options, shared by predict (flags), capture (refuses) and
    robustness (counts what capture would refuse)."""
    for opt in reversed([
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
                     help="Refuse a crop whose Laplacian variance (green channel) is below this; 0: no blur "
                          "check "
                          "[default: 1/4 of the training images' (or training views') 5th percentile]."),
        click.option("--max-ood", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Refuse a crop whose colour statistics are further than this (Mahalanobis) from the "
                          "training images'; inf: no such check [default: 1.5x their own 99th percentile]."),
        click.option("--max-cast", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Refuse a crop whose colour cast (red and blue means against green; exposure leaves it "
                          "alone) is further than this (Mahalanobis) from the training images'; inf: no such check "
                          "[default: 1.5x their own 99th percentile]."),
    ]):
        fn = opt(fn)
    return fn


def quality_config(quality, min_luminance, max_luminance, min_sharpness, max_ood, max_cast):
    from ..capture.quality import QualityConfig

    return QualityConfig(enabled=quality == "on", min_luminance=min_luminance, max_luminance=max_luminance,
                         min_sharpness=min_sharpness, max_ood=max_ood, max_cast=max_cast)


def describe_guard(guard, notes: bool = True) -> str:
    """One line: the thresholds in force (and where they came from, unless the capture loop logs that)."""
    if guard is None:
        return "quality guard off"
    t = guard.thresholds
    ood = "no OOD check" if t.max_ood is None else f"OOD <= {t.max_ood:.2f}"
    if t.max_cast is not None:
        ood += f", cast <= {t.max_cast:.2f}"
    return (f"quality guard: luminance {t.min_luminance:.2f}..{t.max_luminance:.2f}, sharpness >= "
            f"{t.min_sharpness:.1f}, {ood}" + ("".join(f"; {n}" for n in guard.notes) if notes else ""))
