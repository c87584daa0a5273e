"""Consistency training (issue 24): each image's clean crop carries the label and the same crop
through the field preset is asked for the same prediction (training.losses); the pairs are drawn
from torch's generator alone, so a consistency run is reproducible and exact on --resume. Also
the exposure normalisation of the input and the guard's refusal of pure sensor noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clca_edge.core.errors import ConfigError
from clca_edge.core.imageops import channel_gain
from clca_edge.core.preprocess import PreprocessSpec, preprocess
from clca_edge.data.augment import ConsistencyViews, get_preset
from clca_edge.data.transforms import TrainTransform
from clca_edge.training.losses import js_consistency
from support.training import leafish as _leafish, seeded_draws

SPEC = PreprocessSpec(img_size=48, crop_pct=0.875, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def test_the_clean_view_is_the_weak_transforms_and_the_other_is_perturbed():
    rgb = _leafish()
    views = ConsistencyViews(SPEC, get_preset("field"))
    weak = TrainTransform(SPEC)
    for seed in range(6):
        torch.manual_seed(seed)
        pair = views(rgb)
        torch.manual_seed(seed)
        assert pair.shape == (2, 3, 48, 48) and pair.dtype == torch.float32
        assert torch.equal(pair[0], weak(rgb))  # the labelled view: exactly the paper's crop and flip
        assert not torch.equal(pair[0], pair[1])  # the field view is always perturbed (no clean share)


def test_pairs_draw_only_from_torchs_generator():
    rgb = _leafish()
    views = ConsistencyViews(SPEC, get_preset("field"))

    a, b, c = (seeded_draws(views, rgb, ts, os, 6) for ts, os in ((0, 1), (0, 2), (1, 1)))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_js_consistency_is_zero_when_views_agree_and_bounded():
    torch.manual_seed(0)
    a = torch.randn(8, 5, requires_grad=True)
    assert float(js_consistency(a, a).detach()) == pytest.approx(0.0, abs=1e-6)
    b = torch.randn(8, 5)
    assert float(js_consistency(a, b).detach()) == pytest.approx(float(js_consistency(b, a).detach()), rel=1e-5)
    far = torch.tensor([[50.0, -50.0]]), torch.tensor([[-50.0, 50.0]])
    assert float(js_consistency(*far)) == pytest.approx(math.log(2), rel=1e-3)  # its bound for two views
    js_consistency(a, b).backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_a_consistency_run_resumes_exactly_and_records_the_weight(tmp_path):
    from clca_edge.training.checkpoint import read_checkpoint_meta
    from clca_edge.training.trainer import train
    from support.training import killed_resumed_and_whole, small_leaves, weights_close as _weights_close
    from test_train import tiny_config

    data = small_leaves(tmp_path / "data")
    # the weight ramps over the first half of the run: the resumed half starts where it stood
    kw = dict(epochs=2, augment="field", colour_constancy="exposure", consistency=6.0, consistency_ramp=0.5)
    _, _, full = killed_resumed_and_whole(lambda out, **k: tiny_config(data, out, **k), tmp_path, **kw)
    assert _weights_close(tmp_path / "a" / "last.safetensors", tmp_path / "b" / "last.safetensors")
    assert all(math.isfinite(r["train_loss"]) for r in full.history)
    meta = read_checkpoint_meta(tmp_path / "a" / "last.safetensors")
    assert meta.extra["train_config"]["consistency"] == 6.0
    assert meta.preprocess.colour_constancy == "exposure"
    # Another weight trains another model: a resume refuses it.
    with pytest.raises(ConfigError, match="consistency: 6.0 -> 0.0"):
        train(tiny_config(data, tmp_path / "a", **{**kw, "consistency": 0.0}, resume=True))
    # The same seed without consistency trains another model.
    train(tiny_config(data, tmp_path / "c", **{**kw, "consistency": 0.0}))
    assert not _weights_close(tmp_path / "c" / "last.safetensors", tmp_path / "b" / "last.safetensors")


def test_a_negative_consistency_weight_or_a_ramp_beyond_the_run_is_refused():
    from test_train import tiny_config

    with pytest.raises(ConfigError, match="--consistency -1"):
        tiny_config("d", "o", consistency=-1.0)
    with pytest.raises(ConfigError, match="--consistency-ramp 1.5"):
        tiny_config("d", "o", consistency_ramp=1.5)


def test_the_consistency_weight_ramps_with_the_schedules_steps():
    from types import SimpleNamespace

    from clca_edge.training.epoch import Stepper
    from test_train import tiny_config

    cfg = tiny_config("d", "o", consistency=12.0, consistency_ramp=0.5)
    sched = SimpleNamespace(last_epoch=0)
    st = Stepper(None, None, None, sched, None, cfg, torch.device("cpu"), None, views=2, total_steps=100)
    weights = []
    for step in (0, 25, 50, 99):
        sched.last_epoch = step
        weights.append(st.consistency_weight())
    assert weights == [0.0, 6.0, 12.0, 12.0]


@pytest.mark.parametrize("gain", [0.6, 1.4, 1.7])
def test_exposure_normalisation_cancels_a_gain_even_with_clipped_highlights(gain):
    spec = PreprocessSpec(img_size=48, colour_constancy="exposure")
    rgb = _leafish(size=54)  # the spec's resize: the crop is rgb[3:51, 3:51]
    rgb[:10] = 250  # a bright sky that clips at any gain above 1
    clean, lit = preprocess(rgb, spec), preprocess(channel_gain(rgb, (gain,) * 3), spec)
    unclipped = np.broadcast_to((rgb[3:51, 3:51].max(axis=2) * gain < 254)[None], clean.shape)
    # where nothing clipped the input is the same to a rounding of the light's gain
    assert np.abs(clean - lit)[unclipped].max() < 0.04
    # and the leaf keeps its colour (one gain for all channels, unlike grey world)
    leaf = clean[:, 20:36, 20:36].mean(axis=(1, 2))
    assert leaf[1] > leaf[0] + 0.5 and leaf[1] > leaf[2] + 0.5


def test_the_guard_refuses_pure_sensor_noise_and_not_a_noisy_leaf():
    from clca_edge.capture.quality import OUT_OF_DISTRIBUTION, QualityGuard, noise_share
    from clca_edge.core.image_stats import measure
    from clca_edge.core.preprocess import resize_center_crop
    from clca_edge.data.synth import class_traits, draw_leaf

    guard = QualityGuard.for_bundle(None)
    rng = np.random.default_rng(0)
    for frame in (rng.integers(0, 256, (96, 96, 3), dtype=np.uint8),
                  np.clip(rng.normal(128, 40, (96, 96, 3)), 0, 255).astype(np.uint8),  # high gain, no scene
                  np.clip(rng.normal(40, 12, (96, 96, 3)), 0, 255).astype(np.uint8)):  # a capped lens
        assert noise_share(measure(frame)) > 0.9
        assert guard.check(frame).reason == OUT_OF_DISTRIBUTION
    spec = PreprocessSpec(img_size=96)
    for i, traits in enumerate(class_traits(4, seed=0)):
        leaf = resize_center_crop(draw_leaf(traits, 110, np.random.default_rng(i)), spec)
        noisy = np.clip(leaf + rng.normal(0, 12, leaf.shape), 0, 255).astype(np.uint8)
        assert guard.check(leaf).ok and guard.check(noisy).ok, (noise_share(measure(leaf)), noise_share(measure(noisy)))


def test_half_grey_world_halves_a_cast_and_keeps_the_leafs_tint():
    from clca_edge.core.preprocess import channel_gains

    half = PreprocessSpec(img_size=48, colour_constancy="half_grey_world")
    grey = PreprocessSpec(img_size=48, colour_constancy="grey_world")
    plain = PreprocessSpec(img_size=48)
    rgb = _leafish(size=54)
    assert np.allclose(channel_gains(rgb, half), np.sqrt(channel_gains(rgb, grey)))
    warm = channel_gain(rgb, (1.15, 1.0, 0.85))  # the suite's wb_warm at severity 2
    moved = {name: np.abs(preprocess(warm, s) - preprocess(rgb, s)).mean()
             for name, s in (("none", plain), ("half", half), ("grey", grey))}
    assert moved["grey"] < moved["half"] < 0.75 * moved["none"], moved
    # a yellowed leaf filling the frame stays told apart from a green one (grey world maps both to grey)
    green = np.full((54, 54, 3), (60, 140, 50), np.uint8)
    yellow = np.full((54, 54, 3), (150, 150, 40), np.uint8)
    gap = {name: np.abs(preprocess(green, s) - preprocess(yellow, s)).mean() for name, s in (("half", half), ("grey", grey))}
    assert gap["grey"] < 0.05 < gap["half"], gap


def test_augmix_views_mix_field_chains_into_the_clean_crop_from_torchs_generator():
    rgb = _leafish()
    views = ConsistencyViews(SPEC, get_preset("field"), mix_width=3)
    weak = TrainTransform(SPEC)
    assert views.views == 3 and ConsistencyViews(SPEC, get_preset("field")).views == 2
    a, b = (seeded_draws(views, rgb, 0, other, 4) for other in (0, 1))
    torch.manual_seed(0)
    assert torch.equal(a[0][0], weak(rgb))  # the labelled view is the paper's crop and flip
    for x, y in zip(a, b):
        assert x.shape == (3, 3, 48, 48) and torch.equal(x, y)
        assert not torch.equal(x[1], x[2]) and not torch.equal(x[0], x[1])
    # a Beta(1, 1) share of the chains: on average the mixed views lie nearer the clean crop than a chain
    single = ConsistencyViews(SPEC, get_preset("field"))
    torch.manual_seed(0)
    chain = np.mean([float((p[1] - p[0]).abs().mean()) for p in (single(rgb) for _ in range(24))])
    torch.manual_seed(0)
    mixed = np.mean([float((t[1:] - t[0]).abs().mean()) for t in (views(rgb) for _ in range(24))])
    assert mixed < chain, (mixed, chain)


def test_an_augmix_run_resumes_exactly_and_records_the_width(tmp_path):
    from clca_edge.training.checkpoint import read_checkpoint_meta
    from clca_edge.training.trainer import train
    from support.training import killed_resumed_and_whole, small_leaves, weights_close as _weights_close
    from test_train import tiny_config

    data = small_leaves(tmp_path / "data")
    kw = dict(epochs=2, augment="field", consistency=6.0, consistency_ramp=0.5, consistency_mix=3)
    killed_resumed_and_whole(lambda out, **k: tiny_config(data, out, **k), tmp_path, **kw)
    assert _weights_close(tmp_path / "a" / "last.safetensors", tmp_path / "b" / "last.safetensors")
    assert read_checkpoint_meta(tmp_path / "a" / "last.safetensors").extra["train_config"]["consistency_mix"] == 3
    with pytest.raises(ConfigError, match="consistency_mix: 3 -> 0"):
        train(tiny_config(data, tmp_path / "a", **{**kw, "consistency_mix": 0}, resume=True))
    with pytest.raises(ConfigError, match="--consistency-mix -1"):
        tiny_config(data, tmp_path / "c", consistency_mix=-1)
