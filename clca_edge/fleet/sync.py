"""``fleet sync``: send what a field log (and its frame spool) still holds, then exit: a device
back in the barn's wifi after capture has stopped."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

from ..core.errors import ConfigError
from .agent import frames_dir
from .config import FleetConfig
from .outbox import LogOutbox
from .sampler import FrameSpool
from .uploader import Uploader

log = logging.getLogger(__name__)

LINGER_S = 1.0


@dataclass(frozen=True)
class SyncResult:
    records_sent: int
    frames_sent: int
    records_left: int
    bytes_left: int
    frames_left: int
    connected: bool
    seconds: float

    @property
    def done(self) -> bool:
        return self.records_left == 0 and self.frames_left == 0

    def to_dict(self) -> Dict[str, Any]:
        return {"records_sent": self.records_sent, "frames_sent": self.frames_sent,
                "records_left": self.records_left, "bytes_left": self.bytes_left, "frames_left": self.frames_left,
                "connected": self.connected, "done": self.done, "seconds": round(self.seconds, 3)}


def sync_log(config: FleetConfig, log_path, timeout_s: float) -> SyncResult:
    """Send the pending records and frames of ``log_path``, for at most ``timeout_s`` seconds."""
    log_path = Path(log_path)
    if not log_path.is_file():
        raise ConfigError(f"--log {log_path} is not a file")
    spool_dir = frames_dir(config, log_path)
    spool = FrameSpool(spool_dir, config.sampling.quota_bytes) if spool_dir.is_dir() else None
    # Its own client id: a capture still running on the same device keeps its session; and no
    # retained online/offline status: that is the running capture's to say.
    uploader = Uploader(config, LogOutbox(log_path), spool=spool, client_id=f"clca-edge-{config.device}-sync",
                        presence=False)
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    uploader.start()
    try:
        uploader.drain(timeout_s)
        # A moment for the centre to ask for records it missed (commands/resend), then send those too.
        while time.monotonic() < deadline:
            rewinds = uploader.rewinds
            time.sleep(min(LINGER_S, max(0.0, deadline - time.monotonic())))
            if uploader.rewinds == rewinds and uploader.outbox.pending()[0] == 0:
                break
            uploader.drain(max(0.0, deadline - time.monotonic()))
    finally:
        uploader.stop()
    records, size = uploader.outbox.pending()
    frames = len(spool.frames()) if spool is not None else 0
    return SyncResult(uploader.records_sent, uploader.frames_sent, records, size, frames,
                      uploader.link.connections > 0, time.monotonic() - t0)
