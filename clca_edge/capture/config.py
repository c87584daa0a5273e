"""The capture loop's settings, typed and validated once (the CLI's option groups build them,
``cli/options.py``; library callers construct them directly)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

from ..core.errors import ConfigError
from .frames import FrameSaveConfig
from .grabber import ReconnectPolicy
from .quality import QualityConfig


@dataclass(frozen=True)
class CaptureConfig:
    top_k: int = 3
    every: int = 1                      # classify every Nth frame of the source
    interval_s: float = 0.0             # ... and at most one frame per this many seconds
    max_frames: Optional[int] = None    # stop after this many classified frames
    duration_s: Optional[float] = None  # stop after this many seconds
    smooth: int = 1
    min_conf: float = 0.0
    open_timeout_s: float = 30.0        # a live source that never opens within this is an error
    poll_s: float = 0.25                # how often the loop wakes while waiting for a frame
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    quality: QualityConfig = field(default_factory=QualityConfig)   # the frame-quality guard

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"--top-k {self.top_k} must be >= 1")
        if self.every < 1:
            raise ConfigError(f"--every {self.every} must be >= 1")
        if self.interval_s < 0:
            raise ConfigError(f"--interval {self.interval_s} must be >= 0 seconds")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"--max-frames {self.max_frames} must be >= 1")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ConfigError(f"--duration {self.duration_s} must be > 0 seconds")
        if self.open_timeout_s <= 0 or self.poll_s <= 0:
            raise ConfigError("open timeout and poll interval must be > 0 seconds")

    def log_dict(self) -> dict:
        """The settings the start record names (the reconnect policy and the guard are said apart)."""
        return {k: v for k, v in asdict(self).items() if k not in ("reconnect", "quality")}


@dataclass(frozen=True)
class OutputConfig:
    """Where a capture run writes: its run folder (``RUN_DIR/capture-STAMP``), the field log, and
    which frames it keeps."""

    run_dir: str = "runs/capture"
    log_path: Optional[str] = None      # default: RUN_FOLDER/log.jsonl (or log.sqlite)
    log_format: str = "jsonl"
    frames: FrameSaveConfig = field(default_factory=FrameSaveConfig)

    def __post_init__(self) -> None:
        from .fieldlog import LOG_FORMATS

        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"--log-format {self.log_format!r}; choose one of {', '.join(LOG_FORMATS)}")


@dataclass(frozen=True)
class DisplayConfig:
    show: bool = False                  # OpenCV overlay window
    live: Optional[bool] = None         # rich live panel; None: when stdout is a terminal
