"""``build-engine --builder torch-tensorrt``: compile the PyTorch checkpoint with Torch-TensorRT on a
CUDA host, instead of building from the bundle's ONNX. Needs torch with CUDA and torch_tensorrt;
INT8 through Torch-TensorRT needs ModelOpt quantisation, so only fp16/fp32 are offered here (the
bundle's Q/DQ ONNX is the INT8 path).

What it writes is a Torch-TensorRT module (an ExportedProgram, loaded with ``torch_tensorrt.load``
under torch), not a TensorRT plan: the device runtime is torch-free and cannot run it. Like every
engine build-engine makes, it goes into this device's cache for the bundle (``runtime/engine_cache.py``;
the bundle is only read), recorded in that cache's ``torch_tensorrt`` section with its sha256, never
among ``engines`` (what predict/capture pick from) nor as ``default_engine``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from ..bundle import TORCH_TRT_PRECISIONS, Status, TorchTrtModule, load_bundle, sha256_file
from .report import BuildEngineReport, EngineOutcome
from .tensorrt import EngineError, gpu_info

log = logging.getLogger(__name__)


def build_with_torch_tensorrt(config):

    if config.checkpoint is None:
        raise EngineError("--builder torch-tensorrt compiles from the checkpoint: pass --checkpoint CKPT")
    if config.precision not in TORCH_TRT_PRECISIONS:
        raise EngineError(f"--builder torch-tensorrt supports --precision fp16 or fp32, not {config.precision!r}; "
                          "for INT8 use the default builder on the bundle's Q/DQ ONNX")
    try:
        import torch
        import torch_tensorrt
    except ImportError as e:
        raise EngineError(f"--builder torch-tensorrt needs torch and torch_tensorrt ({e}); "
                          "install NVIDIA's build for this JetPack/CUDA or use --builder tensorrt") from None
    if not torch.cuda.is_available():
        raise EngineError("--builder torch-tensorrt needs a CUDA GPU; torch.cuda.is_available() is False here")
    from ..training.checkpoint import load_checkpoint

    bundle = load_bundle(config.bundle, trusted_keys=config.trusted_keys)
    model, meta = load_checkpoint(config.checkpoint)
    if list(meta.class_names) != bundle.labels:
        raise EngineError(f"{config.checkpoint} has other classes than the bundle {bundle.root}")
    t0 = time.perf_counter()
    trt_mod, example = _compile(torch, torch_tensorrt, model, bundle.input_shape, config.precision, config.workspace_mb)
    gpu = gpu_info()
    fname = f"torchtrt_{config.precision}_torch{torch.__version__}_trt{torch_tensorrt.__version__}_sm{gpu.compute_capability.replace('.', '')}.ep"
    module = TorchTrtModule(file="", precision=config.precision,
                            torch_tensorrt_version=str(torch_tensorrt.__version__), torch_version=str(torch.__version__),
                            gpu_name=gpu.name, compute_capability=gpu.compute_capability,
                            build_seconds=round(time.perf_counter() - t0, 3))
    folder, path = record_module(bundle, fname, module, config.cache_dir,
                                 lambda out: torch_tensorrt.save(trt_mod, str(out), inputs=[example]))
    note = "Torch-TensorRT module (torch_tensorrt.load under torch); not an engine predict/capture run"
    return BuildEngineReport(bundle.root, [EngineOutcome(config.precision, fname, Status.UNVERIFIED, note=note,
                                                         path=path)],
                             None, gpu.to_dict(), f"torch-tensorrt {torch_tensorrt.__version__}", engine_dir=folder)


def _compile(torch, torch_tensorrt, model, shape, precision: str, workspace_mb: int):
    """The part that needs the CUDA GPU: the compiled module and the example input it is saved with."""
    example = torch.randn(*shape, device="cuda")
    dtype = torch.float16 if precision == "fp16" else torch.float32
    trt_mod = torch_tensorrt.compile(
        model.cuda().eval(), ir="dynamo", inputs=[torch_tensorrt.Input(shape, dtype=torch.float32)],
        enabled_precisions={dtype}, workspace_size=int(workspace_mb) << 20,
    )
    return trt_mod, example


def record_module(bundle, fname: str, module: TorchTrtModule, cache_dir, save) -> tuple[Path, Path]:
    """Save a compiled module (``save(path)``) into this device's cache for ``bundle`` (atomically:
    under a temporary name, then renamed) and record it, with its sha256, in that cache's
    ``torch_tensorrt`` section, apart from the TensorRT ``engines`` the runtime picks from. Returns
    (the cache folder, the module's path)."""
    from ..runtime.device_cache import bundle_cache_dir, bundle_digest
    from ..runtime.engine_cache import PLAN_DIR, DeviceEngines, build_lock

    sha = bundle_digest(bundle)
    with build_lock(bundle_cache_dir(sha, cache_dir)):
        engines = DeviceEngines.open(sha, cache_dir)
        rel = f"{PLAN_DIR}/{fname}"
        out = engines.path(rel)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{fname}.tmp")
        try:
            save(tmp)
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                tmp.unlink()
        module.file = rel
        engines.cache.files[rel] = sha256_file(out)
        engines.cache.torch_tensorrt[fname] = module
        engines.save()
    return engines.folder, out
