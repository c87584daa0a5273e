"""Cheap image statistics that say whether a picture is one the model can judge: exposure (mean
luminance, fractions clipped dark and bright), sharpness (variance of the Laplacian) and colour
(per-channel mean and std), and the reference those statistics have over the training images.

``deploy`` measures a sample of the training images and records a ``QualityReference`` in the
bundle; the device measures each frame with the same ``measure`` and the capture guard
(``capture.quality``) compares. Both measure the ``resize_center_crop`` output of the bundle's
preprocessing, i.e. exactly the pixels the model sees, at the model's resolution: blur the model
cannot see at its input size does not count, and no extra resize is paid per frame.

Torch-free, numpy + OpenCV (imported on first use), Python 3.8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .errors import BundleError

# A pixel is clipped dark with all channels <= DARK_LEVEL, bright with two channels >= BRIGHT_LEVEL.
DARK_LEVEL = 8
BRIGHT_LEVEL = 250
# The colour features, in this order (RGB, 0..1 scale).
COLOUR_FEATURES = ("mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b")
# The colour cast: log ratios of the channel means to green. A gain on every channel (exposure)
# leaves them as they are; a white balance or a tinted light moves them, and moves them alone, so
# a cast stands out even where scenes differ widely in brightness (where the colour features'
# own spread hides it).
CAST_FEATURES = ("log_r_g", "log_b_g")
_CAST_FLOOR = 1.0 / 255.0   # keeps a black channel's ratio finite
# Fewer reference images than this give no usable colour covariance: no out-of-distribution check.
MIN_OOD_IMAGES = 10
REFERENCE_VERSION = 1


_GREY_WEIGHTS = np.array([0.299, 0.587, 0.114])   # BT.601, R G B, as OpenCV's grey conversion


@dataclass(frozen=True)
class ImageMeasures:
    luminance: float          # mean grey level, 0..1
    dark_fraction: float      # fraction of pixels with every channel <= DARK_LEVEL
    bright_fraction: float    # fraction of pixels with two or three channels >= BRIGHT_LEVEL (saturated)
    sharpness: float          # variance of the Laplacian of the green channel (8-bit units)
    colour: tuple             # COLOUR_FEATURES values

    def to_dict(self) -> dict:
        return {"luminance": round(self.luminance, 4), "dark_fraction": round(self.dark_fraction, 4),
                "bright_fraction": round(self.bright_fraction, 4), "sharpness": round(self.sharpness, 2)}


def measure(img: np.ndarray, bgr: bool = False) -> ImageMeasures:
    """The measures of a uint8 HxWx3 image (RGB, or BGR with ``bgr=True``): about 0.2 ms for a
    224 x 224 crop on one CPU core (a tenth of the preprocessing it rides along with). Built from
    per-channel sums so no grey image is made: luminance is the BT.601 weighting of the channel
    means (the mean of OpenCV's grey image), sharpness the Laplacian variance of the green channel
    (most of the luminance, and of a leaf's detail)."""
    import cv2

    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 colour image (H, W, 3), got {img.dtype} {img.shape}")
    c0, c1, c2 = cv2.split(img)
    r, g, b = (c2, c1, c0) if bgr else (c0, c1, c2)
    n = float(r.size)
    mean = np.array([cv2.sumElems(ch)[0] for ch in (r, g, b)]) / n
    sq = np.array([cv2.norm(ch, cv2.NORM_L2SQR) for ch in (r, g, b)]) / n
    std = np.sqrt(np.maximum(sq - mean ** 2, 0.0))
    lap = cv2.Laplacian(g, cv2.CV_16S)
    lap_mean = cv2.sumElems(lap)[0] / n
    sharpness = max(cv2.norm(lap, cv2.NORM_L2SQR) / n - lap_mean ** 2, 0.0)
    # Black: every channel at the floor. Blown out: the middle channel at the ceiling (an
    # overexposed green leaf saturates G and R long before its grey level reaches the top; one
    # saturated channel alone is a strongly coloured object, a red fruit, not overexposure).
    brightest = cv2.max(cv2.max(c0, c1), c2)
    middle = cv2.max(cv2.min(c0, c1), cv2.min(cv2.max(c0, c1), c2))
    return ImageMeasures(
        luminance=float(_GREY_WEIGHTS @ mean) / 255.0,
        dark_fraction=cv2.countNonZero(cv2.compare(brightest, DARK_LEVEL, cv2.CMP_LE)) / n,
        bright_fraction=cv2.countNonZero(cv2.compare(middle, BRIGHT_LEVEL, cv2.CMP_GE)) / n,
        sharpness=float(sharpness),
        colour=tuple(float(v) for v in (*(mean / 255.0), *(std / 255.0))))


def _percentiles(values: Sequence[float], levels: Sequence[int]) -> dict:
    arr = np.asarray(values, np.float64)
    return {f"p{q}": float(np.percentile(arr, q)) for q in levels}


@dataclass(frozen=True)
class QualityReference:
    """The training images' statistics, as deploy records them in the bundle manifest
    (``quality_reference``). Percentile dicts are keyed ``p1``, ``p5``, ``p50``, ``p95``, ``p99``;
    ``colour_mean``/``colour_cov`` (None with fewer than MIN_OOD_IMAGES images) define the
    Mahalanobis distance of a frame's COLOUR_FEATURES, and ``ood_distance`` holds the reference
    images' own distances."""

    images: int
    source: str
    img_size: int
    luminance: dict
    dark_fraction: dict
    bright_fraction: dict
    sharpness: dict
    colour_mean: Optional[tuple] = None
    colour_cov: Optional[tuple] = None
    ood_distance: Optional[dict] = None
    version: int = REFERENCE_VERSION
    # The training augmentation preset whose views were measured (None: the plain crops). An
    # optional key: runtimes that predate it read the reference the same way.
    augment: Optional[str] = None
    # The CAST_FEATURES' mean, covariance and the reference images' own distances (optional keys
    # as ``augment``; None: a reference from before them, or too few images).
    cast_mean: Optional[tuple] = None
    cast_cov: Optional[tuple] = None
    cast_distance: Optional[dict] = None

    @property
    def has_colour(self) -> bool:
        return self.colour_mean is not None and self.colour_cov is not None and self.ood_distance is not None

    @property
    def has_cast(self) -> bool:
        return self.cast_mean is not None and self.cast_cov is not None and self.cast_distance is not None

    def distance_fn(self):
        """A function ImageMeasures -> Mahalanobis distance of its colour features from the
        reference (None without colour statistics)."""
        if not self.has_colour:
            return None
        return _mahalanobis(self.colour_mean, self.colour_cov, lambda m: m.colour)

    def cast_distance_fn(self):
        """A function ImageMeasures -> Mahalanobis distance of its colour cast (CAST_FEATURES)
        from the reference's (None without cast statistics)."""
        if not self.has_cast:
            return None
        return _mahalanobis(self.cast_mean, self.cast_cov, cast_features)

    def to_dict(self) -> dict:
        d = {"version": self.version, "images": self.images, "source": self.source, "img_size": self.img_size,
             "features": list(COLOUR_FEATURES), "dark_level": DARK_LEVEL, "bright_level": BRIGHT_LEVEL,
             "luminance": _rounded(self.luminance), "dark_fraction": _rounded(self.dark_fraction),
             "bright_fraction": _rounded(self.bright_fraction), "sharpness": _rounded(self.sharpness)}
        if self.has_colour:
            d["colour_mean"] = [float(v) for v in self.colour_mean]
            d["colour_cov"] = [[float(v) for v in row] for row in self.colour_cov]
            d["ood_distance"] = _rounded(self.ood_distance)
        if self.augment is not None:
            d["augment"] = self.augment
        if self.has_cast:
            d["cast_features"] = list(CAST_FEATURES)
            d["cast_mean"] = [float(v) for v in self.cast_mean]
            d["cast_cov"] = [[float(v) for v in row] for row in self.cast_cov]
            d["cast_distance"] = _rounded(self.cast_distance)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "QualityReference":
        """Validate a manifest's ``quality_reference``; a malformed one is a BundleError (the
        manifest is hashed, so this means a writer bug or an edit, not a bad copy)."""
        try:
            if int(d.get("version", 0)) != REFERENCE_VERSION:
                raise ValueError(f"version {d.get('version')!r}, this runtime reads {REFERENCE_VERSION}")
            if list(d.get("features", COLOUR_FEATURES)) != list(COLOUR_FEATURES):
                raise ValueError(f"features {d.get('features')}")
            pct = {k: {str(q): float(v) for q, v in dict(d[k]).items()}
                   for k in ("luminance", "dark_fraction", "bright_fraction", "sharpness")}
            mean = cov = ood = None
            if "colour_mean" in d:
                mean = tuple(float(v) for v in d["colour_mean"])
                cov = tuple(tuple(float(v) for v in row) for row in d["colour_cov"])
                ood = {str(q): float(v) for q, v in dict(d["ood_distance"]).items()}
                _check_square(mean, cov, len(COLOUR_FEATURES), "colour", ood)
            cast = {}
            if "cast_mean" in d:
                if list(d.get("cast_features", CAST_FEATURES)) != list(CAST_FEATURES):
                    raise ValueError(f"cast_features {d.get('cast_features')}")
                cast = dict(cast_mean=tuple(float(v) for v in d["cast_mean"]),
                            cast_cov=tuple(tuple(float(v) for v in row) for row in d["cast_cov"]),
                            cast_distance={str(q): float(v) for q, v in dict(d["cast_distance"]).items()})
                _check_square(cast["cast_mean"], cast["cast_cov"], len(CAST_FEATURES), "cast", cast["cast_distance"])
            return cls(images=int(d["images"]), source=str(d.get("source", "")), img_size=int(d["img_size"]),
                       luminance=pct["luminance"], dark_fraction=pct["dark_fraction"],
                       bright_fraction=pct["bright_fraction"], sharpness=pct["sharpness"],
                       colour_mean=mean, colour_cov=cov, ood_distance=ood,
                       augment=None if d.get("augment") is None else str(d["augment"]), **cast)
        except (KeyError, TypeError, ValueError, np.linalg.LinAlgError) as e:
            raise BundleError(f"the bundle's quality_reference is malformed ({e}); re-run clca-edge deploy") from None


def _rounded(d: Optional[Mapping[str, float]]) -> dict:
    return {k: round(float(v), 6) for k, v in (d or {}).items()}


def cast_features(m: ImageMeasures) -> np.ndarray:
    """CAST_FEATURES of a frame's measures: log(mean_r / mean_g), log(mean_b / mean_g)."""
    r, g, b = (max(float(v), _CAST_FLOOR) for v in m.colour[:3])
    return np.array([math.log(r / g), math.log(b / g)])


def _mahalanobis(mean, cov, features):
    mu = np.asarray(mean, np.float64)
    inv = np.linalg.inv(np.asarray(cov, np.float64))

    def distance(m: ImageMeasures) -> float:
        d = np.asarray(features(m), np.float64) - mu
        return float(math.sqrt(max(0.0, float(d @ inv @ d))))

    return distance


def _check_square(mean, cov, n: int, what: str, distances: Mapping[str, float]) -> None:
    if len(mean) != n or len(cov) != n or any(len(r) != n for r in cov):
        raise ValueError(f"{what} statistics must have {n} features")
    if "p99" not in distances:  # the guard's limit is read from it
        raise ValueError(f"{what} distances have no p99")
    np.linalg.inv(np.asarray(cov))


def _fit(x: np.ndarray) -> tuple:
    """Mean, covariance and the samples' own distance percentiles of feature rows ``x``. The
    covariance is shrunk towards its diagonal (by dims/images, at least 5%) so a few dozen images
    still give a stable inverse; the floor keeps a feature that is constant over the reference (a
    synthetic set) invertible."""
    mu = x.mean(0)
    cov = np.cov(x, rowvar=False)
    shrink = min(1.0, max(0.05, x.shape[1] / x.shape[0]))
    cov = (1 - shrink) * cov + shrink * np.diag(np.diag(cov)) + np.eye(x.shape[1]) * 1e-6
    inv = np.linalg.inv(cov)
    dist = np.sqrt(np.maximum(0.0, np.einsum("ij,jk,ik->i", x - mu, inv, x - mu)))
    pct = _percentiles(dist, (50, 95, 99))
    pct["max"] = float(dist.max())
    return tuple(mu.tolist()), tuple(map(tuple, cov.tolist())), pct


def build_reference(measures: Sequence[ImageMeasures], source: str, img_size: int,
                    augment: Optional[str] = None) -> QualityReference:
    """The reference of a set of training images' measures; the reference images' own colour and
    cast distances then set the scale a frame is judged on."""
    if not measures:
        raise ValueError("a quality reference needs at least one image")
    levels = (1, 5, 50, 95, 99)
    ref = dict(images=len(measures), source=source, img_size=int(img_size), augment=augment,
               luminance=_percentiles([m.luminance for m in measures], levels),
               dark_fraction=_percentiles([m.dark_fraction for m in measures], levels),
               bright_fraction=_percentiles([m.bright_fraction for m in measures], levels),
               sharpness=_percentiles([m.sharpness for m in measures], levels))
    if len(measures) < MIN_OOD_IMAGES:
        return QualityReference(**ref)
    colour_mean, colour_cov, ood = _fit(np.asarray([m.colour for m in measures], np.float64))
    cast_mean, cast_cov, cast = _fit(np.asarray([cast_features(m) for m in measures], np.float64))
    return QualityReference(**ref, colour_mean=colour_mean, colour_cov=colour_cov, ood_distance=ood,
                            cast_mean=cast_mean, cast_cov=cast_cov, cast_distance=cast)
