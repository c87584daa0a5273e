"""Accuracy under the field suite: every image decoded once, perturbed into every condition of
the suite, and each version fed to every runner. Torch-free: runners are plain callables (an ONNX
Runtime session, a TensorRT engine, or, from ``training.robustness``, a PyTorch model).

Clean images go through exactly the standard preprocessing (``core.preprocess.preprocess``), so
the clean figure is the gate's / ``eval``'s accuracy on the same files. A perturbed image is the
photo resized as that preprocessing resizes it, perturbed, then preprocessed (see ``suite``).

With a ``judge`` (a bundle's capture quality guard: ``robustness.bundle``), every version of every
image is also judged on its model-size crop, as capture judges a frame, and each condition gets
the share capture would refuse and the top-1 of the frames it would classify: in the field a
refused frame is a retake, a wrong decision is a wrong treatment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..core.errors import DataError
from ..core.preprocess import PreprocessSpec, frame_leaf, load_rgb, normalize, resize_center_crop, resize_shorter
from .suite import SUITE, Condition, conditions

log = logging.getLogger(__name__)

# A batch runner maps a stack of preprocessed images (N, 3, H, W) float32 to logits (N, C).
BatchRunner = Callable[[np.ndarray], np.ndarray]
# A judge says whether capture would classify a model-size crop (uint8 HWC RGB) at all.
Judge = Callable[[np.ndarray], bool]
_SUITE_INDEX = {p.name: i for i, p in enumerate(SUITE)}


def one_at_a_time(run: Callable[[np.ndarray], np.ndarray]) -> BatchRunner:
    """A batch runner over a runner with a fixed batch of 1 (the bundles' static ONNX shape)."""
    return lambda x: np.concatenate([np.asarray(run(x[i:i + 1]), np.float32).reshape(1, -1) for i in range(len(x))])


@dataclass(frozen=True)
class ConditionResult:
    name: str
    severity: int
    level: float
    top1: float  # percent
    drop: float  # clean top-1 minus this, in points
    # With a judge: percent of the images capture would refuse, and the top-1 of the others
    # (None when every image was refused).
    refused: Optional[float] = None
    judged_top1: Optional[float] = None

    @property
    def wrong_given(self) -> Optional[float]:
        """Percent of all images capture would classify, and wrongly (None without a judge)."""
        if self.refused is None:
            return None
        return (100.0 - self.refused) * (100.0 - (self.judged_top1 or 0.0)) / 100.0

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "severity": self.severity, "level": self.level, "top1": round(self.top1, 4),
             "drop": round(self.drop, 4)}
        if self.refused is not None:
            d.update(refused=round(self.refused, 4), wrong_given=round(self.wrong_given, 4),
                     judged_top1=None if self.judged_top1 is None else round(self.judged_top1, 4))
        return d

    @classmethod
    def from_dict(cls, r: dict[str, Any]) -> "ConditionResult":
        opt = lambda k: None if r.get(k) is None else float(r[k])  # noqa: E731
        return cls(r["name"], int(r["severity"]), float(r["level"]), float(r["top1"]), float(r["drop"]),
                   opt("refused"), opt("judged_top1"))


@dataclass
class RobustnessReport:
    """One model's accuracy: clean, and per perturbation x severity."""

    clean: float
    images: int
    results: list[ConditionResult]
    suite: str = "full"
    seed: int = 0
    clean_judged: Optional[ConditionResult] = None  # with a judge: the clean images' refusals

    @property
    def worst(self) -> Optional[ConditionResult]:
        """The condition with the largest drop (the first of equals, in suite order)."""
        return max(self.results, key=lambda r: r.drop, default=None)

    @property
    def most_wrong(self) -> Optional[ConditionResult]:
        """With a judge: the condition where capture would give the most wrong decisions."""
        judged = [r for r in self.results if r.wrong_given is not None]
        return max(judged, key=lambda r: r.wrong_given, default=None)

    def to_dict(self) -> dict[str, Any]:
        worst = self.worst
        d = {"clean": round(self.clean, 4), "images": self.images, "suite": self.suite, "seed": self.seed,
             "results": [r.to_dict() for r in self.results], "worst": worst.to_dict() if worst else None}
        if self.clean_judged is not None:
            d["clean_judged"] = self.clean_judged.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RobustnessReport":
        judged = d.get("clean_judged")
        return cls(float(d["clean"]), int(d["images"]), [ConditionResult.from_dict(r) for r in d.get("results", [])],
                   str(d.get("suite", "full")), int(d.get("seed", 0)),
                   ConditionResult.from_dict(judged) if judged else None)


@dataclass
class SuiteResult:
    reports: dict[str, RobustnessReport]  # per runner (variant) name
    skipped: list[Path] = field(default_factory=list)


def perturbed_crops(rgb: np.ndarray, spec: PreprocessSpec, conds: Sequence[Condition], seed: int,
                    index: int) -> list[np.ndarray]:
    """The model-size crops (``resize_center_crop``, uint8) of the clean image, then of one
    version per condition. Noise is drawn from a generator keyed by (seed, image index,
    perturbation, severity), so a figure does not depend on which other conditions or runners
    take part."""
    out = [resize_center_crop(rgb, spec)]
    work = resize_shorter(rgb, spec)
    for c in conds:
        rng = np.random.default_rng([seed, index, _SUITE_INDEX[c.name], c.severity])
        out.append(resize_center_crop(c.perturbation.apply(work, c.severity, rng), spec))
    return out


def perturbed_inputs(rgb: np.ndarray, spec: PreprocessSpec, conds: Sequence[Condition], seed: int,
                     index: int) -> np.ndarray:
    """(1 + len(conds), 3, H, W): ``perturbed_crops`` as the model gets them."""
    return _model_inputs(perturbed_crops(rgb, spec, conds, seed, index), spec)


def _model_inputs(crops: Sequence[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    """Model-size crops framed and normalised, exactly as ``core.preprocess.preprocess`` feeds the
    model, stacked."""
    return np.stack([normalize(frame_leaf(c, spec), spec) for c in crops])


def run_suite(items: Sequence[tuple[Any, int]], spec: PreprocessSpec, runners: dict[str, BatchRunner],
              suite: str = "full", seed: int = 0, names: Optional[Sequence[str]] = None,
              progress: Optional[Callable[[], None]] = None, judge: Optional[Judge] = None) -> SuiteResult:
    """Accuracy of every runner on ``items`` ((path, label) pairs), clean and under each condition
    of ``suite``; with ``judge``, also what capture would refuse and how the rest would fare.
    Unreadable images are skipped and listed; none readable is a DataError."""
    conds = conditions(suite, names)
    correct = {name: np.zeros(1 + len(conds), np.int64) for name in runners}
    correct_judged = {name: np.zeros(1 + len(conds), np.int64) for name in runners}
    judged = np.zeros(1 + len(conds), np.int64)
    seen = 0
    skipped: list[Path] = []
    for index, (path, label) in enumerate(items):
        rgb = load_rgb(path)
        if rgb is None:
            skipped.append(Path(path))
        else:
            crops = perturbed_crops(rgb, spec, conds, seed, index)
            x = _model_inputs(crops, spec)
            ok = np.array([judge(c) for c in crops], bool) if judge is not None else np.ones(len(crops), bool)
            judged += ok
            seen += 1
            for name, run in runners.items():
                logits = np.asarray(run(x), np.float32).reshape(len(x), -1)
                right = logits.argmax(1) == int(label)
                correct[name] += right
                correct_judged[name] += right & ok
        if progress:
            progress()
    if skipped:
        log.warning("robustness: skipped %d unreadable image(s), e.g. %s", len(skipped), skipped[0])
    if seen == 0:
        raise DataError(f"none of the {len(items)} images could be read; nothing to measure")
    refused = 100.0 * (seen - judged) / seen
    reports = {}
    for name, hits in correct.items():
        acc = 100.0 * hits / seen
        judged_acc = [100.0 * h / j if j else None for h, j in zip(correct_judged[name], judged)]
        clean = float(acc[0])

        def result(name_, severity, level, i):
            extra = (float(refused[i]), judged_acc[i]) if judge is not None else (None, None)
            return ConditionResult(name_, severity, level, float(acc[i]), clean - float(acc[i]), *extra)

        results = [result(c.name, c.severity, float(c.level), i + 1) for i, c in enumerate(conds)]
        reports[name] = RobustnessReport(clean, seen, results, suite, seed,
                                         result("clean", 0, 0.0, 0) if judge is not None else None)
    return SuiteResult(reports, skipped)


__all__ = ["BatchRunner", "ConditionResult", "Judge", "RobustnessReport", "SuiteResult", "one_at_a_time",
           "perturbed_crops", "perturbed_inputs", "run_suite"]
