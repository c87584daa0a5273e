"""Grey-world colour constancy (core.preprocess, ``train --colour-constancy grey_world``): a camera's
white balance or exposure gain cancels in the model's input, on every path that feeds a model
(the numpy contract, the weak and field training transforms, camera BGR frames), and the setting
travels with the preprocessing spec."""

import numpy as np
import pytest
import torch

from clca_edge.core.errors import ConfigError
from clca_edge.core.preprocess import PreprocessSpec, channel_gains, preprocess
from clca_edge.data.augment import build_train_transform
from clca_edge.data.synth import class_traits, draw_leaf
from clca_edge.robustness.suite import BY_NAME

GREY = PreprocessSpec(img_size=64, colour_constancy="grey_world")
PLAIN = PreprocessSpec(img_size=64)


@pytest.fixture(scope="module")
def leaf() -> np.ndarray:
    return draw_leaf(class_traits(4)[1], GREY.resize_size, np.random.default_rng(3))


@pytest.mark.parametrize("name", ["wb_warm", "wb_cool", "exposure_down", "exposure_up"])
@pytest.mark.parametrize("severity", [1, 2, 3])
def test_a_channel_gain_cancels_with_grey_world_and_not_without(leaf, name, severity):
    shifted = BY_NAME[name].apply(leaf, severity, np.random.default_rng(0))
    diff = {cc: float(np.abs(preprocess(leaf, s) - preprocess(shifted, s)).mean())
            for cc, s in (("grey", GREY), ("plain", PLAIN))}
    # what is left is uint8 rounding (and clipping of the brightest pixels at x1.7)
    assert diff["grey"] < 0.04, diff
    assert diff["plain"] > 5 * diff["grey"] and diff["plain"] > 0.05, diff


def test_grey_world_keeps_colour_relative_to_the_frame(leaf):
    """Not a grey-scale conversion: the channels still differ, and a leaf whose tint differs
    (another cultivar's hue, same background) still gives another input."""
    x = preprocess(leaf, GREY)
    assert np.abs(x[0] - x[1]).mean() > 0.1
    other = draw_leaf(class_traits(4)[2], GREY.resize_size, np.random.default_rng(3))
    assert np.abs(preprocess(other, GREY) - x).mean() > 0.05


def test_every_channel_mean_becomes_the_specs_mean(leaf):
    x = preprocess(leaf, GREY)
    assert np.abs(x.mean(axis=(1, 2))).max() < 1e-4  # (mean - mean) / std
    assert np.abs(preprocess(leaf, PLAIN).mean(axis=(1, 2))).max() > 0.3


def test_camera_frames_in_bgr_get_the_same_gains(leaf):
    bgr = np.ascontiguousarray(leaf[..., ::-1])
    assert np.array_equal(preprocess(bgr, GREY, bgr=True), preprocess(leaf, GREY))
    assert np.allclose(channel_gains(bgr, GREY, bgr=True), channel_gains(leaf, GREY))


def test_a_black_frame_is_not_stretched_to_full_scale():
    rng = np.random.default_rng(0)
    dark = rng.integers(0, 3, (80, 80, 3), dtype=np.uint8)  # sensor noise in the dark
    gains = channel_gains(dark, GREY)
    assert np.all(gains <= 255 * max(GREY.mean) / 4.0 + 1e-9)
    x = preprocess(dark, GREY)
    assert np.isfinite(x).all()
    assert x.max() < (3 * gains.max() / 255 - min(GREY.mean)) / min(GREY.std) + 1e-4


def test_the_weak_training_transform_applies_it(leaf):
    """Same seed, same crop and flip: a white-balance shift of the photo changes the grey-world
    input 5x less than the plain one, and every channel's mean is the spec's."""
    shifted = BY_NAME["wb_cool"].apply(leaf, 2, np.random.default_rng(0))
    diffs = {}
    for name, spec in (("grey", GREY), ("plain", PLAIN)):
        t = build_train_transform("weak", spec)
        diffs[name] = []
        for seed in range(4):
            torch.manual_seed(seed)
            a = t(leaf)
            torch.manual_seed(seed)
            diffs[name].append(float((a - t(shifted)).abs().mean()))
            means = float(a.mean(dim=(1, 2)).abs().max())
            assert means < 1e-4 if name == "grey" else means > 0.05
    assert np.mean(diffs["grey"]) < np.mean(diffs["plain"]) / 5, diffs


def test_the_field_transform_applies_it_after_the_augmentation(leaf):
    """Grey world comes last, on the augmented crop (the device applies it to what the camera
    delivered): with the same draws, the grey-world output is the plain output re-balanced."""
    grey, plain = build_train_transform("field", GREY), build_train_transform("field", PLAIN)
    mean, std = torch.tensor(GREY.mean)[:, None, None], torch.tensor(GREY.std)[:, None, None]
    for seed in range(6):
        torch.manual_seed(seed)
        g = grey(leaf)
        torch.manual_seed(seed)
        x = plain(leaf) * std + mean  # the augmented crop in [0, 1]
        expected = (x * mean / x.mean(dim=(1, 2), keepdim=True) - mean) / std
        assert torch.allclose(g, expected, atol=1e-4)
        assert float(g.mean(dim=(1, 2)).abs().max()) < 1e-4


def test_the_setting_is_validated_and_travels_with_the_spec():
    with pytest.raises(ConfigError, match="colour_constancy"):
        PreprocessSpec(colour_constancy="retinex")
    assert PreprocessSpec.from_dict(GREY.to_dict()) == GREY
    assert GREY.to_dict()["colour_constancy"] == "grey_world"
    assert "colour_constancy" not in PLAIN.to_dict()  # written as before the option, for older readers
    old = {k: v for k, v in GREY.to_dict().items() if k != "colour_constancy"}
    assert PreprocessSpec.from_dict(old).colour_constancy == "none"  # checkpoints/bundles from before it


def test_train_config_puts_it_in_the_models_spec():
    from clca_edge.data.sources import DataConfig
    from clca_edge.models.config import ModelConfig
    from clca_edge.training.config import TrainConfig
    from clca_edge.training.trainer import preprocess_spec

    model = ModelConfig(backbone="vit_tiny_patch16_224", method="evit", keep_rate=(0.5,), img_size=64)
    cfg = TrainConfig(data=DataConfig("d"), model=model, out="o", colour_constancy="grey_world")
    assert preprocess_spec(None, cfg, cfg={}).colour_constancy == "grey_world"
    with pytest.raises(ConfigError, match="--colour-constancy"):
        TrainConfig(data=DataConfig("d"), model=model, out="o", colour_constancy="auto")


def test_a_grey_world_model_deploys_and_the_device_applies_it(tmp_path):
    """Checkpoint with a grey-world spec -> deploy (fp32, gate) -> the bundle's preprocess.json
    says grey_world -> `predict` on the device side gives the checkpoint's own probabilities, and a
    white-balance-shifted photo the same class and nearly the same confidence."""
    import json

    import cv2
    from click.testing import CliRunner

    from clca_edge.cli import main
    from clca_edge.core.confidence import softmax
    from clca_edge.core.preprocess import load_rgb
    from conftest import TINY_IMG
    from support.workspace import deploy_with_spec

    model, meta, out, written, temperature = deploy_with_spec(
        tmp_path, PreprocessSpec(img_size=TINY_IMG, colour_constancy="grey_world"))
    assert meta.preprocess.colour_constancy == "grey_world"
    assert written["colour_constancy"] == "grey_world"

    photo = sorted((tmp_path / "eval").rglob("*.png"))[0]
    shifted = tmp_path / "shifted.png"
    bgr = cv2.imread(str(photo))
    cv2.imwrite(str(shifted), np.clip(bgr * np.array([1.15, 1.0, 0.85]), 0, 255).astype(np.uint8))  # B, G, R
    res = CliRunner().invoke(main, ["predict", "--bundle", str(out), "--json", str(photo), str(shifted)])
    assert res.exit_code == 0, res.output
    preds = json.loads(res.stdout)["predictions"]
    with torch.no_grad():
        logits = model(torch.from_numpy(preprocess(load_rgb(photo), meta.preprocess))[None]).numpy()[0]
    expect = softmax(logits, temperature)
    top = preds[0]["topk"][0]
    assert top["class"] == meta.class_names[int(expect.argmax())]
    assert abs(top["conf"] - float(expect.max())) < 1e-4
    assert preds[1]["topk"][0]["class"] == top["class"]
    assert abs(preds[1]["topk"][0]["conf"] - top["conf"]) < 0.02

