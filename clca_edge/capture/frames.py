"""Saving frames next to the log, within a quota. Frames are the first thing to go: when the
quota is used up or the disk runs low, saving stops (said once, recorded), decisions go on."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..core.errors import ConfigError

log = logging.getLogger(__name__)

SAVE_POLICIES = ("none", "uncertain", "all")


@dataclass(frozen=True)
class FrameSaveConfig:
    policy: str = "none"
    max_disk_mb: float = 1024.0     # quota for saved frames of this run
    min_free_mb: float = 512.0      # stop saving when the disk has less free space than this
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if self.policy not in SAVE_POLICIES:
            raise ConfigError(f"--save-frames {self.policy!r}; choose one of {', '.join(SAVE_POLICIES)}")
        if self.max_disk_mb < 0 or self.min_free_mb < 0:
            raise ConfigError(f"--max-disk-mb {self.max_disk_mb} / min free {self.min_free_mb} must be >= 0")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg quality {self.jpeg_quality} must be in 1..100")


class FrameSaver:
    def __init__(self, folder: Path, config: FrameSaveConfig):
        self.folder = Path(folder)
        self.config = config
        self.saved = 0
        self.bytes = 0
        self.stopped_reason: Optional[str] = None
        if config.policy != "none":
            self.folder.mkdir(parents=True, exist_ok=True)
            self.bytes = sum(p.stat().st_size for p in self.folder.glob("*") if p.is_file())

    def wants(self, uncertain: bool) -> bool:
        if self.stopped_reason is not None or self.config.policy == "none":
            return False
        return self.config.policy == "all" or uncertain

    def _room(self, size: int) -> Optional[str]:
        quota = self.config.max_disk_mb * 1e6
        if self.bytes + size > quota:
            return f"quota of {self.config.max_disk_mb:g} MB for frames reached ({self.bytes / 1e6:.1f} MB saved)"
        free = shutil.disk_usage(self.folder).free
        if free - size < self.config.min_free_mb * 1e6:
            return f"disk low: {free / 1e6:.0f} MB free, below {self.config.min_free_mb:g} MB"
        return None

    def save(self, bgr: np.ndarray, name: str) -> Optional[Path]:
        """Write ``name``.jpg; None (and saving stopped for the run, with a reason) if there is no room."""
        import cv2

        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality])
        if not ok:
            return None
        reason = self._room(buf.nbytes)
        if reason is None:
            path = self.folder / f"{name}.jpg"
            try:
                path.write_bytes(buf.tobytes())
            except OSError as e:
                reason = f"cannot write frames ({e})"
            else:
                self.saved += 1
                self.bytes += buf.nbytes
                return path
        self.stopped_reason = reason
        log.warning("frame saving stopped: %s; decisions are still logged", reason)
        return None
