"""The uploader never dies silently (review 1.1): a SQLite log's batch is bounded in bytes as a
JSON-lines one is, a row that is not JSON travels as a stub, and a pass that raises is logged,
backed off and retried, on a real Mosquitto."""

from __future__ import annotations

import json
import sqlite3
import time

from support.mosquitto import Mosquitto, needs_mosquitto

from clca_edge.capture.fieldlog import open_log
from clca_edge.centre.collector import Collector
from clca_edge.centre.store import Store
from clca_edge.fleet.config import BrokerConfig, FleetConfig
from clca_edge.fleet.messages import RecordBatch
from clca_edge.fleet.outbox import MAX_BATCH_BYTES, LogOutbox
from clca_edge.fleet.uploader import Uploader
from support.waiting import wait_for

pytestmark = needs_mosquitto


def write_big(path, n: int) -> None:
    with open_log(path, "sqlite") as flog:
        for i in range(n):     # ~600 bytes each, incompressible enough to matter
            flog.write({"type": "decision", "frame": i, "note": f"{i:04d}" * 140})


def test_a_sqlite_batch_is_bounded_in_bytes(tmp_path):
    log = tmp_path / "log.db"
    write_big(log, 1000)
    batch = LogOutbox(log).next_batch(1000)
    assert 0 < len(batch) < 1000
    text = json.dumps({"records": batch.records}, ensure_ascii=False, separators=(",", ":"))
    assert MAX_BATCH_BYTES - 2000 < len(text) < RecordBatch.MAX_BYTES
    RecordBatch("dev", batch.end.log, batch.records).encode()      # fits its bound


def test_large_sqlite_batches_and_a_broken_row_reach_the_centre(tmp_path):
    log = tmp_path / "log.db"
    write_big(log, 1000)
    db = sqlite3.connect(str(log))
    db.execute("UPDATE records SET record = 'not json {' WHERE id = 5")      # seq 4: a broken row
    db.commit()
    db.close()
    with Mosquitto(tmp_path) as broker:
        store = Store(tmp_path / "store")
        collector = Collector(BrokerConfig(broker.url), store).start()
        assert collector.subscribed.wait(10)
        cfg = FleetConfig(BrokerConfig(broker.url), "dev-big", batch_size=1000, replay_rate=100000,
                          reconnect_max_s=1)
        uploader = Uploader(cfg, LogOutbox(log)).start()
        try:
            wait_for(lambda: len(list(store.records("dev-big"))) == 1000, 30, "every record at the centre")
            records = list(store.records("dev-big"))
            assert [r["seq"] for r in records] == list(range(1000))
            assert records[4]["record"]["type"] == "unreadable"
            assert [r["record"]["frame"] for r in records if r["seq"] != 4] == [i for i in range(1000) if i != 4]
            assert uploader.failures == 0 and uploader._thread.is_alive()
        finally:
            uploader.stop()
            collector.stop()
            store.close()


def test_a_pass_that_raises_is_retried_and_the_thread_lives_on(tmp_path, caplog):
    log = tmp_path / "log.jsonl"
    with open_log(log) as flog:
        for i in range(20):
            flog.write({"type": "decision", "frame": i})
    with Mosquitto(tmp_path) as broker:
        store = Store(tmp_path / "store")
        collector = Collector(BrokerConfig(broker.url), store).start()
        assert collector.subscribed.wait(10)
        outbox = LogOutbox(log)
        real, calls = outbox.next_batch, []

        def flaky(n):
            calls.append(n)
            if len(calls) <= 2:
                raise ValueError("a bad row")       # neither OSError nor anything the uploader knows
            return real(n)

        outbox.next_batch = flaky
        cfg = FleetConfig(BrokerConfig(broker.url), "dev-f", batch_size=10, reconnect_max_s=1)
        uploader = Uploader(cfg, outbox).start()
        try:
            wait_for(lambda: len(list(store.records("dev-f"))) == 20, 20, "the records after the failures")
            assert uploader.failures == 2 and uploader._thread.is_alive()
            assert sum("ValueError: a bad row" in r.getMessage() for r in caplog.records) == 1   # said once
        finally:
            uploader.stop()
            collector.stop()
            store.close()


def test_a_batch_over_its_bound_still_goes_with_every_seq():
    from clca_edge.fleet.messages import decode
    from clca_edge.fleet.outbox import Batch, Cursor
    from clca_edge.fleet.uploader import _encode_batch

    records = tuple((i, {"type": "decision", "frame": i, "note": "\u0001" * 2500}) for i in range(40))
    batch = Batch(records, Cursor("abc", 40, 40))     # each record's JSON is 6x its characters
    sent = decode("records", _encode_batch("dev", batch))
    assert [seq for seq, _ in sent.records] == list(range(40))
    assert {rec["type"] for _, rec in sent.records} == {"oversized"}
    assert sent.records[3][1]["original_type"] == "decision" and sent.records[3][1]["bytes"] > 15000


def test_a_frame_no_message_can_carry_is_dropped_and_the_next_ones_travel(tmp_path):
    import os

    from clca_edge.fleet.sampler import FrameSpool

    log = tmp_path / "log.jsonl"
    with open_log(log) as flog:
        flog.write({"type": "start"})
    spool = FrameSpool(tmp_path / "frames", 50 * 2 ** 20)
    meta = {"time": "2026-12-06T16:00:00Z", "reason": "low_confidence", "label": "ash", "confidence": 0.3,
            "topk": [["ash", 0.3]], "record": {}}
    spool.add(b"\xff\xd8\xff" + os.urandom(2_500_000), meta)     # base64 makes it over the 3 MiB frame bound
    broken = spool.add(b"\xff\xd8\xffbroken", meta)
    (tmp_path / "frames" / f"{broken:010d}.json").write_text('{"topk": 7}')   # a sidecar gone wrong
    spool.add(b"\xff\xd8\xffgood", meta)
    with Mosquitto(tmp_path) as broker:
        store = Store(tmp_path / "store")
        collector = Collector(BrokerConfig(broker.url), store).start()
        assert collector.subscribed.wait(10)
        cfg = FleetConfig(BrokerConfig(broker.url), "dev-fr", reconnect_max_s=1)
        uploader = Uploader(cfg, LogOutbox(log), spool=spool).start()
        try:
            wait_for(lambda: collector.counts["frames"] == 1, 20, "the good frame at the centre")
            assert uploader.frames_unsendable == 2 and spool.frames() == [] and uploader.failures == 0
            assert store.query("SELECT frame_id FROM frames")[0][0] == 2
        finally:
            uploader.stop()
            collector.stop()
            store.close()
