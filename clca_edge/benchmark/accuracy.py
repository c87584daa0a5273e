"""Accuracy for a sweep: train each configuration for a fixed epoch budget on the user's data
and report its best validation top-1 (the same trainer as ``clca-edge train``)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Optional

from ..core.errors import ConfigError
from ..models.config import ModelConfig
from .config import SweepConfig


def run_name(mc: ModelConfig) -> str:
    return f"{mc.method}_r{mc.keep_rate[0]:g}_{'clca' if mc.clca.enabled else 'plain'}"


def accuracy_fn(cfg: SweepConfig, runs_dir: Optional[Path], *, pretrained: str = "none", lr: float = 1e-3,
                batch_size: int = 16) -> Callable[[ModelConfig], float]:
    if cfg.train_epochs < 1:
        raise ConfigError("accuracy needs a training budget: pass --train-epochs N (N >= 1) with --data")
    from ..data.sources import DataConfig
    from ..training.config import OptimConfig, TrainConfig

    root = Path(runs_dir) if runs_dir else Path(tempfile.mkdtemp(prefix="clca-bench-"))
    device = cfg.device if cfg.device in ("cpu", "cuda") else "auto"

    def top1(mc: ModelConfig) -> float:
        from ..training.trainer import train

        tc = TrainConfig(
            data=DataConfig(root=str(cfg.data)), model=mc, out=str(root / run_name(mc)),
            optim=OptimConfig(epochs=cfg.train_epochs, batch_size=batch_size, lr=lr, warmup_epochs=min(1.0, cfg.train_epochs / 2)),
            pretrained=pretrained, workers=0, device=device,
        )
        return float(train(tc).best_top1)

    return top1
