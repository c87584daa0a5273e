"""A map-style dataset over (path, label) samples that never stops on a bad file: unreadable or
truncated images come back as ``None`` and the collate function drops and reports them.

Augmentation randomness is a function of (seed, epoch, sample index) alone: ``EpochSampler``
hands the dataset (epoch, index) pairs, and ``__getitem__`` draws the sample's augmentation from
torch's generator seeded for that pair (the preset's only source of randomness, data.augment),
inside ``torch.random.fork_rng`` so the caller's generator is left as it was. Which process
(main, or which DataLoader worker) transforms a sample, and since when that worker lives, does
not matter: workers persist across epochs, and ``--resume`` (or another ``--workers``) draws what
an uninterrupted run draws.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..core.preprocess import load_rgb
from .sources import Sample


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample of one epoch, well mixed (numpy's SeedSequence), so that
    neighbouring (epoch, index) pairs get unrelated streams."""
    words = np.random.SeedSequence([seed % 2**63, epoch, index]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


class LeafImages(Dataset):
    """``images``: where decoded images come from (a core.image_cache cache; default: decode the
    file). ``seed``: per-sample augmentation seeds (None: the transform draws from whatever state
    torch's generator is in, e.g. an evaluation transform that draws nothing)."""

    def __init__(self, samples: Sequence[Sample], transform: Callable, images=None,
                 seed: Optional[int] = None) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.images = images
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: Union[int, tuple[int, int]]) -> tuple[Optional[torch.Tensor], int, int]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        path, label = self.samples[index]
        rgb = self.images.get(path) if self.images is not None else load_rgb(path)
        if rgb is None:
            return None, label, index
        if self.seed is None:
            return self.transform(rgb), label, index
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only: torch.manual_seed would also reseed CUDA's (workers=0 on a GPU).
            torch.default_generator.manual_seed(sample_seed(self.seed, epoch, index))
            return self.transform(rgb), label, index


class EpochSampler(Sampler):
    """Yields (epoch, index) for each index of ``inner`` (e.g. a DistributedSampler): the epoch
    travels with every index to whichever worker fetches it, so persistent workers need no
    shared epoch counter. ``set_epoch`` is passed on to ``inner``."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        for index in self.inner:
            yield epoch, int(index)

    def __len__(self) -> int:
        return len(self.inner)


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
