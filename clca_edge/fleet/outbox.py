"""The field log as the uploader's durable outbox: no second queue to lose or to fill the disk.

The field log already makes every record durable before the next frame (capture/fieldlog.py), so
what is pending is simply what comes after a cursor: a small JSON file beside the log, replaced
atomically only after the broker has acknowledged the records before it. A crash, a kill -9 or a
power cut therefore replays from the last acknowledged batch; the centre stores a record once per
(device, log, seq), so the replay never counts twice.

A record's ``seq`` is its index among the log's complete records (JSON lines: lines that parse,
as ``read_log`` reads them; SQLite: the row id), and ``log`` is a hash of the log's first record,
which names a log for ever (each capture run folder has its own log).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..capture.fieldlog import detect_format, json_object
from ..core.errors import ConfigError
from ..core.atomic_io import atomic_write_bytes
from .messages import MAX_RECORD_BYTES

log = logging.getLogger(__name__)

CURSOR_VERSION = 1
MAX_BATCH_BYTES = 400 * 1024        # below RecordBatch.MAX_BYTES, with room for the envelope


@dataclass(frozen=True)
class Cursor:
    """Where the unsent records begin: a byte offset (JSON lines) or last row id (SQLite), and the
    seq the next record gets."""

    log: str = ""
    position: int = 0
    seq: int = 0

    def to_json(self) -> bytes:
        return json.dumps({"version": CURSOR_VERSION, "log": self.log, "position": self.position,
                           "seq": self.seq}).encode()


@dataclass(frozen=True)
class Batch:
    records: Tuple[Tuple[int, Dict[str, Any]], ...]
    end: Cursor                                  # the cursor once this batch is acknowledged

    def __len__(self) -> int:
        return len(self.records)


def bounded(record: Dict[str, Any], size: int, force: bool = False) -> Dict[str, Any]:
    """The record, or a stub saying it was too large to send (its seq still travels, so the centre
    sees the log whole); ``force``: the stub whatever the size."""
    if size <= MAX_RECORD_BYTES and not force:
        return record
    return {"type": "oversized", "original_type": record.get("type"), "time": record.get("time"), "bytes": size}


def _row_record(text: str) -> Dict[str, Any]:
    """A SQLite row's record; a row that is not a JSON object travels as a stub (its seq must still
    reach the centre, or the log would look broken there for ever)."""
    rec = json_object(text)
    return rec if rec is not None else {"type": "unreadable", "bytes": len(text.encode())}


class LogOutbox:
    """Reads batches of a field log after the persisted cursor; ``commit(batch)`` moves the cursor."""

    def __init__(self, log_path, cursor_path: Optional[Path] = None):
        self.path = Path(log_path)
        self.cursor_path = Path(cursor_path) if cursor_path else self.path.with_name(self.path.name + ".fleet-cursor")
        self.cursor = self._load_cursor()
        self._id_cache: Optional[Tuple[Tuple[int, int], str]] = None   # ((st_dev, st_ino), log id)

    def _load_cursor(self) -> Cursor:
        try:
            d = json.loads(self.cursor_path.read_bytes())
            if d.get("version") != CURSOR_VERSION:
                raise ValueError(f"version {d.get('version')}")
            return Cursor(str(d["log"]), int(d["position"]), int(d["seq"]))
        except FileNotFoundError:
            return Cursor()
        except (OSError, ValueError, KeyError, TypeError) as e:
            # Resending from the start is safe (the centre stores each record once); skipping is not.
            log.warning("fleet cursor %s unreadable (%s): sending %s from its start", self.cursor_path, e, self.path)
            return Cursor()

    def log_id(self) -> Optional[str]:
        """The hash naming this log (of its first complete record), None while the log is empty;
        read once per file (a file put in its place is read again)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        key = (st.st_dev, st.st_ino)
        if self._id_cache is not None and self._id_cache[0] == key:
            return self._id_cache[1]
        found = self._read_log_id()
        if found is not None:
            self._id_cache = (key, found)
        return found

    def _read_log_id(self) -> Optional[str]:
        fmt = detect_format(self.path)
        if fmt is None:
            return None
        if fmt == "sqlite":
            rows = self._sqlite_rows(0, 1)
            first = rows[0][1].encode() if rows else None
        elif fmt == "jsonl":
            with open(self.path, "rb") as f:
                first = f.readline()
            first = first.strip() if first.endswith(b"\n") else None
        else:
            raise ConfigError(f"--log {self.path} is not a field log (neither JSON lines nor SQLite)")
        return hashlib.sha256(first).hexdigest()[:16] if first else None

    def _start(self) -> Optional[Cursor]:
        """The cursor to read from, reset to the start when the log is not the one it was for."""
        current = self.log_id()
        if current is None:
            return None
        if self.cursor.log != current:
            if self.cursor.log:
                log.warning("%s is a different log than the fleet cursor was for: sending it from its start", self.path)
            self.cursor = Cursor(current, 0, 0)
        return self.cursor

    def next_batch(self, max_records: int) -> Optional[Batch]:
        """Up to ``max_records`` records after the cursor (None when nothing is pending)."""
        start = self._start()
        if start is None or max_records < 1:
            return None
        if detect_format(self.path) == "sqlite":
            return self._sqlite_batch(start, max_records)
        return self._jsonl_batch(start, max_records)

    def _jsonl_batch(self, start: Cursor, max_records: int) -> Optional[Batch]:
        records: List[Tuple[int, Dict[str, Any]]] = []
        position, seq, size = start.position, start.seq, 0
        with open(self.path, "rb") as f:
            f.seek(position)
            while len(records) < max_records and size < MAX_BATCH_BYTES:
                line = f.readline()
                if not line.endswith(b"\n"):
                    break          # the end, or a record being written right now
                position += len(line)
                rec = json_object(line)
                if rec is None:
                    continue       # a line a power cut left partial: read_log skips it too
                records.append((seq, bounded(rec, len(line))))
                seq += 1
                size += min(len(line), MAX_RECORD_BYTES)
        if not records:
            if position != start.position:      # only partial lines: step over them
                self.commit(Batch((), Cursor(start.log, position, seq)))
            return None
        return Batch(tuple(records), Cursor(start.log, position, seq))

    def _sqlite_rows(self, after_id: int, limit: int) -> List[Tuple[int, str]]:
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return db.execute("SELECT id, record FROM records WHERE id > ? ORDER BY id LIMIT ?",
                              (after_id, limit)).fetchall()
        finally:
            db.close()

    def _sqlite_batch(self, start: Cursor, max_records: int) -> Optional[Batch]:
        # Row ids count from 1 without gaps (rows are never deleted): seq = id - 1, as in a JSON-lines log.
        # Bounded in bytes as a JSON-lines batch is (a batch over RecordBatch.MAX_BYTES could never be sent).
        records, last, size = [], start.position, 0
        for row_id, text in self._sqlite_rows(start.position, max_records):
            if size >= MAX_BATCH_BYTES:
                break
            n = len(text.encode())
            records.append((row_id - 1, bounded(_row_record(text), n)))
            last = row_id
            size += min(n, MAX_RECORD_BYTES)
        if not records:
            return None
        return Batch(tuple(records), Cursor(start.log, last, last))

    def rewind(self, seq: int) -> bool:
        """Send again from record ``seq`` (the centre misses it): move the cursor back, never forward."""
        start = self._start()
        if start is None or seq >= start.seq:
            return False
        if detect_format(self.path) == "sqlite":
            self.commit(Batch((), Cursor(start.log, seq, seq)))
            return True
        position = n = 0
        with open(self.path, "rb") as f:
            while n < seq:
                line = f.readline()
                if not line.endswith(b"\n"):
                    break
                position += len(line)
                n += json_object(line) is not None
        self.commit(Batch((), Cursor(start.log, position, n)))
        return True

    def commit(self, batch: Batch) -> None:
        """The broker acknowledged ``batch``: persist the cursor after it (atomically)."""
        atomic_write_bytes(self.cursor_path, batch.end.to_json())
        self.cursor = batch.end

    def pending(self) -> Tuple[int, int]:
        """(records, bytes) not yet acknowledged (the partial record being written not counted)."""
        start = self._start()
        if start is None:
            return 0, 0
        if detect_format(self.path) == "sqlite":
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                n, size = db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(record)), 0) FROM records WHERE id > ?",
                                     (start.position,)).fetchone()
            finally:
                db.close()
            return int(n), int(size)
        n = size = 0
        with open(self.path, "rb") as f:
            f.seek(start.position)
            for line in f:
                if line.endswith(b"\n"):
                    n += 1
                    size += len(line)
        return n, size
