"""ONNX export of CLCA models: opset 17, fixed input shape, checked graph, measured parity."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import ExportError
from .graph_check import check_graph

log = logging.getLogger(__name__)

# TensorRT 8.5/8.6 (JetPack 5, 6.0) parse up to opset 17.
DEFAULT_OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class OnnxExportConfig:
    opset: int = DEFAULT_OPSET
    batch_size: int = 1
    check: bool = True


def export_onnx(model, path, config: OnnxExportConfig = OnnxExportConfig()) -> Path:
    """Export ``model`` (a ClcaVisionTransformer) in eval mode to ``path``; returns the path.

    Uses the TorchScript-based exporter, which reaches opset 17 (the dynamo exporter may not).
    Raises ExportError if the graph breaks an export rule.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = model.config.img_size
    dummy = torch.randn(config.batch_size, 3, size, size)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python ints are expected: k is static
            torch.onnx.export(
                model, (dummy,), str(path), dynamo=False, opset_version=config.opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
            )
    finally:
        model.train(was_training)
    if config.check:
        violations = check_graph(path, max_opset=config.opset)
        if violations:
            raise ExportError(f"{path}: graph breaks export rules: " + "; ".join(map(str, violations)))
    log.info("exported %s (opset %d, input %s)", path, config.opset, tuple(dummy.shape))
    return path


def onnx_parity(model, path, images) -> float:
    """Max abs difference between PyTorch and ONNX Runtime (CPU) logits on ``images`` (N, 3, H, W).

    Images go through in batches of the exported (static) batch size.
    """
    import torch

    from ..runtime.sessions import open_session

    sess = open_session(path)
    batch = sess.get_inputs()[0].shape[0]
    images = torch.as_tensor(images, dtype=torch.float32)
    if images.shape[0] < batch:
        raise ExportError(f"parity needs at least {batch} images (the exported batch size), got {images.shape[0]}")
    worst = 0.0
    was_training = model.training
    model.eval()
    try:
        for start in range(0, images.shape[0] - batch + 1, batch):
            chunk = images[start:start + batch]
            with torch.no_grad():
                ref = model(chunk).numpy()
            got = sess.run([OUTPUT_NAME], {INPUT_NAME: chunk.numpy()})[0]
            worst = max(worst, float(np.max(np.abs(ref - got))))
    finally:
        model.train(was_training)
    return worst
