"""What ``clca-edge explain`` reports, per image and per reduction location: the types the run
(``explain/run.py``) fills and the picture (``explain/render.py``) and ``--json`` read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional


@dataclass
class LocationView:
    """One reduction location as one image saw it (patch indices are row-major in the patch grid)."""

    block: int
    keep_rate: float
    tokens: int  # reducible tokens after the reduction (the token plan)
    kept: list[int]  # original patches a patch token still stands for
    groups: Optional[list[list[int]]]  # merging methods: the patches each token merged
    fused_tokens: int  # EViT: tokens blending the dropped patches
    cache_tokens: int  # recovered CLC tokens among ``tokens``
    placeholders: int  # ATS repeated picks (masked, kept for static shapes)
    recovered_after: int  # cache tokens appended after this block
    contribution: Optional[float] = None  # CLA head: this location's CLS token's push to the prediction

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["groups"] is None:
            del d["groups"]
        return d


@dataclass
class ImageExplanation:
    path: str
    png: str
    predicted: str
    confidence: float
    true: Optional[str]
    locations: list[LocationView]
    cla: Optional[dict] = None  # {"blocks", "contributions", "reference"}

    def to_dict(self) -> dict:
        d = {"path": self.path, "png": self.png, "predicted": self.predicted, "confidence": self.confidence,
             "true": self.true, "locations": [loc.to_dict() for loc in self.locations]}
        if self.cla is not None:
            d["cla"] = self.cla
        return d


@dataclass
class ExplainReport:
    checkpoint: str
    method: str
    keep_rates: list[float]
    grid: tuple[int, int]
    patch_size: int
    images: list[ImageExplanation] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"checkpoint": self.checkpoint, "method": self.method, "keep_rates": self.keep_rates,
                "grid": list(self.grid), "patch_size": self.patch_size,
                "images": [im.to_dict() for im in self.images], "skipped": self.skipped}
