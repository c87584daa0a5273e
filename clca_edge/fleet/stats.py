"""What a device's heartbeat says, gathered from the records its capture run writes."""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from ..capture.fieldlog import utc_now
from .messages import Heartbeat

FPS_WINDOW_S = 30.0


class DeviceStats:
    """Counts decisions, refusals by reason, classes and low-confidence decisions, and keeps what the
    device runs (bundle, backend, precision, self-check). ``observe(record)`` takes a field-log
    record (as ``to_dict`` writes it); thread-safe, cheap: the capture loop calls it."""

    def __init__(self, low_confidence: float = 0.5, clock: Callable[[], float] = time.monotonic):
        self.low_confidence = low_confidence
        self._clock = clock
        self._lock = threading.Lock()
        self.started = clock()
        self.decisions = 0
        self.low = 0
        self.refused: Counter = Counter()
        self.classes: Counter = Counter()
        self.backend: Optional[str] = None
        self.precision: Optional[str] = None
        self.bundle: Optional[str] = None
        self.bundle_version: Optional[str] = None
        self.selfcheck = "unknown"
        self._recent: deque = deque()

    def set_bundle(self, sha: Optional[str], version: Optional[str], backend: Optional[str] = None,
                   precision: Optional[str] = None, selfcheck: Optional[str] = None) -> None:
        """What the device runs now (at the start of a run and at a bundle switch)."""
        with self._lock:
            self.bundle, self.bundle_version = sha, version
            self.backend = backend or self.backend
            self.precision = precision or self.precision
            self.selfcheck = selfcheck or self.selfcheck

    def observe(self, record: Dict[str, Any]) -> None:
        kind = record.get("type")
        with self._lock:
            if kind in ("decision", "refused", "start"):
                self.backend = record.get("backend", self.backend)
                self.precision = record.get("precision", self.precision)
                self.bundle = record.get("bundle_sha", self.bundle)
                if isinstance(record.get("bundle"), str) and record["bundle"]:
                    self.bundle_version = record["bundle"]
            if kind == "decision":
                self.decisions += 1
                self.classes[str(record.get("class"))] += 1
                conf = record.get("confidence")
                if isinstance(conf, (int, float)) and conf < self.low_confidence:
                    self.low += 1
                self._tick()
            elif kind == "refused":
                self.refused[str(record.get("reason"))] += 1
                self._tick()
            elif kind == "selfcheck":
                used = record.get("used")
                if used is None or used == f"{record.get('backend')} {record.get('precision')}":
                    self.selfcheck = str(record.get("status", "unknown"))

    def _tick(self) -> None:
        now = self._clock()
        self._recent.append(now)
        while self._recent and now - self._recent[0] > FPS_WINDOW_S:
            self._recent.popleft()

    def fps(self) -> float:
        with self._lock:
            if len(self._recent) < 2:
                return 0.0
            span = self._clock() - self._recent[0]
            return round(len(self._recent) / span, 3) if span > 0 else 0.0

    def heartbeat(self, device: str, pending: int = 0, frames_pending: int = 0, frames_dropped: int = 0,
                  disk: Optional[Path] = None) -> Heartbeat:
        fps = self.fps()
        free = None
        if disk is not None:
            try:
                free = round(shutil.disk_usage(disk).free / 2 ** 20, 1)
            except OSError:
                pass
        with self._lock:
            return Heartbeat(device=device, time=utc_now(), uptime_s=round(self._clock() - self.started, 3),
                             bundle=self.bundle, bundle_version=self.bundle_version, backend=self.backend,
                             precision=self.precision, fps=fps, decisions=self.decisions,
                             refused=dict(self.refused), classes=dict(self.classes), low_confidence=self.low,
                             selfcheck=self.selfcheck, disk_free_mb=free, pending=pending,
                             frames_pending=frames_pending, frames_dropped=frames_dropped)
