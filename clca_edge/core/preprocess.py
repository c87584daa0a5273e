"""The preprocessing contract and its one numpy/OpenCV implementation, shared by training's
evaluation transform, deploy's calibration and accuracy gate, and the device runtime, so all of
them feed the model the same tensor for the same file.

Evaluation transform: resize the shorter side to ``resize_size`` (keeping aspect), center-crop
``img_size`` x ``img_size``, scale to [0, 1], normalise with ``mean``/``std``, CHW float32.
With ``colour_constancy`` other than ``none`` the crop is first scaled (``levels``): ``grey_world``
per channel so that each channel's mean is the spec's (a camera's white balance or exposure gain
cancels exactly, short of clipping, but so does the tint of a leaf that fills the frame);
``half_grey_world`` (train's default) halfway there in log terms, an incomplete adaptation: a
light's cast and level are halved and the leaf's own colour is compressed, not erased;
``exposure`` one gain so that the median brightness is the spec's (the light's level cancels, even
with clipped highlights; the colours stay).
With ``framing="leaf"`` the crop is first re-framed on the leaf (``frame_leaf``): where the leaf
lies on a plain background (a scan, a leaf held against a board), the crop is shifted and zoomed so
the leaf is centred and covers ``LEAF_AREA`` of it, so the camera's distance (a zoomed-out leaf)
and the leaf's place in the frame no longer change what the model sees; where no plain background
is found (a leaf on the plant among others) the crop is left as it is.
Torch-free so the device can read it from a bundle; OpenCV is imported on first use, so reading a
spec (the CLI, bundle manifests) does not load it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from .area_crop import crop_plan
from .errors import ConfigError
from .imageops import LUMA, border, border_colour, channel_means, luma_median

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic")
COLOUR_CONSTANCY = ("none", "grey_world", "half_grey_world", "exposure")
FRAMING = ("none", "leaf")
# What `train` records unless told (measured on real field photos: BENCHMARKS.md "Field defaults
# on real photos"); a PreprocessSpec's own default stays none, so specs and bundles from before
# the option read as they were written.
DEFAULT_COLOUR_CONSTANCY = "half_grey_world"
# ... and the framing `train` records unless told (same benchmark: leaf framing did not help on
# natural backgrounds).
DEFAULT_FRAMING = "none"
# Channel means below this (of 255) are not scaled up further: a black frame stays black instead
# of its sensor noise being stretched to full scale (capture's guard refuses such frames anyway).
MIN_CHANNEL_MEAN = 4.0
# Leaf framing (frame_leaf). A framed leaf covers this share of the crop: about what a leaf
# photographed to fill the frame covers once centre-cropped (the synthetic leaves: 0.2-0.3), so
# a clean photo is barely resampled. Changing it changes what "leaf" means: a new FRAMING value,
# never a new figure under the old name (bundles record only the name).
LEAF_AREA = 0.25
LEAF_ZOOM = (0.75, 3.0)  # zoom applied at most: out (a leaf larger than LEAF_AREA), in (a distant one)
LEAF_MIN_CONTRAST = 12  # grey levels between leaf and background, at least
LEAF_FIND_SIZE = 128  # px: the leaf is looked for on a copy this large at most
LEAF_MIN_PIECE = 0.005  # share of the crop a piece of leaf covers at least (smaller: noise, dirt)
LEAF_BORDER_LEAF_SHARE = 0.2  # more of the border than this on "leaf": no plain background, no framing


@dataclass(frozen=True)
class PreprocessSpec:
    img_size: int = 224
    crop_pct: float = 0.875
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)
    interpolation: str = "bilinear"
    colour_constancy: str = "none"
    framing: str = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if not 0.0 < self.crop_pct <= 1.0:
            raise ConfigError(f"crop_pct={self.crop_pct} is outside (0, 1]")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation={self.interpolation!r}; choose one of {', '.join(INTERPOLATIONS)}")
        if self.colour_constancy not in COLOUR_CONSTANCY:
            raise ConfigError(f"colour_constancy={self.colour_constancy!r}; choose one of {', '.join(COLOUR_CONSTANCY)}")
        if self.framing not in FRAMING:
            raise ConfigError(f"framing={self.framing!r}; choose one of {', '.join(FRAMING)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"mean={self.mean} / std={self.std} must have 3 values, std > 0")

    @property
    def resize_size(self) -> int:
        """Shorter side after resizing, before the center crop."""
        return int(math.floor(self.img_size / self.crop_pct))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["resize_size"] = self.resize_size
        for name in ("colour_constancy", "framing"):
            if d[name] == "none":
                # written only when on: a spec without it reads the same in clca-edge versions
                # from before the field, and one with it is refused there instead of misread
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PreprocessSpec":
        d = {k: v for k, v in d.items() if k != "resize_size"}
        return cls(**d)


_INTERP = {"bilinear": "INTER_LINEAR", "bicubic": "INTER_CUBIC"}  # cv2 constant names


def load_bgr(path) -> Optional[np.ndarray]:
    """Decode an image file to BGR uint8 (H, W, 3), OpenCV's order; ``None`` if it is missing,
    unreadable (permissions, I/O error), corrupt or truncated: callers skip and count it
    (the bad-input policy: skipped, counted, reported) instead of crashing the run."""
    import cv2

    try:
        if not Path(path).is_file():
            return None
        data = np.fromfile(str(path), dtype=np.uint8)
        if data.size == 0:
            return None
        return cv2.imdecode(data, cv2.IMREAD_COLOR)
    except (OSError, cv2.error) as e:
        log.debug("cannot read image %s: %s", path, e)
        return None


def load_rgb(path) -> Optional[np.ndarray]:
    """Decode an image file to RGB uint8 (H, W, 3); ``None`` as for ``load_bgr``."""
    import cv2

    img = load_bgr(path)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _resized_size(h: int, w: int, spec: PreprocessSpec) -> tuple[int, int, float]:
    """(height, width, scale) of ``resize_shorter`` for an ``h`` x ``w`` image."""
    short = spec.resize_size
    scale = short / min(h, w)
    return max(short, round(h * scale)), max(short, round(w * scale)), scale


def resize_shorter(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Shorter side to ``spec.resize_size``, aspect kept (area filter when shrinking, to avoid
    aliasing; the spec's interpolation when enlarging)."""
    import cv2

    nh, nw, scale = _resized_size(rgb.shape[0], rgb.shape[1], spec)
    interp = cv2.INTER_AREA if scale < 1 else getattr(cv2, _INTERP[spec.interpolation])
    return cv2.resize(rgb, (nw, nh), interpolation=interp)


def resize_center_crop(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """``resize_shorter`` then a centred ``img_size`` square. uint8 in, uint8 out.

    When shrinking, only the part of the image the crop keeps is resized where that gives the same
    pixels to the bit (``core/area_crop.py``: about half the time for a 1280x720 frame)."""
    h, w = rgb.shape[:2]
    nh, nw, scale = _resized_size(h, w, spec)
    plan = crop_plan(h, w, nh, nw, spec.img_size) if scale < 1 else None
    if plan is not None:
        return plan.apply(rgb)
    resized = resize_shorter(rgb, spec)
    top, left = (nh - spec.img_size) // 2, (nw - spec.img_size) // 2
    return resized[top:top + spec.img_size, left:left + spec.img_size]


def leaf_affine(img: np.ndarray) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """The 2x3 affine map of ``frame_leaf`` for a uint8 (H, W, 3) crop (any channel order) and the
    border colour it fills with, or None when the crop is left as it is.

    The leaf is what differs from the border's median colour by more than the border's own spread
    (its texture, sensor noise, JPEG) and than Otsu's split of those differences (so a low-contrast
    photo still separates); a 3x3 median removes isolated noisy pixels first. Zoom and centre come
    from the area and centroid of the mask's convex hull, which a rotation does not change. No
    framing when the border is not mostly background (``LEAF_BORDER_LEAF_SHARE``), when nothing or
    almost everything differs from it, or when the map would be the identity to a pixel."""
    import cv2

    full_h, full_w = img.shape[:2]
    bg = border_colour(img)
    # Found on a copy of at most LEAF_FIND_SIZE px (area share and centroid carry over; a 224 px
    # crop costs half), mapped back to the crop's pixels at the end. Not smaller: at 64 px the
    # centroid of a 96 px crop was off by a pixel, a few grey levels of a textured blade.
    step = max(1.0, max(full_h, full_w) / LEAF_FIND_SIZE)
    small = np.ascontiguousarray(img) if step == 1.0 else cv2.resize(
        img, (round(full_w / step), round(full_h / step)), interpolation=cv2.INTER_AREA)
    h, w = small.shape[:2]
    # Largest channel difference from the background colour (OpenCV, scalar operand and per-channel
    # max: numpy's int16 difference and max over the channel axis cost 10x more)
    channels = cv2.split(cv2.absdiff(small, tuple(float(v) for v in np.rint(bg)) + (0.0,)))
    diff = cv2.medianBlur(cv2.max(cv2.max(channels[0], channels[1]), channels[2]), 3)
    edge = border(diff)
    k = int(0.9 * (edge.size - 1))
    floor = float(np.partition(edge, k)[k])  # the border's 90th percentile: its texture and noise
    otsu, _ = cv2.threshold(diff, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    _, mask = cv2.threshold(diff, max(otsu, floor + LEAF_MIN_CONTRAST / 2, LEAF_MIN_CONTRAST), 1, cv2.THRESH_BINARY)
    if np.count_nonzero(border(mask)) > LEAF_BORDER_LEAF_SHARE * (2 * (h + w) - 4):
        return None
    # The convex hull of the leaf's pieces: its area and centroid do not shrink where a faded or
    # textured part of the blade falls under the threshold (holes, eroded teeth).
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    pieces = [c for c in contours if cv2.contourArea(c) >= LEAF_MIN_PIECE * h * w]
    if not pieces:
        return None
    hull = cv2.convexHull(np.concatenate(pieces))
    m = cv2.moments(hull)
    share = m["m00"] / (h * w)
    if not 0.01 <= share <= 0.9:
        return None
    zoom = float(np.clip(math.sqrt(LEAF_AREA / share), *LEAF_ZOOM))
    # centroid in the crop's pixel coordinates (pixel centres: x_small = (x + 0.5) / sx - 0.5)
    sx, sy = w / full_w, h / full_h
    cx, cy = (m["m10"] / m["m00"] + 0.5) / sx - 0.5, (m["m01"] / m["m00"] + 0.5) / sy - 0.5
    shift = ((full_w - 1) / 2 - zoom * cx, (full_h - 1) / 2 - zoom * cy)
    if abs(zoom - 1) * max(full_h, full_w) / 2 < 1 and max(abs(cx - (full_w - 1) / 2), abs(cy - (full_h - 1) / 2)) < 1:
        return None  # no pixel would move by one
    return np.array([[zoom, 0.0, shift[0]], [0.0, zoom, shift[1]]]), bg


def frame_leaf(img: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """The crop as ``spec.framing`` frames it (``none``: unchanged). uint8 (the device path) or
    float32 in [0, 1] (training's augmented crop): the leaf is found on the uint8 values either
    way, so both paths apply the same map to the same pixels."""
    if spec.framing == "none":
        return img
    import cv2

    u8 = img if img.dtype == np.uint8 else np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    found = leaf_affine(u8)
    if found is None:
        return img
    m, bg = found
    fill = bg if img.dtype == np.uint8 else bg / 255.0
    h, w = img.shape[:2]
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=tuple(float(v) for v in fill))


def model_crop(img: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """What the model sees of an image, before normalisation: ``resize_center_crop``, then
    ``frame_leaf``. uint8 in, uint8 out."""
    return frame_leaf(resize_center_crop(img, spec), spec)


def levels(img: np.ndarray, spec: PreprocessSpec, bgr: bool = False, chw: bool = False
           ) -> tuple[np.ndarray, np.ndarray]:
    """The per-channel gain and offset (RGB order, 0-255 scale: ``gain * x + offset``)
    ``spec.colour_constancy`` applies to the crop ``img`` (uint8 HWC, BGR with ``bgr``; or float
    [0, 1] CHW with ``chw``: training's augmented crop). The offsets are zero for every mode today:
    the pair is the contract's general form (``normalize`` applies both), so a mode with an offset
    needs no second code path.

    - ``none``: gains of one.
    - ``grey_world``: the spec's mean (x 255) over the crop's channel mean, so every channel's
      mean becomes the spec's (a white balance and an exposure gain cancel; so does the leaf's tint
      where the leaf fills the frame).
    - ``half_grey_world``: the square root of grey world's gains (an incomplete adaptation, as a
      human observer's): a light's cast and level are halved (in log terms), the leaf's own
      colour is compressed by half, not erased.
    - ``exposure``: one gain for all channels, the spec's mean brightness over the crop's median
      brightness (exact under a gain even where highlights clip): the light's level cancels, the
      colours stay.
    """
    zero = np.zeros(3, np.float64)
    if spec.colour_constancy == "none":
        return np.ones(3, np.float64), zero
    target = 255.0 * float(np.dot(LUMA, spec.mean))
    if spec.colour_constancy in ("grey_world", "half_grey_world"):
        means = channel_means(img, bgr, chw)
        gains = 255.0 * np.asarray(spec.mean, np.float64) / np.maximum(means, MIN_CHANNEL_MEAN)
        return (gains if spec.colour_constancy == "grey_world" else np.sqrt(gains)), zero
    return np.full(3, target / max(luma_median(img, bgr, chw), MIN_CHANNEL_MEAN), np.float64), zero


def channel_gains(img: np.ndarray, spec: PreprocessSpec, bgr: bool = False, chw: bool = False) -> np.ndarray:
    """The gains of ``levels`` (for the modes without an offset: none, grey_world, exposure)."""
    return levels(img, spec, bgr, chw)[0]


def normalize(img: np.ndarray, spec: PreprocessSpec, bgr: bool = False) -> np.ndarray:
    """uint8 HWC RGB (BGR with ``bgr=True``: channels taken in reverse) -> float32 CHW RGB, scaled
    to [0, 1] (after the colour-constancy gains, if any) and normalised, (x / 255 - mean) / std,
    as one multiply-add per channel, written straight into the CHW output (5x faster than the
    broadcast form, same values to float32 rounding)."""
    gains, shifts = levels(img, spec, bgr)
    std = np.asarray(spec.std, np.float64)
    scale = gains / (255.0 * std)
    offset = (shifts / 255.0 - np.asarray(spec.mean, np.float64)) / std
    out = np.empty((3, img.shape[0], img.shape[1]), np.float32)
    for c in range(3):
        np.multiply(img[:, :, 2 - c if bgr else c], np.float32(scale[c]), out=out[c], casting="unsafe")
        out[c] += np.float32(offset[c])
    return out


def preprocess(img: np.ndarray, spec: PreprocessSpec, bgr: bool = False) -> np.ndarray:
    """RGB uint8 (H, W, 3) of any size -> model input (3, img_size, img_size) float32 (RGB order).

    ``bgr=True`` takes a BGR frame (camera, OpenCV decode) as is: resizing and cropping treat each
    channel alike, so the channels are only swapped while normalising: the same tensor as
    converting the whole frame to RGB first, without that full-frame copy."""
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected a colour image (H, W, 3), got shape {img.shape}")
    return normalize(model_crop(img, spec), spec, bgr)
