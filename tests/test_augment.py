"""Training augmentation presets: the field transform is deterministic under torch's seed alone,
fills uncovered pixels with the background colour, and a field run resumes exactly; the preset is
recorded in the checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clca_edge.core.errors import ConfigError
from clca_edge.core.preprocess import PreprocessSpec, preprocess
from clca_edge.data.augment import PRESETS, AugmentPreset, FieldTransform, build_train_transform, get_preset
from clca_edge.data.transforms import EvalTransform, TrainTransform
from support.training import leafish as _leafish, seeded_draws

SPEC = PreprocessSpec(img_size=48, crop_pct=0.875, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def test_presets_are_data_and_pick_their_transform():
    assert set(PRESETS) == {"field", "weak", "none"}
    assert json.loads(json.dumps(get_preset("field").to_dict()))["rotate"] == 180.0
    assert isinstance(build_train_transform("weak", SPEC), TrainTransform)
    assert isinstance(build_train_transform("none", SPEC), EvalTransform)
    assert isinstance(build_train_transform("field", SPEC), FieldTransform)
    with pytest.raises(ConfigError, match="--augment 'strong'"):
        get_preset("strong")


def test_field_transform_draws_only_from_torchs_generator():
    rgb = _leafish()
    t = build_train_transform("field", SPEC)

    a, b, c = (seeded_draws(t, rgb, ts, os, 8) for ts, os in ((0, 1), (0, 2), (1, 1)))
    assert all(x.shape == (3, 48, 48) and x.dtype == torch.float32 and torch.isfinite(x).all() for x in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # numpy/python seeds change nothing
    assert not all(torch.equal(x, y) for x, y in zip(a, c))  # torch's seed changes everything
    assert len({x.numpy().tobytes() for x in a}) == 8  # every draw differs


def test_zoom_out_and_rotation_fill_with_the_border_colour_not_black():
    rgb = _leafish()
    preset = AugmentPreset(name="t", description="zoom only", random_crop=False, flip=False, rotate=45.0,
                           zoom=(0.5, 0.5))
    torch.manual_seed(0)
    out = FieldTransform(SPEC, preset)(rgb).permute(1, 2, 0).numpy() * 0.5 + 0.5  # undo normalisation
    soil = np.array([120, 90, 60]) / 255
    for corner in (out[0, 0], out[0, -1], out[-1, 0], out[-1, -1], out[1, 24]):
        assert np.abs(corner - soil).max() < 0.04, corner
    assert np.abs(out[24, 24] - np.array([40, 160, 50]) / 255).max() < 0.05  # the leaf is still in the middle


def _is_clean_crop(x: torch.Tensor, rgb: np.ndarray) -> bool:
    """True when ``x`` is an img_size crop of the resized photo, flipped or not, nothing else."""
    from clca_edge.core.preprocess import normalize, resize_shorter

    full = torch.from_numpy(normalize(resize_shorter(rgb, SPEC), SPEC))
    size, (h, w) = x.shape[-1], full.shape[-2:]
    for img in (x, x.flip(-1)):
        for top in range(h - size + 1):
            for left in range(w - size + 1):
                if torch.allclose(full[:, top:top + size, left:left + size], img, atol=1e-5):
                    return True
    return False


def test_clean_share_gets_only_crop_and_flip():
    rgb = _leafish()
    field = get_preset("field")
    torch.manual_seed(0)
    always = FieldTransform(SPEC, AugmentPreset(**{**field.__dict__, "name": "t", "clean_p": 1.0}))
    assert all(_is_clean_crop(always(rgb), rgb) for _ in range(6))
    torch.manual_seed(0)
    part = FieldTransform(SPEC, AugmentPreset(**{**field.__dict__, "name": "t", "clean_p": 0.4}))
    share = np.mean([_is_clean_crop(part(rgb), rgb) for _ in range(60)])
    assert 0.2 <= share <= 0.6, share
    torch.manual_seed(0)
    never = FieldTransform(SPEC, AugmentPreset(**{**field.__dict__, "name": "t", "clean_p": 0.0}))
    assert not any(_is_clean_crop(never(rgb), rgb) for _ in range(6))


def test_hue_shift_is_torchvisions_hue_adjustment():
    """The OpenCV hue step gives torchvision's adjust_hue for the factor it drew."""
    import torchvision.transforms.v2.functional as F

    from clca_edge.core.preprocess import resize_center_crop

    rgb = _leafish()
    preset = AugmentPreset(name="t", description="hue only", random_crop=False, flip=False, hue=0.05, hue_p=1.0)
    base = torch.from_numpy(np.ascontiguousarray(resize_center_crop(rgb, SPEC))).permute(2, 0, 1).float() / 255
    for seed in range(4):
        torch.manual_seed(seed)
        got = FieldTransform(SPEC, preset)(rgb)
        torch.manual_seed(seed)
        torch.rand(())  # the apply-or-not draw
        factor = float((2 * torch.rand(()) - 1) * 0.05)
        expected = (F.adjust_hue(base, factor) - 0.5) / 0.5
        assert abs(factor) > 1e-3 and torch.allclose(got, expected, atol=1e-4), seed
        assert not torch.allclose(got, (base - 0.5) / 0.5, atol=1e-2)


def test_no_augmentation_is_the_evaluation_tensor():
    rgb = _leafish(size=70)
    assert np.array_equal(build_train_transform("none", SPEC)(rgb).numpy(), preprocess(rgb, SPEC))


def test_a_field_run_resumes_exactly_and_records_its_preset(tmp_path):
    from clca_edge.training.checkpoint import read_checkpoint_meta
    from clca_edge.training.trainer import train
    from support.training import killed_resumed_and_whole, small_leaves, weights_close
    from test_train import tiny_config

    data = small_leaves(tmp_path / "data")
    a, b, _ = killed_resumed_and_whole(lambda out, **k: tiny_config(data, out, **k), tmp_path,
                                       epochs=2, augment="field")   # killed mid-way through the second epoch
    assert weights_close(a / "last.safetensors", b / "last.safetensors")
    meta = read_checkpoint_meta(a / "last.safetensors")
    assert meta.extra["augment"] == get_preset("field").to_dict()
    assert meta.extra["train_config"]["augment"] == "field"
    # The augmentation is part of what a resume must not change.
    with pytest.raises(ConfigError, match="augment: 'field' -> 'weak'"):
        train(tiny_config(data, tmp_path / "a", epochs=2, augment="weak", resume=True))


def test_a_resumed_run_keeps_the_strengths_it_started_with(tmp_path, monkeypatch, caplog):
    """A run started by a version whose field preset had other strengths (no greyscale here)
    resumes with those, recorded in its checkpoint: the same weights as an uninterrupted run under
    that version, and the retuned fields are named."""
    import dataclasses

    from clca_edge.data.synth import SynthConfig, write_synthetic_dataset
    from clca_edge.training.checkpoint import read_checkpoint_meta
    from clca_edge.training.trainer import train
    from support.training import Killed as _Killed, weights_close as _weights_close
    from test_train import tiny_config

    def kill(epoch, step):
        if epoch == 1 and step == 0:
            raise _Killed

    data = tmp_path / "data"
    write_synthetic_dataset(data, SynthConfig(classes=3, per_class=20, size=64, seed=5))
    today = get_preset("field")
    assert today.grayscale_p > 0
    before = dataclasses.replace(today, grayscale_p=0.0)
    monkeypatch.setitem(PRESETS, "field", before)
    with pytest.raises(_Killed):
        train(tiny_config(data, tmp_path / "a", epochs=2, augment="field"), step_hook=kill)
    train(tiny_config(data, tmp_path / "b", epochs=2, augment="field"))
    monkeypatch.setitem(PRESETS, "field", today)
    with caplog.at_level("WARNING"):
        train(tiny_config(data, tmp_path / "a", epochs=2, augment="field", resume=True))
    assert "strengths it started with" in caplog.text and "grayscale_p" in caplog.text
    assert _weights_close(tmp_path / "a" / "last.safetensors", tmp_path / "b" / "last.safetensors")
    assert read_checkpoint_meta(tmp_path / "a" / "last.safetensors").extra["augment"] == before.to_dict()
    # An older record (without the later field) reads with its default; an unknown field is refused.
    old = {k: v for k, v in before.to_dict().items() if k != "grayscale_p"}
    assert AugmentPreset.from_dict(old) == before
    with pytest.raises(ConfigError, match="unknown field"):
        AugmentPreset.from_dict({**old, "fog": 1.0})


def test_paper_recipes_keep_the_papers_weak_augmentation():
    from pathlib import Path

    from clca_edge.cli.train_cmds import recipe_keys
    from clca_edge.training.config import load_recipe

    recipes = sorted((Path(__file__).parent.parent / "train").glob("*.yaml"))
    assert recipes and all(load_recipe(r, recipe_keys())["augment"] == "weak" for r in recipes)
