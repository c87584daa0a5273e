"""The field robustness section of a variant (``VariantRecord.field_robustness``): what deploy
measured on its --eval-data under the field perturbation suite (``clca_edge.robustness``), so the
bundle says how its model holds up in the field before anyone takes it there.

Plain dataclasses with ``to_dict``/``from_dict`` (``bundle.manifest`` declares the field and calls
them), importing only ``core``: no import cycle with the manifest. Torch-free; Python 3.8 typing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from ..core.errors import BundleError

FIX = "re-run clca-edge deploy"


def _num(d: Dict[str, Any], key: str, where: str) -> float:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise BundleError(f"manifest field {where + '.' + key!r} must be a number, not {v!r:.40}; {FIX}")
    return float(v)


@dataclass(frozen=True)
class FieldCondition:
    """Top-1 (percent) under one perturbation at one severity, and its drop from clean (points)."""

    name: str
    severity: int
    level: float
    top1: float
    drop: float
    # With capture's quality guard judging the frames: percent refused, percent classified and
    # wrongly, top-1 of the classified (None: not judged, or every frame refused). Optional keys:
    # a runtime that predates them reads the rest.
    refused: Optional[float] = None
    wrong_given: Optional[float] = None
    judged_top1: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"name": self.name, "severity": self.severity, "level": self.level, "top1": self.top1,
                             "drop": self.drop}
        if self.refused is not None:
            d.update(refused=self.refused, wrong_given=self.wrong_given, judged_top1=self.judged_top1)
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "field_robustness") -> "FieldCondition":
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            raise BundleError(f"manifest field {where!r} must be an object with a 'name'; {FIX}")
        opt = lambda k: None if d.get(k) is None else _num(d, k, where)  # noqa: E731
        return cls(d["name"], int(_num(d, "severity", where)), _num(d, "level", where), _num(d, "top1", where),
                   _num(d, "drop", where), opt("refused"), opt("wrong_given"), opt("judged_top1"))


@dataclass(frozen=True)
class FieldRobustness:
    """One variant under the suite (``robustness.evaluate.RobustnessReport.to_dict``)."""

    clean: float
    images: int
    suite: str
    seed: int
    results: List[FieldCondition]
    worst: Optional[FieldCondition] = None
    clean_judged: Optional[FieldCondition] = None  # the guard on the clean images (None: not judged)

    @property
    def most_wrong(self) -> Optional[FieldCondition]:
        """With the guard judging: the condition where capture would give the most wrong decisions."""
        judged = [r for r in self.results if r.wrong_given is not None]
        return max(judged, key=lambda r: r.wrong_given, default=None)

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"clean": self.clean, "images": self.images, "suite": self.suite, "seed": self.seed,
                             "results": [r.to_dict() for r in self.results]}
        if self.worst is not None:
            d["worst"] = self.worst.to_dict()
        if self.clean_judged is not None:
            d["clean_judged"] = self.clean_judged.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "field_robustness") -> "FieldRobustness":
        if not isinstance(d, dict):
            raise BundleError(f"manifest field {where!r} must be an object; {FIX}")
        results = d.get("results")
        if not isinstance(results, list):
            raise BundleError(f"manifest field {where + '.results'!r} must be a list; {FIX}")
        worst, judged = d.get("worst"), d.get("clean_judged")
        return cls(_num(d, "clean", where), int(_num(d, "images", where)), str(d.get("suite", "full")),
                   int(_num(d, "seed", where)) if "seed" in d else 0,
                   [FieldCondition.from_dict(r, f"{where}.results[{i}]") for i, r in enumerate(results)],
                   FieldCondition.from_dict(worst, f"{where}.worst") if worst is not None else None,
                   FieldCondition.from_dict(judged, f"{where}.clean_judged") if judged is not None else None)


__all__ = ["FieldCondition", "FieldRobustness"]
