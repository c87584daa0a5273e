"""Classify image files: explicit files, folders (recursively) and globs. Unreadable files are
reported and skipped; the rest are classified."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

from ..core.files import glob_images, list_images
from .backends import Classifier
from .decision import softmax, top_k
from .model import RuntimeModel
from ..core.preprocess import load_rgb, preprocess

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

    def to_dict(self) -> dict:
        if self.topk is None:
            return {"path": str(self.path), "error": self.error}
        return {"path": str(self.path), "class": self.topk[0][0], "confidence": round(self.topk[0][1], 6),
                "topk": [{"class": c, "conf": round(p, 6)} for c, p in self.topk]}


def predict_files(model: RuntimeModel, classifier: Classifier, files: Sequence[Path], k: int = 3
                  ) -> Iterator[FilePrediction]:
    for path in files:
        rgb = load_rgb(path)
        if rgb is None:
            log.warning("skipping %s: not a readable image (corrupt, truncated or not an image)", path)
            yield FilePrediction(path, None, "unreadable image (corrupt, truncated or not an image)")
            continue
        probs = softmax(classifier.logits(preprocess(rgb, model.spec)))
        yield FilePrediction(path, top_k(probs, model.class_names, k))
