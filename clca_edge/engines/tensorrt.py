"""TensorRT engines: build from an ONNX file, key, cache and load, through the TensorRT Python API.
Torch-free: this runs on the Jetson.

API differences handled (by feature, with the version noted):
- network creation: TensorRT 8.x needs ``EXPLICIT_BATCH`` for ONNX networks; 10.x networks are
  always explicit-batch and the flag is deprecated, so no flag is passed there.
- workspace: ``config.set_memory_pool_limit(MemoryPoolType.WORKSPACE, n)`` from 8.4 (the 8.5 and
  8.6 of JetPack 5/6.0, and 10.x); ``config.max_workspace_size`` before 8.4 (removed in 10).
- build: ``builder.build_serialized_network`` (8.0+; ``build_engine`` is gone in 10).
- I/O: the named-tensor API (``num_io_tensors``, ``set_tensor_address``, ``execute_async_v3``),
  present from 8.5; older binding-index APIs are not supported (JetPack 5 ships 8.5).
Q/DQ (explicit quantisation) networks need the INT8 flag; FP16 is also set for int8 so the layers
left in float (LayerNorm, Softmax, GELU) may run in half precision, as ``trtexec --int8 --fp16``.
"""

from __future__ import annotations

import ctypes
import logging
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..core.errors import EngineError
from ..core.atomic_io import atomic_write_bytes
from ..bundle import PRECISIONS, EngineKey

log = logging.getLogger(__name__)


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise EngineError(f"TensorRT's Python module is not importable ({e}); on a Jetson run "
                          "deploy/jetson/setup.sh, which exposes the JetPack TensorRT to the venv") from None
    return trt


def trt_version(trt) -> str:
    return str(trt.__version__)


def trt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


# ---------------------------------------------------------------------------------------- GPU info
@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.7"
    source: str  # which API answered

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _cuda_python_info() -> Optional[GpuInfo]:
    try:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # older cuda-python
    except ImportError:
        return None
    err, prop = cudart.cudaGetDeviceProperties(0)
    if int(err) != 0:
        return None
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return GpuInfo(name.strip("\x00 ").strip(), f"{prop.major}.{prop.minor}", "cuda-python")


def _pycuda_info() -> Optional[GpuInfo]:
    try:
        import pycuda.driver as drv
        drv.init()
        dev = drv.Device(0)
        major, minor = dev.compute_capability()
        return GpuInfo(dev.name(), f"{major}.{minor}", "pycuda")
    except Exception:
        return None


def _nvidia_smi_info() -> Optional[GpuInfo]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    line = out.strip().splitlines()[0] if out.strip() else ""
    if "," not in line:
        return None
    name, cc = (s.strip() for s in line.rsplit(",", 1))
    return GpuInfo(name, cc, "nvidia-smi")


def _tegra_info() -> Optional[GpuInfo]:
    # Jetsons have no nvidia-smi on JetPack 5; every Orin module is an sm_87 GPU.
    model = Path("/proc/device-tree/model")
    if not model.is_file():
        return None
    text = model.read_bytes().decode(errors="replace").strip("\x00 \n")
    if "Orin" in text:
        return GpuInfo(f"{text} (Ampere iGPU)", "8.7", "device-tree")
    if "Xavier" in text:
        return GpuInfo(f"{text} (Volta iGPU)", "7.2", "device-tree")
    return None


def gpu_info() -> GpuInfo:
    """The first GPU, from the first API that answers; never raises."""
    for probe in (_cuda_python_info, _pycuda_info, _nvidia_smi_info, _tegra_info):
        try:
            info = probe()
        except Exception as e:  # a broken driver must not stop a CPU fallback
            log.debug("GPU probe %s failed: %s", probe.__name__, e)
            info = None
        if info is not None:
            return info
    log.warning("no GPU information available (no cuda-python, pycuda, nvidia-smi or Jetson device tree)")
    return GpuInfo("unknown", "unknown", "none")


# ------------------------------------------------------------------------------------------ cache key
# EngineKey (what a plan depends on) is part of the bundle contract: bundle.manifest defines it.
def engine_key(trt, gpu: GpuInfo, precision: str, onnx_sha256: str) -> EngineKey:
    return EngineKey(trt_version(trt), gpu.name, gpu.compute_capability, precision, onnx_sha256)


# ---------------------------------------------------------------------------------------- building
@dataclass(frozen=True)
class EngineBuildConfig:
    precision: str = "fp16"
    workspace_mb: int = 1024

    def __post_init__(self) -> None:
        from ..core.errors import ConfigError

        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.workspace_mb < 1:
            raise ConfigError(f"--workspace-mb {self.workspace_mb} must be >= 1")


def network_flags(trt) -> int:
    if trt_major(trt) >= 10:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def set_workspace(trt, config, nbytes: int) -> str:
    """Returns which API was used (recorded with the engine)."""
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, nbytes)
        return "set_memory_pool_limit"
    config.max_workspace_size = nbytes
    return "max_workspace_size"


def precision_flags(trt, precision: str) -> list:
    if precision == "fp16":
        return [trt.BuilderFlag.FP16]
    if precision == "int8":
        return [trt.BuilderFlag.INT8, trt.BuilderFlag.FP16]
    return []


def build_serialized_engine(trt, onnx_path, config: EngineBuildConfig) -> bytes:
    """Parse ``onnx_path`` into an explicit-batch network and build a serialised plan."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    data = Path(onnx_path).read_bytes()
    if not parser.parse(data):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineError(f"TensorRT {trt_version(trt)} cannot parse {onnx_path}: {'; '.join(errors) or 'unknown error'}")
    bconfig = builder.create_builder_config()
    set_workspace(trt, bconfig, int(config.workspace_mb) << 20)
    for flag in precision_flags(trt, config.precision):
        if flag == trt.BuilderFlag.FP16 and not getattr(builder, "platform_has_fast_fp16", True):
            log.warning("this GPU has no fast fp16; TensorRT may pick fp32 kernels")
        bconfig.set_flag(flag)
    serialized = builder.build_serialized_network(network, bconfig)
    if serialized is None:
        raise EngineError(f"TensorRT {trt_version(trt)} failed to build a {config.precision} engine from {onnx_path}; "
                          "run with -vv for the builder log, or try a larger --workspace-mb")
    return bytes(serialized)


def trtexec_command(onnx_rel: str, precision: str, workspace_mb: int, engine_rel: str) -> str:
    flags = {"fp32": "", "fp16": " --fp16", "int8": " --int8 --fp16"}[precision]
    return (f"trtexec --onnx={onnx_rel}{flags} --memPoolSize=workspace:{workspace_mb}M "
            f"--saveEngine={engine_rel}")


# ------------------------------------------------------------------------------- running (device)
class _CudaRt:
    """The few CUDA runtime calls an engine needs, via cuda-python or pycuda."""

    def __init__(self) -> None:
        try:
            try:
                from cuda.bindings import runtime as cudart
            except ImportError:
                from cuda import cudart
            self._rt = cudart
            self._pycuda = None
        except ImportError:
            try:
                import pycuda.autoinit  # noqa: F401
                import pycuda.driver as drv
            except ImportError:
                raise EngineError("running an engine needs cuda-python or pycuda (pip install cuda-python)") from None
            self._rt = None
            self._pycuda = drv
        self._keep: dict[int, Any] = {}  # pycuda objects by handle: they free themselves when dropped

    def _check(self, res):
        err = res[0] if isinstance(res, tuple) else res
        if int(err) != 0:
            raise EngineError(f"CUDA runtime error {err}")
        return res[1] if isinstance(res, tuple) and len(res) > 1 else None

    def malloc(self, nbytes: int) -> int:
        if self._pycuda:
            buf = self._pycuda.mem_alloc(nbytes)
            self._keep[int(buf)] = buf
            return int(buf)
        return int(self._check(self._rt.cudaMalloc(nbytes)))

    def htod(self, ptr: int, arr: np.ndarray) -> None:
        if self._pycuda:
            self._pycuda.memcpy_htod(ptr, arr)
        else:
            self._check(self._rt.cudaMemcpy(ptr, arr.ctypes.data, arr.nbytes,
                                            self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice))

    def dtoh(self, arr: np.ndarray, ptr: int) -> None:
        if self._pycuda:
            self._pycuda.memcpy_dtoh(arr, ptr)
        else:
            self._check(self._rt.cudaMemcpy(arr.ctypes.data, ptr, arr.nbytes,
                                            self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost))

    def stream(self) -> int:
        if self._pycuda:
            s = self._pycuda.Stream()
            self._keep[int(s.handle)] = s
            return int(s.handle)
        return int(self._check(self._rt.cudaStreamCreate()))

    def sync(self, stream: int) -> None:
        if self._pycuda:
            self._pycuda.Context.synchronize()
        else:
            self._check(self._rt.cudaStreamSynchronize(stream))

    def free(self, ptr: int) -> None:
        if self._pycuda:
            buf = self._keep.pop(ptr, None)
            if buf is not None:
                buf.free()
        else:
            self._check(self._rt.cudaFree(ptr))

    def free_stream(self, stream: int) -> None:
        if self._pycuda:
            self._keep.pop(stream, None)
        elif stream:
            self._check(self._rt.cudaStreamDestroy(stream))


class HostMemory:
    """Stand-in for _CudaRt where the 'device' is host memory (tests, and CPU-visible fakes)."""

    def __init__(self) -> None:
        self._bufs: dict[int, Any] = {}

    def malloc(self, nbytes: int) -> int:
        buf = (ctypes.c_byte * nbytes)()
        ptr = ctypes.addressof(buf)
        self._bufs[ptr] = buf
        return ptr

    def htod(self, ptr: int, arr: np.ndarray) -> None:
        ctypes.memmove(ptr, arr.ctypes.data, arr.nbytes)

    def dtoh(self, arr: np.ndarray, ptr: int) -> None:
        ctypes.memmove(arr.ctypes.data, ptr, arr.nbytes)

    def stream(self) -> int:
        return 0

    def sync(self, stream: int) -> None:
        pass

    def free(self, ptr: int) -> None:
        self._bufs.pop(ptr, None)

    def free_stream(self, stream: int) -> None:
        pass


class TrtRunner:
    """One deserialised engine with one input and one output, run synchronously at batch 1."""

    def __init__(self, trt, plan: bytes, memory=None) -> None:
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise EngineError(f"TensorRT {trt_version(trt)} could not deserialise the engine; rebuild it on this device")
        if not hasattr(self.engine, "num_io_tensors"):
            raise EngineError(f"TensorRT {trt_version(trt)} lacks the named-tensor API; 8.5 or newer is needed")
        self.context = self.engine.create_execution_context()
        self.mem = memory or _CudaRt()
        self.stream = self.mem.stream()
        self.inputs, self.outputs = [], []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(int(d) for d in self.engine.get_tensor_shape(name))
            host = np.zeros(shape, dtype=np.float32)
            ptr = self.mem.malloc(host.nbytes)
            self.context.set_tensor_address(name, ptr)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append((name, host, ptr))
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            raise EngineError(f"engine has {len(self.inputs)} inputs / {len(self.outputs)} outputs; expected 1 / 1")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.inputs[0][1].shape

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if not self.inputs:
            raise EngineError("this TensorRT runner was closed")
        _, host_in, ptr_in = self.inputs[0]
        _, host_out, ptr_out = self.outputs[0]
        if (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous
                and x.size == host_in.size):
            src = x  # the preprocessed frame is already what the engine wants: no staging copy
        else:
            np.copyto(host_in, np.asarray(x, dtype=np.float32).reshape(host_in.shape))
            src = host_in
        self.mem.htod(ptr_in, src)
        if not self.context.execute_async_v3(self.stream):
            raise EngineError("TensorRT execution failed")
        self.mem.sync(self.stream)
        self.mem.dtoh(host_out, ptr_out)
        return host_out.copy()

    def close(self) -> None:
        """Free the device buffers and the stream; idempotent. The runner cannot run afterwards."""
        bufs, self.inputs, self.outputs = self.inputs + self.outputs, [], []
        for _, _, ptr in bufs:
            self.mem.free(ptr)
        if bufs:
            self.mem.free_stream(self.stream)
        self.context = None

    def time_ms(self, iters: int = 50, warmup: int = 10) -> dict[str, float]:
        x = np.random.default_rng(0).standard_normal(self.input_shape).astype(np.float32)
        for _ in range(warmup):
            self(x)
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            self(x)
            times.append(1000.0 * (time.perf_counter() - t0))
        return {"p50_ms": float(np.percentile(times, 50)), "p90_ms": float(np.percentile(times, 90)), "iters": iters}


def write_plan(path: Path, plan: bytes) -> None:
    """Atomic, so an interrupted build never leaves a truncated plan under the cached name."""
    atomic_write_bytes(path, plan)


__all__ = ["EngineBuildConfig", "EngineError", "EngineKey", "GpuInfo", "HostMemory", "PRECISIONS", "TrtRunner",
           "build_serialized_engine", "engine_key", "gpu_info", "import_tensorrt", "network_flags",
           "precision_flags", "set_workspace", "trt_major", "trt_version", "trtexec_command", "write_plan"]
