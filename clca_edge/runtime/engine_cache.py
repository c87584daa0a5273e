"""The TensorRT engines this device built for a bundle (``clca-edge build-engine``), kept in the
device's cache folder for the bundle (``runtime/device_cache.py``), never in the bundle: building
an engine for a bundle does not write the bundle (read-only media, a bundle shared by two
processes, a signed bundle stay byte for byte as they were).

Layout, in ``bundle_cache_dir(manifest sha256)``: ``engines.json`` (an ``EngineCache``: the same typed
``EngineRecord``/``EngineBuildFailure``/``TorchTrtModule`` records the manifest holds for a bundle's
own engines, the sha256 of every plan, and the full sha256 of the bundle's manifest it belongs to) and
``engines/<plan>``. What keys an engine: the bundle (the folder, and ``bundle_sha256`` checked on
read), the ``EngineKey`` (TensorRT version, GPU, compute capability, precision, the source ONNX's
sha256) and the builder's workspace (in the plan's name and record). Plans are written atomically
and their sha256 is checked when the runtime reads one. A missing or unreadable ``engines.json`` is
an empty cache (said once): the runtime then falls back as without engines, and build-engine
writes it afresh."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Iterator, Optional, Union

from ..core.atomic_io import atomic_write_bytes
from ..core.errors import BundleError
from ..bundle import EngineBuildFailure, EngineKey, EngineRecord, ManifestRecord, TorchTrtModule, extra_field
from .device_cache import bundle_cache_dir

log = logging.getLogger(__name__)

ENGINE_CACHE_FILE = "engines.json"
ENGINE_CACHE_FORMAT = 1
PLAN_DIR = "engines"
LOCK_FILE = ".build.lock"


@dataclass
class EngineCache(ManifestRecord):
    """``engines.json``: one bundle's engines on this device (fields as the manifest's engine keys)."""

    bundle_sha256: str
    format: int = ENGINE_CACHE_FORMAT
    engines: Dict[str, EngineRecord] = field(default_factory=dict)
    engine_build_failures: Dict[str, EngineBuildFailure] = field(default_factory=dict)
    default_engine: Optional[str] = None
    default_engine_verified: Optional[bool] = None
    torch_tensorrt: Dict[str, TorchTrtModule] = field(default_factory=dict)
    files: Dict[str, str] = field(default_factory=dict)  # sha256 of each plan, by path in the folder
    extra: Dict[str, Any] = extra_field()

    def check(self, where: str) -> None:
        if self.format != ENGINE_CACHE_FORMAT:
            raise BundleError(f"{where or ENGINE_CACHE_FILE}: engine cache format {self.format}, this clca-edge "
                              f"reads {ENGINE_CACHE_FORMAT}")


def cache_plan_name(key: EngineKey, workspace_mb: int) -> str:
    """A cached plan's file name: the key's, plus the builder's workspace (a plan built with another
    workspace may pick other kernels: it is another engine)."""
    return f"{key.file_name()[:-len('.plan')]}_ws{int(workspace_mb)}.plan"


@dataclass
class DeviceEngines:
    """One bundle's engine cache on this device: its folder and what ``engines.json`` says."""

    folder: Path
    cache: EngineCache

    @classmethod
    def open(cls, manifest_sha256: str, cache_dir: Optional[Union[str, Path]] = None) -> "DeviceEngines":
        folder = bundle_cache_dir(manifest_sha256, cache_dir)
        return cls(folder, _read(folder / ENGINE_CACHE_FILE, manifest_sha256))

    def path(self, rel: str) -> Path:
        p = PurePosixPath(rel)
        if p.is_absolute() or ".." in p.parts or not p.parts:
            raise BundleError(f"{self.folder / ENGINE_CACHE_FILE} lists {rel!r}, outside its folder; "
                              "delete the file and run clca-edge build-engine again")
        return self.folder.joinpath(*p.parts)

    def read_plan(self, rel: str) -> bytes:
        """A cached plan's bytes, checked against the sha256 recorded when it was written."""
        data = self.path(rel).read_bytes()
        if hashlib.sha256(data).hexdigest() != self.cache.files.get(rel):
            raise BundleError(f"cached engine {self.path(rel)} does not match its sha256 in {ENGINE_CACHE_FILE} "
                              "(changed or truncated); run clca-edge build-engine again")
        return data

    def write_plan(self, fname: str, plan: bytes) -> str:
        """Write a plan atomically under ``engines/`` and record its sha256; returns its path in the folder."""
        rel = f"{PLAN_DIR}/{fname}"
        atomic_write_bytes(self.path(rel), plan)
        self.cache.files[rel] = hashlib.sha256(plan).hexdigest()
        return rel

    def save(self) -> None:
        data = json.dumps(self.cache.to_dict(), indent=1).encode()
        EngineCache.from_dict(json.loads(data), str(self.folder / ENGINE_CACHE_FILE))  # never write what we cannot read
        atomic_write_bytes(self.folder / ENGINE_CACHE_FILE, data)


def _read(path: Path, manifest_sha256: str) -> EngineCache:
    empty = EngineCache(bundle_sha256=manifest_sha256)
    try:
        # is_file() itself raises on a folder this user may not enter (made by root, umask 077):
        # every open of a bundle reads this, so such a cache is empty, not an error
        cache = EngineCache.from_dict(json.loads(path.read_bytes()), str(path))
    except FileNotFoundError:
        return empty
    except (OSError, ValueError, BundleError) as e:
        log.warning("engine cache %s is unreadable (%s); treated as empty, clca-edge build-engine rewrites it", path, e)
        return empty
    if cache.bundle_sha256 != manifest_sha256:
        log.warning("engine cache %s belongs to another bundle (manifest %s); ignored", path, cache.bundle_sha256[:16])
        return empty
    return cache


@contextlib.contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """One build-engine at a time per bundle on this device (the agent's staging and the capture
    unit's start may both run one): the second waits, then reuses what the first built. An
    existing folder this user cannot write (made by root) raises PermissionError here, before any
    build, not when its first plan is written."""
    folder.mkdir(parents=True, exist_ok=True)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder))
    try:
        import fcntl
    except ImportError:  # not on Linux: no lock (the device is Linux)
        yield
        return
    with open(folder / LOCK_FILE, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


__all__ = ["DeviceEngines", "ENGINE_CACHE_FILE", "ENGINE_CACHE_FORMAT", "EngineCache", "PLAN_DIR", "build_lock",
           "cache_plan_name"]
