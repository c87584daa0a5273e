"""The field suite's result (robustness.evaluate.RobustnessReport) as the manifest's typed record
(bundle.robustness.FieldRobustness), field by field, rounded as the manifest keeps figures."""

from __future__ import annotations

from typing import Optional

from ..bundle.robustness import FieldCondition, FieldRobustness


def _round(v: Optional[float]) -> Optional[float]:
    return None if v is None else round(v, 4)


def field_condition(r) -> FieldCondition:
    """One robustness.evaluate.ConditionResult."""
    return FieldCondition(name=r.name, severity=r.severity, level=r.level, top1=round(r.top1, 4),
                          drop=round(r.drop, 4), refused=_round(r.refused), wrong_given=_round(r.wrong_given),
                          judged_top1=_round(r.judged_top1))


def field_robustness(rep) -> FieldRobustness:
    """One variant's robustness.evaluate.RobustnessReport."""
    worst = rep.worst
    return FieldRobustness(clean=round(rep.clean, 4), images=rep.images, suite=rep.suite, seed=rep.seed,
                           results=[field_condition(r) for r in rep.results],
                           worst=field_condition(worst) if worst is not None else None,
                           clean_judged=field_condition(rep.clean_judged) if rep.clean_judged is not None else None)
