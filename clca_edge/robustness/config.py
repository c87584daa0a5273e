"""What a robustness run measures, typed and validated once: which perturbations (``SuiteConfig``)
and, for a bundle, which variants on which backend (``VariantsConfig``). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..core.errors import ConfigError


@dataclass(frozen=True)
class SuiteConfig:
    suite: str = "full"                  # full: severities 1-3; quick: severity 2 only
    only: Optional[tuple] = None         # perturbation names (None: every one)
    seed: int = 0                        # seed of the random perturbations (noise), per image

    def __post_init__(self) -> None:
        from .suite import BY_NAME, SUITES

        if self.suite not in SUITES:
            raise ConfigError(f"--suite {self.suite!r}; choose one of {', '.join(SUITES)}")
        unknown = [n for n in self.only or () if n not in BY_NAME]
        if unknown:
            raise ConfigError(f"--only {','.join(unknown)}: unknown perturbation(s); choose among {', '.join(BY_NAME)}")


@dataclass(frozen=True)
class VariantsConfig:
    """A bundle's variants to run: on ``backend`` (auto: as capture picks), ``precisions`` (None:
    every usable one), ONNX Runtime CPU ``threads`` (0: one per core)."""

    backend: str = "auto"
    precisions: Optional[tuple] = None
    threads: int = 0

    def __post_init__(self) -> None:
        from ..bundle import PRECISIONS

        unknown = [p for p in self.precisions or () if p not in PRECISIONS]
        if unknown:
            raise ConfigError(f"--precision {','.join(unknown)}: choose among {', '.join(PRECISIONS)}")
        if self.threads < 0:
            raise ConfigError(f"--threads {self.threads} must be >= 0")
