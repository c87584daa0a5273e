"""The preprocessing contract shared by training (torch), deploy and the device runtime (numpy).

Evaluation transform: resize the shorter side to ``resize_size`` (keeping aspect), center-crop
``img_size`` x ``img_size``, scale to [0, 1], normalise with ``mean``/``std``, CHW float32.
Torch-free so the device can read it from a bundle.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from .errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic")


@dataclass(frozen=True)
class PreprocessSpec:
    img_size: int = 224
    crop_pct: float = 0.875
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if not 0.0 < self.crop_pct <= 1.0:
            raise ConfigError(f"crop_pct={self.crop_pct} is outside (0, 1]")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation={self.interpolation!r}; choose one of {', '.join(INTERPOLATIONS)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"mean={self.mean} / std={self.std} must have 3 values, std > 0")

    @property
    def resize_size(self) -> int:
        """Shorter side after resizing, before the center crop."""
        return int(math.floor(self.img_size / self.crop_pct))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["resize_size"] = self.resize_size
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PreprocessSpec":
        d = {k: v for k, v in d.items() if k != "resize_size"}
        return cls(**d)
