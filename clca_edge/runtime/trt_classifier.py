"""The TensorRT backend: runs an engine that ``runtime.tensorrt_engine`` (deploy) built and cached
for this device. Importing this module needs ``tensorrt``; the caller turns an ImportError into a
fallback to ONNX Runtime. Engines are never built here: building takes minutes on a Jetson and
belongs to ``clca-edge build-engine``; a missing or stale engine is a fallback, not a wait.

Handles the two execution APIs: TensorRT 10 (tensor names, ``execute_async_v3``) and 8.5/8.6
(binding indices, ``execute_v2``). Device memory through cuda-python or, failing that, pycuda.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tensorrt as trt  # noqa: F401  (ImportError -> fallback, by design)

from .backends import BackendUnavailable, Classifier

log = logging.getLogger(__name__)

_ENGINE_LOOKUPS = ("cached_engine_path", "find_engine", "load_engine")


def engine_path_for(bundle, precision: str) -> Path:
    """The cached engine for this device and precision, via deploy's tensorrt_engine module."""
    try:
        from . import tensorrt_engine
    except ImportError as e:
        raise BackendUnavailable(f"runtime.tensorrt_engine is not available ({e})") from None
    for name in _ENGINE_LOOKUPS:
        fn = getattr(tensorrt_engine, name, None)
        if fn is None:
            continue
        try:
            found = fn(bundle, precision)
        except Exception as e:  # stale/foreign engine, no GPU, TensorRT runtime error: all mean "use ORT"
            raise BackendUnavailable(f"no usable {precision} engine: {e}") from None
        if found is None:
            break
        return Path(found)
    raise BackendUnavailable(f"no {precision} TensorRT engine built for this device; run "
                             f"'clca-edge build-engine --bundle {getattr(bundle, 'root', '?')} --precision {precision}'")


class _Cuda:
    """Minimal device buffers and copies over cuda-python (preferred) or pycuda."""

    def __init__(self):
        try:
            from cuda import cudart  # type: ignore

            self._rt = cudart
            self.kind = "cuda-python"
        except ImportError:
            try:
                import pycuda.autoinit  # type: ignore # noqa: F401
                import pycuda.driver as drv  # type: ignore
            except ImportError as e:
                raise BackendUnavailable(f"neither cuda-python nor pycuda is installed ({e})") from None
            self._rt = None
            self._drv = drv
            self.kind = "pycuda"

    def alloc(self, nbytes: int):
        if self._rt is not None:
            err, ptr = self._rt.cudaMalloc(nbytes)
            if int(err) != 0:
                raise BackendUnavailable(f"cudaMalloc({nbytes}) failed: {err}")
            return ptr
        return self._drv.mem_alloc(nbytes)

    def to_device(self, ptr, host: np.ndarray) -> None:
        if self._rt is not None:
            self._rt.cudaMemcpy(ptr, host.ctypes.data, host.nbytes, self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice)
        else:
            self._drv.memcpy_htod(ptr, host)

    def to_host(self, host: np.ndarray, ptr) -> None:
        if self._rt is not None:
            self._rt.cudaMemcpy(host.ctypes.data, ptr, host.nbytes, self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost)
        else:
            self._drv.memcpy_dtoh(host, ptr)

    def free(self, ptr) -> None:
        if self._rt is not None:
            self._rt.cudaFree(ptr)
        else:
            ptr.free()


class TensorRTClassifier(Classifier):
    backend = "tensorrt"

    def __init__(self, plan: bytes, precision: str, detail: str = ""):
        import tensorrt as trt

        self.precision = precision
        self.detail = detail
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise BackendUnavailable("TensorRT could not deserialise the engine (built by another TensorRT version or GPU?)")
        self._ctx = self._engine.create_execution_context()
        self._cuda = _Cuda()
        self._v10 = hasattr(self._engine, "num_io_tensors")
        self._buffers = []
        if self._v10:
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outputs = [n for n in names if n not in inputs]
            shape = lambda n: tuple(self._engine.get_tensor_shape(n))  # noqa: E731
            dtype = lambda n: trt.nptype(self._engine.get_tensor_dtype(n))  # noqa: E731
        else:
            names = [self._engine.get_binding_name(i) for i in range(self._engine.num_bindings)]
            inputs = [n for i, n in enumerate(names) if self._engine.binding_is_input(i)]
            outputs = [n for n in names if n not in inputs]
            shape = lambda n: tuple(self._engine.get_binding_shape(n))  # noqa: E731
            dtype = lambda n: trt.nptype(self._engine.get_binding_dtype(n))  # noqa: E731
        self._in_name, self._out_name = inputs[0], outputs[0]
        self._in_host = np.zeros(shape(self._in_name), dtype(self._in_name))
        self._out_host = np.zeros(shape(self._out_name), dtype(self._out_name))
        self._in_dev = self._cuda.alloc(self._in_host.nbytes)
        self._out_dev = self._cuda.alloc(self._out_host.nbytes)
        self._buffers = [self._in_dev, self._out_dev]
        self._bindings = [int(self._in_dev), int(self._out_dev)]
        if self._v10:
            self._ctx.set_tensor_address(self._in_name, int(self._in_dev))
            self._ctx.set_tensor_address(self._out_name, int(self._out_dev))

    @classmethod
    def from_bundle(cls, bundle, precision: str) -> "TensorRTClassifier":
        path = engine_path_for(bundle, precision)
        import tensorrt as trt

        return cls(path.read_bytes(), precision, detail=f"TensorRT {trt.__version__}, {path.name}")

    def logits(self, chw: np.ndarray) -> np.ndarray:
        self._in_host[...] = chw.reshape(self._in_host.shape)
        self._cuda.to_device(self._in_dev, self._in_host)
        if self._v10:
            ok = self._ctx.execute_async_v3(0)  # default stream; the copy back below synchronises
        else:
            ok = self._ctx.execute_v2(self._bindings)
        if not ok:
            raise RuntimeError("TensorRT execution failed")
        self._cuda.to_host(self._out_host, self._out_dev)
        return self._out_host.reshape(-1).astype(np.float32)

    def close(self) -> None:
        for b in self._buffers:
            self._cuda.free(b)
        self._buffers = []
