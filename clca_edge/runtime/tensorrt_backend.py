"""The TensorRT backend: runs an engine that ``clca-edge build-engine`` built and cached in the
bundle for exactly this device (TensorRT version, GPU, precision, ONNX hash; see
``runtime.tensorrt_engine.EngineKey``). Engines are never built at capture start (minutes on a
Jetson): a missing, stale or foreign engine is a fallback to ONNX Runtime that names the command
to run, never a wait and never a crash.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from .backends import BackendUnavailable, Classifier
from ..bundle import ENGINE_SOURCE

log = logging.getLogger(__name__)


def find_engine(bundle, precision: str, trt, gpu) -> Path:
    """The cached plan whose key matches this device exactly; BackendUnavailable otherwise."""
    from ..engines.tensorrt import engine_key

    src = bundle.variants.get(ENGINE_SOURCE[precision])
    if src is None or src.path is None:
        raise BackendUnavailable(f"bundle has no {ENGINE_SOURCE[precision]} ONNX to build a {precision} engine from")
    key = engine_key(trt, gpu, precision, bundle.sha256(src.path))  # verified at load: no re-hash
    others = []
    for fname, rec in bundle.engines.items():
        match = rec.key == key
        if match and rec.status.usable:
            return bundle.root / rec.file
        if match:
            raise BackendUnavailable(f"the {precision} engine {fname} is marked {rec.status.value!r} by build-engine")
        if rec.key.precision == precision:
            others.append(fname)
    where = f"TensorRT {key.trt_version} on {key.gpu_name} (sm {key.compute_capability})"
    stale = f" (cached engines {', '.join(others)} were built for another TensorRT/GPU/ONNX)" if others else ""
    raise BackendUnavailable(f"no {precision} engine built for {where}{stale}; run "
                             f"'clca-edge build-engine --bundle {bundle.source or bundle.root} --precision {precision}' on this device")


class TensorRTClassifier(Classifier):
    backend = "tensorrt"

    def __init__(self, runner, precision: str, detail: str = "", source_file=None,
                 key: Optional[dict] = None):
        self._runner = runner
        self.precision = precision
        self.detail = detail
        self.source_file = source_file
        self._key = dict(key or {})

    def key_info(self) -> dict:
        return dict(self._key)

    @classmethod
    def from_bundle(cls, bundle, precision: str) -> "TensorRTClassifier":
        from ..core.errors import ClcaEdgeError
        from ..engines.tensorrt import TrtRunner, gpu_info, import_tensorrt

        try:
            trt = import_tensorrt()
            gpu = gpu_info()
            path = find_engine(bundle, precision, trt, gpu)
            runner = TrtRunner(trt, path.read_bytes())
        except ClcaEdgeError as e:  # EngineError: no TensorRT, no CUDA bindings, undeserialisable plan
            raise BackendUnavailable(str(e)) from None
        return cls(runner, precision, detail=f"TensorRT {trt.__version__}, {path.name}", source_file=path,
                   key={"tensorrt": str(trt.__version__), "gpu": gpu.name, "compute_capability": gpu.compute_capability})

    def logits(self, chw: np.ndarray) -> np.ndarray:
        return np.asarray(self._runner(chw), dtype=np.float32).reshape(-1)

    def close(self) -> None:
        close = getattr(self._runner, "close", None)
        if close is not None:
            close()
