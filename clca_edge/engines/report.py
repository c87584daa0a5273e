"""What an engine build returns, shared by both builders (TensorRT API and torch-tensorrt) so
neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..bundle import EngineRecord

ENGINE_DIR = "engines"  # bundle sub-folder holding the plans built on the device


@dataclass
class EngineOutcome:
    precision: str
    file: Optional[str]
    status: str  # a bundle Status, or "skipped"
    reused: bool = False
    note: str = ""
    record: Optional[EngineRecord] = None  # the manifest's record of the engine (None: nothing built)


@dataclass
class BuildEngineReport:
    bundle: Path
    outcomes: list[EngineOutcome]
    default_engine: Optional[str]
    gpu: dict[str, str]
    trt_version: str


__all__ = ["ENGINE_DIR", "BuildEngineReport", "EngineOutcome"]
