"""A map-style dataset over (path, label) samples that never stops on a bad file: unreadable or
truncated images come back as ``None`` and the collate function drops and reports them."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch.utils.data import Dataset

from ..core.preprocess import load_rgb
from .sources import Sample


class LeafImages(Dataset):
    def __init__(self, samples: Sequence[Sample], transform: Callable) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Optional[torch.Tensor], int, int]:
        path, label = self.samples[index]
        rgb = load_rgb(path)
        if rgb is None:
            return None, label, index
        return self.transform(rgb), label, index


class Batch:
    """Images, labels, dataset indices of the kept samples, and the indices of skipped ones."""

    __slots__ = ("images", "labels", "indices", "skipped")

    def __init__(self, images, labels, indices, skipped) -> None:
        self.images, self.labels, self.indices, self.skipped = images, labels, indices, skipped

    def pin_memory(self) -> "Batch":
        return Batch(self.images.pin_memory(), self.labels.pin_memory(), self.indices, self.skipped)


def collate_skipping(items) -> Batch:
    kept = [it for it in items if it[0] is not None]
    skipped = [it[2] for it in items if it[0] is None]
    if not kept:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), [], skipped)
    return Batch(torch.stack([it[0] for it in kept]), torch.tensor([it[1] for it in kept], dtype=torch.long),
                 [it[2] for it in kept], skipped)
