"""Opening a bundle for the device runtime, from one typed config: verify it (and its signature),
choose the backend and variant that pass the device self-check. ``predict``, ``capture`` and a
bundle switch open bundles this way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple

from ..core.errors import ConfigError
from ..bundle import PRECISIONS
from .backends import BACKENDS, Fallback, Selection, select_classifier
from .model import RuntimeModel, load_model

BACKEND_CHOICES = ("auto",) + BACKENDS
PRECISION_CHOICES = ("auto",) + PRECISIONS


@dataclass(frozen=True)
class RuntimeConfig:
    bundle: str
    backend: str = "auto"
    precision: str = "auto"
    threads: int = 0                     # ONNX Runtime CPU threads (0: one per core)
    force_variant: bool = False          # use an explicit --precision even if it fails the self-check
    trusted_keys: Optional[Path] = None  # folder of trusted public keys: the bundle must be signed
    cache_dir: Optional[Path] = None     # this device's caches (self-check, latency); None: the user cache

    def __post_init__(self) -> None:
        if self.backend not in BACKEND_CHOICES:
            raise ConfigError(f"--backend {self.backend!r}; choose one of {', '.join(BACKEND_CHOICES)}")
        if self.precision not in PRECISION_CHOICES:
            raise ConfigError(f"--precision {self.precision!r}; choose one of {', '.join(PRECISION_CHOICES)}")
        if self.threads < 0:
            raise ConfigError(f"--threads {self.threads} must be >= 0")
        if self.force_variant and self.precision == "auto":
            raise ConfigError("--force-variant needs an explicit --precision (auto only runs variants that pass "
                              "the device self-check)")


def open_runtime(config: RuntimeConfig, on_fallback: Optional[Callable[[Fallback], None]] = None
                 ) -> Tuple[RuntimeModel, Selection]:
    """The verified bundle and the classifier chosen for it on this device (the caller closes
    ``selection.classifier``). ``on_fallback``: see ``select_classifier``."""
    from ..bundle.signature import trusted_keys_from

    model = load_model(config.bundle, trusted_keys=trusted_keys_from(config.trusted_keys),
                       cache_dir=config.cache_dir)
    selection = select_classifier(model.files, config.backend, config.precision, config.threads,
                                  force=config.force_variant, on_fallback=on_fallback)
    return model, selection
