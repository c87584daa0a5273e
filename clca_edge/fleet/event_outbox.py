"""The rollout agent's state-change events as a durable outbox, sent by a thread of their own.

An event is appended to ``DIR/events.jsonl`` (one JSON line, written with ``O_APPEND`` and fsynced
before the agent's state file moves on), so an event the broker has not acknowledged survives a
kill -9, a power cut or a restart without network. Sending reuses the fleet link's machinery: the
file is read by ``LogOutbox`` after its persisted cursor (``events.jsonl.fleet-cursor``), each event
is published with QoS 1, and the cursor moves only after the broker's PUBACK (``mqtt.wait_acked``),
as the uploader does for the field log. A resend after a crash is stored once at the centre, which
keys events on (device, seq). Torch-free (device side).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional, Tuple

from ..capture.fieldlog import json_object
from .messages import Event, MessageError, Resend
from .mqtt import MqttLink, wait_acked
from .outbox import Batch, LogOutbox
from .sender_thread import SenderThread
from .topics import Topics

log = logging.getLogger(__name__)

EVENTS_NAME = "events.jsonl"
EVENTS_LOG = "events"       # the ``log`` a resend request for the events names (commands/resend-events)
TAIL_BYTES = 64 * 1024      # enough for the last event (an event is bounded in size)


class EventOutbox:
    """Append-only events file plus the cursor of what the broker acknowledged."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / EVENTS_NAME
        self.outbox = LogOutbox(self.path)

    def append(self, event: Event) -> None:
        """Make ``event`` durable (raises OSError if it cannot be: the caller must not move on)."""
        line = json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and self._last_byte() != b"\n":
                line = b"\n" + line     # a line torn by a crash stays on its own line (and is skipped)
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:   # the new file's name must survive a power cut too
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def _last_byte(self) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1)

    def last_seq(self) -> int:
        """The highest event seq in the file (0 if none): the agent numbers on from it."""
        try:
            with open(self.path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - TAIL_BYTES))
                lines = f.read().split(b"\n")
        except FileNotFoundError:
            return 0
        seqs = (d.get("seq") for d in filter(None, map(json_object, lines)))
        return max((s for s in seqs if isinstance(s, int)), default=0)

    def next(self) -> Optional[Tuple[Batch, Optional[Event]]]:
        """The oldest unacknowledged event (None if none); the event is None for a line that is not one."""
        batch = self.outbox.next_batch(1)
        if batch is None:
            return None
        _, record = batch.records[0]
        try:
            return batch, Event.from_dict(record)
        except (MessageError, KeyError, TypeError) as e:
            log.warning("skipped an unreadable line of %s: %s", self.path, e)
            return batch, None

    def commit(self, batch: Batch) -> None:
        self.outbox.commit(batch)

    def rewind(self, seq: int) -> bool:
        """Send again from the event numbered ``seq`` (the centre misses it): ``LogOutbox.rewind`` to
        that event's record index, which never moves the cursor forward."""
        index = 0
        try:
            with open(self.path, "rb") as f:
                for d in filter(None, map(json_object, f)):
                    if isinstance(d.get("seq"), int) and d["seq"] >= seq:
                        return self.outbox.rewind(index)
                    index += 1
        except FileNotFoundError:
            pass
        return False

    def pending(self) -> int:
        return self.outbox.pending()[0]


class EventSender(SenderThread):
    """Sends an ``EventOutbox`` over the agent's MQTT link, in order, on its own thread."""

    THREAD_NAME = "fleet-events"

    def __init__(self, outbox: EventOutbox, link: MqttLink, topics: Topics):
        super().__init__()
        self.outbox, self.link, self.topics = outbox, link, topics
        self.sent = 0

    def request_rewind(self, request: Resend) -> None:
        """The centre's resend request (any thread): applied by the sender's thread, between two events."""
        if request.log == EVENTS_LOG:
            self._request_rewind(request.from_seq)

    def _apply_rewind(self) -> None:
        seq = self._take_rewind(EVENTS_LOG)
        if seq is not None and self.outbox.rewind(seq):
            self.rewinds += 1
            log.warning("the centre misses rollout events from seq %d: sending them again", seq)

    def start(self) -> "EventSender":
        self._start_thread()
        return self

    def drain(self, timeout_s: float) -> bool:
        """Wait until every event is acknowledged (True) or ``timeout_s`` passes (False)."""
        self.notify()
        return self._idle.wait(timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop; what the broker has not acknowledged stays in the outbox for the next run."""
        self._stop_thread(timeout_s)

    def _pass(self) -> bool:
        return self._send_one()

    def _send_one(self) -> bool:
        item = self.outbox.next()
        if item is None:
            return False
        batch, event = item
        if event is not None:
            info = self.link.client.publish(self.topics.events(event.device), event.encode(), qos=1)
            if not wait_acked(info, self._stop):
                return False     # stopping: still pending, sent by the next run
            self.sent += 1
        self.outbox.commit(batch)
        return True


__all__ = ["EVENTS_LOG", "EVENTS_NAME", "EventOutbox", "EventSender"]
