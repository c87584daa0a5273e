"""``build-engine --builder torch-tensorrt``: compile the PyTorch checkpoint with Torch-TensorRT on a
CUDA host, instead of building from the bundle's ONNX. Needs torch with CUDA and torch_tensorrt;
INT8 through Torch-TensorRT needs ModelOpt quantisation, so only fp16/fp32 are offered here (the
bundle's Q/DQ ONNX is the INT8 path).

What it writes is a Torch-TensorRT module (an ExportedProgram, loaded with ``torch_tensorrt.load``
under torch), not a TensorRT plan: the device runtime is torch-free and cannot run it. So it is
recorded in the manifest's ``torch_tensorrt`` section, hashed like every bundle file, and never
among ``engines`` (what predict/capture pick from) nor as ``default_engine``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..bundle import TORCH_TRT_PRECISIONS, Bundle, Status, TorchTrtModule, load_bundle, write_manifest
from .report import ENGINE_DIR, BuildEngineReport, EngineOutcome
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

    bundle = load_bundle(config.bundle)
    model, meta = load_checkpoint(config.checkpoint)
    if list(meta.class_names) != bundle.labels:
        raise EngineError(f"{config.checkpoint} has other classes than the bundle {bundle.root}")
    t0 = time.perf_counter()
    trt_mod, example = _compile(torch, torch_tensorrt, model, bundle.input_shape, config.precision, config.workspace_mb)
    gpu = gpu_info()
    fname = f"torchtrt_{config.precision}_torch{torch.__version__}_trt{torch_tensorrt.__version__}_sm{gpu.compute_capability.replace('.', '')}.ep"
    out = bundle.root / ENGINE_DIR / fname
    out.parent.mkdir(parents=True, exist_ok=True)
    torch_tensorrt.save(trt_mod, str(out), inputs=[example])
    module = TorchTrtModule(file=f"{ENGINE_DIR}/{fname}", precision=config.precision,
                            torch_tensorrt_version=str(torch_tensorrt.__version__), torch_version=str(torch.__version__),
                            gpu_name=gpu.name, compute_capability=gpu.compute_capability,
                            build_seconds=round(time.perf_counter() - t0, 3))
    record_module(bundle, fname, module)
    note = "Torch-TensorRT module (torch_tensorrt.load under torch); not an engine predict/capture run"
    return BuildEngineReport(bundle.root, [EngineOutcome(config.precision, fname, Status.UNVERIFIED, note=note)],
                             bundle.manifest.default_engine, gpu.to_dict(), f"torch-tensorrt {torch_tensorrt.__version__}")


def _compile(torch, torch_tensorrt, model, shape, precision: str, workspace_mb: int):
    """The part that needs the CUDA GPU: the compiled module and the example input it is saved with."""
    example = torch.randn(*shape, device="cuda")
    dtype = torch.float16 if precision == "fp16" else torch.float32
    trt_mod = torch_tensorrt.compile(
        model.cuda().eval(), ir="dynamo", inputs=[torch_tensorrt.Input(shape, dtype=torch.float32)],
        enabled_precisions={dtype}, workspace_size=int(workspace_mb) << 20,
    )
    return trt_mod, example


def record_module(bundle: Bundle, fname: str, module: TorchTrtModule) -> None:
    """Record a compiled module in the manifest's ``torch_tensorrt`` section (hashing its file),
    apart from the TensorRT ``engines`` the runtime picks from."""
    bundle.manifest.torch_tensorrt[fname] = module
    write_manifest(bundle.root, bundle.manifest, new_files=[module.file])
