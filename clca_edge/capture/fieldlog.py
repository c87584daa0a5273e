"""The field log: every decision and every event, durable record by record.

JSON lines: one object per line, appended, flushed and fsynced before the next frame, so a
power cut loses at most the record being written (a partial last line, which readers skip).
SQLite: one row per record in WAL mode with synchronous=FULL, for those who query logs.

An existing log is appended to only in its own format, told by its first bytes (SQLite's header
or JSON): JSON lines appended to a database (or rows to a text file) would be garbage the reader
cannot see.
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

from ..core.errors import ConfigError, OutputError

log = logging.getLogger(__name__)

LOG_FORMATS = ("jsonl", "sqlite")
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite 3 database file
UNKNOWN = "unknown"


def detect_format(path) -> Optional[str]:
    """The format of an existing log: ``"sqlite"``, ``"jsonl"``, ``UNKNOWN`` (neither), or None
    for a missing or empty file (a new log of either format)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return UNKNOWN
    if not head:
        return None
    if head == SQLITE_HEADER:
        return "sqlite"
    # A JSON-lines log starts with a record, or with the newline a cut first record leaves.
    return "jsonl" if head.lstrip()[:1] in (b"{", b"") else UNKNOWN


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
            self._failed(e)
            return False
        self.records += 1
        return True

    def _failed(self, e: BaseException, what: str = "write") -> None:
        """Count a failed write or fsync; warn about the first one."""
        self.failures += 1
        if not self._warned:
            log.error("field log %s: %s failed (%s); decisions are not being recorded durably", self.path, what, e)
            self._warned = True

    def _write(self, rec: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "FieldLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class JsonlLog(FieldLog):
    """Each record is one line appended with write(2) (repeated until every byte is written), then
    fsynced. The fsync runs on one persistent helper thread while the caller works on the next
    frame (it is an I/O wait, and inference can use the CPU meanwhile); the write of record N+1
    first waits for the fsync of record N, so at any time at most the last record is not yet on
    disk: the same guarantee as a synchronous fsync, without stalling the loop.

    A write cut short (disk full, I/O error) leaves a partial line; the next record then starts
    with a newline, so the partial line stays on its own and ``read_log`` skips it, and only the
    failed record is lost. A failed fsync is counted (``failures``) when it is noticed, before the
    next record, which is still written."""

    # Seams for tests: the system calls that may fail on a full or broken disk.
    _os_write = staticmethod(os.write)
    _os_fsync = staticmethod(os.fsync)

    def __init__(self, path: Path):
        super().__init__(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: Optional[int] = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        # A previous run cut mid-record leaves a partial line; start ours on a fresh line.
        self._partial_line = False
        if os.fstat(self._fd).st_size > 0:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                self._partial_line = f.read(1) != b"\n"
        self._cond = threading.Condition()
        self._requested = 0      # fsyncs asked for (one per record written)
        self._synced = 0         # ... and done (successfully or not)
        self._closing = False
        self._sync_error: Optional[OSError] = None
        self._syncer = threading.Thread(target=self._sync_loop, name="fieldlog-fsync", daemon=True)
        self._syncer.start()

    def _sync_loop(self) -> None:
        while True:
            with self._cond:
                while self._synced == self._requested and not self._closing:
                    self._cond.wait()
                if self._synced == self._requested:
                    return
                target = self._requested
            err: Optional[BaseException] = None
            try:
                self._os_fsync(self._fd)
            except BaseException as e:  # whatever it is, the writer waiting on it must wake up
                err = e
            finally:
                with self._cond:
                    if err is not None:
                        self._sync_error = err if isinstance(err, OSError) else OSError(f"fsync failed: {err!r}")
                    self._synced = target
                    self._cond.notify_all()

    def _wait_synced(self) -> Optional[OSError]:
        """Wait for the pending fsync; return (and clear) its error, if it failed."""
        with self._cond:
            while self._synced != self._requested:
                self._cond.wait()
            err, self._sync_error = self._sync_error, None
        return err

    def _write_all(self, data: bytes) -> None:
        written = 0
        try:
            while written < len(data):
                n = self._os_write(self._fd, data[written:])
                if n <= 0:
                    raise OSError(f"write returned {n} after {written} of {len(data)} bytes")
                written += n
        finally:
            if written:
                # Bytes went out: the line is partial unless they ended with the newline.
                self._partial_line = not data[:written].endswith(b"\n")

    def _write(self, rec: dict[str, Any]) -> None:
        err = self._wait_synced()
        if err is not None:
            self._failed(err, "fsync")
        data = (json.dumps(rec, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        if self._partial_line:
            data = b"\n" + data
        self._write_all(data)
        with self._cond:
            self._requested += 1
            self._cond.notify_all()

    def close(self) -> None:
        if self._fd is None:
            return
        err = self._wait_synced()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._syncer.join()
        try:
            # Covers bytes written after the last requested fsync (an interrupt between the two).
            self._os_fsync(self._fd)
        except OSError as e:
            err = err or e
        if err is not None:
            self._failed(err, "final fsync")
        os.close(self._fd)
        self._fd = None


class SqliteLog(FieldLog):
    def __init__(self, path: Path):
        super().__init__(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = None
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS records (id INTEGER PRIMARY KEY, time TEXT NOT NULL, "
                             "type TEXT NOT NULL, frame INTEGER, label TEXT, record TEXT NOT NULL)")
        except sqlite3.Error as e:
            if self._db is not None:
                self._db.close()
            raise OutputError(f"cannot open the SQLite field log {self.path} ({e}); choose another --log") from None

    def _write(self, rec: dict[str, Any]) -> None:
        self._db.execute("INSERT INTO records (time, type, frame, label, record) VALUES (?, ?, ?, ?, ?)",
                         (rec["time"], rec.get("type", ""), rec.get("frame"), rec.get("class"),
                          json.dumps(rec, separators=(",", ":"), ensure_ascii=False)))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def open_log(path, fmt: str = "jsonl") -> FieldLog:
    """Open (or create) a field log to append to; an existing log of another format, or a file that
    is no log, is refused (``OutputError``) and left as it is."""
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"--log-format {fmt!r}; choose one of {', '.join(LOG_FORMATS)}")
    path = Path(path)
    found = detect_format(path)
    if found == UNKNOWN:
        raise OutputError(f"--log {path} exists and is neither a JSON-lines nor a SQLite field log; "
                          "choose another --log")
    if found is not None and found != fmt:
        raise OutputError(f"--log {path} is a {found} field log; pass --log-format {found} to append to it, "
                          "or choose another --log")
    try:
        return JsonlLog(path) if fmt == "jsonl" else SqliteLog(path)
    except OSError as e:
        raise OutputError(f"cannot write the field log {path} ({e.strerror or e}); choose a writable "
                          "--run-dir/--log") from None


def json_object(line) -> Optional[dict[str, Any]]:
    """The record a field-log line (or SQLite row) holds: its JSON object, or None for a line a power
    cut tore or that holds no object. The uploader, its resends and the probation evidence all skip
    the same lines by this, so their record counts agree."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def read_log(path, fmt: Optional[str] = None) -> Iterator[dict[str, Any]]:
    """Every complete record of a field log (format told by its content unless given); a partial
    line left by a power cut is skipped."""
    path = Path(path)
    fmt = fmt or detect_format(path) or ("sqlite" if path.suffix in (".db", ".sqlite", ".sqlite3") else "jsonl")
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
