"""``DeployRun``: what deploy's steps share while they build one bundle. The per-variant state is
the manifest's own ``VariantRecord`` (``variants``): a step sets its result on the record, and the
manifest and the report are read from the same records, never synced by hand."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..bundle import CalibrationRecord, VariantRecord
from ..bundle.int8 import Int8Record
from .config import DeployConfig

log = logging.getLogger(__name__)

# What a step says as it starts (cli.progress.StageProgress, or a logger); one with
# ``expect(n)``/``advance()`` also hears the images of the calibration and gate stages.
Say = Callable[[str], None]


@dataclass
class Evaluation:
    """The gate's one pass over the eval images (runtime.scoring.EvalResult) and each runner's
    top-1 class per image the pass could read, with those images' labels, in order."""

    result: Any  # runtime.scoring.EvalResult
    labels: list[int]
    top1: dict[str, list[int]]


@dataclass
class DeployRun:
    config: DeployConfig
    root: Path  # the temporary bundle folder the steps write into
    model: Any  # the checkpoint's torch model (eval mode)
    meta: Any  # training.checkpoint.CheckpointMeta
    checkpoint: Path
    data: Any  # runtime.scoring.EvalSet: --eval-data
    say: Say
    variants: dict[str, VariantRecord] = field(default_factory=dict)  # ONNX variants, then TensorRT plans
    runners: dict[str, Callable] = field(default_factory=dict)  # the ONNX variants ONNX Runtime runs here
    notes: list[str] = field(default_factory=list)
    sample: Any = None  # deploy.calibration.CalibrationSample (INT8 only)
    calibration: Optional[CalibrationRecord] = None
    int8: Optional[Int8Record] = None
    evaluation: Optional[Evaluation] = None
    confidence: Any = None  # core.confidence.ConfidenceCalibration
    quality_reference: Any = None  # core.image_stats.QualityReference
    reference: Any = None  # bundle.selfcheck_samples.SelfCheckSamples
    default_variant: Optional[str] = None

    @property
    def spec(self):
        """The checkpoint's preprocessing (core.preprocess.PreprocessSpec): every input is made with it."""
        return self.meta.preprocess

    @property
    def classes(self) -> list[str]:
        return list(self.meta.class_names)

    def expect(self, total: int) -> None:
        """Tell a progress reporter that offers it how many items the stage has."""
        expect = getattr(self.say, "expect", None)
        if expect is not None:
            expect(total)

    @property
    def advance(self) -> Optional[Callable[[], None]]:
        return getattr(self.say, "advance", None)

    def onnx_variants(self) -> dict[str, VariantRecord]:
        return {n: v for n, v in self.variants.items() if v.file is not None}
