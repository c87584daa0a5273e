"""What classifies a capture run's frames: one bundle's model, the classifier chosen for it on
this device and its quality guard (``BundleRuntime``); a bundle switch replaces the whole of it
between two frames (``capture/hooks.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..core.preprocess import frame_leaf, normalize, preprocess, resize_center_crop
from ..runtime.backends import Classifier, Selection
from ..runtime.model import RuntimeModel
from .quality import QualityConfig, QualityGuard, Verdict


@dataclass
class BundleRuntime:
    """One bundle's model, the classifier chosen for it on this device and its quality guard (None:
    guard off): everything that classifies a frame, replaced whole by a bundle switch."""

    model: RuntimeModel
    classifier: Classifier
    guard: Optional[QualityGuard] = None
    fallbacks: tuple = ()        # runtime.backends.Fallback: backends passed over when choosing
    checks: tuple = ()           # runtime.selfcheck.SelfCheckResult: device self-checks run when choosing
    label: str = ""              # names the bundle in every record ("bundle"), e.g. its version; "": none

    @classmethod
    def create(cls, model: RuntimeModel, selection: Selection, quality: QualityConfig = QualityConfig(),
               label: str = "") -> "BundleRuntime":
        """The runtime of an opened bundle (``runtime.open.open_runtime``) with its quality guard."""
        return cls(model, selection.classifier, QualityGuard.for_bundle(model.quality_reference, quality),
                   tuple(selection.fallbacks), tuple(selection.checks), label)

    @property
    def sha(self) -> str:
        return self.model.sha

    def prepare(self, bgr: np.ndarray) -> "tuple[Optional[np.ndarray], Optional[Verdict]]":
        """(model input or None, the guard's verdict or None) of a BGR frame: the crop the model would
        see is measured, and normalised only if the guard lets it through."""
        spec = self.model.spec
        if self.guard is None:
            return preprocess(bgr, spec, bgr=True), None
        if bgr.ndim != 3 or bgr.shape[2] != 3:
            raise ValueError(f"expected a colour image (H, W, 3), got shape {bgr.shape}")
        crop = resize_center_crop(bgr, spec)
        verdict = self.guard.check(crop, bgr=True)
        return (normalize(frame_leaf(crop, spec), spec, bgr=True) if verdict.ok else None), verdict

    def warm_up(self) -> float:
        """One inference on a blank input, so that the first frame is not also the session's first
        run (ONNX Runtime allocates its arena, TensorRT its context, then: several times a frame's
        time). Returns its milliseconds."""
        import time

        size = self.model.spec.img_size
        t0 = time.perf_counter()
        self.classifier.logits(np.zeros((3, size, size), np.float32))
        return (time.perf_counter() - t0) * 1000.0

    def describe_guard(self) -> dict:
        return self.guard.describe() if self.guard is not None else {"enabled": False}

    def close(self) -> None:
        self.classifier.close()


def checks_dicts(checks: tuple) -> "list[dict[str, Any]]":
    """The self-checks as the summary keeps them (their device key left out)."""
    return [{k: v for k, v in c.to_dict().items() if k != "key"} for c in checks]
