"""Deploy's quality-reference step: the training images' statistics capture's quality guard judges
frames against (core.image_stats), measured as the checkpoint's training augmentation presented
them. ``step(run: DeployRun) -> None``."""

from __future__ import annotations

import logging
from dataclasses import replace

from .run_state import DeployRun

log = logging.getLogger(__name__)

# Views per training image in the quality reference of a model trained with a field preset
# (256 calibration images -> 1024 views: the 1st/99th percentiles the thresholds use are ~10
# views each, about 1 s of augmentation).
QUALITY_VIEWS = 4


def measure_quality_reference(run: DeployRun) -> None:
    """The INT8 calibration sample's images when there is one (class-balanced training images,
    never eval ones), else a sample drawn the same way; measured as the checkpoint's training
    augmentation presented them (``training_view``)."""
    from .field_stats import quality_reference

    sample = run.sample if run.sample is not None else _draw_sample(run)
    if sample is None:
        return
    paths = [p for p, _, _ in sample.items]
    view, preset = training_view(run.meta, run.spec)
    if view is None:
        run.say(f"measuring {len(paths)} training images for the capture quality guard")
        run.manifest.quality_reference = quality_reference(paths, run.spec, "--calib-data")
        return
    import torch

    run.say(f"measuring {QUALITY_VIEWS} {preset} views of each of {len(paths)} training images for the capture "
            "quality guard")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run.config.calibration.seed)  # --seed: one seed makes the whole deploy repeatable
        run.manifest.quality_reference = quality_reference(paths, run.spec, "--calib-data", view=view,
                                                           draws=QUALITY_VIEWS, augment=preset)


def _draw_sample(run: DeployRun):
    from ..core.errors import DataError
    from ..core.image_files import scan_class_folders
    from .calibration import sample_calibration

    cfg = run.config
    try:
        available = sum(len(v) for v in scan_class_folders(cfg.calib_data, "calibration").values())
        calib = replace(cfg.calibration, num_images=min(cfg.calibration.num_images, available))
        return sample_calibration(cfg.calib_data, run.classes, calib, exclude_sha256=run.data.sha256s(),
                                  exclude_paths=run.data.resolved())
    except DataError as e:
        log.warning("no quality reference: cannot sample --calib-data (%s); capture will judge frames "
                    "without the training images' statistics", e)
        return None


def training_view(meta, spec):
    """(the checkpoint's training transform's ``view``, its preset's name) when the model was
    trained with more than crop and flip (a field preset), else (None, name or None): crops and
    flips do not move the guard's measures, so the plain crops stay the reference."""
    from ..data.augment import AugmentPreset, build_train_transform

    extra = (getattr(meta, "extra", None) or {})
    record = extra.get("augment")
    if not record:
        return None, None
    preset = AugmentPreset.from_dict(record)
    if preset.only_crop_and_flip:
        return None, preset.name
    hflip = float((extra.get("train_config") or {}).get("hflip", 0.5))
    return build_train_transform(preset, spec, hflip).view, preset.name
