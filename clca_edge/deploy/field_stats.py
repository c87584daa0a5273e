"""What deploy records so the device can judge frames and trust confidences: the training images'
quality reference (``core.image_stats``, for the capture quality guard) and the temperature fitted
on the eval images' fp32 logits (``core.confidence``). Torch-free."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..core.confidence import ConfidenceCalibration, calibrate
from ..core.image_stats import QualityReference, build_reference, measure
from ..core.preprocess import PreprocessSpec, load_rgb, resize_center_crop

log = logging.getLogger(__name__)


def quality_reference(paths: Sequence[Path], spec: PreprocessSpec, origin: str,
                      view: Optional[Callable[[np.ndarray], np.ndarray]] = None, draws: int = 1,
                      augment: Optional[str] = None) -> Optional[QualityReference]:
    """Measure the model-size crops of ``paths`` (training images, from ``origin``: the source
    says how many of them were read) exactly as capture measures a frame; None if none is
    readable. With ``view`` (a training transform's ``view``: the uint8
    crop its augmentation makes, before framing and normalisation), each image is measured as
    ``draws`` such views instead: the reference is then what the model was trained to see (a
    field-trained model saw dim, cast, soft and low-contrast photos), so the guard refuses frames
    beyond that, not every frame unlike the clean training photos."""
    measures = []
    read = 0
    for p in paths:
        rgb = load_rgb(p)
        if rgb is None:
            log.warning("quality reference: %s became unreadable; skipped", p)
            continue
        read += 1
        if view is None:
            measures.append(measure(resize_center_crop(rgb, spec)))
        else:
            measures.extend(measure(view(rgb)) for _ in range(draws))
    if not measures:
        return None
    source = f"{read} images of {origin}"
    if view is not None:
        source = f"{len(measures)} {augment} views of {source}"
    return build_reference(measures, source, spec.img_size, augment=augment)


class LogitRecorder:
    """Wraps a gate runner and keeps every batch of logits it returns, in order."""

    def __init__(self, runner):
        self._runner = runner
        self.logits: list = []

    def __call__(self, x):
        out = self._runner(x)
        self.logits.append(np.asarray(out, np.float32).reshape(1, -1))
        return out


def fit_confidence(recorder: LogitRecorder, labels: Sequence[int], source: str) -> Optional[ConfidenceCalibration]:
    """The temperature of the recorded fp32 logits against ``labels`` (the eval images the gate
    could read, in its order); None without images."""
    if not recorder.logits:
        return None
    logits = np.concatenate(recorder.logits)
    if len(logits) != len(labels):
        raise ValueError(f"{len(logits)} recorded logits for {len(labels)} labels")
    cal = calibrate(logits, np.asarray(labels), fitted_on=source)
    if cal.at_bound:
        log.warning("temperature %.3g is at its bound %s: the %d eval images cannot pin it down (e.g. all "
                    "right with high confidence); confidences may be over-confident in the field",
                    cal.temperature, list(cal.bounds), cal.images)
    return cal
