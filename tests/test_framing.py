"""Leaf framing (core.preprocess.frame_leaf, ``train --framing leaf``): the crop is centred and
zoomed on a leaf that lies on a plain background, so a zoomed-out or off-centre photo gives the
model nearly the input of a well-framed one; frames without a plain background are left alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clca_edge.core.errors import ConfigError
from clca_edge.core.preprocess import (LEAF_AREA, PreprocessSpec, frame_leaf, leaf_affine, model_crop, preprocess,
                                       resize_center_crop)
from clca_edge.data.augment import build_train_transform
from clca_edge.data.synth import class_traits, draw_leaf
from clca_edge.robustness.suite import BY_NAME

FRAMED = PreprocessSpec(img_size=96, crop_pct=0.9, framing="leaf")
PLAIN = PreprocessSpec(img_size=96, crop_pct=0.9)


def _leaf(seed: int, cls: int = 1) -> np.ndarray:
    return draw_leaf(class_traits(4)[cls], FRAMED.resize_size, np.random.default_rng(seed))


def _mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


@pytest.mark.parametrize("severity", [1, 2, 3])
def test_a_zoomed_out_leaf_is_framed_as_the_well_framed_one(severity):
    """The robustness suite's zoom-out (the leaf shrunk onto its background): framed, the crop is
    within a few grey levels of the framed clean crop (what the zoom-out took in resolution is
    lost), and several times closer than unframed."""
    for seed in range(4):
        leaf = _leaf(seed)
        zoomed = BY_NAME["zoom_out"].apply(leaf, severity, np.random.default_rng(0))
        framed = _mae(model_crop(zoomed, FRAMED), model_crop(leaf, FRAMED))
        plain = _mae(model_crop(zoomed, PLAIN), model_crop(leaf, PLAIN))
        assert framed < 5.0 and framed < plain / 2.5, (seed, framed, plain)


def test_the_framed_leaf_covers_the_stated_area_at_the_centre():
    import cv2

    leaf = BY_NAME["zoom_out"].apply(_leaf(5), 3, np.random.default_rng(0))
    crop = resize_center_crop(leaf, FRAMED)
    m, _ = leaf_affine(crop)
    assert m[0, 0] > 1.5  # zoomed in on the small leaf
    framed = frame_leaf(crop, FRAMED)
    again = leaf_affine(framed)  # framing a framed crop changes (almost) nothing
    assert again is None or (abs(again[0][0, 0] - 1) < 0.1 and np.abs(again[0][:, 2]).max() < 0.1 * 96 + 3)
    # the leaf's pixels (far from the background colour) now sit around the centre
    diff = np.abs(framed.astype(int) - np.median(crop[0], axis=0).astype(int)).max(axis=2) > 40
    ys, xs = np.nonzero(diff)
    assert abs(ys.mean() - 47.5) < 6 and abs(xs.mean() - 47.5) < 6
    assert 0.5 * LEAF_AREA < cv2.countNonZero(diff.astype(np.uint8)) / diff.size < 1.5 * LEAF_AREA


def test_the_zoom_does_not_depend_on_the_leafs_rotation():
    leaf = _leaf(2)
    zooms = [leaf_affine(resize_center_crop(BY_NAME["rotation"].apply(leaf, s, None), FRAMED))
             for s in (1, 2, 3)]
    base = leaf_affine(resize_center_crop(leaf, FRAMED))
    values = [1.0 if z is None else z[0][0, 0] for z in [base, *zooms]]
    assert max(values) - min(values) < 0.08, values


@pytest.mark.parametrize("perturbation", ["noise", "contrast", "jpeg", "blur", "saturation", "exposure_down"])
def test_the_leaf_is_still_found_on_a_poor_photo(perturbation):
    """Sensor noise, low contrast, compression, blur, grey and dark photos: the zoom found stays
    within 15% of the clean photo's (the leaf is not lost, noise is not taken for leaf)."""
    for seed in range(3):
        leaf = _leaf(seed, cls=seed)
        clean = leaf_affine(resize_center_crop(leaf, FRAMED))
        poor = leaf_affine(resize_center_crop(BY_NAME[perturbation].apply(leaf, 3, np.random.default_rng(seed)),
                                              FRAMED))
        z0 = 1.0 if clean is None else clean[0][0, 0]
        z1 = 1.0 if poor is None else poor[0][0, 0]
        assert abs(z1 / z0 - 1) < 0.15, (seed, z0, z1)


def test_frames_without_a_plain_background_are_left_as_they_are():
    rng = np.random.default_rng(0)
    clutter = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)  # no background to find a leaf on
    blank = np.full((96, 96, 3), 120, np.uint8)  # nothing but background
    import cv2

    filled = cv2.resize(_leaf(1)[30:60, 30:60], (96, 96))  # the blade fills the frame
    for img in (clutter, blank, filled):
        assert leaf_affine(img) is None
        assert frame_leaf(img, FRAMED) is img
    assert frame_leaf(_leaf(1), PLAIN) is not None and np.array_equal(frame_leaf(_leaf(1), PLAIN), _leaf(1))


def test_the_float_path_of_training_frames_as_the_uint8_path_of_the_device():
    for seed in range(3):
        crop = resize_center_crop(BY_NAME["zoom_out"].apply(_leaf(seed), 2, None), FRAMED)
        u8 = frame_leaf(crop, FRAMED).astype(np.float32) / 255.0
        f32 = frame_leaf(crop.astype(np.float32) / 255.0, FRAMED)
        assert f32.dtype == np.float32 and np.abs(u8 - f32).max() <= 1.0 / 255 + 1e-6


def test_both_training_transforms_frame_the_crop_the_device_frames():
    """With the crop fixed (crop_pct 1: the random crop is the whole image) and no flip, weak's and
    the field preset's clean share's output is the device's preprocess of the same image."""
    spec = PreprocessSpec(img_size=96, crop_pct=1.0, framing="leaf", colour_constancy="grey_world")
    photo = BY_NAME["zoom_out"].apply(draw_leaf(class_traits(4)[2], 96, np.random.default_rng(1)), 2, None)
    expected = torch.from_numpy(preprocess(photo, spec))
    weak = build_train_transform("weak", spec, hflip=0.0)
    assert torch.allclose(weak(photo), expected, atol=1e-5)
    field = build_train_transform("field", spec, hflip=0.0)
    matched = 0
    for seed in range(12):
        torch.manual_seed(seed)
        clean = float(torch.rand(())) < field.preset.clean_p  # the clean-share draw comes first
        torch.manual_seed(seed)
        out = field(photo)
        if clean:
            matched += 1
            assert torch.allclose(out, expected, atol=1e-5)  # the clean share is the device's own path
    assert matched >= 2


def test_the_setting_is_validated_and_travels_with_the_spec():
    with pytest.raises(ConfigError, match="framing"):
        PreprocessSpec(framing="box")
    assert PreprocessSpec.from_dict(FRAMED.to_dict()) == FRAMED
    assert FRAMED.to_dict()["framing"] == "leaf"
    assert "framing" not in PLAIN.to_dict()  # written as before the option, for older readers
    old = {k: v for k, v in FRAMED.to_dict().items() if k != "framing"}
    assert PreprocessSpec.from_dict(old).framing == "none"


def test_train_defaults_to_it_and_puts_it_in_the_models_spec():
    from clca_edge.data.sources import DataConfig
    from clca_edge.models.config import ModelConfig
    from clca_edge.training.config import TrainConfig
    from clca_edge.training.trainer import preprocess_spec

    model = ModelConfig(backbone="vit_tiny_patch16_224", method="evit", keep_rate=(0.5,), img_size=64)
    cfg = TrainConfig(data=DataConfig("d"), model=model, out="o")
    assert cfg.framing == "leaf" and preprocess_spec(None, cfg, cfg={}).framing == "leaf"
    plain = TrainConfig(data=DataConfig("d"), model=model, out="o", framing="none")
    assert preprocess_spec(None, plain, cfg={}).framing == "none"
    with pytest.raises(ConfigError, match="--framing"):
        TrainConfig(data=DataConfig("d"), model=model, out="o", framing="auto")


def test_a_framing_model_deploys_and_the_device_frames_its_photos(tmp_path):
    """Checkpoint with a leaf-framing spec -> deploy -> the bundle's preprocess.json says leaf ->
    `predict` (guard on and off) gives the checkpoint's own probabilities for a zoomed-out photo,
    computed through core.preprocess with framing."""
    import json

    import cv2
    from click.testing import CliRunner

    from clca_edge.cli import main
    from clca_edge.core.confidence import softmax
    from clca_edge.core.preprocess import load_rgb
    from conftest import TINY_IMG
    from support.workspace import deploy_with_spec

    model, meta, out, written, temperature = deploy_with_spec(tmp_path, PreprocessSpec(img_size=TINY_IMG,
                                                                                       framing="leaf"))
    assert meta.preprocess.framing == "leaf"
    assert written["framing"] == "leaf"

    leaf = draw_leaf(class_traits(4)[1], 80, np.random.default_rng(4))
    photo = tmp_path / "far.png"
    cv2.imwrite(str(photo), cv2.cvtColor(BY_NAME["zoom_out"].apply(leaf, 3, None), cv2.COLOR_RGB2BGR))
    rgb = load_rgb(photo)
    assert leaf_affine(resize_center_crop(rgb, meta.preprocess)) is not None  # framing acts on it
    with torch.no_grad():
        logits = model(torch.from_numpy(preprocess(rgb, meta.preprocess))[None]).numpy()[0]
    expect = softmax(logits, temperature)
    for quality in ("on", "off"):
        res = CliRunner().invoke(main, ["predict", "--bundle", str(out), "--json", "--quality", quality, str(photo)])
        assert res.exit_code == 0, res.output
        top = json.loads(res.stdout)["predictions"][0]["topk"][0]
        assert top["class"] == meta.class_names[int(expect.argmax())]
        assert abs(top["conf"] - float(expect.max())) < 1e-4
