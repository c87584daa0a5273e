"""Temperature scaling and ECE on synthetic logits whose true calibration is known: labels are drawn
from softmax(z), so z is calibrated (T = 1) and c * z is over- (c > 1) or under-confident (c < 1)."""

from __future__ import annotations

import numpy as np
import pytest

from clca_edge.core.confidence import (TEMPERATURE_BOUNDS, ConfidenceCalibration, calibrate, ece, fit_objective,
                                       fit_temperature, nll, softmax)
from clca_edge.core.errors import BundleError
from clca_edge.runtime.decision import softmax as runtime_softmax


def calibrated_logits(n=600, c=5, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1, (n, c))
    z[np.arange(n), rng.integers(0, c, n)] += 2.0
    p = softmax(z)
    labels = np.array([rng.choice(c, p=row) for row in p])
    return z, labels


@pytest.mark.parametrize("scale", [4.0, 0.4])
def test_fitting_recovers_the_scale_and_lowers_ece(scale):
    z, y = calibrated_logits()
    cal = calibrate(z * scale, y)
    assert cal.temperature == pytest.approx(scale, rel=0.15)
    assert cal.ece_after < 0.5 * cal.ece_before
    assert cal.nll_after < cal.nll_before
    # Cross-validated (T fitted without each fold) is close to the in-sample figure on 600 images.
    assert cal.ece_after_cv is not None and cal.ece_after_cv < 0.5 * cal.ece_before
    assert not cal.at_bound and cal.images == len(y)


def test_the_fit_minimises_its_objective_over_the_bounds():
    z, y = calibrated_logits(seed=1)
    f = fit_objective(z * 3.0, y)
    t = fit_temperature(z * 3.0, y)
    grid = np.linspace(np.log(0.05), np.log(20), 2000)
    assert f(np.log(t)) <= min(f(g) for g in grid) + 1e-9
    # Without the prior it is the plain NLL minimum; on 600 images the prior moves T very little.
    t0 = fit_temperature(z * 3.0, y, prior_sigma=0)
    assert nll(z * 3.0, y, t0) <= min(nll(z * 3.0, y, np.exp(g)) for g in grid) + 1e-9
    assert t == pytest.approx(t0, rel=0.02)


def test_a_few_perfectly_separated_images_do_not_drive_t_to_its_bound():
    # Every prediction right: the plain NLL keeps falling as T -> 0 (the flat end of that fall is
    # where an unguarded search stops); the prior holds T near 1 instead of near-certainty for all.
    y = np.arange(18) % 3
    z = np.eye(3)[y] * 4.0
    assert fit_temperature(z, y, prior_sigma=0) < 0.3
    cal = calibrate(z, y)
    assert 0.3 < cal.temperature <= 1.0 and not cal.at_bound


def test_the_bounds_hold_and_say_so():
    # Logits 200x too large with labels at random: the NLL wants T far above the upper bound.
    rng = np.random.default_rng(3)
    z = rng.normal(0, 1, (300, 4)) * 200
    cal = calibrate(z, rng.integers(0, 4, 300))
    assert cal.temperature == pytest.approx(TEMPERATURE_BOUNDS[1], rel=1e-4) and cal.at_bound


def test_ece_of_known_cases():
    # Confidence 0.8 and 80% right: calibrated; confidence 1.0 and 50% right: ECE 0.5.
    p = np.tile([0.8, 0.2], (10, 1))
    assert ece(p, np.array([0] * 8 + [1] * 2)) == pytest.approx(0.0, abs=1e-12)
    p = np.tile([1.0, 0.0], (10, 1))
    assert ece(p, np.array([0] * 5 + [1] * 5)) == pytest.approx(0.5)


def test_runtime_softmax_applies_the_temperature():
    z = np.array([2.0, 1.0, -1.0], np.float32)
    np.testing.assert_allclose(runtime_softmax(z, 2.0), softmax(z / 2.0), atol=1e-6)
    np.testing.assert_allclose(runtime_softmax(z), softmax(z), atol=1e-6)


def test_manifest_record_round_trip_and_validation():
    z, y = calibrated_logits(n=100)
    cal = calibrate(z * 2, y, fitted_on="fp32 ONNX logits of eval")
    back = ConfidenceCalibration.from_dict(cal.to_dict())
    assert back.temperature == pytest.approx(cal.temperature, rel=1e-5) and back.fitted_on == cal.fitted_on
    for bad in ({"temperature": 0}, {"temperature": "hot"}, {}):
        with pytest.raises(BundleError, match="confidence"):
            ConfidenceCalibration.from_dict(bad)
