"""What an engine build returns, shared by both builders (TensorRT API and torch-tensorrt) so
neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..bundle import EngineRecord

ENGINE_DIR = "engines"  # the bundle's sub-folder holding its own plans (deploy on a Jetson)


@dataclass
class EngineOutcome:
    precision: str
    file: Optional[str]
    status: str  # a bundle Status, or "skipped"
    reused: bool = False
    note: str = ""
    record: Optional[EngineRecord] = None  # the engine's record (None: nothing built)
    path: Optional[Path] = None  # where the plan is (this device's cache, or the bundle for deploy's own)

    def to_dict(self) -> dict[str, Any]:
        rec = self.record
        return {"precision": self.precision, "engine": self.file, "status": str(self.status), "reused": self.reused,
                "note": self.note or None, "path": str(self.path) if self.path is not None else None,
                "record": rec.to_dict() if rec is not None else None}


@dataclass
class BuildEngineReport:
    bundle: Path
    outcomes: list[EngineOutcome]
    default_engine: Optional[str]
    gpu: dict[str, str]
    trt_version: str
    # The folder the engines and their records went to: this device's cache for the bundle
    # (runtime/engine_cache.py; ``where`` "cache"), or the bundle itself for deploy's own ("bundle").
    engine_dir: Optional[Path] = None
    where: str = "cache"

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": str(self.bundle), "engine_dir": str(self.engine_dir) if self.engine_dir else None,
                "where": self.where, "default_engine": self.default_engine, "gpu": dict(self.gpu),
                "tensorrt": self.trt_version, "engines": [o.to_dict() for o in self.outcomes]}


__all__ = ["ENGINE_DIR", "BuildEngineReport", "EngineOutcome"]
