"""resize_center_crop resizes only the part of a frame its crop keeps where that is exact
(core/area_crop.py): byte-equal to resizing the whole frame and cropping, for camera sizes, odd
sizes, every interpolation, and where no exact cut exists (the whole frame is resized)."""

import cv2
import numpy as np
import pytest

from clca_edge.core import area_crop
from clca_edge.core.area_crop import crop_plan
from clca_edge.core.preprocess import PreprocessSpec, resize_center_crop

FRAMES = [(480, 640), (720, 1280), (1080, 1920), (481, 643), (333, 517), (600, 800), (1000, 1000), (257, 300),
          (299, 299), (375, 500), (512, 512), (240, 320), (97, 131), (64, 48), (1944, 2592)]
SPECS = [PreprocessSpec(img_size=224), PreprocessSpec(img_size=224, crop_pct=1.0),
         PreprocessSpec(img_size=96, crop_pct=0.875, interpolation="bicubic"), PreprocessSpec(img_size=64, crop_pct=0.5),
         PreprocessSpec(img_size=160, crop_pct=0.9), PreprocessSpec(img_size=199, crop_pct=0.77, interpolation="bicubic"),
         PreprocessSpec(img_size=384, crop_pct=1.0)]


def full_frame_crop(img: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Before the cut: the whole frame resized (area when shrinking, the spec's filter when
    enlarging), then the centred square."""
    h, w = img.shape[:2]
    scale = spec.resize_size / min(h, w)
    nh, nw = max(spec.resize_size, round(h * scale)), max(spec.resize_size, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}[spec.interpolation]
    resized = cv2.resize(img, (nw, nh), interpolation=interp)
    top, left = (nh - spec.img_size) // 2, (nw - spec.img_size) // 2
    return resized[top:top + spec.img_size, left:left + spec.img_size]


@pytest.mark.parametrize("shape", FRAMES + [(w, h) for h, w in FRAMES if h != w])
def test_the_crop_is_byte_equal_to_the_full_frame_resize(shape):
    rng = np.random.default_rng(sum(shape))
    img = rng.integers(0, 256, shape + (3,), dtype=np.uint8)   # noise: any weight difference shows
    for spec in SPECS:
        got = resize_center_crop(img, spec)
        assert got.shape == (spec.img_size, spec.img_size, 3)
        assert np.array_equal(got, full_frame_crop(img, spec)), (shape, spec)


def test_camera_frames_are_cut_and_what_each_keeps():
    def kept(plan):
        return plan.rows.src0, plan.rows.src1, plan.cols.src0, plan.cols.src1

    # 640x480 -> 341x256: rows from a whole pixel (15/8: output 16 is source row 30) to one past the
    # crop's last cell; 640/341 repeats only over the whole width: columns from 0
    assert kept(crop_plan(480, 640, 256, 341, 224)) == (30, 451, 0, 531)
    # 1280x720 -> 455x256: 45/16 and 256/91, both axes cut on both sides
    assert kept(crop_plan(720, 1280, 256, 455, 224)) == (45, 676, 256, 955)
    # 1920x1080 -> 455x256: the crop's first row (16) is inside the first period (32): rows from 0
    assert kept(crop_plan(1080, 1920, 256, 455, 224)) == (0, 1014, 384, 1432)


def test_no_cut_resizes_the_whole_frame(monkeypatch):
    # the crop is the whole resized square: nothing to leave out
    assert crop_plan(1000, 1000, 224, 224, 224) is None
    calls = []
    real = cv2.resize
    monkeypatch.setattr(cv2, "resize", lambda img, size, **k: calls.append(img.shape) or real(img, size, **k))
    img = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    resize_center_crop(img, PreprocessSpec(img_size=224, crop_pct=1.0))
    assert calls == [(1000, 1000, 3)]
    # enlarging (bilinear/bicubic) is never cut
    assert crop_plan(100, 120, 256, 307, 224) is None


def test_a_cut_whose_weights_differ_by_one_bit_is_refused(monkeypatch):
    """The cut is taken only where OpenCV's weight tables of the kept pixels match to the bit."""
    real = area_crop._area_table

    def off_by_one_ulp(src, inv_scale, first, count):
        taps = real(src, inv_scale, first, count)
        if src != 720:   # the cut's table, not the full axis's
            s, wt = taps[0][0]
            taps[0][0] = (s, np.nextafter(wt, np.float32(2)))
        return taps

    monkeypatch.setattr(area_crop, "_area_table", off_by_one_ulp)
    cut = area_crop._axis(720, 256, 16, 224)
    assert (cut.src0, cut.src1, cut.keep) == (0, 720, 16)
    monkeypatch.undo()
    cut = area_crop._axis(720, 256, 16, 224)
    assert (cut.src0, cut.src1, cut.keep) == (45, 676, 0)


def test_any_cut_of_an_axis_matches():
    """Random axes (one row tall): the planned cut equals the full resize wherever it is taken."""
    rng = np.random.default_rng(5)
    taken = 0
    for _ in range(300):
        src = int(rng.integers(20, 700))
        dst = int(rng.integers(4, src))
        size = int(rng.integers(1, dst + 1))
        start = (dst - size) // 2
        cut = area_crop._axis(src, dst, start, size)
        row = rng.integers(0, 256, (1, src, 3), dtype=np.uint8)
        full = cv2.resize(row, (dst, 1), interpolation=cv2.INTER_AREA)[:, start:start + size]
        part = cv2.resize(row[:, cut.src0:cut.src1], None, fx=cut.inv_scale, fy=1.0, interpolation=cv2.INTER_AREA)
        assert np.array_equal(part[:, cut.keep:cut.keep + size], full), (src, dst, size, cut)
        taken += cut.src1 - cut.src0 < src
    assert taken > 200


@pytest.mark.parametrize("shape,dtype", [((480, 640), np.uint8), ((480, 640, 4), np.uint8),
                                         ((720, 1280, 3), np.float32), ((481, 643, 3), np.uint16)])
def test_grey_four_channel_and_float_images_too(shape, dtype):
    img = (np.random.default_rng(3).random(shape) * 255).astype(dtype)
    spec = PreprocessSpec(img_size=224)
    assert np.array_equal(resize_center_crop(img, spec), full_frame_crop(img, spec))
