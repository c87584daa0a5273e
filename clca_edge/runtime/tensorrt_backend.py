"""The TensorRT backend: runs an engine built for exactly this device (TensorRT version, GPU,
precision, ONNX hash; ``bundle.EngineKey``): one ``clca-edge build-engine`` built into this device's
cache (``runtime/engine_cache.py``), preferred, else one of the bundle's own (built by deploy on a
Jetson, in its manifest). Engines are never built at capture start (minutes on a Jetson): a missing,
stale or foreign engine is a fallback to ONNX Runtime that names the command to run, never a wait
and never a crash.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .backends import BackendUnavailable, Classifier
from ..bundle import ENGINE_SOURCE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoundEngine:
    """The plan to run: where it is, its sha256 (recorded when written), and whether it is in this
    device's cache (its bytes are checked when read) or the bundle's own (verified at load)."""

    path: Path
    sha256: Optional[str]
    rel: str
    cached: bool


def _places(bundle, cached):
    """Where engines are looked for, in order: this device's cache, then the bundle's own."""
    if cached is not None:
        c = cached.cache
        yield c.engines, c.default_engine, cached.path, c.files, True
    m = bundle.manifest
    yield bundle.engines, m.default_engine, lambda rel: bundle.root / rel, m.files, False


def find_engine(bundle, precision: str, trt, gpu, cached=None) -> FoundEngine:
    """The plan whose key matches this device exactly (``cached``: this device's
    ``engine_cache.DeviceEngines`` for the bundle, looked in first); BackendUnavailable otherwise.
    The first place holding an engine for the key decides: a cached engine build-engine rejected
    here is not replaced by the bundle's own for the same key."""
    from ..engines.tensorrt import engine_key

    src = bundle.variants.get(ENGINE_SOURCE[precision])
    if src is None or src.path is None:
        raise BackendUnavailable(f"bundle has no {ENGINE_SOURCE[precision]} ONNX to build a {precision} engine from")
    key = engine_key(trt, gpu, precision, bundle.sha256(src.path))  # verified at load: no re-hash
    others = []
    for engines, default, path, files, in_cache in _places(bundle, cached):
        matches = [f for f, rec in engines.items() if rec.key == key]
        usable = [f for f in matches if engines[f].status.usable]
        if usable:
            rec = engines[default if default in usable else usable[0]]
            return FoundEngine(path(rec.file), files.get(rec.file), rec.file, in_cache)
        if matches:
            rec = engines[matches[0]]
            raise BackendUnavailable(f"the {precision} engine {matches[0]} is marked {rec.status.value!r} by build-engine")
        others += [f for f, rec in engines.items() if rec.key.precision == precision]
    where = f"TensorRT {key.trt_version} on {key.gpu_name} (sm {key.compute_capability})"
    stale = f" (cached engines {', '.join(others)} were built for another TensorRT/GPU/ONNX)" if others else ""
    raise BackendUnavailable(f"no {precision} engine built for {where}{stale}; run "
                             f"'clca-edge build-engine --bundle {bundle.source or bundle.root} --precision {precision}' on this device")


class TensorRTClassifier(Classifier):
    backend = "tensorrt"

    def __init__(self, runner, precision: str, detail: str = "", source_file=None,
                 key: Optional[dict] = None, source_sha256: Optional[str] = None):
        self._runner = runner
        self.precision = precision
        self.detail = detail
        self.source_file = source_file
        self.source_sha256 = source_sha256
        self._key = dict(key or {})

    def key_info(self) -> dict:
        return dict(self._key)

    @classmethod
    def from_bundle(cls, bundle, precision: str, cached=None) -> "TensorRTClassifier":
        """The engine ``find_engine`` picks (``cached``: this device's engine cache for the bundle)."""
        from ..core.errors import ClcaEdgeError
        from ..engines.tensorrt import TrtRunner, gpu_info, import_tensorrt

        found = None
        try:
            trt = import_tensorrt()
            gpu = gpu_info()
            found = find_engine(bundle, precision, trt, gpu, cached)
            plan = cached.read_plan(found.rel) if found.cached else found.path.read_bytes()
            runner = TrtRunner(trt, plan)
        except ClcaEdgeError as e:  # EngineError: no TensorRT, no CUDA bindings, undeserialisable plan
            raise BackendUnavailable(str(e)) from None
        except OSError as e:
            what = f"engine {found.path} cannot be read" if found is not None else "TensorRT cannot start"
            raise BackendUnavailable(f"{what} ({e.strerror or e})") from None
        where = "this device's cache" if found.cached else "the bundle"
        return cls(runner, precision, detail=f"TensorRT {trt.__version__}, {found.path.name} ({where})",
                   source_file=found.path, source_sha256=found.sha256,
                   key={"tensorrt": str(trt.__version__), "gpu": gpu.name, "compute_capability": gpu.compute_capability})

    def logits(self, chw: np.ndarray) -> np.ndarray:
        return np.asarray(self._runner(chw), dtype=np.float32).reshape(-1)

    def close(self) -> None:
        close = getattr(self._runner, "close", None)
        if close is not None:
            close()
