"""The field log as the uploader's outbox: batches after a persisted cursor, in both log formats;
a record being written is not read, a line a power cut left is skipped as read_log skips it, the
cursor survives a restart, moves back on a resend request, and an oversized record travels as a stub."""

from __future__ import annotations

import pytest

from clca_edge.capture.fieldlog import open_log, read_log
from clca_edge.fleet.messages import MAX_RECORD_BYTES
from clca_edge.fleet.outbox import LogOutbox


def write(path, frames, fmt="jsonl"):
    with open_log(path, fmt) as flog:
        for i in frames:
            flog.write({"type": "decision", "frame": i})


def frames(batch):
    return [(seq, rec["frame"]) for seq, rec in batch.records]


@pytest.mark.parametrize("fmt", ["jsonl", "sqlite"])
def test_batches_follow_the_cursor_across_restarts_and_rewind(tmp_path, fmt):
    log = tmp_path / f"log.{fmt}"
    write(log, range(10), fmt)
    box = LogOutbox(log)
    first = box.next_batch(4)
    assert frames(first) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert box.next_batch(4).records == first.records          # not acknowledged: the same again
    box.commit(first)
    again = LogOutbox(log)                                      # a restart reads the cursor file
    assert frames(again.next_batch(100)) == [(i, i) for i in range(4, 10)]
    assert again.pending()[0] == 6
    write(log, range(10, 12), fmt)                              # the capture goes on
    batch = again.next_batch(100)
    assert frames(batch)[-1] == (11, 11)
    again.commit(batch)
    assert again.pending()[0] == 0 and again.next_batch(10) is None
    assert again.rewind(5) and frames(again.next_batch(2)) == [(5, 5), (6, 6)]
    assert not again.rewind(9)                                  # never forward


def test_a_record_being_written_waits_and_a_cut_line_is_skipped_like_read_log(tmp_path):
    log = tmp_path / "log.jsonl"
    write(log, range(3))
    with open(log, "ab") as f:
        f.write(b'{"type": "decision", "fra')                   # a power cut mid-record
    box = LogOutbox(log)
    batch = box.next_batch(10)
    assert frames(batch) == [(0, 0), (1, 1), (2, 2)]
    box.commit(batch)
    write(log, range(3, 5))                                     # the next run starts on a fresh line
    batch = box.next_batch(10)
    assert frames(batch) == [(3, 3), (4, 4)]
    assert [r["frame"] for r in read_log(log)] == [0, 1, 2, 3, 4]   # the same records, the same order
    box.commit(batch)
    assert box.rewind(3) and frames(box.next_batch(10)) == [(3, 3), (4, 4)]


def test_another_log_at_the_same_path_is_sent_from_its_start(tmp_path):
    log = tmp_path / "log.jsonl"
    write(log, range(3))
    box = LogOutbox(log)
    box.commit(box.next_batch(10))
    first_id = box.cursor.log
    log.unlink()
    write(log, range(100, 102))
    box = LogOutbox(log)
    batch = box.next_batch(10)
    assert frames(batch) == [(0, 100), (1, 101)] and batch.end.log != first_id


def test_an_oversized_record_travels_as_a_stub_and_keeps_its_seq(tmp_path):
    log = tmp_path / "log.jsonl"
    with open_log(log) as flog:
        flog.write({"type": "start", "pad": "x" * (MAX_RECORD_BYTES + 10)})
        flog.write({"type": "decision", "frame": 0})
    (seq0, stub), (seq1, rec) = LogOutbox(log).next_batch(10).records
    assert (seq0, seq1) == (0, 1) and stub["type"] == "oversized" and stub["original_type"] == "start"
    assert stub["bytes"] > MAX_RECORD_BYTES and rec["frame"] == 0


def test_an_unreadable_cursor_sends_again_from_the_start(tmp_path):
    log = tmp_path / "log.jsonl"
    write(log, range(3))
    box = LogOutbox(log)
    box.commit(box.next_batch(10))
    box.cursor_path.write_text("{not json")
    assert frames(LogOutbox(log).next_batch(10)) == [(0, 0), (1, 1), (2, 2)]
