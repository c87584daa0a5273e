"""The one factory of ONNX Runtime sessions.

Export parity, the deploy accuracy gate (which also times the variants to pick the default one),
build-engine's fp32 reference, the benchmark and the device runtime's ONNX Runtime backends all
open their sessions here, with the settings the device runs with: a variant is scored and timed
at deploy the way ``predict``/``capture`` will run it. Torch-free.
"""

from __future__ import annotations

import os
from typing import Sequence, Union

CPU_PROVIDER = "CPUExecutionProvider"
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
# Errors only: ONNX Runtime's warnings (e.g. unused initializers after Q/DQ folding) are noise to a user.
LOG_SEVERITY = 3


def session_options(threads: int = 0, optimize: bool = True):
    """SessionOptions of every clca-edge session.

    ``threads``: intra-op threads, 0 for ONNX Runtime's default (one per physical core).
    ``optimize``: every graph optimisation (ORT_ENABLE_ALL: Q/DQ fusion into integer kernels,
    attention fusions); False runs each node as written (to read a node's exact output).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = LOG_SEVERITY
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if threads:
        opts.intra_op_num_threads = int(threads)
    # Idle ORT workers spin by default; in the capture process they would take the CPU the frame
    # reader/grabber and fsync threads need between inferences (2-6 core devices). Off everywhere,
    # so deploy's timing of the variants is the device's.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def available_gpu_providers() -> list[str]:
    """The GPU execution providers this onnxruntime build offers, in the order they are tried."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in GPU_PROVIDERS if p in available]


def open_session(model: Union[str, os.PathLike, bytes], providers: Sequence[str] = (CPU_PROVIDER,),
                 threads: int = 0, optimize: bool = True):
    """An ``onnxruntime.InferenceSession`` over an ONNX file (or its bytes) with ``session_options``.

    ONNX Runtime's own exceptions (InvalidGraph, NoSuchFile, ...) pass through: callers know what
    a failure means for them (a variant that fails, a backend to fall back from)."""
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, session_options(threads, optimize), providers=list(providers))


__all__ = ["CPU_PROVIDER", "GPU_PROVIDERS", "LOG_SEVERITY", "available_gpu_providers", "open_session",
           "session_options"]
