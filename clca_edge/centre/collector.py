"""``fleet collect``: subscribe to every device's messages and write them into the store.

Several collectors share the load through MQTT shared subscriptions (``$share/clca-collectors/...``):
the broker hands each message to one of them. A collector's session is persistent
(clean_session=False, a stable client id), so what arrives while it is away is queued by the
broker, and a message is acknowledged (manual PUBACK) only once it is in the store: a crash before
that means the broker sends it again, and the store ignores what it already has.

Statuses come on a plain subscription too, so a starting collector gets every device's retained
online/offline state.

Collectors that share the load must share one store (one folder): a hole is looked for in the
store, which holds what every collector of the group wrote, never in what one collector saw.

A broker restart loses shared subscriptions until the collectors subscribe again (Mosquitto 2.0
does not persist them), so a record the broker acknowledged to a device in that window reaches
no collector. The collector notices the hole in a log's seqs (a later batch, or the seq a device's
status says it has sent) and asks the device, with a retained ``commands/resend``, to send that
log again from the hole; the store ignores what it already has, and the request is cleared once
the log is whole.

A message the store cannot take right now (a locked or full disk) is not dropped and not left
unacknowledged until the next reconnect: a retry thread stores it again with back-off and
acknowledges it then (the broker sends nothing new beyond its in-flight window meanwhile; a
reconnect makes the broker send it again anyway, so the retries are dropped on a disconnect).

Nothing a device sends is trusted: a message that does not parse, breaks its schema, is larger than
its bound, or names another device than its topic does is dropped and counted (``drops`` in the
store, by reason), never written.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from collections import Counter
from typing import Dict, Optional, Tuple

from ..fleet.config import BrokerConfig
from ..fleet.event_outbox import EVENTS_LOG
from ..fleet.messages import (Event, FrameMessage, Heartbeat, MessageError, OversizedMessage, RecordBatch, Resend,
                              Status, decode)
from ..fleet.mqtt import MqttLink
from ..fleet.topics import DEVICE_KINDS, SHARE_GROUP, Topics
from .store import Store

log = logging.getLogger(__name__)

SHARED_KINDS = ("records", "heartbeat", "frames", "events")
RETRY_FIRST_S, RETRY_MAX_S = 0.2, 30.0     # back-off storing a message the store refused


def default_client_id() -> str:
    return f"clca-collector-{socket.gethostname()}"


class Collector:
    def __init__(self, broker: BrokerConfig, store: Store, topic_prefix: str = "clca",
                 client_id: Optional[str] = None, group: str = SHARE_GROUP, reconnect_max_s: int = 30):
        self.store = store
        self.topics = Topics(topic_prefix)
        self.group = group
        self.link = MqttLink(broker, client_id or default_client_id(), clean_session=False, manual_ack=True,
                             backoff_s=(1, reconnect_max_s))
        self.link.on_connect(self._subscribe)
        self.link.client.on_message = self._on_message
        self.link.client.on_subscribe = lambda *_: self.subscribed.set()
        self.subscribed = threading.Event()      # the broker confirmed the subscriptions (SUBACK)
        self.link.on_disconnect(self.subscribed.clear)
        self.link.on_disconnect(self._forget_retries)
        self._retries: "queue.Queue[Tuple[str, bytes, int, int]]" = queue.Queue()   # (topic, payload, mid, qos)
        self._stopping = threading.Event()
        self._retry_thread: Optional[threading.Thread] = None
        self.counts: Counter = Counter()      # stored, duplicate, dropped:<reason>, by what happened
        self._lock = threading.Lock()
        self._whole: Dict[Tuple[str, str], int] = {}   # (device, log) -> seqs below this are all stored

    def _subscribe(self, client) -> None:
        self.subscribed.clear()
        subs = [(self.topics.shared(self.topics.all_devices(k), self.group), 1) for k in SHARED_KINDS]
        subs.append((self.topics.all_devices("status"), 1))
        client.subscribe(subs)

    def start(self) -> "Collector":
        self.link.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.link.stop()
        if self._retry_thread is not None:
            self._retry_thread.join(5)

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counts[what] += n

    def _drop(self, reason: str, topic: str, why: str) -> None:
        log.warning("dropped a message on %s: %s (%s)", topic, reason, why)
        self._count(f"dropped:{reason}")
        self.store.count_drop(reason)

    def _on_message(self, client, userdata, msg) -> None:
        """Runs on paho's network thread; never raises (an exception would stop the link)."""
        try:
            if self.handle(msg.topic, msg.payload):
                client.ack(msg.mid, msg.qos)
        except Exception:  # a store that cannot write: unacknowledged, stored again by the retry thread
            log.exception("could not store a message from %s; trying again", msg.topic)
            self._count("store_failed")
            self._retries.put((msg.topic, msg.payload, msg.mid, msg.qos))
            if self._retry_thread is None:
                self._retry_thread = threading.Thread(target=self._retry_loop, name="collector-retry", daemon=True)
                self._retry_thread.start()

    def _forget_retries(self) -> None:
        """After a disconnect the broker sends every unacknowledged message again: drop ours."""
        while True:
            try:
                self._retries.get_nowait()
            except queue.Empty:
                return

    def _retry_loop(self) -> None:
        """Store the messages that failed, oldest first, with back-off; acknowledge each once stored."""
        delay = RETRY_FIRST_S
        while not self._stopping.is_set():
            try:
                item = self._retries.get(timeout=0.5)
            except queue.Empty:
                continue
            while not self._stopping.is_set():
                topic, payload, mid, qos = item
                try:
                    if self.handle(topic, payload) and self.link.connected.is_set():
                        self.link.client.ack(mid, qos)
                    delay = RETRY_FIRST_S
                    break
                except Exception as e:  # noqa: BLE001 - still cannot store: wait longer, never drop it
                    self._count("store_failed")
                    log.warning("still cannot store a message from %s (%s); next try in %.1f s", topic, e, delay)
                    self._stopping.wait(delay)
                    delay = min(delay * 2, RETRY_MAX_S)

    def handle(self, topic: str, payload: bytes) -> bool:
        """Validate and store one message; True when it may be acknowledged (stored or dropped)."""
        where = self.topics.parse_device_topic(topic)
        if where is None or where[1] not in DEVICE_KINDS:
            self._drop("unknown_topic", topic, "not a device topic")
            return True
        device, kind = where
        try:
            message = decode(kind, payload)
        except OversizedMessage as e:
            self._drop("oversized", topic, str(e))
            return True
        except MessageError as e:
            self._drop("malformed", topic, str(e))
            return True
        if message.device != device:
            self._drop("misaddressed", topic, f"names device {message.device!r}")
            return True
        self._store(message)
        return True

    def _store(self, message) -> None:
        if isinstance(message, RecordBatch):
            new = self.store.add_records(message)
            self._count("records", new)
            self._count("duplicates", len(message.records) - new)
            self._check_log(message.device, message.log, message.records[0][0], message.records[-1][0] + 1)
        elif isinstance(message, Heartbeat):
            self.store.add_heartbeat(message)
            self._count("heartbeats")
        elif isinstance(message, Status):
            self.store.set_status(message)
            self._count("statuses")
            if message.log is not None and message.seq is not None:
                self._check_log(message.device, message.log, message.seq, message.seq)
        elif isinstance(message, FrameMessage):
            self._count("frames" if self.store.add_frame(message) else "duplicates")
        elif isinstance(message, Event):
            self.store.add_event(message)
            self._count("events")
            self._check_events(message.device)

    def _check_log(self, device: str, log_id: str, first: int, end: int) -> None:
        """After records [first, end) of a log arrived (or a device said it sent up to ``end``): ask
        for a resend from the first hole, or clear an earlier request once the log is whole."""
        key = (device, log_id)
        whole = self._whole.get(key)
        if whole is None or first <= whole or whole < end:
            # Another collector of the group may have stored what lies between (it shares the store):
            # what this one saw is no proof of a hole, the store is.
            whole = self.store.first_gap(device, log_id, whole or 0)
            self._whole[key] = whole
        asked = self.store.resend_asked(device)
        if whole < end:
            if asked != (log_id, whole):
                log.warning("%s: records of log %s from seq %d are missing; asking the device to send them again",
                            device, log_id, whole)
                self._publish_resend(device, Resend(device, log_id, whole).encode())
                self.store.set_resend(device, log_id, whole)
                self._count("resends_asked")
        elif asked is not None and asked[0] == log_id:
            self._publish_resend(device, b"")      # an empty retained message clears the request
            self.store.set_resend(device, None)

    def _check_events(self, device: str) -> None:
        """The same for a device's rollout events (numbered 1, 2, ...; ``fleet.event_outbox``): a
        retained ``commands/resend-events`` from the first missing seq, cleared once they are whole."""
        gap, asked = self.store.first_event_gap(device), self.store.event_resend_asked(device)
        if gap is not None and gap != asked:
            log.warning("%s: rollout events from seq %d are missing; asking the device to send them again", device, gap)
            self.link.client.publish(self.topics.resend_events(device), Resend(device, EVENTS_LOG, gap).encode(),
                                     qos=1, retain=True)
            self.store.set_event_resend(device, gap)
            self._count("resends_asked")
        elif gap is None and asked is not None:
            self.link.client.publish(self.topics.resend_events(device), b"", qos=1, retain=True)
            self.store.set_event_resend(device, None)

    def _publish_resend(self, device: str, payload: bytes) -> None:
        self.link.client.publish(self.topics.resend(device), payload, qos=1, retain=True)
