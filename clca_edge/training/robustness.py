"""The field suite (``robustness``) for a PyTorch checkpoint: the same numpy/OpenCV perturbations
and preprocessing as for bundles, with the model as the runner. Used by ``clca-edge robustness
--checkpoint`` and ``clca-edge eval --robustness``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..robustness.evaluate import BatchRunner, SuiteResult, run_suite
from .evaluate import _training_split, eval_samples, resolve_device


def model_runner(model, device: torch.device, batch_size: int = 64) -> BatchRunner:
    """numpy (N, 3, H, W) -> logits (N, C) through ``model`` on ``device``, ``batch_size`` at a time."""
    model.eval()

    @torch.no_grad()
    def run(x: np.ndarray) -> np.ndarray:
        outs = [model(torch.from_numpy(x[i:i + batch_size]).to(device)).float().cpu().numpy()
                for i in range(0, len(x), batch_size)]
        return np.concatenate(outs)

    return run


def checkpoint_suite(checkpoint, data: Optional[str] = None, split: str = "val", image_root: Optional[str] = None,
                     suite: str = "full", seed: int = 0, batch_size: int = 64, device: str = "auto",
                     names: Optional[Sequence[str]] = None, progress=None):
    """Load a checkpoint (file or run folder) and run the suite on ``data`` (default: the split it
    was trained with). Returns (SuiteResult keyed "checkpoint", its metadata, the file used)."""
    from .checkpoint import find_checkpoint, load_checkpoint

    path = find_checkpoint(checkpoint)
    model, meta = load_checkpoint(path)
    if data is None:
        samples = _training_split(path, meta, split)
    else:
        samples = eval_samples(Path(data), split, meta.class_names, Path(image_root) if image_root else None)
    dev = resolve_device(device)
    model.to(dev)
    result: SuiteResult = run_suite(samples, meta.preprocess, {"checkpoint": model_runner(model, dev, batch_size)},
                                    suite=suite, seed=seed, names=names, progress=progress)
    return result, meta, path


__all__ = ["checkpoint_suite", "model_runner"]
