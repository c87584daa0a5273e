"""The frame-quality guard on its own: measures of real pixels (synthetic leaves, the quick start's
generator) against a reference built from other leaves of the same generator; black, overexposed,
blurred and colour-cast frames are refused with the right reason, normal leaves are not."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from clca_edge.capture.quality import (BLURRED, OUT_OF_DISTRIBUTION, OVEREXPOSED, TOO_DARK, QualityConfig,
                                       QualityGuard, derive_thresholds)
from clca_edge.core.errors import BundleError, ConfigError
from clca_edge.core.image_stats import MIN_OOD_IMAGES, QualityReference, build_reference, measure
from clca_edge.core.preprocess import PreprocessSpec, resize_center_crop
from clca_edge.data.synth import class_traits, draw_leaf

SPEC = PreprocessSpec(img_size=64)
TRAITS = class_traits(4, seed=0)


def leaves(n: int, seed: int, size: int = 96) -> list[np.ndarray]:
    """RGB leaves on soil, as the synthetic data set draws them."""
    return [draw_leaf(TRAITS[i % len(TRAITS)], size, np.random.default_rng([seed, i])) for i in range(n)]


def crop(rgb: np.ndarray) -> np.ndarray:
    return resize_center_crop(rgb, SPEC)


# The kinds of frame a field camera produces that the model cannot judge (RGB in, RGB out).
def black(rgb):
    return np.zeros_like(rgb)


def overexposed(rgb):
    return np.clip(rgb.astype(np.float32) * 3.0, 0, 255).astype(np.uint8)


def blurred(rgb):
    return cv2.GaussianBlur(rgb, (0, 0), 4)


def tinted(rgb):  # a strong colour cast (tungsten light, a wrong white balance)
    return np.clip(rgb.astype(np.float32) * np.array([1.6, 1.0, 0.6]), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def reference() -> QualityReference:
    return build_reference([measure(crop(x)) for x in leaves(60, seed=1)], "synthetic leaves", SPEC.img_size)


@pytest.fixture(scope="module")
def guard(reference) -> QualityGuard:
    return QualityGuard.for_bundle(reference)


def test_normal_leaves_are_accepted(guard):
    verdicts = [guard.check(crop(x)) for x in leaves(40, seed=2)]
    assert all(v.ok for v in verdicts), [v.to_dict() for v in verdicts if not v.ok]
    # Every check ran: the colour distance is measured and within the derived limit.
    assert all(v.ood is not None and v.ood <= guard.thresholds.max_ood for v in verdicts)


@pytest.mark.parametrize("spoil, reason", [(black, TOO_DARK), (overexposed, OVEREXPOSED), (blurred, BLURRED),
                                           (tinted, OUT_OF_DISTRIBUTION)])
def test_unjudgeable_frames_are_refused_with_their_reason(guard, spoil, reason):
    for x in leaves(8, seed=3):
        v = guard.check(crop(spoil(x)))
        assert not v.ok and v.reason == reason, v.to_dict()
        d = v.to_dict()
        assert d["ok"] is False and d["reason"] == reason and d["reasons"][0] == reason
        assert set(d["measures"]) == {"luminance", "dark_fraction", "bright_fraction", "sharpness", "ood", "cast"}
    # The measures say why: black has no light, overexposed is too bright or blown out, blur has no edges.
    m = guard.check(crop(spoil(leaves(1, seed=3)[0]))).measures
    if reason == TOO_DARK:
        assert m.luminance == 0.0 and m.dark_fraction == 1.0
    elif reason == OVEREXPOSED:
        t = guard.thresholds
        assert m.luminance > t.max_luminance or m.bright_fraction > t.max_bright_fraction
    elif reason == BLURRED:
        assert m.sharpness < guard.thresholds.min_sharpness


def test_bgr_frames_measure_like_rgb_images(guard):
    x = crop(tinted(leaves(1, seed=4)[0]))
    a, b = guard.check(x), guard.check(np.ascontiguousarray(x[:, :, ::-1]), bgr=True)
    assert a.reasons == b.reasons and a.measures == b.measures


def test_thresholds_follow_the_reference_and_the_user(reference):
    t, notes, warnings = derive_thresholds(reference)
    assert t.min_sharpness == pytest.approx(0.25 * reference.sharpness["p5"])
    assert t.max_ood == pytest.approx(1.5 * reference.ood_distance["p99"])
    assert t.min_luminance == pytest.approx(min(0.1, 0.5 * reference.luminance["p1"]))
    assert "60 reference images" in notes[0] and warnings == []
    t2, _, _ = derive_thresholds(reference, QualityConfig(min_sharpness=0.0, max_ood=math.inf, min_luminance=0.3))
    assert t2.min_sharpness == 0.0 and t2.max_ood is None and t2.min_luminance == 0.3
    g = QualityGuard(t2, reference)
    v = g.check(crop(blurred(leaves(1, seed=5)[0])))
    assert BLURRED not in v.reasons and v.ood is None        # both checks off
    assert QualityGuard.for_bundle(reference, QualityConfig(enabled=False)) is None
    # A reference with training images on a white background widens the clipping limit.
    white = QualityReference(**{**reference.__dict__, "bright_fraction": {**reference.bright_fraction, "p99": 0.6}})
    assert derive_thresholds(white)[0].max_bright_fraction == pytest.approx(0.8)   # half-way from 0.6 to 1
    # Training images within the default keep it (a frame 40% blown out is refused, not judged).
    assert t.max_bright_fraction == 0.3 and t.max_dark_fraction == 0.5


def test_a_bundle_without_a_reference_still_checks_exposure_and_blur_but_not_colour():
    guard = QualityGuard.for_bundle(None)
    assert guard.thresholds.max_ood is None and "no quality_reference" in guard.warnings[0]
    x = leaves(1, seed=6)[0]
    assert guard.check(crop(x)).ok
    assert guard.check(crop(tinted(x))).ok                  # nothing to measure the cast against
    assert guard.check(crop(black(x))).reason == TOO_DARK
    assert guard.check(crop(overexposed(x))).reason == OVEREXPOSED
    assert guard.check(crop(cv2.GaussianBlur(x, (0, 0), 8))).reason == BLURRED
    _, notes, warnings = derive_thresholds(None, QualityConfig(max_ood=3.0))
    assert any("--max-ood ignored" in n for n in warnings) and set(warnings) <= set(notes)


def test_reference_round_trips_through_json_and_rejects_garbage(reference):
    d = json.loads(json.dumps(reference.to_dict()))
    back = QualityReference.from_dict(d)
    assert back.images == 60 and back.has_colour
    x = measure(crop(tinted(leaves(1, seed=7)[0])))
    assert back.distance_fn()(x) == pytest.approx(reference.distance_fn()(x), rel=1e-6)
    for bad in ({**d, "version": 99}, {**d, "colour_cov": [[1.0]]}, {k: v for k, v in d.items() if k != "sharpness"}):
        with pytest.raises(BundleError, match="quality_reference"):
            QualityReference.from_dict(bad)
    few = build_reference([measure(crop(x)) for x in leaves(MIN_OOD_IMAGES - 1, seed=8)], "few", 64)
    assert not few.has_colour and "colour_mean" not in few.to_dict()
    assert derive_thresholds(few)[0].max_ood is None


@pytest.mark.parametrize("kw", [dict(min_luminance=1.5), dict(min_sharpness=-1), dict(max_ood=0),
                                dict(min_luminance=0.5, max_luminance=0.4)])
def test_bad_quality_options_are_config_errors(kw):
    with pytest.raises(ConfigError):
        QualityConfig(**kw)


def test_a_reference_over_field_views_judges_what_the_field_model_was_trained_on(reference):
    """Deploy measures a field-trained model's training images as its augmentation presented them
    (``view``): a cloud's exposure x0.6, a soft focus (blur 1% of the side) and a low contrast are
    then frames like the training ones and judged, where the clean photos' reference refuses them;
    black, overexposed and heavily blurred frames are still refused, with their reasons."""
    import torch

    from clca_edge.data.augment import build_train_transform
    from clca_edge.robustness.suite import BY_NAME

    view = build_train_transform("field", SPEC).view
    torch.manual_seed(0)
    views = [view(x) for x in leaves(60, seed=1) for _ in range(4)]
    assert all(v.dtype == np.uint8 and v.shape == (64, 64, 3) for v in views)
    field_ref = build_reference([measure(v) for v in views], "field views", SPEC.img_size, augment="field")
    field, clean = QualityGuard.for_bundle(field_ref), QualityGuard.for_bundle(reference)
    assert "(field training views)" in field.notes[0]
    test = leaves(30, seed=9)

    def refused(guard, name, severity):
        p = BY_NAME[name]
        return np.mean([not guard.check(crop(p.apply(crop(x), severity, np.random.default_rng(i)))).ok
                        for i, x in enumerate(test)])

    for name, severity in (("exposure_down", 2), ("blur", 2), ("contrast", 2)):
        assert refused(field, name, severity) <= 0.05, name
    assert refused(clean, "exposure_down", 2) >= 0.5 and refused(clean, "blur", 2) >= 0.5
    assert not any(refused(field, "rotation", s) or refused(field, "zoom_out", s) for s in (1, 2))
    for spoil, reason in ((black, TOO_DARK), (overexposed, OVEREXPOSED), (blurred, BLURRED)):
        assert all(field.check(crop(spoil(x))).reason == reason for x in leaves(8, seed=3)), reason
    # The views are reproducible under torch's seed, and the preset is recorded and read back.
    torch.manual_seed(0)
    again = [view(x) for x in leaves(3, seed=1) for _ in range(4)]
    assert all(np.array_equal(a, b) for a, b in zip(again, views[:12]))
    assert not all(np.array_equal(views[0], v) for v in views[1:4])     # four different draws
    back = QualityReference.from_dict(json.loads(json.dumps(field_ref.to_dict())))
    assert back.augment == "field" and "augment" not in reference.to_dict()


def test_a_colour_cast_is_refused_where_the_colour_spread_would_hide_it(reference):
    """The cast distance (channel means' log ratios to green) catches a ±25% white balance on
    leaves the colour distance lets through, and ignores exposure: an under-exposed leaf is not a
    cast. Both distances are reported; --max-ood and --max-cast set (inf: turn off) one each."""
    from clca_edge.robustness.suite import BY_NAME

    guard = QualityGuard.for_bundle(reference)
    assert reference.has_cast and guard.thresholds.max_cast == pytest.approx(1.5 * reference.cast_distance["p99"])
    test = leaves(30, seed=11)

    def verdicts(name, severity):
        return [guard.check(crop(BY_NAME[name].apply(x, severity, None))) for x in test]

    for name in ("wb_warm", "wb_cool"):
        v = verdicts(name, 3)
        assert np.mean([x.reason == OUT_OF_DISTRIBUTION for x in v]) >= 0.9, name
        assert np.mean([x.cast > guard.thresholds.max_cast for x in v]) > np.mean(
            [x.ood > guard.thresholds.max_ood for x in v]), name          # the cast distance is what sees it
    dim = verdicts("exposure_down", 1)
    assert all(x.cast <= guard.thresholds.max_cast for x in dim)
    assert all(guard.check(crop(x)).ok for x in test)
    # The distances agree with their definition, and the options reach them.
    m = measure(crop(tinted(test[0])))
    assert guard.check(crop(tinted(test[0]))).cast == pytest.approx(reference.cast_distance_fn()(m))
    off = QualityGuard.for_bundle(reference, QualityConfig(max_ood=math.inf, max_cast=math.inf))
    assert off.thresholds.max_ood is None and off.thresholds.max_cast is None
    assert all(x.ok for x in (off.check(crop(BY_NAME["wb_warm"].apply(t, 3, None))) for t in test[:5]))
    loose = QualityGuard.for_bundle(reference, QualityConfig(max_cast=100.0))
    assert loose.thresholds.max_cast == 100.0 and loose.thresholds.max_ood == guard.thresholds.max_ood
    no_cast = QualityGuard.for_bundle(reference, QualityConfig(max_cast=math.inf))
    assert no_cast.thresholds.max_cast is None and no_cast.thresholds.max_ood == guard.thresholds.max_ood
    assert no_cast.check(crop(test[0])).cast is None
    with pytest.raises(ConfigError, match="--max-cast"):
        QualityConfig(max_cast=0)
    # An older reference (no cast statistics) reads as before: no cast check.
    d = {k: v for k, v in reference.to_dict().items() if not k.startswith("cast")}
    older = QualityReference.from_dict(d)
    assert not older.has_cast and QualityGuard.for_bundle(older).thresholds.max_cast is None
    _, notes, warnings = derive_thresholds(older, QualityConfig(max_cast=2.0))
    assert any("--max-cast ignored" in w for w in warnings)
    back = QualityReference.from_dict(json.loads(json.dumps(reference.to_dict())))
    assert back.cast_mean == reference.cast_mean and back.cast_cov == reference.cast_cov
    assert back.cast_distance == pytest.approx(reference.cast_distance, abs=1e-6)
    with pytest.raises(BundleError, match="cast"):
        QualityReference.from_dict({**reference.to_dict(), "cast_cov": [[1.0]]})
