"""A device's fleet link during a capture run: heartbeat figures, the uncertain-frame sampler and the
uploader, fed with each record the run writes (``on_record``) and never making the loop wait.

The capture loop's thread only counts (``DeviceStats.observe``), asks the policy (a few
comparisons) and hands a chosen frame to the agent's own thread, which encodes and stores it; the
uploader thread does all the network work. A full hand-over queue drops the frame and counts it.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from pathlib import Path
from typing import Any, Dict, Optional

from .config import FleetConfig
from .outbox import LogOutbox
from .sampler import FrameSampler, FrameSpool
from .stats import DeviceStats
from .uploader import Uploader

log = logging.getLogger(__name__)

HANDOVER = 16     # chosen frames waiting for the encoder; more means the disk is far too slow


def frames_dir(config: FleetConfig, log_path: Path) -> Path:
    """Where chosen frames wait: the fleet file's ``frames_dir``, else ``fleet-frames`` beside the log."""
    return config.frames_dir or Path(log_path).parent / "fleet-frames"


class FleetAgent:
    def __init__(self, config: FleetConfig, log_path, rng: Optional[random.Random] = None,
                 client_id: Optional[str] = None):
        self.config = config
        self.stats = DeviceStats(config.sampling.low_confidence)
        self.spool = FrameSpool(frames_dir(config, Path(log_path)), config.sampling.quota_bytes)
        self.sampler = FrameSampler(config.sampling, self.spool, rng)
        self.uploader = Uploader(config, LogOutbox(log_path), stats=self.stats, spool=self.spool,
                                 client_id=client_id)
        self.handover_dropped = 0
        self._queue: "queue.Queue[Optional[tuple]]" = queue.Queue(HANDOVER)
        self._worker: Optional[threading.Thread] = None

    def start(self) -> "FleetAgent":
        self._worker = threading.Thread(target=self._store_frames, name="fleet-frames", daemon=True)
        self._worker.start()
        self.uploader.start()
        return self

    def on_record(self, record: Dict[str, Any], bgr: Any = None, margin: Optional[float] = None) -> None:
        """Every record the run wrote (a decision or refusal with its frame's image, and the
        frame's top-2 margin when known). ``bgr`` may be a function that reads the image, called
        only when the policy picks the frame (predict reads files again only for those)."""
        self.stats.observe(record)
        reason = (self.sampler.reason_for(record, margin) if bgr is not None and self.config.sampling.enabled
                  else None)
        if reason is not None and callable(bgr):
            bgr = bgr()
            reason = reason if bgr is not None else None
        if reason is not None:
            try:
                self._queue.put_nowait((bgr, record, reason))
            except queue.Full:
                self.handover_dropped += 1
        self.uploader.notify()

    def _store_frames(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.sampler.keep(*item) is not None:
                self.uploader.notify()

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout_s)
            self._worker = None
        self.uploader.stop(timeout_s)
