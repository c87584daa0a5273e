"""Collectors that share the load (and one store) ask for a resend only when the store has a hole
(review 1.2), and a message the store cannot take is retried, not left unacknowledged (1.6)."""

from __future__ import annotations

from support.mosquitto import Mosquitto, needs_mosquitto

from clca_edge.centre.collector import Collector
from clca_edge.centre.store import Store
from clca_edge.fleet.config import BrokerConfig
from clca_edge.fleet.messages import RecordBatch

pytestmark = needs_mosquitto


def batch(first: int, n: int = 10) -> bytes:
    records = tuple((i, {"type": "decision", "frame": i}) for i in range(first, first + n))
    return RecordBatch("dev-s", "log1", records).encode()


def test_alternating_collectors_ask_for_nothing_when_nothing_is_missing(tmp_path):
    with Mosquitto(tmp_path) as broker:
        store = Store(tmp_path / "store")
        a = Collector(BrokerConfig(broker.url), store, client_id="collector-a").start()
        b = Collector(BrokerConfig(broker.url), store, client_id="collector-b").start()
        try:
            assert a.subscribed.wait(10) and b.subscribed.wait(10)
            for i, first in enumerate(range(0, 60, 10)):        # the broker hands batches A, B, A, B...
                assert (a if i % 2 == 0 else b).handle("clca/devices/dev-s/records", batch(first))
            assert a.counts.get("resends_asked", 0) == 0 and b.counts.get("resends_asked", 0) == 0
            assert store.resend_asked("dev-s") is None
            assert a.handle("clca/devices/dev-s/records", batch(70))   # a real hole (60..69) is still seen
            assert a.counts["resends_asked"] == 1 and store.resend_asked("dev-s") == ("log1", 60)
            assert b.handle("clca/devices/dev-s/records", batch(60))   # filled by the other collector
            assert a.handle("clca/devices/dev-s/records", batch(80))
            assert store.resend_asked("dev-s") is None
        finally:
            a.stop()
            b.stop()
            store.close()


def test_a_message_the_store_refuses_is_stored_again_without_a_reconnect(tmp_path):
    import sqlite3
    import time

    from clca_edge.fleet.config import FleetConfig
    from clca_edge.fleet.outbox import LogOutbox
    from clca_edge.fleet.uploader import Uploader
    from support.rollout import wait_for

    from clca_edge.capture.fieldlog import open_log

    log = tmp_path / "log.jsonl"
    with open_log(log) as flog:
        for i in range(30):
            flog.write({"type": "decision", "frame": i})

    def stored_frames(store, device):
        return [r["record"]["frame"] for r in store.records(device) if r["record"]["type"] == "decision"]
    with Mosquitto(tmp_path) as broker:
        store = Store(tmp_path / "store")
        real, refused = store.add_records, []

        def locked(batch):
            if len(refused) < 3:
                refused.append(batch.records[0][0])
                raise sqlite3.OperationalError("database is locked")
            return real(batch)

        store.add_records = locked
        collector = Collector(BrokerConfig(broker.url), store).start()
        assert collector.subscribed.wait(10)
        uploader = Uploader(FleetConfig(BrokerConfig(broker.url), "dev-l", batch_size=10), LogOutbox(log)).start()
        try:
            started = time.monotonic()
            wait_for(lambda: sorted(stored_frames(store, "dev-l")) == list(range(30)), 15, "every record stored")
            assert time.monotonic() - started < 10
            assert collector.counts["store_failed"] == 3 and collector.link.connections == 1   # no reconnect
            assert uploader.drain(5) and uploader.pending() == (0, 0)
        finally:
            uploader.stop()
            collector.stop()
            store.close()


def test_the_store_keeps_a_frame_once_per_device_and_content(tmp_path):
    """As FrameMessage says (review 3.3): keyed by (device, sha256 of the JPEG), not by frame_id,
    which a crashed sampler may give again."""
    from clca_edge.fleet.messages import FrameMessage

    def frame(frame_id, jpeg, device="dev-f"):
        return FrameMessage(device=device, frame_id=frame_id, time="2026-12-06T16:00:00Z", reason="low_confidence",
                            label="ash", confidence=0.3, topk=(("ash", 0.3),), record={}, jpeg=jpeg)

    with Store(tmp_path / "store") as store:
        assert store.add_frame(frame(1, b"\xff\xd8one"))
        assert not store.add_frame(frame(2, b"\xff\xd8one"))          # the same JPEG under another id: once
        assert store.add_frame(frame(1, b"\xff\xd8two"))              # an id given again after a crash: kept
        assert store.add_frame(frame(1, b"\xff\xd8one", "dev-g"))     # another device
        assert store.query("SELECT COUNT(*) FROM frames")[0][0] == 3
