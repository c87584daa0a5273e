"""The field perturbation suite: a fixed, documented list of what a field camera does to a leaf
photo, each at three severities. numpy/OpenCV only (no torch): it runs on the device too.

Every perturbation maps an RGB uint8 (H, W, 3) image to another of the same size. It is applied
at the model's working resolution: the decoded photo is first resized (shorter side) exactly as
the standard preprocessing does, then perturbed, then preprocessed as usual (that resize is then
the identity; the centre crop and normalisation follow). So the perturbed image goes through the
same resize and crop as a field photo, and a severity means the same thing for a 12 MP photo and a
96 px synthetic leaf (blur and noise would otherwise shrink with every downscale).

Severities (1 mild, 2 moderate, 3 severe):

| name | what | 1 / 2 / 3 |
|---|---|---|
| exposure_down | under-exposure: every value x gain | x0.8 / x0.6 / x0.4 |
| exposure_up | over-exposure: x gain, clipped at 255 | x1.2 / x1.4 / x1.7 |
| wb_warm | white balance: red x (1+s), blue x (1-s) | s = 0.08 / 0.15 / 0.25 |
| wb_cool | white balance: red x (1-s), blue x (1+s) | s = 0.08 / 0.15 / 0.25 |
| contrast | contrast towards the mean grey, factor c | c = 0.7 / 0.5 / 0.3 |
| saturation | saturation towards grey, factor f | f = 0.7 / 0.45 / 0.2 |
| jpeg | JPEG compression (OpenCV, 4:2:0) at quality q | q = 50 / 25 / 10 |
| blur | Gaussian blur, sigma as % of the shorter side | 0.5% / 1% / 2% |
| noise | Gaussian sensor noise, sigma in grey levels | 6 / 12 / 24 |
| zoom_out | leaf shrunk to a fraction of the frame, on the border colour | 0.85 / 0.7 / 0.55 |
| rotation | rotation about the centre, corners on the border colour | 30 / 90 / 150 degrees |

Contrast, saturation and exposure follow torchvision's definitions (adjust_contrast blends with
the mean of the greyscale image, adjust_saturation with the greyscale image, brightness is a gain),
so the training augmentation (data/augment.py) and this suite speak of the same factors.
Rotation has no natural order of severity (leaves have no up); its three angles are simply three
poses. Noise is the only random perturbation; it is seeded per image (suite seed, image index,
condition), so the same data and seed give the same figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from ..core.errors import ConfigError
from ..core import imageops

SEVERITIES = (1, 2, 3)
SUITES = ("full", "quick", "off")  # quick: severity 2 of each perturbation only


@dataclass(frozen=True)
class Perturbation:
    name: str
    group: str  # photometric, camera or geometric (the groups of the field augmentation)
    levels: tuple[float, float, float]  # parameter at severities 1, 2, 3
    unit: str
    fn: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]

    def apply(self, rgb: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
        return self.fn(rgb, self.levels[severity - 1], rng)


# The operations are core.imageops' (the training augmentation's too), at the suite's levels.
def exposure(rgb, gain, rng):
    return imageops.channel_gain(rgb, (gain, gain, gain))


def wb_warm(rgb, s, rng):
    return imageops.channel_gain(rgb, (1 + s, 1.0, 1 - s))


def wb_cool(rgb, s, rng):
    return imageops.channel_gain(rgb, (1 - s, 1.0, 1 + s))


def contrast(rgb, c, rng):
    return imageops.contrast(rgb, c)


def saturation(rgb, f, rng):
    return imageops.saturation(rgb, f)


def jpeg(rgb, quality, rng):
    return imageops.jpeg_round_trip(rgb, quality)


def blur(rgb, fraction, rng):
    return imageops.gaussian_blur(rgb, fraction * min(rgb.shape[:2]))


def noise(rgb, sigma, rng):
    return imageops.gaussian_noise(rgb, sigma, rng)


def zoom_out(rgb, scale, rng):
    return imageops.warp_on_background(rgb, imageops.rotate_zoom_matrix(rgb.shape, 0.0, scale))


def rotation(rgb, degrees, rng):
    return imageops.warp_on_background(rgb, imageops.rotate_zoom_matrix(rgb.shape, degrees, 1.0))


SUITE: tuple[Perturbation, ...] = (
    Perturbation("exposure_down", "photometric", (0.8, 0.6, 0.4), "gain", exposure),
    Perturbation("exposure_up", "photometric", (1.2, 1.4, 1.7), "gain", exposure),
    Perturbation("wb_warm", "photometric", (0.08, 0.15, 0.25), "gain shift", wb_warm),
    Perturbation("wb_cool", "photometric", (0.08, 0.15, 0.25), "gain shift", wb_cool),
    Perturbation("contrast", "photometric", (0.7, 0.5, 0.3), "factor", contrast),
    Perturbation("saturation", "photometric", (0.7, 0.45, 0.2), "factor", saturation),
    Perturbation("jpeg", "camera", (50, 25, 10), "quality", jpeg),
    Perturbation("blur", "camera", (0.005, 0.01, 0.02), "sigma / shorter side", blur),
    Perturbation("noise", "camera", (6.0, 12.0, 24.0), "sigma (grey levels)", noise),
    Perturbation("zoom_out", "geometric", (0.85, 0.7, 0.55), "scale", zoom_out),
    Perturbation("rotation", "geometric", (30.0, 90.0, 150.0), "degrees", rotation),
)
BY_NAME = {p.name: p for p in SUITE}


@dataclass(frozen=True)
class Condition:
    """One perturbation at one severity (what a row of the report is about)."""

    perturbation: Perturbation
    severity: int

    @property
    def name(self) -> str:
        return self.perturbation.name

    @property
    def level(self) -> float:
        return self.perturbation.levels[self.severity - 1]


def conditions(suite: str = "full", names: Optional[Sequence[str]] = None) -> list[Condition]:
    """The conditions of ``suite`` (``full``: every perturbation at severities 1-3; ``quick``:
    severity 2 only; ``off``: none), optionally restricted to ``names``."""
    if suite not in SUITES:
        raise ConfigError(f"field suite {suite!r}; choose one of {', '.join(SUITES)}")
    unknown = sorted(set(names or ()) - set(BY_NAME))
    if unknown:
        raise ConfigError(f"unknown perturbation(s) {unknown}; the suite has {', '.join(BY_NAME)}")
    chosen = [p for p in SUITE if not names or p.name in names]
    sevs = {"full": SEVERITIES, "quick": (2,), "off": ()}[suite]
    return [Condition(p, s) for p in chosen for s in sevs]


__all__ = ["BY_NAME", "Condition", "Perturbation", "SEVERITIES", "SUITE", "SUITES", "conditions"]
