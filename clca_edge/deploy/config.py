"""What ``deploy`` is asked to do: ``DeployConfig``, validated once when it is built (the CLI and
the quick start build it; every step reads it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..core.errors import ConfigError
from ..core.gate_stats import GateRule
from .calibration import CalibrationConfig

TARGETS = ("jetson-orin", "cpu")
VARIANT_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
CALIB_MANIFEST = "calibration/manifest.json"
# A jetson-orin bundle's second INT8 file: the ONNX Runtime CPU flavour, for the device's CPU fallback.
CPU_INT8_VARIANT, CPU_INT8_FILE = "int8-cpu", "model.int8-cpu.onnx"


@dataclass(frozen=True)
class DeployConfig:
    checkpoint: Path
    out: Path
    calib_data: Path
    eval_data: Path
    target: str = "jetson-orin"
    precisions: tuple[str, ...] = ("int8", "fp16", "fp32")
    # The accuracy gate against fp32 (core/gate_stats.py): a significant drop, too little top-1
    # agreement, or (--max-drop set) a drop above that many points rejects a variant.
    gate: GateRule = field(default_factory=GateRule)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    tar: bool = False
    force: bool = False
    parity_images: int = 16
    opset: int = 17
    workspace_mb: int = 1024
    build_engines: Optional[bool] = None  # None: build when TensorRT is importable and target is jetson-orin
    sign_key: Optional[Path] = None  # Ed25519 private key (clca-edge keygen): writes manifest.sig
    # The field robustness suite on --eval-data per variant (robustness/suite.py): "full" (every
    # perturbation at 3 severities), "quick" (severity 2 only) or "off"; recorded in the manifest.
    field_suite: str = "full"
    # Reject a variant whose worst perturbation drops more than this many top-1 points (None: record only).
    max_field_drop: Optional[float] = None

    def __post_init__(self) -> None:
        from ..robustness.suite import SUITES

        if self.field_suite not in SUITES:
            raise ConfigError(f"--field-suite {self.field_suite!r}; choose one of {', '.join(SUITES)}")
        if self.max_field_drop is not None and self.max_field_drop < 0:
            raise ConfigError(f"--max-field-drop {self.max_field_drop} must be >= 0 (points of top-1)")
        if self.max_field_drop is not None and self.field_suite == "off":
            raise ConfigError("--max-field-drop needs the field suite; drop --field-suite off")
        if self.target not in TARGETS:
            raise ConfigError(f"--target {self.target!r}; choose one of {', '.join(TARGETS)}")
        bad = [p for p in self.precisions if p not in VARIANT_FILES]
        if bad or not self.precisions:
            raise ConfigError(f"--precision {','.join(self.precisions)!r}: each must be one of int8, fp16, fp32")
        if self.target == "jetson-orin" and self.opset > 17:
            raise ConfigError(f"opset {self.opset} > 17: TensorRT 8.5/8.6 on JetPack 5/6.0 parse up to 17")
