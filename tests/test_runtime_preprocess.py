"""The runtime's numpy/OpenCV preprocessing equals a torch evaluation transform on real image
files (decode -> resize shorter side -> centre crop -> scale -> normalise -> CHW)."""

import os

import cv2
import numpy as np
import pytest
import torch

from clca_edge.core.preprocess import PreprocessSpec, load_bgr, load_rgb, preprocess
from support.runtime_bundle import leaf_images


def torch_eval_transform(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Reference: the resize through cv2 with the same filter rule (area when shrinking, the spec's
    interpolation when enlarging); crop, scaling, normalisation and layout through torch ops."""
    h, w = rgb.shape[:2]
    scale = spec.resize_size / min(h, w)
    nh, nw = max(spec.resize_size, round(h * scale)), max(spec.resize_size, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}[spec.interpolation]
    resized = torch.from_numpy(cv2.resize(rgb, (nw, nh), interpolation=interp))
    t = resized.permute(2, 0, 1).float().div(255.0)                       # ToTensor
    # The contract (clca_edge/core/preprocess.py) centres with floor((n - size) / 2). torchvision's
    # CenterCrop rounds half to even instead, one pixel apart when the margin is odd (e.g. 99 -> 64:
    # 17 vs 18); the torch reference follows the contract, since training evaluates with it too.
    top, left = (nh - spec.img_size) // 2, (nw - spec.img_size) // 2
    t = t[:, top:top + spec.img_size, left:left + spec.img_size]
    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)
    return ((t - mean) / std).numpy()


@pytest.mark.parametrize("spec", [
    PreprocessSpec(img_size=64, crop_pct=0.875, interpolation="bicubic"),
    PreprocessSpec(img_size=224, crop_pct=0.875, interpolation="bilinear"),   # enlarging path
    PreprocessSpec(img_size=32, crop_pct=1.0, interpolation="bilinear", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
])
def test_runtime_preprocess_matches_torch_on_image_files(tmp_path, spec):
    worst = 0.0
    sizes = [(96, 128), (97, 131), (240, 181), (50, 300)]   # odd and even crop margins, portrait, panorama
    for i, size in enumerate(sizes):
        bgr = leaf_images(1, seed=3 + i, size=size)[0]
        path = tmp_path / f"leaf{i}.{'png' if i % 2 else 'jpg'}"
        cv2.imwrite(str(path), bgr)
        rgb = load_rgb(path)
        got = preprocess(rgb, spec)
        ref = torch_eval_transform(rgb, spec)
        assert got.shape == ref.shape == (3, spec.img_size, spec.img_size) and got.dtype == np.float32
        worst = max(worst, float(np.abs(got - ref).max()))
    assert worst <= 1e-3


def test_bgr_frames_are_converted_like_files(tmp_path):
    """A camera frame (BGR) converted to RGB gives the same tensor as the same image read from disk."""
    spec = PreprocessSpec(img_size=64)
    bgr = leaf_images(1, seed=5)[0]
    cv2.imwrite(str(tmp_path / "f.png"), bgr)
    from_file = preprocess(load_rgb(tmp_path / "f.png"), spec)
    from_frame = preprocess(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), spec)
    assert np.array_equal(from_file, from_frame)
    assert not np.allclose(from_frame, preprocess(bgr, spec))  # channel order matters: the test can fail


@pytest.mark.parametrize("spec", [
    PreprocessSpec(img_size=64, crop_pct=0.875, interpolation="bicubic"),
    PreprocessSpec(img_size=224, crop_pct=0.875, interpolation="bilinear"),   # enlarging
    PreprocessSpec(img_size=32, crop_pct=1.0, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4)),
])
def test_bgr_option_gives_the_identical_tensor(spec):
    """preprocess(bgr, bgr=True) swaps channels while normalising: bit for bit the tensor of
    converting the full frame to RGB first."""
    for i, size in enumerate([(96, 128), (97, 131), (240, 181)]):
        bgr = leaf_images(1, seed=20 + i, size=size)[0]
        ref = preprocess(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), spec)
        got = preprocess(bgr, spec, bgr=True)
        assert got.dtype == np.float32 and got.shape == ref.shape
        assert float(np.abs(got - ref).max()) == 0.0
        assert not np.array_equal(got, preprocess(bgr, spec))   # the flag is what makes them equal


def test_load_bgr_is_opencv_order_of_load_rgb(tmp_path):
    bgr = leaf_images(1, seed=6)[0]
    cv2.imwrite(str(tmp_path / "f.png"), bgr)
    assert np.array_equal(load_bgr(tmp_path / "f.png"), bgr)
    assert np.array_equal(load_rgb(tmp_path / "f.png"), bgr[:, :, ::-1])


def test_a_file_that_cannot_be_read_is_none_not_an_exception(tmp_path, monkeypatch):
    """An existing file whose read fails (permissions, I/O error) is skipped like a corrupt one."""
    path = tmp_path / "f.png"
    cv2.imwrite(str(path), leaf_images(1, seed=6)[0])

    def failing_read(*a, **k):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(np, "fromfile", failing_read)
    assert load_rgb(path) is None and load_bgr(path) is None


def test_an_unreadable_file_mode_000_is_none(tmp_path):
    path = tmp_path / "f.png"
    cv2.imwrite(str(path), leaf_images(1, seed=6)[0])
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: permissions do not stop reads (the monkeypatched test covers it)")
        assert load_rgb(path) is None
    finally:
        path.chmod(0o644)
