"""The probation reads capture's field log incrementally (review 1.7c): a SQLite log from the last
row id read, not from the start at every look; a JSON-lines log from its byte offset."""

from __future__ import annotations

import sqlite3

import pytest

from clca_edge.capture.fieldlog import open_log
from clca_edge.fleet.evidence import LogTail


def _write(path, frames, fmt):
    with open_log(path, fmt) as flog:
        for i in frames:
            flog.write({"type": "decision", "frame": i})


@pytest.mark.parametrize("fmt", ["sqlite", "jsonl"])
def test_each_look_returns_only_what_was_appended(tmp_path, fmt):
    log = tmp_path / f"log.{fmt}"
    _write(log, range(5), fmt)
    tail = LogTail(log)
    assert [r["frame"] for r in tail.read_new()] == list(range(5))
    assert tail.read_new() == []
    _write(log, range(5, 8), fmt)
    assert [r["frame"] for r in tail.read_new()] == [5, 6, 7]


def test_a_sqlite_log_is_not_read_again_from_its_start(tmp_path):
    log = tmp_path / "log.sqlite"
    _write(log, range(5), "sqlite")
    tail = LogTail(log)
    assert len(tail.read_new()) == 5
    db = sqlite3.connect(str(log))
    db.execute("UPDATE records SET record = 'not json' WHERE id = 1")   # rows already read are never looked at again
    db.commit()
    db.close()
    _write(log, range(5, 7), "sqlite")
    assert [r["frame"] for r in tail.read_new()] == [5, 6]
    log.unlink()                                                       # a new log in its place
    _write(log, range(100, 102), "sqlite")
    assert [r["frame"] for r in tail.read_new()] == [100, 101]
