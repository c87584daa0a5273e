"""The resume file next to ``last.safetensors``: optimizer, scheduler, grad-scaler state, finished
epochs, best score and the run's config. Written with ``torch.save`` (atomically), read with
``torch.load(weights_only=True)``: plain tensors and containers only, never arbitrary objects.

RNG: every epoch reseeds from (seed, epoch, rank), so a resumed run draws the same augmentation
and order as an uninterrupted one without storing generator states.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from .checkpoint import CheckpointError, atomic_write_bytes

STATE_FILE = "train_state.pt"


@dataclass
class TrainingState:
    epoch: int  # finished epochs
    best_top1: float
    best_epoch: int
    config: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: Optional[dict[str, Any]] = None
    skipped: tuple[str, ...] = ()


def save_training_state(path: Path, state: TrainingState) -> None:
    payload = {
        "epoch": state.epoch, "best_top1": state.best_top1, "best_epoch": state.best_epoch,
        "config": json.dumps(state.config), "optimizer": state.optimizer, "scheduler": state.scheduler,
        "scaler": state.scaler or {}, "skipped": list(state.skipped),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_training_state(path: Path) -> TrainingState:
    path = Path(path)
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable training state ({type(e).__name__}: {e}); "
                              "start a new run without --resume") from None
    return TrainingState(int(d["epoch"]), float(d["best_top1"]), int(d["best_epoch"]), json.loads(d["config"]),
                         d["optimizer"], d["scheduler"], d.get("scaler") or None, tuple(d.get("skipped", ())))
