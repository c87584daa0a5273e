"""``DeployRun``: what deploy's steps share while they build one bundle. Its ``manifest`` is the
bundle's ``Manifest``, made when the run starts: a step sets its result there (a variant's
``VariantRecord``, a section such as ``int8`` or ``confidence``), and the written manifest and the
report read the same records, never copies synced by hand. What the steps need but the bundle does
not keep (the runners, the calibration sample, the gate's pass) lives beside it."""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from .. import __version__
from ..bundle import LABELS_NAME, PREPROCESS_NAME, CheckpointRef, Manifest, TensorSpec, VariantRecord
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
    manifest: Manifest = field(init=False)
    runners: dict[str, Callable] = field(default_factory=dict)  # the ONNX variants ONNX Runtime runs here
    sample: Any = None  # deploy.calibration.CalibrationSample (INT8 only)
    evaluation: Optional[Evaluation] = None

    def __post_init__(self) -> None:
        self.manifest = new_manifest(self)

    @property
    def variants(self) -> dict[str, VariantRecord]:
        """The manifest's variants: ONNX files first, then the TensorRT plans the device builds."""
        return self.manifest.variants

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


def new_manifest(run: DeployRun) -> Manifest:
    """What the checkpoint and the config say before any step ran; the steps fill in the rest."""
    from .onnx_export import INPUT_NAME, OUTPUT_NAME

    mc, cfg, classes = run.meta.model, run.config, list(run.meta.class_names)
    return Manifest(
        version=__version__, created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        target=cfg.target, checkpoint=CheckpointRef(file=run.checkpoint.name, epoch=run.meta.epoch),
        model=mc.to_dict(),
        # Resolved against the backbone's depth: what the device-side graph actually does.
        keep_rate=list(run.model.plan.keep_rates), locations=list(run.model.plan.locations),
        tokens_per_block=list(run.model.tokens_per_block), opset=cfg.opset,
        input=TensorSpec(INPUT_NAME, [1, 3, mc.img_size, mc.img_size]), output=TensorSpec(OUTPUT_NAME, [1, len(classes)]),
        class_names=classes, labels=LABELS_NAME, preprocess_file=PREPROCESS_NAME, variants={},
        augment=(run.meta.extra or {}).get("augment"))
