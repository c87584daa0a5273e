"""The JSON-lines field log against a failing disk: short writes, a write cut mid-record, a failed
fsync; and its one persistent fsync thread keeping "at most the last record not on disk"."""

import errno
import json
import os
import threading

from clca_edge.capture import fieldlog
from clca_edge.capture.fieldlog import JsonlLog, read_log


def _short_writer(chunk):
    def write(fd, data):
        return os.write(fd, bytes(data[:chunk]))
    return write


def test_short_writes_still_give_whole_records(tmp_path):
    """write(2) may write fewer bytes than asked (signals, a nearly full disk): the rest follows."""
    log = JsonlLog(tmp_path / "log.jsonl")
    log._os_write = _short_writer(7)
    for i in range(5):
        assert log.write({"type": "decision", "frame": i, "class": "oak" * i})
    log.close()
    assert [r["frame"] for r in read_log(tmp_path / "log.jsonl")] == [0, 1, 2, 3, 4]
    assert log.failures == 0 and log.records == 5


def test_a_write_cut_mid_record_loses_only_that_record(tmp_path):
    """Disk full halfway through record 2: it is lost and counted; record 3 starts a fresh line
    (it is not glued onto the partial one) and reads back."""
    log = JsonlLog(tmp_path / "log.jsonl")
    state = {"n": 0}

    def disk_full_once(fd, data):
        state["n"] += 1
        if state["n"] == 3:                  # record 2: half of it goes out, then ENOSPC
            return os.write(fd, bytes(data[: len(data) // 2]))
        if state["n"] == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, bytes(data))

    log._os_write = disk_full_once
    results = [log.write({"type": "decision", "frame": i}) for i in range(5)]
    log.close()
    assert results == [True, True, False, True, True]
    assert [r["frame"] for r in read_log(tmp_path / "log.jsonl")] == [0, 1, 3, 4]
    assert log.failures == 1 and log.records == 4
    lines = (tmp_path / "log.jsonl").read_bytes().split(b"\n")
    assert sum(1 for line in lines if line.startswith(b'{"time"') and line.endswith(b"}")) == 4


def test_a_failed_fsync_is_counted_and_the_next_record_still_written(tmp_path):
    log = JsonlLog(tmp_path / "log.jsonl")
    calls = {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] == 2:                  # the fsync of record 1
            raise OSError(errno.EIO, "Input/output error")
        os.fsync(fd)

    log._os_fsync = fsync
    results = [log.write({"type": "decision", "frame": i}) for i in range(4)]
    log.close()
    assert results == [True] * 4
    assert [r["frame"] for r in read_log(tmp_path / "log.jsonl")] == [0, 1, 2, 3]
    # one fsync per record, plus close()'s final one (bytes written after the last requested sync)
    assert log.failures == 1 and calls["n"] == 5


def test_one_persistent_fsync_thread_and_every_earlier_record_synced(tmp_path, monkeypatch):
    started = []

    class CountingThread(threading.Thread):
        def start(self):
            started.append(self.name)
            super().start()

    monkeypatch.setattr(fieldlog.threading, "Thread", CountingThread)
    path = tmp_path / "log.jsonl"
    log = JsonlLog(path)
    synced = {"size": 0}

    def fsync(fd):
        size = os.fstat(fd).st_size          # what this fsync makes durable
        os.fsync(fd)
        synced["size"] = max(synced["size"], size)

    log._os_fsync = fsync
    for i in range(30):
        before = path.stat().st_size
        assert log.write({"type": "decision", "frame": i})
        # When write() returns, everything before this record is on disk: at most the last one is not.
        assert synced["size"] >= before
    log.close()
    assert started == ["fieldlog-fsync"]
    assert synced["size"] == path.stat().st_size       # closed: everything synced
    assert len(list(read_log(path))) == 30


def test_a_log_cut_by_a_power_cut_is_continued_on_a_fresh_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(json.dumps({"type": "start"}).encode() + b"\n" + b'{"type":"decis')
    with JsonlLog(path) as log:
        log.write({"type": "decision", "frame": 0})
    assert [r["type"] for r in read_log(path)] == ["start", "decision"]


def test_an_unexpected_error_in_the_fsync_thread_never_hangs_writes_or_close(tmp_path):
    path = tmp_path / "log.jsonl"
    log = JsonlLog(path)
    calls = {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("not an OSError")
        os.fsync(fd)

    log._os_fsync = fsync
    done = threading.Event()

    def work():
        for i in range(3):
            log.write({"type": "decision", "frame": i})
        log.close()
        done.set()

    threading.Thread(target=work, daemon=True).start()
    assert done.wait(5), "write()/close() hung after the fsync thread hit an unexpected error"
    assert log.failures >= 1
    assert [r["frame"] for r in read_log(path)] == [0, 1, 2]
