"""Before training: is the data a classification problem at all, and which files cannot be read.

Every training and validation image is decoded once, by the decoder training uses
(``core.preprocess.load_bgr``), on a few threads (OpenCV releases the GIL while decoding). A
data set that would train a meaningless model is refused here, before any weights exist: fewer
than two classes, a class whose training images are all unreadable, or no readable validation
image. Unreadable files are counted per class, so the start of a run can say so; the run goes on
without them. With a decoded-image cache (``train --cache``) this decode IS the cache build
(its ``readable`` keeps what it decodes), so each file is decoded once at the start, not twice. Torch-free.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from ..core.errors import DataError
from ..core.preprocess import load_bgr
from .sources import DataSplits, Sample


@dataclass
class DataCheck:
    """What the check found, per split: readable images per class and the unreadable files."""

    class_names: list[str]
    train_counts: list[int]
    val_counts: list[int]
    unreadable: dict[str, list[Sample]] = field(default_factory=dict)  # split -> unreadable samples

    def unreadable_per_class(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for part in self.unreadable.values():
            for _, label in part:
                name = self.class_names[label]
                out[name] = out.get(name, 0) + 1
        return out

    @property
    def unreadable_paths(self) -> list[str]:
        return sorted(p for part in self.unreadable.values() for p, _ in part)


def decodes(path: str) -> bool:
    return load_bgr(path) is not None


def _readable(samples: Sequence[Sample], workers: int, progress: Optional[Callable[[int], None]],
              readable: Callable[[str], bool]) -> list[bool]:
    def ok(sample: Sample) -> bool:
        return readable(sample[0])

    out: list[bool] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for flag in pool.map(ok, samples, chunksize=16):
            out.append(flag)
            if progress is not None:
                progress(1)
    return out


def check_training_data(splits: DataSplits, where: str, workers: int = 0,
                        progress: Optional[Callable[[int], None]] = None,
                        readable: Callable[[str], bool] = decodes) -> tuple[DataSplits, DataCheck]:
    """Refuse a data set that would train a meaningless model (``DataError`` naming the class and
    the fix); return the splits without their unreadable files, and what was found. ``readable``
    decodes one file (by default and discards it; a cache's ``get`` keeps it)."""
    names = splits.class_names
    if len(names) < 2:
        found = f"one class ({names[0]!r})" if names else "no class"
        raise DataError(f"{where} holds {found}; a classifier needs at least 2 classes, one folder (or class id) "
                        "per class")
    workers = workers or min(8, os.cpu_count() or 1)
    kept: dict[str, list[Sample]] = {}
    counts: dict[str, list[int]] = {}
    unreadable: dict[str, list[Sample]] = {}
    for split in ("train", "val", "test"):
        samples = splits.split(split)
        flags = _readable(samples, workers, progress, readable) if split != "test" else [True] * len(samples)
        kept[split] = [s for s, ok in zip(samples, flags) if ok]
        bad = [s for s, ok in zip(samples, flags) if not ok]
        if bad:
            unreadable[split] = bad
        counts[split] = [0] * len(names)
        for _, label in kept[split]:
            counts[split][label] += 1
    empty = [n for n, c in zip(names, counts["train"]) if c == 0]
    if empty:
        files = {n: sum(1 for _, lb in splits.train if names[lb] == n) for n in empty}
        detail = "; ".join(f"{n!r}: {files[n]} file(s), none readable" for n in empty[:5])
        raise DataError(f"{where}: class(es) without a readable training image ({detail}); every class needs "
                        "training images: replace the corrupt files or remove the class")
    if splits.val and not kept["val"]:
        raise DataError(f"{where}: none of the {len(splits.val)} validation image(s) can be read (e.g. "
                        f"{splits.val[0][0]}); replace them, or split the training images with --val-split")
    clean = DataSplits(names, kept["train"], kept["val"], kept["test"], layout=splits.layout)
    return clean, DataCheck(list(names), counts["train"], counts["val"], unreadable)


__all__ = ["DataCheck", "check_training_data"]
