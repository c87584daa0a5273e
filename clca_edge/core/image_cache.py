"""Decoded-image caches: each image decoded, converted to RGB and resized once, then served as
uint8 arrays to training, evaluation and the deploy gate.

What is cached is what never changes between epochs: ``load_rgb`` then ``resize_shorter`` with
the run's spec (the shorter side at ``spec.resize_size``). Every consumer starts from that same
``resize_shorter`` (the evaluation transform, every augmentation preset, ``preprocess``), and
OpenCV's resize of an image already at its target size is an exact copy, so a cached image gives
the consumer bit for bit the tensor a fresh decode would. Never the augmentation.

Two kinds, one interface (``get(path)``: the RGB uint8 image or ``None`` when the file cannot be
read; a miss is decoded and, until ``freeze()``, stored):

- ``RamImageCache``: a dict in this process, bounded by a byte budget. DataLoader workers forked
  after it was filled share its pages.
- ``DiskImageCache``: a folder ``cache.json`` + ``entries/<sha256[:2]>/<sha256>.npy``. Entries are
  keyed by the SHA-256 of the image file's full content, so a changed image is a different key
  and is decoded again, never served stale (size + mtime would miss an edit that keeps both, and
  hashing costs a small part of decoding: every file is read to hash it, none is decoded on a hit).
  ``cache.json`` holds the format and the preprocessing settings (resize, interpolation, OpenCV
  version); a cache written with others is emptied and rebuilt, with a one-line note. Each entry
  is written to a temp file and renamed into place, so a reader never sees half an entry; entries
  are not fsynced (a cache: a torn entry fails to load and is decoded again). An undecodable file
  gets an empty ``.bad`` marker under its hash, so it is found once. A write that fails (a full
  disk) removes the partial cache and turns the cache off: callers go on decoding, with a warning.

Torch-free (core): training (data), ``clca-edge eval`` and the deploy gate (runtime.scoring) all
import it from here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .errors import OutputError
from .atomic_io import atomic_write_bytes
from .preprocess import PreprocessSpec, load_rgb, resize_shorter

log = logging.getLogger(__name__)

# Bump when what an entry holds or how it is laid out changes: older caches are then rebuilt.
CACHE_FORMAT = 1
CACHE_FILE = "cache.json"
ENTRIES = "entries"
GB = 1024 ** 3
DEFAULT_RAM_FRACTION = 0.5   # train --cache auto/ram: at most this share of the memory available at start
MAX_RAM_FRACTION = 0.9       # an explicit --cache-budget is clamped to this share of the available memory

PathLike = Union[str, os.PathLike]


def cache_settings(spec: PreprocessSpec) -> dict[str, Any]:
    """What a cached image depends on: the key of a disk cache (with the format)."""
    import cv2

    return {"format": CACHE_FORMAT, "content": "rgb uint8, shorter side resized",
            "resize_size": spec.resize_size, "interpolation": spec.interpolation, "opencv": cv2.__version__}


def decode_resized(path: PathLike, spec: PreprocessSpec) -> Optional[np.ndarray]:
    """What a cache stores for ``path``: RGB uint8 (H, W, 3), shorter side ``spec.resize_size``;
    ``None`` if the file cannot be read."""
    rgb = load_rgb(path)
    return None if rgb is None else np.ascontiguousarray(resize_shorter(rgb, spec))


def file_sha256(path: PathLike) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


# ---- memory ----------------------------------------------------------------------------------

def available_memory() -> Optional[int]:
    """Bytes of memory available to new allocations (Linux MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class RamBudget:
    bytes: int
    note: str  # how it was chosen, for the start of a run


def ram_budget(requested_gb: Optional[float] = None, share: int = 1,
               available: Optional[int] = None) -> RamBudget:
    """The RAM cache budget: ``requested_gb`` (clamped to MAX_RAM_FRACTION of the available
    memory, saying so) or DEFAULT_RAM_FRACTION of the available memory; divided by ``share``
    (processes on this machine that each hold a cache, e.g. DDP ranks)."""
    avail = available_memory() if available is None else available
    per = f" per process ({share} on this machine)" if share > 1 else ""
    if avail is None:
        if requested_gb is None:
            return RamBudget(0, "free memory unknown: no RAM budget (pass --cache-budget GB)")
        return RamBudget(int(requested_gb * GB / share), f"{requested_gb:g} GB (--cache-budget){per}")
    if requested_gb is None:
        b = int(avail * DEFAULT_RAM_FRACTION / share)
        return RamBudget(b, f"{b / GB:.1f} GB = {DEFAULT_RAM_FRACTION:.0%} of the {avail / GB:.1f} GB available{per}")
    limit = int(avail * MAX_RAM_FRACTION)
    if requested_gb * GB > limit:
        b = limit // share
        return RamBudget(b, f"--cache-budget {requested_gb:g} GB is more than this machine's {avail / GB:.1f} GB of "
                            f"available memory: clamped to {limit / GB:.1f} GB ({MAX_RAM_FRACTION:.0%}){per}")
    return RamBudget(int(requested_gb * GB / share), f"{requested_gb:g} GB (--cache-budget){per}")


# ---- caches ----------------------------------------------------------------------------------

class ImageCache:
    """Common part: read-through ``get``, counters, ``freeze``."""

    kind = "none"

    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec
        self.frozen = False
        self.hits = 0
        self.decoded = 0
        self.unreadable = 0
        self._lock = threading.Lock()

    def get(self, path: PathLike) -> Optional[np.ndarray]:
        raise NotImplementedError

    def freeze(self) -> None:
        """No more stores: what is not cached is decoded on each read (DataLoader workers must
        not grow private copies of the cache)."""
        self.frozen = True

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def describe(self) -> str:
        return self.kind

    def __getstate__(self) -> dict[str, Any]:  # a lock does not pickle (spawned DataLoader workers)
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class RamImageCache(ImageCache):
    """Decoded images in a dict, up to ``budget`` bytes. ``all_or_nothing`` (``train --cache
    auto``): as soon as the whole set (``expected`` images, extrapolated from those seen) cannot
    fit, the cache empties itself and stores nothing more, rather than fill memory it would then
    release; otherwise (``--cache ram``) it keeps what fits, and the rest is decoded each read."""

    kind = "ram"

    def __init__(self, spec: PreprocessSpec, budget: int, expected: int = 0, all_or_nothing: bool = False) -> None:
        super().__init__(spec)
        self.budget = int(budget)
        self.expected = expected
        self.all_or_nothing = all_or_nothing
        self.nbytes = 0
        self.seen_bytes = 0  # of every decoded image, stored or not: the size of the whole set
        self.seen = 0
        self.over_budget = False
        self._store: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._store)

    def get(self, path: PathLike) -> Optional[np.ndarray]:
        key = str(path)
        img = self._store.get(key)
        if img is not None:
            self.hits += 1  # unlocked: a statistic, read in the process that filled the cache
            return img
        img = decode_resized(path, self.spec)
        if img is None:
            self._count("unreadable")
            return None
        if self.frozen:
            return img
        with self._lock:
            self.decoded += 1
            self.seen += 1
            self.seen_bytes += img.nbytes
            if self.all_or_nothing and not self.over_budget and self.projected_over():
                self.over_budget = True
                self._store.clear()
                self.nbytes = 0
            if not self.over_budget and key not in self._store:
                if self.nbytes + img.nbytes <= self.budget:
                    self._store[key] = img
                    self.nbytes += img.nbytes
                else:
                    self.over_budget = True
                    if self.all_or_nothing:
                        self._store.clear()
                        self.nbytes = 0
        return img

    @property
    def projected_bytes(self) -> int:
        """The decoded set's size: measured when all were seen, else extrapolated from those seen."""
        if not self.seen:
            return 0
        return max(self.seen_bytes, int(self.seen_bytes / self.seen * max(self.expected, self.seen)))

    def projected_over(self, min_seen: int = 32) -> bool:
        """Over budget, or (after ``min_seen`` images, enough for a fair mean size) on the way."""
        return self.over_budget or (self.seen >= min_seen and self.projected_bytes > self.budget)

    def clear(self) -> None:
        with self._lock:
            self._store.clear()
            self.nbytes = 0

    def describe(self) -> str:
        return f"ram ({len(self._store)} images, {self.nbytes / 2**20:.1f} MiB)"


class DiskImageCache(ImageCache):
    """See the module docstring. Open with ``DiskImageCache.open``."""

    kind = "disk"

    def __init__(self, root: Path, spec: PreprocessSpec, writable: bool) -> None:
        super().__init__(spec)
        self.root = Path(root)
        self.writable = writable
        self.failed: Optional[str] = None  # why writing stopped (the cache is then off)
        self._digests: dict[str, Optional[str]] = {}
        self._entries = self.root / ENTRIES

    @classmethod
    def open(cls, root: PathLike, spec: PreprocessSpec, writable: bool = True) -> tuple["DiskImageCache", list[str]]:
        """Open (or, ``writable``, create) the cache at ``root`` for ``spec``; returns it and
        one-line notes for the user. A cache of another format or other settings is emptied and
        rebuilt when ``writable``, else refused (``OutputError``; ``open_for_reading`` then uses
        none). A folder with content that is not a cache is refused: it is not ours to fill."""
        root = Path(root)
        settings = cache_settings(spec)
        notes: list[str] = []
        marker = root / CACHE_FILE
        if root.exists() and not root.is_dir():
            raise OutputError(f"--cache-dir {root} is a file; give a folder for the decoded-image cache")
        if marker.is_file():
            try:
                old = json.loads(marker.read_text())
            except (OSError, ValueError):
                old = None
            if not isinstance(old, dict) or old.get("settings") != settings:
                if not writable:
                    raise OutputError(f"decoded-image cache {root} was written with other settings")
                notes.append(f"disk cache {root}: written {_settings_diff(old, settings)}; rebuilding it")
                shutil.rmtree(root / ENTRIES, ignore_errors=True)
                marker.unlink()
        elif root.is_dir() and any(root.iterdir()):
            raise OutputError(f"--cache-dir {root} holds files and is not a clca-edge image cache; give a new or "
                              "empty folder (or an earlier cache)")
        elif not writable:
            raise OutputError(f"{root} holds no decoded-image cache")
        cache = cls(root, spec, writable)
        if writable and not marker.is_file():
            try:
                (root / ENTRIES).mkdir(parents=True, exist_ok=True)
                from .. import __version__

                atomic_write_bytes(marker, json.dumps({"settings": settings, "written_by": f"clca-edge {__version__}"},
                                                      indent=2).encode())
            except OSError as e:
                cache._fail(e)
        return cache, notes + ([cache.failed] if cache.failed else [])

    def _entry(self, digest: str, suffix: str = ".npy") -> Path:
        return self._entries / digest[:2] / f"{digest}{suffix}"

    def digest(self, path: PathLike) -> Optional[str]:
        key = str(path)
        if key not in self._digests:
            self._digests[key] = file_sha256(path)
        return self._digests[key]

    def get(self, path: PathLike) -> Optional[np.ndarray]:
        if self.failed:
            return self._decode(path, store=False)
        digest = self.digest(path)
        if digest is None:  # missing or unreadable file
            self._count("unreadable")
            return None
        entry = self._entry(digest)
        try:
            img = np.load(entry, allow_pickle=False)
            if img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8:
                self._count("hits")
                return img
        except (OSError, ValueError, EOFError):  # absent, or torn: decode it again
            pass
        if self._entry(digest, ".bad").is_file():
            self._count("unreadable")
            return None
        return self._decode(path, store=self.writable and not self.frozen, digest=digest)

    def _decode(self, path: PathLike, store: bool, digest: Optional[str] = None) -> Optional[np.ndarray]:
        img = decode_resized(path, self.spec)
        self._count("decoded" if img is not None else "unreadable")
        if store and digest is not None:
            try:
                if img is None:
                    self._write(self._entry(digest, ".bad"), b"")
                else:
                    self._write_array(self._entry(digest), img)
            except OSError as e:
                self._fail(e)
        return img

    def _write_array(self, path: Path, img: np.ndarray) -> None:
        import io

        buf = io.BytesIO()
        np.save(buf, img, allow_pickle=False)
        self._write(path, buf.getvalue())

    def _write(self, path: Path, data: bytes) -> None:
        """Temp file in the entry's folder, then rename: readers never see a partial entry."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def _fail(self, error: OSError) -> None:
        """A write failed (full disk, permissions, quota): remove what was written and go on uncached."""
        with self._lock:
            if self.failed:
                return
            self.failed = (f"disk cache {self.root}: cannot write ({error.strerror or error}); removed the partial "
                           "cache, going on uncached")
        log.warning(self.failed)
        shutil.rmtree(self.root / ENTRIES, ignore_errors=True)
        try:
            (self.root / CACHE_FILE).unlink()
        except OSError:
            pass
        try:
            self.root.rmdir()  # only when empty: nothing of anyone else's goes
        except OSError:
            pass

    def finish(self) -> None:
        """After a build: a cache that failed part-way is removed again (a write racing the first
        removal may have left an entry), and nothing more is stored."""
        if self.failed:
            shutil.rmtree(self.root / ENTRIES, ignore_errors=True)
            try:
                self.root.rmdir()
            except OSError:
                pass
        self.freeze()

    def describe(self) -> str:
        if self.failed:
            return "none (disk cache failed)"
        return f"disk ({self.root})"


def _settings_diff(old: Any, new: dict[str, Any]) -> str:
    if not isinstance(old, dict) or not isinstance(old.get("settings"), dict):
        return "in an unknown format"
    o = old["settings"]
    return "with " + ", ".join(f"{k} {o.get(k)!r} (now {v!r})" for k, v in new.items() if o.get(k) != v)


def open_for_reading(root: Optional[PathLike], spec: PreprocessSpec) -> Optional[DiskImageCache]:
    """A disk cache that a reader (eval, the deploy gate) may use: it exists and was written for
    ``spec``'s settings; else None (the reader decodes, and nothing is written)."""
    if root is None or not (Path(root) / CACHE_FILE).is_file():
        return None
    try:
        cache, _ = DiskImageCache.open(root, spec, writable=False)
    except OutputError as e:
        log.info("not reading the decoded-image cache: %s", e)
        return None
    return cache


__all__ = ["CACHE_FORMAT", "DiskImageCache", "ImageCache", "RamBudget", "RamImageCache", "available_memory",
           "cache_settings", "decode_resized", "file_sha256", "open_for_reading", "ram_budget"]
