"""The field log: every decision and every event, durable record by record.

JSON lines: one object per line, appended, flushed and fsynced before the next frame, so a
power cut loses at most the record being written (a partial last line, which readers skip).
SQLite: one row per record in WAL mode with synchronous=FULL, for those who query logs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator, Optional

from ..errors import ConfigError

log = logging.getLogger(__name__)

LOG_FORMATS = ("jsonl", "sqlite")


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FieldLog:
    """write(record) adds ``time`` (UTC, ISO 8601) and makes the record durable. A write that fails
    (disk full, I/O error) is counted and warned about; the run goes on."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.records = 0
        self.failures = 0
        self._warned = False

    def write(self, record: dict[str, Any]) -> bool:
        rec = {"time": utc_now(), **record}
        try:
            self._write(rec)
        except (OSError, sqlite3.Error) as e:
            self.failures += 1
            if not self._warned:
                log.error("field log %s: write failed (%s); decisions are not being recorded", self.path, e)
                self._warned = True
            return False
        self.records += 1
        return True

    def _write(self, rec: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "FieldLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class JsonlLog(FieldLog):
    """Each record is one write(2) of one line, then fsync. The fsync of record N runs on a helper
    thread while the caller works on frame N+1 (it is an I/O wait, and inference can use the CPU
    meanwhile); it is joined before record N+1 is written, so at any time at most the last record
    is not yet on disk: the same guarantee as a synchronous fsync, without stalling the loop."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        # A previous run cut mid-record leaves a partial line; start ours on a fresh line.
        if os.fstat(self._fd).st_size > 0:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    os.write(self._fd, b"\n")
        self._syncing: Optional[threading.Thread] = None
        self._sync_error: Optional[OSError] = None

    def _fsync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as e:
            self._sync_error = e

    def _join(self) -> None:
        if self._syncing is not None:
            self._syncing.join()
            self._syncing = None
        if self._sync_error is not None:
            err, self._sync_error = self._sync_error, None
            raise err

    def _write(self, rec: dict[str, Any]) -> None:
        self._join()
        data = (json.dumps(rec, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        os.write(self._fd, data)
        self._syncing = threading.Thread(target=self._fsync, name="fieldlog-fsync", daemon=True)
        self._syncing.start()

    def close(self) -> None:
        if self._fd is not None:
            try:
                self._join()
            except OSError as e:
                log.error("field log %s: final fsync failed (%s)", self.path, e)
            os.close(self._fd)
            self._fd = None


class SqliteLog(FieldLog):
    def __init__(self, path: Path):
        super().__init__(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS records (id INTEGER PRIMARY KEY, time TEXT NOT NULL, "
                         "type TEXT NOT NULL, frame INTEGER, label TEXT, record TEXT NOT NULL)")

    def _write(self, rec: dict[str, Any]) -> None:
        self._db.execute("INSERT INTO records (time, type, frame, label, record) VALUES (?, ?, ?, ?, ?)",
                         (rec["time"], rec.get("type", ""), rec.get("frame"), rec.get("class"),
                          json.dumps(rec, separators=(",", ":"), ensure_ascii=False)))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def open_log(path, fmt: str = "jsonl") -> FieldLog:
    if fmt == "jsonl":
        return JsonlLog(Path(path))
    if fmt == "sqlite":
        return SqliteLog(Path(path))
    raise ConfigError(f"--log-format {fmt!r}; choose one of {', '.join(LOG_FORMATS)}")


def read_log(path, fmt: Optional[str] = None) -> Iterator[dict[str, Any]]:
    """Every complete record of a field log; a partial line left by a power cut is skipped."""
    path = Path(path)
    fmt = fmt or ("sqlite" if path.suffix in (".db", ".sqlite", ".sqlite3") else "jsonl")
    if fmt == "sqlite":
        db = sqlite3.connect(str(path))
        try:
            for (text,) in db.execute("SELECT record FROM records ORDER BY id"):
                yield json.loads(text)
        finally:
            db.close()
        return
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                yield json.loads(line)
            except ValueError:
                continue  # a line cut short and then continued by the next run's fresh-line marker
