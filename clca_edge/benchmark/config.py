"""What a benchmark sweep measures; validated before any model is built."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ..core.errors import ConfigError

BACKENDS = ("torch", "ort", "ort-int8")
DEFAULT_KEEP_RATES = (0.1, 0.25, 0.5, 0.7, 1.0)


@dataclass(frozen=True)
class SweepConfig:
    backbone: str = "vit_small_patch16_224"
    img_size: int = 224
    num_classes: int = 200
    methods: tuple[str, ...] = ("evit",)
    keep_rates: tuple[float, ...] = DEFAULT_KEEP_RATES
    clca: tuple[bool, ...] = (True,)
    backends: tuple[str, ...] = ("ort",)
    batch_size: int = 8  # throughput batch; latency is always batch 1
    warmup: int = 3
    repeats: int = 20
    device: str = "cpu"
    backbone_kwargs: Mapping[str, Any] = field(default_factory=dict)
    threads: int = 0
    isolate: bool = True  # one subprocess per model, so peak memory is that model's own
    data: Optional[str] = None
    train_epochs: int = 0

    def __post_init__(self) -> None:
        from ..models.reduction import is_method, list_methods

        for m in self.methods:
            if not is_method(m):
                raise ConfigError(f"method {m!r} is unknown; choose from {', '.join(list_methods())}")
        for b in self.backends:
            if b not in BACKENDS:
                raise ConfigError(f"backend {b!r} is unknown; choose from {', '.join(BACKENDS)}")
        for r in self.keep_rates:
            if not 0.0 < r <= 1.0:
                raise ConfigError(f"keep rate {r} is outside (0, 1]")
        if self.batch_size < 1 or self.repeats < 1 or self.warmup < 0:
            raise ConfigError("batch size and repeats must be >= 1, warmup >= 0")
        if self.train_epochs and not self.data:
            raise ConfigError("--train-epochs needs --data")
        check_device(self.device)


def check_device(device: str) -> None:
    """``cpu``, or ``cuda``/``cuda:N`` with that GPU present: checked up front, so a bad device is
    an error before any model is built, not a row of failures in the table."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ConfigError(f"--device {device!r} is unknown; choose cpu or cuda (cuda:N for GPU N)")
    if device == "cpu":
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available; use --device cpu")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
