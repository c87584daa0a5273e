"""The device's uploader: one thread that sends what the field log holds (and the chosen frames) to
the broker, and never makes the capture loop wait.

- Records go in log order, in batches, with QoS 1; the cursor moves only after the broker's PUBACK
  (``LogOutbox.commit``). While the link is down paho keeps the unacknowledged batch and sends it
  again on reconnect; nothing newer is published meanwhile, so nothing piles up in memory.
- Catching up after a long gap runs at ``replay_rate`` records/s at most (a token bucket), so a
  cellular link and the broker are not flooded.
- On each connection a retained ``online`` status; the broker publishes the retained ``offline``
  last will if the device vanishes, and a clean stop publishes it itself. Not so for ``fleet sync``
  (``presence=False``): it does not speak for the device (capture may run beside it), so a hole at
  the very end of what it sends is found from later batches only.
- A heartbeat every ``heartbeat_s`` while connected (never queued up while offline: stale health
  is worth nothing).
- The statuses say which log is being sent and how far (``log``, ``seq``); the centre asks for a
  log again from a hole it finds (a retained ``commands/resend``, see centre/collector.py), and the
  uploader moves its cursor back there (``LogOutbox.rewind``).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Optional, Tuple

from ..capture.fieldlog import utc_now
from .config import FleetConfig
from .messages import FrameMessage, MessageError, OversizedMessage, RecordBatch, Resend, Status, decode
from .mqtt import MqttLink, wait_acked
from .outbox import LogOutbox, bounded
from .sampler import FrameSpool
from .sender_thread import POLL_S, SenderThread
from .stats import DeviceStats
from .topics import Topics

log = logging.getLogger(__name__)

LINGER_S = 0.1        # once caught up, records gather this long before the next batch is read
FULL, PARTIAL, NONE = "full", "partial", "none"


class TokenBucket:
    """At most ``rate`` items per second on average, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float, clock=time.monotonic):
        self.rate, self.burst, self._clock = rate, burst, clock
        self.tokens, self._t = burst, clock()

    def available(self) -> int:
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._t) * self.rate)
        self._t = now
        return int(self.tokens)

    def take(self, n: int) -> None:
        self.tokens -= n

    def wait_s(self, n: int) -> float:
        """Seconds until ``n`` items are available."""
        return max(0.0, (n - self.tokens) / self.rate)


def _encode_batch(device: str, batch) -> bytes:
    """The batch's message; should it still be over its bound (records whose JSON grew on the way),
    each record too large travels as the ``bounded`` stub, and then every record if need be: the
    seqs always go, so the centre sees the log whole and the uploader never sticks on a batch."""
    try:
        return RecordBatch(device, batch.end.log, batch.records).encode()
    except OversizedMessage:
        pass
    sizes = [(seq, rec, len(json.dumps(rec, ensure_ascii=False).encode())) for seq, rec in batch.records]
    try:
        return RecordBatch(device, batch.end.log, tuple((s, bounded(r, n)) for s, r, n in sizes)).encode()
    except OversizedMessage:
        return RecordBatch(device, batch.end.log, tuple((s, bounded(r, n, force=True)) for s, r, n in sizes)).encode()


class Uploader(SenderThread):
    """Sends a field log (``outbox``) and a frame spool over one MQTT link, on its own thread."""

    THREAD_NAME = "fleet-uploader"
    LINGER_S = LINGER_S    # woken from idle: let a few records gather (fuller batches, fewer cursor writes)

    def __init__(self, config: FleetConfig, outbox: LogOutbox, *, stats: Optional[DeviceStats] = None,
                 spool: Optional[FrameSpool] = None, client_id: Optional[str] = None, presence: bool = True):
        super().__init__()
        self.config = config
        # presence: this uploader speaks for the device (retained online, offline will). A one-off
        # ``fleet sync`` does not: a capture running on the device meanwhile would be shown offline.
        self.presence = presence
        self.outbox = outbox
        self.stats = stats
        self.spool = spool
        self.topics = Topics(config.topic_prefix)
        device = config.device
        will = (self.topics.status(device), Status(device, "offline").encode(), 1, True) if presence else None
        self.link = MqttLink(config.broker, client_id or f"clca-edge-{device}", clean_session=False, will=will,
                             backoff_s=(1, config.reconnect_max_s))
        self.link.on_connect(self._online)
        self.link.client.on_message = self._on_command
        self.bucket = TokenBucket(config.replay_rate, max(config.batch_size, config.replay_rate))
        self.records_sent = 0
        self.frames_sent = 0
        self.frames_unsendable = 0         # frames dropped from the spool because no message can carry them
        self.batches_sent = 0
        self.bytes_sent = 0
        self._next_heartbeat = 0.0

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "Uploader":
        self.link.start()
        self._start_thread()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop sending (what is not acknowledged stays pending in the log), say offline, disconnect."""
        self._stop_thread(timeout_s)
        if self.stats is not None and self.link.connected.is_set():   # the run's last figures
            self._next_heartbeat = 0.0
            info = self._maybe_heartbeat()
            try:
                info.wait_for_publish(min(timeout_s, 2.0))
            except (RuntimeError, ValueError):
                pass
        offline = self._status("offline").encode()
        self.link.stop(last=(self.topics.status(self.config.device), offline) if self.presence else None)

    def drain(self, timeout_s: float) -> bool:
        """Wait until nothing is left to send (True) or ``timeout_s`` passes (False)."""
        deadline = time.monotonic() + timeout_s
        self._idle.clear()
        while time.monotonic() < deadline:
            self._wake.set()
            if self._idle.wait(min(0.2, max(0.0, deadline - time.monotonic()))):
                return True
        return False

    def pending(self) -> Tuple[int, int]:
        """(records, frames) not yet acknowledged by the broker."""
        records, _ = self.outbox.pending()
        return records, len(self.spool.frames()) if self.spool is not None else 0

    # -- the thread ------------------------------------------------------------------------------
    def _status(self, state: str) -> Status:
        cursor = self.outbox.cursor
        return Status(self.config.device, state, utc_now(), log=cursor.log or None,
                      seq=cursor.seq if cursor.log else None)

    def _online(self, client) -> None:
        client.subscribe(self.topics.resend(self.config.device), qos=1)
        if self.presence:
            client.publish(self.topics.status(self.config.device), self._status("online").encode(), qos=1,
                           retain=True)
        self._next_heartbeat = 0.0     # say how we are right away

    def _on_command(self, client, userdata, msg) -> None:
        """The centre's resend request (paho's thread: only noted here, applied by the uploader)."""
        if not msg.payload:
            return                     # a cleared request
        try:
            request = decode(Resend.KIND, msg.payload)
        except MessageError as e:
            log.warning("ignored a malformed command on %s: %s", msg.topic, e)
            return
        if request.device == self.config.device and request.log == self.outbox.cursor.log:
            self._request_rewind(request.from_seq)

    def _apply_rewind(self) -> None:
        log_id = self.outbox.cursor.log
        seq = self._take_rewind(log_id)
        if seq is not None and self.outbox.rewind(seq):
            self.rewinds += 1
            log.warning("the centre misses records of log %s from seq %d: sending them again", log_id, seq)

    def _pass(self) -> bool:
        self._maybe_heartbeat()
        records = self._send_records()
        # Frames go between batches once the records have caught up (never starved by them).
        frame = records != FULL and self._send_frame()
        if records == PARTIAL and not frame:
            self._stop.wait(LINGER_S)   # caught up: let records gather for a fuller batch
        return records != NONE or frame

    def _send_records(self) -> str:
        """One batch: FULL (more may be waiting), PARTIAL (sent all there was) or NONE (nothing)."""
        available = self.bucket.available()
        if available < self.config.batch_size:
            # The rate limit holds us back: wait for a full batch's worth (at most LINGER_S), not
            # a trickle of tiny batches.
            self._stop.wait(min(LINGER_S, self.bucket.wait_s(self.config.batch_size)))
            available = self.bucket.available()
        want = min(self.config.batch_size, available)
        if want < 1:
            return FULL
        batch = self.outbox.next_batch(want)
        if batch is None:
            return NONE
        payload = _encode_batch(self.config.device, batch)
        info = self.link.client.publish(self.topics.records(self.config.device), payload, qos=1)
        if not wait_acked(info, self._stop):
            self._stop.wait(POLL_S)   # not sent: still pending, tried again
            return FULL
        self.outbox.commit(batch)
        self.bucket.take(len(batch))
        self.records_sent += len(batch)
        self.batches_sent += 1
        self.bytes_sent += len(payload)
        return FULL if len(batch) == want else PARTIAL

    def _send_frame(self) -> bool:
        if self.spool is None:
            return False
        waiting = self.spool.frames()
        if not waiting:
            return False
        frame_id = waiting[0]
        stored = self.spool.read(frame_id)
        if stored is None:
            self.spool.remove(frame_id)
            return True
        try:
            payload = self._frame_payload(frame_id, *stored)
        except (MessageError, ValueError, TypeError, AttributeError) as e:
            # Never sendable (a JPEG over the frame bound, a broken sidecar): dropped, or it would
            # hold up every frame behind it for ever.
            log.warning("fleet uploader: frame %d cannot be sent (%s); dropped from the spool", frame_id, e)
            self.spool.remove(frame_id)
            self.frames_unsendable += 1
            return True
        info = self.link.client.publish(self.topics.frames(self.config.device), payload, qos=1)
        if not wait_acked(info, self._stop):
            self._stop.wait(POLL_S)
            return True
        self.spool.remove(frame_id)
        self.frames_sent += 1
        self.bytes_sent += len(payload)
        return True

    def _frame_payload(self, frame_id: int, jpeg: bytes, meta) -> bytes:
        msg = FrameMessage(device=self.config.device, frame_id=frame_id, time=str(meta.get("time")),
                           reason=str(meta.get("reason")), label=meta.get("label"), confidence=meta.get("confidence"),
                           topk=tuple((str(c), float(p)) for c, p in meta.get("topk") or []),
                           record=meta.get("record") or {}, jpeg=jpeg)
        return msg.encode()

    def _maybe_heartbeat(self):
        """Publish a heartbeat if one is due (its message info, else None)."""
        if self.stats is None or time.monotonic() < self._next_heartbeat:
            return None
        self._next_heartbeat = time.monotonic() + self.config.heartbeat_s
        records, frames = self.pending()
        beat = self.stats.heartbeat(self.config.device, pending=records, frames_pending=frames,
                                    frames_dropped=self.spool.dropped if self.spool is not None else 0,
                                    disk=self.outbox.path.parent)
        return self.link.client.publish(self.topics.heartbeat(self.config.device), beat.encode(), qos=1)
