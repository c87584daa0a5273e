"""A grabber thread for live sources: reads as fast as the camera delivers, keeps only the newest
frame (older unconsumed frames are dropped and counted), and reconnects with exponential
back-off when the camera goes away. Camera events go to a queue that the capture loop drains
into the field log, so the log has a single writer."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from ..core.errors import ConfigError, SourceError
from .sources import Frame, FrameSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconnectPolicy:
    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    stall_s: float = 5.0     # no new frame for this long while connected: a stall
    # A read that stayed blocked for lost_after_stalls x stall_s is a lost camera once it returns
    # (closed and reopened): a stream that hung that long is better restarted than trusted. The
    # OpenCV read timeout of stream sources is set to the same time, so that read() returns.
    lost_after_stalls: float = 3.0

    def __post_init__(self) -> None:
        if (self.initial_s <= 0 or self.max_s < self.initial_s or self.factor < 1 or self.stall_s <= 0
                or self.lost_after_stalls < 1):
            raise ConfigError(f"reconnect policy {self} needs 0 < initial <= max, factor >= 1, stall > 0, "
                              "lost_after_stalls >= 1")

    @property
    def lost_after_s(self) -> float:
        return self.stall_s * self.lost_after_stalls


@dataclass(frozen=True)
class SourceEvent:
    event: str               # opened | lost | reconnected | stalled | stall_ended | open_failed
    info: dict


class LatestFrameGrabber:
    def __init__(self, source: FrameSource, policy: ReconnectPolicy = ReconnectPolicy()):
        self.source = source
        self.policy = policy
        self.events: "queue.SimpleQueue[SourceEvent]" = queue.SimpleQueue()
        self.grabbed = 0
        self.dropped = 0
        self.connected = threading.Event()
        self.ever_connected = threading.Event()
        self._cond = threading.Condition()
        self._latest: Optional[Frame] = None
        self._fresh = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frame-grabber", daemon=True)
        self._last_frame_t: Optional[float] = None
        self._connected_t: Optional[float] = None  # when the current connection opened
        self._stalled_since: Optional[float] = None
        self._connection = 0             # incremented on every (re)connection
        self._stall_connection = 0       # the connection a reported stall belongs to

    def _emit(self, event: str, **info) -> None:
        level = logging.INFO if event in ("opened", "stall_ended", "reconnected") else logging.WARNING
        log.log(level, "camera %s: %s %s", self.source.description, event, info or "")
        self.events.put(SourceEvent(event, info))

    def start(self) -> "LatestFrameGrabber":
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout)
        # A read stuck inside a driver may outlive the join; the thread is a daemon, the process exits anyway.
        if not self._thread.is_alive():
            self.source.close()

    def _connect(self, lost_at: Optional[float]) -> bool:
        delay = self.policy.initial_s
        attempts = 0
        while not self._stop.is_set():
            attempts += 1
            try:
                self.source.open()
            except SourceError as e:
                if attempts == 1:
                    self._emit("open_failed", error=str(e), retry_in_s=delay)
                self._stop.wait(delay)
                delay = min(delay * self.policy.factor, self.policy.max_s)
                continue
            now = time.monotonic()
            if lost_at is None:
                self._emit("opened", attempts=attempts)
            else:
                self._emit("reconnected", down_s=round(now - lost_at, 3), attempts=attempts)
            self._last_frame_t = self._connected_t = now
            self._connection += 1
            self.connected.set()
            self.ever_connected.set()
            return True
        return False

    def _run(self) -> None:
        lost_at: Optional[float] = None
        while not self._stop.is_set():
            if not self.connected.is_set():
                if not self._connect(lost_at):
                    return
                lost_at = None
            first_read = self._last_frame_t == self._connected_t
            read_started = time.monotonic()
            frame = self.source.read()
            if self._stop.is_set():
                return
            waited = time.monotonic() - self._last_frame_t
            # A hung read (this one call blocked that long) is a lost camera; a slow first frame
            # after (re)connecting (sensor start-up, RTSP keyframe) is not.
            blocked = not first_read and time.monotonic() - read_started >= self.policy.lost_after_s
            if frame is None or blocked:
                lost_at = time.monotonic() if frame is None else self._last_frame_t
                self.connected.clear()
                self.source.close()
                info = {"frames_so_far": self.grabbed}
                if frame is not None:
                    info["blocked_s"] = round(waited, 3)   # the frame that ended the hang is dropped
                self._emit("lost", **info)
                continue
            frame.seq = self.grabbed
            self.grabbed += 1
            with self._cond:
                if self._fresh:
                    self.dropped += 1
                self._latest = frame
                self._fresh = True
                self._last_frame_t = frame.t
                self._cond.notify_all()

    def get(self, timeout: float) -> Optional[Frame]:
        """The newest frame not returned before, waiting up to ``timeout`` s; None if none came.
        Also notices stalls (connected, but no frame for ``policy.stall_s``)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._fresh and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            frame = self._latest if self._fresh else None
            self._fresh = False
        now = time.monotonic()
        if self._stalled_since is not None and (not self.connected.is_set()
                                                or self._stall_connection != self._connection):
            # A stall that turned into a loss is reported as the loss (and the reconnection).
            self._stalled_since = None
        if frame is not None:
            if self._stalled_since is not None:
                self._emit("stall_ended", duration_s=round(now - self._stalled_since, 3))
                self._stalled_since = None
        elif (self.connected.is_set() and self._stalled_since is None and self._last_frame_t is not None
              and now - self._last_frame_t >= self.policy.stall_s):
            self._stalled_since = self._last_frame_t
            self._stall_connection = self._connection
            self._emit("stalled", no_frame_for_s=round(now - self._last_frame_t, 3))
        return frame


class ReadAhead:
    """For recorded sources (files, images): a thread decodes the next frames while the loop
    classifies the current one. Every frame is kept, in order (a bounded queue: the reader waits
    when it is ``depth`` frames ahead). ``get()`` returns None at the end of the source.

    ``prepare(frame) -> frame``, run on the reader thread, lets the trigger decision and the
    preprocessing overlap with inference too, instead of adding to every frame's time.

    The reader thread opens nothing but closes the source when it ends, so the source is never
    closed under a read() still in progress (a stop while a read hangs leaves it to that thread)."""

    _END = object()

    def __init__(self, source: FrameSource, depth: int = 2,
                 prepare: Optional[Callable[[Frame], Frame]] = None):
        self.source = source
        self._prepare = prepare
        self._q: "queue.Queue" = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="frame-reader", daemon=True)

    def start(self) -> "ReadAhead":
        self._thread.start()
        return self

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                frame = self.source.read()
                if frame is not None and self._prepare is not None:
                    frame = self._prepare(frame)
                if frame is None or not self._put(frame):
                    break
        except BaseException as e:  # surfaced in the loop's thread by get()
            self._error = e
        finally:
            try:
                self.source.close()
            except Exception as e:
                log.warning("closing %s failed: %s", self.source.description, e)
        self._put(self._END)

    def get(self) -> Optional[Frame]:
        item = self._q.get()
        if item is self._END:
            if self._error is not None:
                raise self._error
            return None
        return item

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%s: a read is still in progress at shutdown; the reader thread closes the source "
                        "when it returns", self.source.description)
