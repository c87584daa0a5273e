"""A capture run's extension points: what classifies frames (``BundleRuntime``), who watches the
frames (``FrameObserver``) and what may replace the runtime between two frames (``BundleSwitch``).

- An observer (a display, an uploader that samples uncertain frames) subclasses ``FrameObserver``,
  overrides the hooks it needs and is given to ``CaptureRun(observers=[...])`` or
  ``CaptureRun.add_observer``. Hooks run on the capture loop's thread, after the frame's record is
  in the field log; the next frame waits for them, so one that does I/O queues the work for its
  own thread. An exception in a hook is logged (once per observer and hook) and the run goes on.
- A switch implements ``BundleSwitch.maybe_switch``, polled by the loop before each frame: it
  returns None (no change) or a ready ``BundleRuntime`` (opened and self-checked beforehand, on the
  switch's own thread), which classifies the next frame. The run logs a ``bundle_switch`` record,
  tells the observers (``on_switch``) and hands the old runtime to ``retired`` (default: closed).
  Frames already read ahead under the old runtime are prepared again for the new one: none is lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from ..core.preprocess import frame_leaf, normalize, preprocess, resize_center_crop
from ..runtime.backends import Classifier, Fallback, Selection
from ..runtime.model import RuntimeModel
from .quality import QualityConfig, QualityGuard, Verdict

if TYPE_CHECKING:
    from .records import DecisionRecord, RefusalRecord, Summary
    from .run import CaptureRun
    from .sources import Frame

log = logging.getLogger(__name__)


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

    def describe_guard(self) -> dict:
        return self.guard.describe() if self.guard is not None else {"enabled": False}

    def close(self) -> None:
        self.classifier.close()


class FrameObserver:
    """Sees a capture run: override the hooks you need (each default does nothing)."""

    def on_start(self, run: "CaptureRun") -> None:
        """Before the first frame; ``run.stop.set(reason)`` asks the run to stop after its frame."""

    def on_decision(self, frame: "Frame", record: "DecisionRecord") -> None:
        """A classified frame: ``frame.bgr`` the image, ``record`` the logged decision (calibrated
        probabilities ``record.probs``, ``record.margin`` top-2 margin, ``record.decision``)."""

    def on_refusal(self, frame: "Frame", record: "RefusalRecord") -> None:
        """A frame the quality guard refused (``record.reason``, ``record.verdict``): never classified."""

    def on_switch(self, old: BundleRuntime, new: BundleRuntime) -> None:
        """The bundle changed between two frames (the ``bundle_switch`` record is logged)."""

    def on_stop(self, summary: "Summary") -> None:
        """After the last frame, before the summary record is written."""


class BundleSwitch:
    """Polled by the capture loop before each frame."""

    def maybe_switch(self) -> Optional[BundleRuntime]:
        """None, or the runtime to classify the next frame with. Called on the loop's thread
        between frames: must be cheap (a flag or queue check), the new runtime ready."""
        return None

    def retired(self, old: BundleRuntime) -> None:
        """The runtime switched away from; it is no longer used by the run. Default: closed."""
        old.close()


def fallbacks_dicts(fallbacks: "tuple[Fallback, ...]") -> list:
    return [f.to_dict() for f in fallbacks]


def checks_dicts(checks: tuple) -> "list[dict[str, Any]]":
    """The self-checks as the summary keeps them (their device key left out)."""
    return [{k: v for k, v in c.to_dict().items() if k != "key"} for c in checks]
