"""The centre crop of an area-filter resize, computed from the part of the frame it keeps, pixel
for pixel equal to resizing the whole frame and cropping (``core/preprocess.py:resize_center_crop``).

OpenCV's INTER_AREA shrink (``cv::resize``, ``computeResizeAreaTab`` and the area invoker) gives
each output column the source columns it covers and float weights computed from ``dx * scale``
alone (``scale = 1 / (dst / src)`` in doubles), and sums them in a fixed order; rows likewise. For a
scale ``src / dst = p / q`` (lowest terms) the weights repeat every ``q`` output pixels (``p``
source pixels), so an output range that starts and ends on a period boundary, resized on its own
from the matching source range, has the same scale (the same rational, so the same double) and the
same weights, up to the last bit of the doubles they come from. Whether they are the same to the
last bit is not left to argument: ``_axis`` recomputes both weight tables as that OpenCV code does
and takes the shortcut only where every kept pixel's table matches; otherwise the axis is resized
whole. A 640x480 frame resized to 341x256 has no such range across (640/341 has no period within
it), so only its rows are cut (420 of 480); 1280x720 and 1920x1080 (to 455x256) cut both axes.

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
    """Resize source ``[src0, src1)`` to ``[dst0, dst1)`` of the full output, keep ``[keep, keep + size)``
    of that sub-range."""

    src0: int
    src1: int
    dst0: int
    dst1: int
    keep: int


@dataclass(frozen=True)
class CropPlan:
    rows: AxisCut
    cols: AxisCut
    size: int

    def apply(self, img: np.ndarray) -> np.ndarray:
        import cv2

        r, c = self.rows, self.cols
        sub = cv2.resize(img[r.src0:r.src1, c.src0:c.src1], (c.dst1 - c.dst0, r.dst1 - r.dst0),
                         interpolation=cv2.INTER_AREA)
        return sub[r.keep:r.keep + self.size, c.keep:c.keep + self.size]


def _area_table(src: int, dst: int, first: int, count: int) -> list:
    """OpenCV's area weights (``computeResizeAreaTab``) of outputs ``first .. first + count - 1`` of a
    ``src`` -> ``dst`` shrink: per output, its (source index, float32 weight) pairs in summing order."""
    scale = 1.0 / (dst / src)   # cv::resize: scale_x = 1. / inv_scale_x, inv_scale_x = dst / src
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
    """The smallest period-aligned cut of one axis that keeps outputs ``[start, start + size)`` with
    the full resize's weights; the whole axis when no smaller one has them."""
    whole = AxisCut(0, src, 0, dst, start)
    g = math.gcd(src, dst)
    p, q = src // g, dst // g
    d0, d1 = (start // q) * q, min(dst, -(-(start + size) // q) * q)
    if (d0, d1) == (0, dst):
        return whole
    s0, s1 = d0 // q * p, (src if d1 == dst else d1 // q * p)
    full = _area_table(src, dst, start, size)
    cut = _area_table(s1 - s0, d1 - d0, start - d0, size)
    same = all(len(a) == len(b) and all(sa == sb + s0 and wa == wb for (sa, wa), (sb, wb) in zip(a, b))
               for a, b in zip(full, cut))
    return AxisCut(s0, s1, d0, d1, start - d0) if same else whole


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
