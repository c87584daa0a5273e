"""The accuracy gate's statistics: a variant against fp32 on the same evaluation images, paired.

Only the images where the two disagree on correctness say anything about a drop: ``lost`` (fp32
right, the variant wrong) and ``gained`` (the reverse). With no real drop each of those
``lost + gained`` images is equally likely to fall either way, so ``lost`` is Binomial(lost +
gained, 1/2): the one-sided exact McNemar test. A variant is rejected when its drop is
significant at ``alpha``, when its top-1 agreement with fp32 is below ``min_agreement``, or (when
the user set ``max_drop``) when its observed drop is above that many points, as ``--max-drop``
always meant.

On a small evaluation set a drop of one image is noise: the smallest drop the set can detect is
``detectable_drop`` (the fewest lost images, none gained, that reach ``alpha``, in points), and the
report says it. Pure Python (``math.comb``), torch- and numpy-free; Python 3.8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence

from .errors import ConfigError

DEFAULT_ALPHA = 0.05
DEFAULT_MIN_AGREEMENT = 90.0  # percent of images with fp32's top-1 class


@dataclass(frozen=True)
class GateRule:
    """What a variant must show against fp32 to pass (``--gate-alpha``, ``--min-agreement``, ``--max-drop``)."""

    alpha: float = DEFAULT_ALPHA
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    max_drop: Optional[float] = None  # top-1 points; None: only the test and the agreement bound

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"--gate-alpha {self.alpha} must be between 0 and 1 (a significance level)")
        if not 0.0 <= self.min_agreement <= 100.0:
            raise ConfigError(f"--min-agreement {self.min_agreement} must be a percent (0 to 100)")
        if self.max_drop is not None and self.max_drop < 0:
            raise ConfigError(f"--max-drop {self.max_drop} must be >= 0 (points of top-1)")


@dataclass(frozen=True)
class PairedOutcome:
    """A variant against fp32 on ``images`` images: how often their top-1 classes agree, and the
    images where exactly one of the two is right."""

    images: int
    agree: int  # images where the variant's top-1 class is fp32's
    lost: int  # fp32 right, the variant wrong
    gained: int  # fp32 wrong, the variant right

    @property
    def agreement(self) -> float:
        return 100.0 * self.agree / self.images if self.images else 0.0

    @property
    def drop(self) -> float:
        """Top-1 points the variant loses against fp32 (negative: it gains)."""
        return 100.0 * (self.lost - self.gained) / self.images if self.images else 0.0


@dataclass(frozen=True)
class GateVerdict:
    outcome: PairedOutcome
    p_value: float  # one-sided exact McNemar: P(lost or more of the discordant images | no drop)
    detectable_drop: Optional[float]  # points; None: no drop on this few images can reach alpha
    passed: bool
    reason: str = ""  # why it was rejected ("" when it passed)
    rule: str = ""  # "significant drop", "agreement", "max drop" or ""


class TopOneRecorder:
    """Wraps a gate runner (one image in, its logits out as an array with ``argmax``) and keeps the
    top-1 class of every image it sees, in order: the predictions ``paired_outcome`` pairs."""

    def __init__(self, runner: Callable[[Any], Any]):
        self._runner = runner
        self.top1: List[int] = []

    def __call__(self, x: Any) -> Any:
        out = self._runner(x)
        self.top1.append(int(out.argmax()))
        return out


def paired_outcome(labels: Sequence[int], reference: Sequence[int], candidate: Sequence[int]) -> PairedOutcome:
    """Counts over images given each one's true label and the two models' top-1 classes."""
    if not len(labels) == len(reference) == len(candidate):
        raise ValueError(f"paired outcome: {len(labels)} labels, {len(reference)} and {len(candidate)} predictions")
    agree = lost = gained = 0
    for y, r, c in zip(labels, reference, candidate):
        agree += int(r == c)
        lost += int(r == y and c != y)
        gained += int(r != y and c == y)
    return PairedOutcome(images=len(labels), agree=agree, lost=lost, gained=gained)


def binomial_upper_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2), exactly (integer sums; Python's int/int division rounds once)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return sum(math.comb(n, i) for i in range(k, n + 1)) / (2 ** n)


def mcnemar_p(lost: int, gained: int) -> float:
    """One-sided exact McNemar p-value of a drop: P(lost or more of the lost + gained images)."""
    return binomial_upper_tail(lost, lost + gained)


def fewest_detectable_losses(alpha: float) -> int:
    """The fewest lost images (none gained) whose one-sided p-value is at most ``alpha``: 0.5**k <= alpha."""
    return max(1, math.ceil(math.log2(1.0 / alpha) - 1e-12))


def detectable_drop(images: int, alpha: float) -> Optional[float]:
    """The smallest top-1 drop (points) ``images`` evaluation images can show as significant at ``alpha``."""
    k = fewest_detectable_losses(alpha)
    return None if k > images else 100.0 * k / images


def judge(outcome: PairedOutcome, rule: GateRule) -> GateVerdict:
    """The gate's verdict on one variant; the first failed rule names the reason."""
    p = mcnemar_p(outcome.lost, outcome.gained)
    detectable = detectable_drop(outcome.images, rule.alpha)
    drop = outcome.drop
    why, which = "", ""
    if outcome.lost > outcome.gained and p <= rule.alpha:
        why, which = (f"drops {drop:.2f} points, significant: {outcome.lost} images lost, {outcome.gained} gained "
                      f"of {outcome.images} (one-sided exact McNemar p={p:.3g} <= {rule.alpha:g})"), "significant drop"
    elif outcome.agreement < rule.min_agreement:
        why, which = (f"agrees with fp32 on {outcome.agreement:.1f}% of {outcome.images} images "
                      f"(< {rule.min_agreement:g}%)"), "agreement"
    elif rule.max_drop is not None and drop > rule.max_drop:
        why, which = f"drops {drop:.2f} points (> --max-drop {rule.max_drop:g})", "max drop"
    return GateVerdict(outcome=outcome, p_value=p, detectable_drop=detectable, passed=not why, reason=why, rule=which)


__all__ = ["DEFAULT_ALPHA", "DEFAULT_MIN_AGREEMENT", "GateRule", "GateVerdict", "PairedOutcome", "TopOneRecorder",
           "binomial_upper_tail",
           "detectable_drop", "fewest_detectable_losses", "judge", "mcnemar_p", "paired_outcome"]
