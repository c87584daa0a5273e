"""The accuracy gate's statistics (core/gate_stats.py): exact tails, the paired outcome, verdicts."""

from __future__ import annotations

import itertools

import pytest

from clca_edge.core.errors import ConfigError
from clca_edge.core.gate_stats import (GateRule, PairedOutcome, binomial_upper_tail, detectable_drop,
                                       fewest_detectable_losses, judge, mcnemar_p, paired_outcome)


@pytest.mark.parametrize("n", [0, 1, 5, 12])
def test_upper_tail_counts_every_outcome(n):
    """P(X >= k) of Binomial(n, 1/2) is the share of the 2**n coin sequences with k or more heads."""
    for k in range(-1, n + 2):
        heads = sum(1 for seq in itertools.product((0, 1), repeat=n) if sum(seq) >= k)
        assert binomial_upper_tail(k, n) == pytest.approx(heads / 2 ** n, abs=1e-15)


def test_tail_is_exact_on_large_sets():
    # symmetry of Binomial(n, 1/2): P(X >= k) + P(X >= n - k + 1) = 1
    for k in (900, 1000, 1001, 1100):
        assert binomial_upper_tail(k, 2000) + binomial_upper_tail(2001 - k, 2000) == pytest.approx(1.0, abs=1e-12)
    assert 0.0 < binomial_upper_tail(1200, 2000) < 1e-15


def test_one_lost_image_of_80_is_not_a_significant_drop():
    """The issue's case: 1.25 points on 80 images is one image, p = 0.5: the gate passes it."""
    o = PairedOutcome(images=80, agree=79, lost=1, gained=0)
    assert o.drop == pytest.approx(1.25)
    v = judge(o, GateRule())
    assert v.passed and v.p_value == 0.5 and v.reason == ""
    # ... and 5 images lost, none gained (p = 1/32) is
    v = judge(PairedOutcome(images=80, agree=75, lost=5, gained=0), GateRule())
    assert not v.passed and v.rule == "significant drop" and v.p_value == pytest.approx(1 / 32)
    assert "p=0.0312" in v.reason


def test_losses_balanced_by_gains_are_no_drop():
    v = judge(PairedOutcome(images=200, agree=190, lost=6, gained=4), GateRule())
    assert v.passed and v.p_value == pytest.approx(mcnemar_p(6, 4)) and v.p_value > 0.3


def test_smallest_detectable_drop_shrinks_with_the_set():
    assert fewest_detectable_losses(0.05) == 5  # 0.5**5 = 0.031 <= 0.05 < 0.5**4
    assert fewest_detectable_losses(0.5) == 1
    assert detectable_drop(80, 0.05) == pytest.approx(6.25)
    assert detectable_drop(1000, 0.05) == pytest.approx(0.5)
    assert detectable_drop(4, 0.05) is None  # four images cannot show any drop at 5%


def test_agreement_bound_and_max_drop_keep_their_meaning():
    o = PairedOutcome(images=100, agree=85, lost=2, gained=1)  # not significant, but often a different class
    v = judge(o, GateRule(min_agreement=90))
    assert not v.passed and v.rule == "agreement" and "85.0%" in v.reason
    assert judge(o, GateRule(min_agreement=80)).passed
    # --max-drop set: an observed drop above it rejects, significant or not (what it always meant)
    v = judge(o, GateRule(min_agreement=80, max_drop=0.5))
    assert not v.passed and v.rule == "max drop" and "1.00 points" in v.reason
    assert judge(o, GateRule(min_agreement=80, max_drop=1.0)).passed


def test_paired_outcome_from_predictions():
    labels = [0, 1, 2, 0, 1]
    fp32 = [0, 1, 1, 0, 2]
    int8 = [0, 2, 2, 1, 2]
    o = paired_outcome(labels, fp32, int8)
    assert (o.images, o.agree, o.lost, o.gained) == (5, 2, 2, 1)
    assert o.drop == pytest.approx(20.0) and o.agreement == pytest.approx(40.0)
    with pytest.raises(ValueError):
        paired_outcome(labels, fp32, int8[:-1])


@pytest.mark.parametrize("kw", [dict(alpha=0), dict(alpha=1.5), dict(min_agreement=101), dict(max_drop=-1)])
def test_bad_rules_are_config_errors(kw):
    with pytest.raises(ConfigError):
        GateRule(**kw)
