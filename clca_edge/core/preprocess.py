"""The preprocessing contract and its one numpy/OpenCV implementation, shared by training's
evaluation transform, deploy's calibration and accuracy gate, and the device runtime, so all of
them feed the model the same tensor for the same file.

Evaluation transform: resize the shorter side to ``resize_size`` (keeping aspect), center-crop
``img_size`` x ``img_size``, scale to [0, 1], normalise with ``mean``/``std``, CHW float32.
With ``colour_constancy="grey_world"`` each channel of the crop is first scaled so that its mean
is the spec's mean for that channel (the grey-world assumption of automatic white balance): a
per-channel gain of the camera or the light (white balance, exposure) then cancels exactly, short
of clipping, while the leaf's colour relative to the rest of the frame is kept.
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

from .errors import ConfigError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic")
COLOUR_CONSTANCY = ("none", "grey_world")
# What `train` records unless told (measured on the synthetic leaves with the field preset:
# BENCHMARKS.md "Field robustness"); a PreprocessSpec's own default stays none, so specs and
# bundles from before the option read as they were written.
DEFAULT_COLOUR_CONSTANCY = "grey_world"
# Channel means below this (of 255) are not scaled up further: a black frame stays black instead
# of its sensor noise being stretched to full scale (capture's guard refuses such frames anyway).
MIN_CHANNEL_MEAN = 4.0


@dataclass(frozen=True)
class PreprocessSpec:
    img_size: int = 224
    crop_pct: float = 0.875
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)
    interpolation: str = "bilinear"
    colour_constancy: str = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if not 0.0 < self.crop_pct <= 1.0:
            raise ConfigError(f"crop_pct={self.crop_pct} is outside (0, 1]")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation={self.interpolation!r}; choose one of {', '.join(INTERPOLATIONS)}")
        if self.colour_constancy not in COLOUR_CONSTANCY:
            raise ConfigError(f"colour_constancy={self.colour_constancy!r}; choose one of {', '.join(COLOUR_CONSTANCY)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"mean={self.mean} / std={self.std} must have 3 values, std > 0")

    @property
    def resize_size(self) -> int:
        """Shorter side after resizing, before the center crop."""
        return int(math.floor(self.img_size / self.crop_pct))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["resize_size"] = self.resize_size
        if self.colour_constancy == "none":
            # written only when it is on: a spec without it reads the same in clca-edge versions
            # from before the field, and one with it is refused there instead of misread
            del d["colour_constancy"]
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


def resize_shorter(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Shorter side to ``spec.resize_size``, aspect kept (area filter when shrinking, to avoid
    aliasing; the spec's interpolation when enlarging)."""
    import cv2

    h, w = rgb.shape[:2]
    short = spec.resize_size
    scale = short / min(h, w)
    nh, nw = max(short, round(h * scale)), max(short, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else getattr(cv2, _INTERP[spec.interpolation])
    return cv2.resize(rgb, (nw, nh), interpolation=interp)


def resize_center_crop(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """``resize_shorter`` then a centred ``img_size`` square. uint8 in, uint8 out."""
    resized = resize_shorter(rgb, spec)
    nh, nw = resized.shape[:2]
    top, left = (nh - spec.img_size) // 2, (nw - spec.img_size) // 2
    return resized[top:top + spec.img_size, left:left + spec.img_size]


def channel_gains(img: np.ndarray, spec: PreprocessSpec, bgr: bool = False) -> np.ndarray:
    """The per-channel gains (RGB order) ``spec.colour_constancy`` applies to the uint8 crop
    ``img``: ones for ``none``; for ``grey_world`` the spec's mean (x 255) over the crop's channel
    mean, so every channel's mean becomes the spec's."""
    if spec.colour_constancy == "none":
        return np.ones(3, np.float64)
    import cv2

    means = np.asarray(cv2.mean(img)[:3], np.float64)
    if bgr:
        means = means[::-1]
    return 255.0 * np.asarray(spec.mean, np.float64) / np.maximum(means, MIN_CHANNEL_MEAN)


def normalize(img: np.ndarray, spec: PreprocessSpec, bgr: bool = False) -> np.ndarray:
    """uint8 HWC RGB (BGR with ``bgr=True``: channels taken in reverse) -> float32 CHW RGB, scaled
    to [0, 1] (after the colour-constancy gains, if any) and normalised, (x / 255 - mean) / std,
    as one multiply-add per channel, written straight into the CHW output (5x faster than the
    broadcast form, same values to float32 rounding)."""
    scale = channel_gains(img, spec, bgr) / (255.0 * np.asarray(spec.std, np.float64))
    offset = -np.asarray(spec.mean, np.float64) / np.asarray(spec.std, np.float64)
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
    return normalize(resize_center_crop(img, spec), spec, bgr)
