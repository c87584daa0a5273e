"""``--colour-constancy half_auto``: half grey world, and the crop's brightness spread and colour
spread each pulled half-way (in log terms) toward one reference: a contrast or saturation change
of the camera or the light is halved in the model's input, the leaf's own contrast and colour
compressed, not erased, on every path that feeds a model (the numpy contract, camera BGR frames,
the training transforms' float crops)."""

import numpy as np
import pytest
import torch

from clca_edge.core.imageops import LUMA, contrast, saturation
from clca_edge.core.preprocess import AUTO_GAIN_RANGE, PreprocessSpec, colour_transform, normalize, preprocess
from clca_edge.data.augment import build_train_transform
from clca_edge.data.synth import class_traits, draw_leaf

AUTO = PreprocessSpec(img_size=48, colour_constancy="half_auto")
HALF = PreprocessSpec(img_size=48, colour_constancy="half_grey_world")
CHROMA = np.eye(3) - np.outer(np.ones(3), LUMA.astype(np.float64))


def _spreads(x: np.ndarray, spec: PreprocessSpec) -> tuple[float, float]:
    """Luma standard deviation and colour RMS (0-255 scale) of a normalised CHW model input."""
    px = (x.reshape(3, -1).T * np.asarray(spec.std) + np.asarray(spec.mean)) * 255.0
    return float((px @ LUMA).std()), float(np.sqrt(((px @ CHROMA.T) ** 2).sum(axis=1).mean()))


@pytest.fixture(scope="module")
def leaf() -> np.ndarray:
    return draw_leaf(class_traits(4)[1], AUTO.img_size, np.random.default_rng(3))


def test_a_neutral_crops_contrast_change_is_exactly_halved_in_log_terms():
    """With equal channel means (grey world moves nothing), a contrast change by f scales both
    spreads by f, and half_auto's output by sqrt(f): exact, on the float path training uses."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, (3, 40, 40))
    x += 0.5 - x.mean(axis=(1, 2), keepdims=True)
    for f in (0.25, 0.5, 2.0):
        y = 0.5 + f * (x - 0.5)
        outs = []
        for img in (x, y):
            m, b = colour_transform(img, AUTO, chw=True)
            outs.append((m @ (img.reshape(3, -1) * 255.0) + b[:, None]))
        dev = [o - o.mean(axis=1, keepdims=True) for o in outs]
        assert np.allclose(dev[1], np.sqrt(f) * dev[0], rtol=1e-5, atol=1e-5), f
        assert np.allclose(outs[1].mean(axis=1), outs[0].mean(axis=1))


@pytest.mark.parametrize("change, factor", [(saturation, 0.45), (contrast, 0.5), (saturation, 1.3)])
def test_saturation_and_contrast_move_the_input_less_than_half_grey_world_lets_them(leaf, change, factor):
    ratios = {}
    for name, spec in (("auto", AUTO), ("half", HALF)):
        clean, moved = (_spreads(preprocess(img, spec), spec) for img in (leaf, change(leaf, factor)))
        # how far the worse of the two spreads moved, as a log ratio
        ratios[name] = max(abs(np.log(m / c)) for m, c in zip(moved, clean))
    assert ratios["auto"] < 0.75 * ratios["half"], ratios


def test_two_leaves_of_different_colour_stay_apart(leaf):
    """Compressed, not erased: a pale leaf and a vivid one of the same shape still differ."""
    pale = saturation(leaf, 0.3)
    a, b = (_spreads(preprocess(img, AUTO), AUTO)[1] for img in (leaf, pale))
    assert b < 0.75 * a


def test_camera_bgr_frames_give_the_same_input(leaf):
    bgr = np.ascontiguousarray(leaf[:, :, ::-1])
    assert np.abs(normalize(bgr, AUTO, bgr=True) - normalize(leaf, AUTO)).max() < 1e-5


def test_a_flat_frame_is_not_stretched_beyond_the_gain_range():
    flat = np.full((48, 48, 3), 120, np.uint8)
    flat[::7, ::5] = 123  # a little sensor noise
    m, _ = colour_transform(flat, AUTO)
    half, _ = colour_transform(flat, HALF)
    # the spread gains multiply half grey world's diagonal by at most the range's top
    assert np.abs(m).sum(axis=1).max() <= AUTO_GAIN_RANGE[1] * np.abs(half).max() * (1 + 1e-6)
    assert np.isfinite(preprocess(flat, AUTO)).all()


def test_the_training_transforms_feed_the_same_input_as_the_device(leaf):
    """The weak transform's crop goes through core.preprocess; the field transform's float crop
    through the same colour map in torch: on an unperturbed crop both equal the device's input."""
    weak = build_train_transform("weak", AUTO)
    field = build_train_transform("field", AUTO)
    crop = leaf[: AUTO.img_size, : AUTO.img_size]
    x = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float() / 255.0
    assert np.abs(field.model_input(x).numpy() - normalize(crop, AUTO)).max() < 1e-4
    torch.manual_seed(0)
    assert weak(leaf).shape == (3, AUTO.img_size, AUTO.img_size)


def test_the_setting_travels_with_the_spec():
    assert PreprocessSpec.from_dict(AUTO.to_dict()) == AUTO
    assert AUTO.to_dict()["colour_constancy"] == "half_auto"
