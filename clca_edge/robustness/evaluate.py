"""Accuracy under the field suite: every image decoded once, perturbed into every condition of
the suite, and each version fed to every runner. Torch-free: runners are plain callables (an ONNX
Runtime session, a TensorRT engine, or, from ``training.robustness``, a PyTorch model).

Clean images go through exactly the standard preprocessing (``core.preprocess.preprocess``), so
the clean figure is the gate's / ``eval``'s accuracy on the same files. A perturbed image is the
photo resized as that preprocessing resizes it, perturbed, then preprocessed (see ``suite``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..core.errors import DataError
from ..core.preprocess import PreprocessSpec, load_rgb, preprocess, resize_shorter
from .suite import SUITE, Condition, conditions

log = logging.getLogger(__name__)

# A batch runner maps a stack of preprocessed images (N, 3, H, W) float32 to logits (N, C).
BatchRunner = Callable[[np.ndarray], np.ndarray]
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

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "severity": self.severity, "level": self.level, "top1": round(self.top1, 4),
                "drop": round(self.drop, 4)}


@dataclass
class RobustnessReport:
    """One model's accuracy: clean, and per perturbation x severity."""

    clean: float
    images: int
    results: list[ConditionResult]
    suite: str = "full"
    seed: int = 0

    @property
    def worst(self) -> Optional[ConditionResult]:
        """The condition with the largest drop (the first of equals, in suite order)."""
        return max(self.results, key=lambda r: r.drop, default=None)

    def to_dict(self) -> dict[str, Any]:
        worst = self.worst
        return {"clean": round(self.clean, 4), "images": self.images, "suite": self.suite, "seed": self.seed,
                "results": [r.to_dict() for r in self.results], "worst": worst.to_dict() if worst else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RobustnessReport":
        return cls(float(d["clean"]), int(d["images"]),
                   [ConditionResult(r["name"], int(r["severity"]), float(r["level"]), float(r["top1"]),
                                    float(r["drop"])) for r in d.get("results", [])],
                   str(d.get("suite", "full")), int(d.get("seed", 0)))


@dataclass
class SuiteResult:
    reports: dict[str, RobustnessReport]  # per runner (variant) name
    skipped: list[Path] = field(default_factory=list)


def perturbed_inputs(rgb: np.ndarray, spec: PreprocessSpec, conds: Sequence[Condition], seed: int,
                     index: int) -> np.ndarray:
    """(1 + len(conds), 3, H, W): the clean input, then one per condition. Noise is drawn from a
    generator keyed by (seed, image index, perturbation, severity), so a figure does not depend
    on which other conditions or runners take part."""
    out = [preprocess(rgb, spec)]
    work = resize_shorter(rgb, spec)
    for c in conds:
        rng = np.random.default_rng([seed, index, _SUITE_INDEX[c.name], c.severity])
        out.append(preprocess(c.perturbation.apply(work, c.severity, rng), spec))
    return np.stack(out)


def run_suite(items: Sequence[tuple[Any, int]], spec: PreprocessSpec, runners: dict[str, BatchRunner],
              suite: str = "full", seed: int = 0, names: Optional[Sequence[str]] = None,
              progress: Optional[Callable[[], None]] = None) -> SuiteResult:
    """Accuracy of every runner on ``items`` ((path, label) pairs), clean and under each condition
    of ``suite``. Unreadable images are skipped and listed; none readable is a DataError."""
    conds = conditions(suite, names)
    correct = {name: np.zeros(1 + len(conds), np.int64) for name in runners}
    seen = 0
    skipped: list[Path] = []
    for index, (path, label) in enumerate(items):
        rgb = load_rgb(path)
        if rgb is None:
            skipped.append(Path(path))
        else:
            x = perturbed_inputs(rgb, spec, conds, seed, index)
            seen += 1
            for name, run in runners.items():
                logits = np.asarray(run(x), np.float32).reshape(len(x), -1)
                correct[name] += logits.argmax(1) == int(label)
        if progress:
            progress()
    if skipped:
        log.warning("robustness: skipped %d unreadable image(s), e.g. %s", len(skipped), skipped[0])
    if seen == 0:
        raise DataError(f"none of the {len(items)} images could be read; nothing to measure")
    reports = {}
    for name, hits in correct.items():
        acc = 100.0 * hits / seen
        clean = float(acc[0])
        results = [ConditionResult(c.name, c.severity, float(c.level), float(a), clean - float(a))
                   for c, a in zip(conds, acc[1:])]
        reports[name] = RobustnessReport(clean, seen, results, suite, seed)
    return SuiteResult(reports, skipped)


__all__ = ["BatchRunner", "ConditionResult", "RobustnessReport", "SuiteResult", "one_at_a_time",
           "perturbed_inputs", "run_suite"]
