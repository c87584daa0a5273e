"""The capture run's records: what one frame gave (a decision or a refusal), typed, and their one
conversion to the field log's JSON (``to_dict``); the run's summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np

from ..runtime.decision import Decision, top_k
from .bundle_runtime import BundleRuntime
from .quality import Verdict


def ms(a: float, b: float) -> float:
    return round((b - a) * 1000.0, 3)


@dataclass(frozen=True)
class Latency:
    """Per-frame times in ms: waiting for / decoding the frame, preprocessing (and the guard),
    inference (decisions only), and the loop's whole time for the frame."""

    grab: float
    preprocess: float
    total: float
    infer: Optional[float] = None

    def to_dict(self) -> dict:
        if self.infer is None:
            return {"grab": self.grab, "preprocess": self.preprocess, "total": self.total}
        return {"grab": self.grab, "preprocess": self.preprocess, "infer": self.infer, "total": self.total}


@dataclass(frozen=True)
class FrameInfo:
    """Where a frame came from: its index in the source, its file (image sources), how old it was
    when the loop took it (live sources) and where it was saved (``--save-frames``)."""

    source_frame: int
    file: str = ""
    age_ms: Optional[float] = None
    saved: Optional[str] = None

    def add_to(self, d: dict) -> dict:
        if self.file:
            d["file"] = self.file
        if self.age_ms is not None:
            d["frame_age_ms"] = self.age_ms
        if self.saved is not None:
            d["saved"] = self.saved
        return d


class _LoggedOnce:
    """A record's field-log JSON is built once: the run writes it and every observer (the display,
    the fleet link) reads the same dict, which nobody may change."""

    def to_dict(self) -> dict[str, Any]:
        d = self.__dict__.get("_as_dict")
        if d is None:
            d = self._as_log_dict()
            object.__setattr__(self, "_as_dict", d)   # a frozen dataclass: a cache, not a field
        return d


@dataclass(frozen=True)
class DecisionRecord(_LoggedOnce):
    frame: int                   # index among classified frames
    info: FrameInfo
    tag: dict                    # source, backend, precision, bundle_sha (and bundle): RecordBuilder.tag
    probs: np.ndarray            # this frame's calibrated probabilities (the bundle's temperature applied)
    topk: tuple                  # ((class, probability), ...) of ``probs``, best first
    decision: Decision           # after smoothing and abstention
    latency: Latency
    quality: Optional[Verdict] = None

    @property
    def margin(self) -> float:
        """This frame's top-1 minus top-2 calibrated probability (1.0 for a one-class bundle)."""
        if self.probs.size < 2:
            return 1.0
        two = np.partition(self.probs, -2)[-2:]
        return float(two[1] - two[0])

    def _as_log_dict(self) -> dict[str, Any]:
        d = {"type": "decision", "frame": self.frame, "source_frame": self.info.source_frame, **self.tag,
             "topk": [{"class": c, "conf": round(p, 6)} for c, p in self.topk],
             "class": self.decision.label, "confidence": round(self.decision.confidence, 6),
             "raw_class": self.decision.raw_label, "latency_ms": self.latency.to_dict()}
        self.info.add_to(d)
        if self.quality is not None:
            d["quality"] = self.quality.measures_dict()
        return d


@dataclass(frozen=True)
class RefusalRecord(_LoggedOnce):
    info: FrameInfo
    tag: dict
    verdict: Verdict
    latency: Latency

    @property
    def reason(self) -> str:
        return self.verdict.reason or ""

    def _as_log_dict(self) -> dict[str, Any]:
        d = {"type": "refused", "source_frame": self.info.source_frame, **self.tag, "reason": self.verdict.reason,
             "reasons": list(self.verdict.reasons), "measures": self.verdict.measures_dict(),
             "latency_ms": self.latency.to_dict()}
        return self.info.add_to(d)


class RecordBuilder:
    """Builds the records of one runtime's frames (a bundle switch makes a new one)."""

    def __init__(self, runtime: BundleRuntime, source: str, top_k: int):
        self.runtime = runtime
        self.top_k = top_k
        self.tag = {"source": source, "backend": runtime.classifier.backend,
                    "precision": runtime.classifier.precision, "bundle_sha": runtime.sha}
        if runtime.label:
            self.tag["bundle"] = runtime.label

    def decision(self, frame: int, info: FrameInfo, probs: np.ndarray, decision: Decision, latency: Latency,
                 quality: Optional[Verdict]) -> DecisionRecord:
        topk = tuple(top_k(probs, self.runtime.model.class_names, self.top_k))
        return DecisionRecord(frame, info, self.tag, probs, topk, decision, latency, quality)

    def refusal(self, info: FrameInfo, verdict: Verdict, latency: Latency) -> RefusalRecord:
        return RefusalRecord(info, self.tag, verdict, latency)

    def start(self, config_dict: dict) -> dict:
        rt = self.runtime
        return {"type": "start", **self.tag, "classes": len(rt.model.class_names), "config": config_dict,
                "quality": rt.describe_guard(), "temperature": rt.model.temperature}

    def switch(self, old: BundleRuntime, frames: int) -> dict:
        """The ``bundle_switch`` record: the new runtime's identity, what it replaced, and after how
        many classified frames."""
        rt = self.runtime
        return {"type": "bundle_switch", **self.tag, "from_bundle_sha": old.sha,
                "from_backend": old.classifier.backend, "from_precision": old.classifier.precision,
                "after_frames": frames, "classes": len(rt.model.class_names), "quality": rt.describe_guard(),
                "temperature": rt.model.temperature,
                "fallbacks": [f.to_dict() for f in rt.fallbacks],
                "self_checks": [c.to_dict() for c in rt.checks]}


@dataclass
class Summary:
    frames: int = 0
    class_counts: Counter = field(default_factory=Counter)
    uncertain: int = 0
    refused: int = 0                 # frames the quality guard would not let the model judge
    refused_reasons: Counter = field(default_factory=Counter)   # by first reason
    fallbacks: list = field(default_factory=list)
    self_checks: list = field(default_factory=list)   # device self-checks at start (runtime.selfcheck)
    dropped: int = 0                 # live frames replaced by a newer one before being looked at
    not_triggered: int = 0           # frames passed over by --every / --interval
    unreadable: int = 0              # image files that could not be decoded
    camera_lost: int = 0
    reconnected: int = 0
    stalls: int = 0
    frames_saved: int = 0
    frames_stopped: Optional[str] = None
    log_failures: int = 0
    duration_s: float = 0.0
    stop_reason: str = ""
    backend: str = ""
    precision: str = ""
    bundle_sha: str = ""             # the bundle classifying at the end (after any switch)
    switches: int = 0                # bundle switches during the run

    @property
    def fps(self) -> float:
        return self.frames / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["class_counts"] = dict(self.class_counts.most_common())
        d["refused_reasons"] = dict(self.refused_reasons.most_common())
        d["fps"] = round(self.fps, 3)
        d["duration_s"] = round(self.duration_s, 3)
        return d
