"""A fake ``tensorrt`` Python module that records builder calls, one flavour per TensorRT major.

It behaves like the real API where our code touches it:
- 8.x: ONNX networks must be created with the EXPLICIT_BATCH flag (the real parser refuses
  implicit-batch networks); ``max_workspace_size`` exists (deprecated), and from 8.4
  ``set_memory_pool_limit``; ``build_engine`` still exists.
- 10.x: no ``max_workspace_size`` or ``build_engine``; networks are created with flags 0.
Plans are ``FAKEPLAN`` + a JSON header + the ONNX bytes; ``deserialize_cuda_engine`` refuses a plan
from another version (returns None, as the real runtime does), and an execution context runs the
ONNX with ONNX Runtime, reading and writing the tensors at the addresses it is given.
"""

from __future__ import annotations

import ctypes
import enum
import json
import types

import numpy as np

MAGIC = b"FAKEPLAN"


def make_module(version: str, fail_flags: tuple[str, ...] = ()) -> types.ModuleType:
    """``fail_flags``: builds with any of these builder flags (e.g. "INT8") fail as the real builder
    does, by returning None (out of memory, unsupported layer, ...)."""
    major, minor = (int(v) for v in version.split(".")[:2])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []  # (name, details) in call order
    rec = trt.calls.append

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self, severity=1):
            self.severity = severity

    class NetworkDefinitionCreationFlag(enum.IntEnum):
        EXPLICIT_BATCH = 0
        EXPLICIT_PRECISION = 1

    class BuilderFlag(enum.IntEnum):
        FP16 = 0
        INT8 = 1

    class MemoryPoolType(enum.IntEnum):
        WORKSPACE = 0

    class TensorIOMode(enum.IntEnum):
        NONE = 0
        INPUT = 1
        OUTPUT = 2

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.onnx = None

    class BuilderConfig:
        def __init__(self):
            self.flags = set()
            self.pools = {}
            self._max_ws = 0

        def set_flag(self, flag):
            rec(("set_flag", BuilderFlag(flag).name))
            self.flags.add(BuilderFlag(flag))

    if major < 10:
        def _get_ws(self):
            return self._max_ws

        def _set_ws(self, n):
            rec(("max_workspace_size", n))
            self._max_ws = n
        BuilderConfig.max_workspace_size = property(_get_ws, _set_ws)
    if (major, minor) >= (8, 4):
        def set_memory_pool_limit(self, pool, n):
            rec(("set_memory_pool_limit", MemoryPoolType(pool).name, n))
            self.pools[MemoryPoolType(pool)] = n
        BuilderConfig.set_memory_pool_limit = set_memory_pool_limit

    class Builder:
        platform_has_fast_fp16 = True

        def __init__(self, logger):
            rec(("Builder",))

        def create_network(self, flags=0):
            rec(("create_network", flags))
            return Network(flags)

        def create_builder_config(self):
            return BuilderConfig()

        def build_serialized_network(self, network, config):
            rec(("build_serialized_network", sorted(f.name for f in config.flags)))
            if {f.name for f in config.flags} & set(fail_flags):
                return None
            header = json.dumps({"version": version, "flags": sorted(f.name for f in config.flags)}).encode()
            return MAGIC + header + b"\n" + network.onnx

    if major < 10:
        def build_engine(self, network, config):  # deprecated in 8.x, removed in 10
            raise AssertionError("build_engine must not be used")
        Builder.build_engine = build_engine

    class OnnxParser:
        def __init__(self, network, logger):
            self.network = network
            self.errors = []

        def parse(self, data):
            import onnx

            rec(("parse", len(data)))
            if major < 10 and not self.network.flags & (1 << int(NetworkDefinitionCreationFlag.EXPLICIT_BATCH)):
                self.errors.append("ONNX networks need the EXPLICIT_BATCH flag")
                return False
            try:
                model = onnx.load_from_string(bytes(data))
            except Exception as e:
                self.errors.append(f"not an ONNX model: {e}")
                return False
            opset = max(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))
            if opset > (17 if major < 10 else 20):
                self.errors.append(f"opset {opset} unsupported")
                return False
            self.network.onnx = bytes(data)
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    class Engine:
        def __init__(self, onnx_bytes, header):
            import onnxruntime as ort

            self.header = header
            self.sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
            i, o = self.sess.get_inputs()[0], self.sess.get_outputs()[0]
            self._io = [(i.name, tuple(i.shape), TensorIOMode.INPUT), (o.name, tuple(o.shape), TensorIOMode.OUTPUT)]

        num_io_tensors = 2

        def get_tensor_name(self, k):
            return self._io[k][0]

        def _find(self, name):
            return next(t for t in self._io if t[0] == name)

        def get_tensor_shape(self, name):
            return self._find(name)[1]

        def get_tensor_mode(self, name):
            return self._find(name)[2]

        def create_execution_context(self):
            return Context(self)

    class Context:
        def __init__(self, engine):
            self.engine = engine
            self.addr = {}

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def _view(self, name):
            shape = self.engine.get_tensor_shape(name)
            n = int(np.prod(shape))
            return np.ctypeslib.as_array((ctypes.c_float * n).from_address(self.addr[name])).reshape(shape)

        def execute_async_v3(self, stream):
            (iname, _, _), (oname, _, _) = self.engine._io
            out = self.engine.sess.run([oname], {iname: self._view(iname).copy()})[0]
            self._view(oname)[...] = out
            return True

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            rec(("deserialize_cuda_engine", len(plan)))
            if not plan.startswith(MAGIC):
                return None
            head, onnx_bytes = plan[len(MAGIC):].split(b"\n", 1)
            header = json.loads(head)
            if header["version"] != version:  # real TensorRT refuses plans of other versions
                return None
            return Engine(onnx_bytes, header)

    for name, obj in list(locals().items()):
        if isinstance(obj, type):
            setattr(trt, name, obj)
    return trt
