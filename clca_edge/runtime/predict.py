"""Classify image files: explicit files, folders (recursively) and globs. Unreadable files are
reported and skipped; the rest are classified."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from ..core.image_files import glob_images, list_images
from .backends import Classifier
from .decision import softmax, top_k
from .model import RuntimeModel
from ..core.preprocess import frame_leaf, load_rgb, normalize, preprocess, resize_center_crop

log = logging.getLogger(__name__)


@dataclass
class Inputs:
    files: list[Path] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)   # arguments that named nothing


def expand_inputs(args: Iterable[str]) -> Inputs:
    """Files as given (any suffix: a corrupt one is reported, not silently ignored), image files of
    folders (recursive, hidden ones skipped: the ``data.files`` rules) and of globs, in argument
    order, each folder/glob sorted, no duplicates."""
    out = Inputs()
    seen: set[Path] = set()
    for arg in args:
        p = Path(arg)
        if p.is_file():
            found = [p]
        elif p.is_dir():
            found = list_images(p)
        else:
            found = glob_images(arg)
        if not found:
            out.unmatched.append(arg)
        for q in found:
            if q.resolve() not in seen:
                seen.add(q.resolve())
                out.files.append(q)
    return out


@dataclass(frozen=True)
class FilePrediction:
    path: Path
    topk: Optional[list[tuple[str, float]]]   # None: unreadable
    error: str = ""
    quality: Optional[dict] = None            # the quality verdict (``Verdict.to_dict()``), when judged

    @property
    def flagged(self) -> bool:
        return self.quality is not None and not self.quality["ok"]

    def to_dict(self) -> dict:
        if self.topk is None:
            return {"path": str(self.path), "error": self.error}
        d = {"path": str(self.path), "class": self.topk[0][0], "confidence": round(self.topk[0][1], 6),
             "topk": [{"class": c, "conf": round(p, 6)} for c, p in self.topk]}
        if self.quality is not None:
            d["quality"] = self.quality
        return d


def predict_files(model: RuntimeModel, classifier: Classifier, files: Sequence[Path], k: int = 3,
                  judge: Optional[Callable[[np.ndarray], Any]] = None) -> Iterator[FilePrediction]:
    """Top-k of each file, with the bundle's temperature. ``judge(rgb_crop) -> verdict`` (the
    capture quality guard's ``check``) sees the model-size crop; predict classifies every readable
    image and reports the verdict (``quality``), where capture would refuse the frame."""
    for path in files:
        rgb = load_rgb(path)
        if rgb is None:
            log.warning("skipping %s: not a readable image (corrupt, truncated or not an image)", path)
            yield FilePrediction(path, None, "unreadable image (corrupt, truncated or not an image)")
            continue
        quality = None
        if judge is None:
            x = preprocess(rgb, model.spec)
        else:
            crop = resize_center_crop(rgb, model.spec)
            quality = judge(crop).to_dict()
            x = normalize(frame_leaf(crop, model.spec), model.spec)
        probs = softmax(classifier.logits(x), model.temperature)
        yield FilePrediction(path, top_k(probs, model.class_names, k), quality=quality)
