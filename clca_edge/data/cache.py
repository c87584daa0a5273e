"""``train --cache auto|ram|disk|none``: which decoded-image cache (core.image_cache) a run reads
its images through, filled by the data check's one decode pass (data.check), before the first
step.

- ``auto`` (the default): RAM when the decoded training + validation images fit the budget (half
  the memory available at the start, or ``--cache-budget``), else none; the start of the run says
  which and why.
- ``ram``: RAM, keeping what fits the budget (the rest is decoded every epoch, and the run says so).
- ``disk``: a content-hashed cache in ``RUN/cache`` (or ``--cache-dir``, which several runs over the
  same images and preprocessing may share); later runs, ``--resume``, ``clca-edge eval`` and the
  deploy gate read it.
- ``none``: every image decoded in every epoch (as before).

Torch-free.
"""

from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..core.errors import ConfigError
from ..core.image_cache import (GB, DiskImageCache, ImageCache, RamBudget, RamImageCache, open_for_reading,
                                ram_budget)
from ..core.preprocess import PreprocessSpec

log = logging.getLogger(__name__)

CACHE_MODES = ("auto", "ram", "disk", "none")
DEFAULT_CACHE = "auto"
RUN_CACHE_DIR = "cache"  # a run's own disk cache, inside its run folder


def cached_spec(spec: PreprocessSpec, augment: str) -> PreprocessSpec:
    """The preprocessing a cached image keeps for augmentation preset ``augment``. Every preset
    (data.augment) starts from ``resize_shorter(rgb, spec)`` and rotates, zooms and warps the crop
    at model resolution, so what any of them still needs from the file is exactly the evaluation
    resize: the cache stores that, and its key follows ``spec``. A preset that wanted more
    resolution from the file would raise the resize here (and in its transform)."""
    from .augment import get_preset

    get_preset(augment)  # an unknown preset fails here, not in the first epoch
    return spec


def run_cache_dir(run_dir, cache_dir: Optional[str]) -> Path:
    return Path(cache_dir) if cache_dir else Path(run_dir) / RUN_CACHE_DIR


@dataclass
class RunCache:
    """The cache a run uses (``cache`` None: decode every epoch) and what to tell the user."""

    requested: str
    cache: Optional[ImageCache] = None
    budget: Optional[RamBudget] = None
    expected: int = 0
    notes: list[str] = field(default_factory=list)
    created: Optional[Path] = None  # a disk cache folder this call made (undone if the data check fails)

    def readable(self, path: str) -> bool:
        """The data check's decode: with a cache it fills it."""
        if self.cache is None:
            from .check import decodes

            return decodes(path)
        return self.cache.get(path) is not None

    def finish(self) -> str:
        """After the build: settle ``auto``, stop storing, and return the line for the start of the run."""
        c = self.cache
        if c is None:
            why = "--cache none" if self.requested == "none" else "no cache"
            return f"cache: none ({why}): every image is decoded in every epoch"
        if isinstance(c, DiskImageCache):
            c.finish()
            if c.failed:
                self.cache = None
                return f"cache: none ({c.failed})"
            return (f"cache: disk {c.root} ({c.hits} image(s) read from it, {c.decoded} decoded into it, "
                    f"{c.unreadable} unreadable)")
        assert isinstance(c, RamImageCache)
        c.freeze()
        budget = self.budget.note if self.budget else ""
        if self.requested == "auto" and c.over_budget:
            self.cache = None
            c.clear()
            return (f"cache: none: the decoded images (about {c.projected_bytes / GB:.2f} GB) do not fit the RAM "
                    f"budget ({budget}); --cache disk keeps them on disk, --cache-budget GB sets the budget")
        line = f"cache: ram ({self.requested}): {len(c)} image(s), {c.nbytes / 2**20:.1f} MiB (budget {budget})"
        if c.over_budget:
            line += (f"; {c.seen - len(c)} image(s) did not fit and are decoded every epoch (raise --cache-budget "
                     "or use --cache disk)")
        return line

    def undo(self) -> None:
        """The data check refused the data: remove the disk cache this run just made."""
        if self.created is not None:
            shutil.rmtree(self.created, ignore_errors=True)


def open_run_cache(mode: str, spec: PreprocessSpec, *, expected: int, run_dir, cache_dir: Optional[str] = None,
                   budget_gb: Optional[float] = None, share: int = 1, builder: bool = True) -> RunCache:
    """The cache of a training run. ``builder``: this process fills it (rank 0; the others read
    a disk cache rank 0 built, and fill a RAM cache of their own)."""
    if mode not in CACHE_MODES:
        raise ConfigError(f"--cache {mode!r}; choose one of {', '.join(CACHE_MODES)}")
    rc = RunCache(mode, expected=expected)
    if mode == "none":
        return rc
    if mode == "disk":
        root = run_cache_dir(run_dir, cache_dir)
        if not builder:
            rc.cache = open_for_reading(root, spec)
            return rc
        existed = root.exists()
        rc.cache, rc.notes = DiskImageCache.open(root, spec, writable=True)
        if not existed:
            rc.created = root
        return rc
    rc.budget = ram_budget(budget_gb, share)
    rc.cache = RamImageCache(spec, rc.budget.bytes, expected=expected, all_or_nothing=mode == "auto")
    return rc


def checkpoint_cache(checkpoint, meta, cache_dir: Optional[str] = None) -> Optional[DiskImageCache]:
    """The disk cache that ``clca-edge eval`` and the deploy gate read a checkpoint's images
    through: ``cache_dir``, else the one its training run wrote (the run's --cache-dir, or
    RUN/cache); None when there is none with the checkpoint's preprocessing. Read only: entries are
    keyed by file content, so an image changed since is decoded afresh, and nothing is written."""
    if cache_dir is None:
        recorded = (getattr(meta, "extra", None) or {}).get("train_config", {}).get("cache_dir")
        cache_dir = str(run_cache_dir(Path(checkpoint).parent, recorded))
    cache = open_for_reading(cache_dir, meta.preprocess)
    if cache is not None:
        log.info("reading decoded images through the cache %s", cache.root)
    return cache


def fill(cache: ImageCache, paths: Sequence[str], workers: int = 0) -> None:
    """Decode ``paths`` into ``cache`` on a few threads (a DDP rank that did not run the data check)."""
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(cache.get, paths, chunksize=16):
            pass


__all__ = ["CACHE_MODES", "DEFAULT_CACHE", "RUN_CACHE_DIR", "RunCache", "cached_spec", "checkpoint_cache", "fill", "open_run_cache",
           "run_cache_dir"]
