"""The frame-quality guard: whether a frame is one the model can judge, from cheap measures of the
pixels it would see (``core.image_stats``), against thresholds derived from the bundle's
``quality_reference`` (the training images' statistics) or set by the user.

Reasons, in the order they are checked (a frame gets the first that applies as ``reason``, and all
that apply as ``reasons``):

- ``too_dark``: mean luminance below ``min_luminance``, or more of the crop clipped black than
  ``max_dark_fraction``;
- ``overexposed``: mean luminance above ``max_luminance``, or more clipped white than
  ``max_bright_fraction``;
- ``blurred``: Laplacian variance below ``min_sharpness``;
- ``out_of_distribution``: Mahalanobis distance of the colour statistics (per-channel mean and
  std) from the training images' above ``max_ood`` (a strange scene, a light unlike theirs), or
  that of the colour cast (``core.image_stats.CAST_FEATURES``: the channel means' ratios to green,
  which exposure leaves alone) above ``max_cast`` (a white balance or a tinted light beyond theirs),
  or a frame of pure sensor noise (``noise_share`` above MAX_NOISE_SHARE: no scene at all).

Capture does not classify a refused frame (it logs it with its reason and measures); predict
classifies and flags. Torch-free.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import numpy as np

from ..core.errors import ConfigError
from ..core.image_stats import ImageMeasures, QualityReference, measure

log = logging.getLogger(__name__)

TOO_DARK, OVEREXPOSED, BLURRED, OUT_OF_DISTRIBUTION = "too_dark", "overexposed", "blurred", "out_of_distribution"
REASONS = (TOO_DARK, OVEREXPOSED, BLURRED, OUT_OF_DISTRIBUTION)

# Defaults without a reference (and the limits a reference may only widen): a crop darker than
# 10% or brighter than 90% mean grey, with more than half its pixels black or more than 30% blown
# out, is not judged.
MIN_LUMINANCE = 0.10
MAX_LUMINANCE = 0.90
MAX_DARK_CLIPPED = 0.5
MAX_BRIGHT_CLIPPED = 0.3
# Without a reference only a heavy blur is caught (Laplacian variance of the model-size crop).
MIN_SHARPNESS_ABSOLUTE = 5.0
# With a reference: 1/4 of the 5th percentile of the training images' sharpness, and 1.5x the 99th
# percentile of their own colour distances (frames from the same distribution land within that).
SHARPNESS_FACTOR = 0.25
OOD_FACTOR = 1.5
# Pure sensor noise (a capped lens, a dead sensor at high gain) has no spatial structure: its
# Laplacian variance is 20x its pixel variance (the kernel's squared weights: 16 + 4 x 1), while a
# scene's neighbouring pixels move together (real leaf photos at 112 px: at most 0.2 of that;
# with the suite's strongest noise, sigma 24, up to 0.6). A frame above this share is refused as
# out_of_distribution, whatever its colours; scale-free, so exposure and gain do not move it.
MAX_NOISE_SHARE = 0.75


@dataclass(frozen=True)
class QualityConfig:
    """What the user asked for: on/off and explicit thresholds (None: derived from the bundle)."""

    enabled: bool = True
    min_luminance: Optional[float] = None
    max_luminance: Optional[float] = None
    min_sharpness: Optional[float] = None
    max_ood: Optional[float] = None
    max_cast: Optional[float] = None

    def __post_init__(self) -> None:
        for name in ("min_luminance", "max_luminance"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} {v} is outside [0, 1] (mean grey level)")
        if self.min_sharpness is not None and self.min_sharpness < 0:
            raise ConfigError(f"--min-sharpness {self.min_sharpness} must be >= 0 (0: no blur check)")
        if self.max_ood is not None and not self.max_ood > 0:
            raise ConfigError(f"--max-ood {self.max_ood} must be > 0 (inf: no colour-distance check)")
        if self.max_cast is not None and not self.max_cast > 0:
            raise ConfigError(f"--max-cast {self.max_cast} must be > 0 (inf: no colour-cast check)")
        lo, hi = self.min_luminance, self.max_luminance
        if lo is not None and hi is not None and lo >= hi:
            raise ConfigError(f"--min-luminance {lo} must be below --max-luminance {hi}")

    @property
    def has_thresholds(self) -> bool:
        """Whether any threshold was set by the user (not derived from a bundle)."""
        return any(v is not None for v in (self.min_luminance, self.max_luminance, self.min_sharpness,
                                           self.max_ood, self.max_cast))


@dataclass(frozen=True)
class QualityThresholds:
    min_luminance: float
    max_luminance: float
    max_dark_fraction: float
    max_bright_fraction: float
    min_sharpness: float
    max_ood: Optional[float]      # None: no out-of-distribution check (no reference, or turned off)
    max_cast: Optional[float] = None  # None: no colour-cast check (a reference without one, or turned off)

    def to_dict(self) -> dict:
        return {k: (None if v is None or math.isinf(v) else round(v, 4)) for k, v in asdict(self).items()}


def _widened(limit: float, p99: float) -> float:
    """A clipped-fraction / bright limit widened half-way from the reference's 99th percentile to 1
    when the training images themselves go beyond the default (a white or black scan background);
    else the default."""
    return limit if p99 <= limit else p99 + 0.5 * (1.0 - p99)


def derive_thresholds(reference: Optional[QualityReference], config: QualityConfig = QualityConfig()
                      ) -> tuple[QualityThresholds, list[str], list[str]]:
    """Thresholds from the reference and the user's overrides, notes saying where they came from
    (written to the capture's start record) and, among those, the warnings (logged once)."""
    notes: list[str] = []
    warnings: list[str] = []
    if reference is None:
        lum_lo, lum_hi, dark, bright, sharp, ood, cast = (MIN_LUMINANCE, MAX_LUMINANCE, MAX_DARK_CLIPPED,
                                                          MAX_BRIGHT_CLIPPED, MIN_SHARPNESS_ABSOLUTE, None, None)
        warnings.append("the bundle has no quality_reference (deployed before the quality guard): absolute "
                        "exposure and blur limits, no out_of_distribution check; re-run deploy to get them")
    else:
        lum_lo = min(MIN_LUMINANCE, 0.5 * reference.luminance["p1"])
        lum_hi = _widened(MAX_LUMINANCE, reference.luminance["p99"])
        dark = _widened(MAX_DARK_CLIPPED, reference.dark_fraction["p99"])
        bright = _widened(MAX_BRIGHT_CLIPPED, reference.bright_fraction["p99"])
        sharp = SHARPNESS_FACTOR * reference.sharpness["p5"]
        ood = OOD_FACTOR * reference.ood_distance["p99"] if reference.has_colour else None
        cast = OOD_FACTOR * reference.cast_distance["p99"] if reference.has_cast else None
        views = f" ({reference.augment} training views)" if reference.augment else ""
        notes.append(f"thresholds derived from the bundle's {reference.images} reference images{views}")
        if ood is None:
            notes.append(f"only {reference.images} reference images: no out_of_distribution check")
    if config.min_luminance is not None:
        lum_lo = config.min_luminance
    if config.max_luminance is not None:
        lum_hi = config.max_luminance
    if config.min_sharpness is not None:
        sharp = config.min_sharpness
    if config.max_ood is not None:
        if reference is None or not reference.has_colour:
            warnings.append("--max-ood ignored: the bundle has no colour reference to measure distance from")
        else:
            ood = None if math.isinf(config.max_ood) else config.max_ood
    if config.max_cast is not None:
        if reference is None or not reference.has_cast:
            warnings.append("--max-cast ignored: the bundle has no colour-cast reference (deployed before it)")
        else:
            cast = None if math.isinf(config.max_cast) else config.max_cast
    if lum_lo >= lum_hi:
        raise ConfigError(f"luminance limits {lum_lo:g}..{lum_hi:g} leave nothing to classify; "
                          "set --min-luminance below --max-luminance")
    return QualityThresholds(lum_lo, lum_hi, dark, bright, sharp, ood, cast), warnings + notes, warnings


@dataclass(frozen=True)
class Verdict:
    reasons: tuple            # failed checks in REASONS order; empty: the frame is judged
    measures: ImageMeasures
    ood: Optional[float] = None
    cast: Optional[float] = None

    @property
    def ok(self) -> bool:
        return not self.reasons

    @property
    def reason(self) -> Optional[str]:
        return self.reasons[0] if self.reasons else None

    def measures_dict(self) -> dict:
        d = self.measures.to_dict()
        if self.ood is not None:
            d["ood"] = round(self.ood, 3)
        if self.cast is not None:
            d["cast"] = round(self.cast, 3)
        return d

    def to_dict(self) -> dict:
        return {"ok": self.ok, "reason": self.reason, "reasons": list(self.reasons), "measures": self.measures_dict()}


def noise_share(m: ImageMeasures) -> float:
    """The green channel's Laplacian variance over 20x its pixel variance: about 1 for white
    noise, near 0 for a scene (see MAX_NOISE_SHARE)."""
    variance = (255.0 * m.colour[4]) ** 2  # colour: means then stds, R G B, on 0..1
    return m.sharpness / (20.0 * max(variance, 1.0))


class QualityGuard:
    """``check(crop)`` -> Verdict, for the ``resize_center_crop`` output of the bundle's spec."""

    def __init__(self, thresholds: QualityThresholds, reference: Optional[QualityReference] = None,
                 notes: tuple = (), warnings: tuple = ()):
        self.thresholds = thresholds
        self.notes = tuple(notes)          # where the thresholds came from (start record)
        self.warnings = tuple(warnings)    # the notes a user must hear about (logged at WARNING)
        self._distance: Optional[Callable[[ImageMeasures], float]] = (
            reference.distance_fn() if reference is not None and thresholds.max_ood is not None else None)
        self._cast: Optional[Callable[[ImageMeasures], float]] = (
            reference.cast_distance_fn() if reference is not None and thresholds.max_cast is not None else None)

    @classmethod
    def for_bundle(cls, reference: Optional[QualityReference], config: QualityConfig = QualityConfig()
                   ) -> Optional["QualityGuard"]:
        """The guard for a bundle's reference and the user's config; None when turned off."""
        if not config.enabled:
            return None
        thresholds, notes, warnings = derive_thresholds(reference, config)
        return cls(thresholds, reference, tuple(notes), tuple(warnings))

    def describe(self) -> dict:
        return {"enabled": True, "thresholds": self.thresholds.to_dict(), "notes": list(self.notes)}

    def accepts(self, crop: np.ndarray) -> bool:
        """Whether capture would classify ``crop`` (an RGB model-size crop) at all."""
        return self.check(crop).ok

    def check(self, crop: np.ndarray, bgr: bool = False) -> Verdict:
        m = measure(crop, bgr)
        t = self.thresholds
        reasons = []
        if m.luminance < t.min_luminance or m.dark_fraction > t.max_dark_fraction:
            reasons.append(TOO_DARK)
        if m.luminance > t.max_luminance or m.bright_fraction > t.max_bright_fraction:
            reasons.append(OVEREXPOSED)
        if m.sharpness < t.min_sharpness:
            reasons.append(BLURRED)
        ood = self._distance(m) if self._distance is not None else None
        cast = self._cast(m) if self._cast is not None else None
        if (ood is not None and ood > t.max_ood) or (cast is not None and cast > t.max_cast) \
                or noise_share(m) > MAX_NOISE_SHARE:
            reasons.append(OUT_OF_DISTRIBUTION)
        return Verdict(tuple(reasons), m, ood, cast)
