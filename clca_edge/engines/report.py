"""What an engine build returns, shared by both builders (TensorRT API and torch-tensorrt) so
neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

ENGINE_DIR = "engines"  # bundle sub-folder holding the plans built on the device


@dataclass
class EngineOutcome:
    precision: str
    file: Optional[str]
    status: str
    reused: bool = False
    note: str = ""
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class BuildEngineReport:
    bundle: Path
    outcomes: list[EngineOutcome]
    default_engine: Optional[str]
    gpu: dict[str, str]
    trt_version: str


__all__ = ["ENGINE_DIR", "BuildEngineReport", "EngineOutcome"]
