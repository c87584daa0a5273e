"""The centre crop of an area-filter resize, computed from the part of the frame it keeps, pixel
for pixel equal to resizing the whole frame and cropping (``core/preprocess.py:resize_center_crop``).

OpenCV's INTER_AREA shrink (``cv::resize``, ``computeResizeAreaTab`` and the area invoker) gives
each output column the source columns it covers and float weights computed from ``dx * scale``
alone (``scale = 1 / inv_scale``, ``inv_scale = dst / src`` in doubles), and sums them in a fixed
order; rows likewise. Resized on its own at the same ``inv_scale`` (given to ``cv2.resize`` as
``fx``/``fy``), a part of the frame gives its outputs the same weights where its first output's
source position is a whole pixel (for ``src / dst = p / q`` in lowest terms, the weights repeat
every ``q`` outputs, ``p`` source pixels) and it reaches past the last kept output's cell; up to
the last bit of the doubles they come from. Whether they are the same to the last bit is not left
to argument: ``_axis`` recomputes both weight tables as that OpenCV code does and cuts an axis
only where every kept pixel's weights match; otherwise the axis is resized whole. A 640x480 frame
resized to 341x256 keeps source rows 30-450 and columns 0-530 (640/341 repeats only over the whole
width, so no column can be cut on the left).

Only shrinking (the area filter) is planned: enlarging a small frame (bilinear, bicubic) resamples
with taps on both sides and fixed-point weights, and keeps the full path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class AxisCut:
    """Resize source ``[src0, src1)`` at the full resize's scale (``dst / src``, passed to
    ``cv2.resize`` as ``fx``/``fy`` so that OpenCV divides by the very same double); its outputs
    ``[keep, keep + size)`` are the full resize's ``[dst0 + keep, ...)``."""

    src0: int
    src1: int
    dst0: int
    keep: int
    inv_scale: float


@dataclass(frozen=True)
class CropPlan:
    rows: AxisCut
    cols: AxisCut
    size: int

    def apply(self, img: np.ndarray) -> np.ndarray:
        import cv2

        r, c = self.rows, self.cols
        sub = cv2.resize(img[r.src0:r.src1, c.src0:c.src1], None, fx=c.inv_scale, fy=r.inv_scale,
                         interpolation=cv2.INTER_AREA)
        return sub[r.keep:r.keep + self.size, c.keep:c.keep + self.size]


def _area_table(src: int, inv_scale: float, first: int, count: int) -> list:
    """OpenCV's area weights (``computeResizeAreaTab``) of outputs ``first .. first + count - 1`` of
    a resize of ``src`` pixels by ``inv_scale``: per output, its (source index, float32 weight)
    pairs in summing order."""
    scale = 1.0 / inv_scale   # cv::resize: scale_x = 1. / inv_scale_x
    out = []
    for dx in range(first, first + count):
        fsx1 = dx * scale
        fsx2 = fsx1 + scale
        cell = min(scale, src - fsx1)
        sx2 = min(math.floor(fsx2), src - 1)
        sx1 = min(math.ceil(fsx1), sx2)
        taps = []
        if sx1 - fsx1 > 1e-3:
            taps.append((sx1 - 1, np.float32((sx1 - fsx1) / cell)))
        taps += [(sx, np.float32(1.0 / cell)) for sx in range(sx1, sx2)]
        if fsx2 - sx2 > 1e-3:
            taps.append((sx2, np.float32(min(fsx2 - sx2, 1.0, cell) / cell)))
        out.append(taps)
    return out


def _axis(src: int, dst: int, start: int, size: int) -> AxisCut:
    """The smallest cut of one axis that keeps outputs ``[start, start + size)`` with the full
    resize's weights: it starts on a period boundary (a source position that is a whole pixel) and
    ends one source pixel past the last kept output's cell; the whole axis when no cut has them."""
    inv = dst / src
    whole = AxisCut(0, src, 0, start, inv)
    g = math.gcd(src, dst)
    p, q = src // g, dst // g
    d0 = (start // q) * q
    s0, s1 = d0 // q * p, min(src, -(-(start + size) * p // q) + 1)
    if (s0, s1) == (0, src) or round((s1 - s0) * inv) < start + size - d0:   # cv::resize's dst size
        return whole
    full = _area_table(src, inv, start, size)
    cut = _area_table(s1 - s0, inv, start - d0, size)
    same = all(len(a) == len(b) and all(sa == sb + s0 and wa == wb for (sa, wa), (sb, wb) in zip(a, b))
               for a, b in zip(full, cut))
    return AxisCut(s0, s1, d0, start - d0, inv) if same else whole


@lru_cache(maxsize=32)
def crop_plan(h: int, w: int, nh: int, nw: int, size: int) -> Optional[CropPlan]:
    """How to get the centred ``size`` square of an INTER_AREA resize of ``h`` x ``w`` to ``nh`` x ``nw``
    from part of the frame; None when no axis can be cut (resize the whole frame). Shrinking on
    both axes only: cv::resize uses the area filter only there."""
    if nh > h or nw > w or (nh, nw) == (h, w):
        return None
    rows = _axis(h, nh, (nh - size) // 2, size)
    cols = _axis(w, nw, (nw - size) // 2, size)
    if (rows.src0, rows.src1, cols.src0, cols.src1) == (0, h, 0, w):
        return None
    return CropPlan(rows, cols, size)
