"""The centre's embedded store: SQLite in WAL mode for records, heartbeats, statuses and events, and a
content-addressed folder tree for frames (``frames/ab/abcdef....jpg``, named by sha256).

Crash-safe and idempotent: a message is written in one transaction (synchronous=FULL) before the
collector acknowledges it to the broker, and records are unique on (device, log, seq), frames on
(device, sha256), events on (device, seq): a redelivery or a device's replay is ignored
(``INSERT OR IGNORE``). A frame's file is written (atomically) before its row, so a crash between
leaves at worst a file no row names, never a row without its file. Several collectors may share
one store folder (SQLite serialises writers; ``busy_timeout`` waits for the lock).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from ..capture.fieldlog import utc_now
from ..core.errors import OutputError
from ..core.atomic_io import atomic_write_bytes
from ..fleet.messages import Event, FrameMessage, Heartbeat, RecordBatch, Status
from .eval_mix import EvalMix

DB_NAME = "fleet.db"
SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, log TEXT NOT NULL, seq INTEGER NOT NULL,
    type TEXT, time TEXT, class TEXT, confidence REAL, reason TEXT, record TEXT NOT NULL, received TEXT NOT NULL,
    UNIQUE (device, log, seq));
CREATE INDEX IF NOT EXISTS records_device_time ON records (device, time);
CREATE TABLE IF NOT EXISTS heartbeats (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, time TEXT NOT NULL, received TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    device TEXT PRIMARY KEY, last_seen TEXT, state TEXT, state_time TEXT, heartbeat TEXT);
CREATE TABLE IF NOT EXISTS frames (
    device TEXT NOT NULL, frame_id INTEGER NOT NULL, sha256 TEXT NOT NULL, time TEXT, reason TEXT, label TEXT,
    confidence REAL, topk TEXT, record TEXT, path TEXT NOT NULL, received TEXT NOT NULL,
    PRIMARY KEY (device, sha256));
CREATE TABLE IF NOT EXISTS events (
    device TEXT NOT NULL, seq INTEGER NOT NULL, state TEXT NOT NULL, version TEXT, reason TEXT, figures TEXT,
    time TEXT, received TEXT NOT NULL, ring TEXT, installed_version TEXT, rings TEXT, PRIMARY KEY (device, seq));
CREATE TABLE IF NOT EXISTS drops (reason TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS resends (device TEXT PRIMARY KEY, log TEXT NOT NULL, from_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS event_resends (device TEXT PRIMARY KEY, from_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS bundles (
    manifest_sha TEXT PRIMARY KEY, bundle TEXT NOT NULL, eval_classes TEXT NOT NULL, recorded TEXT NOT NULL);
"""


class Store:
    """One store folder (``fleet.db`` + ``frames/``); thread-safe (one connection, one lock)."""

    def __init__(self, folder, readonly: bool = False):
        self.folder = Path(folder)
        self.db_path = self.folder / DB_NAME
        self.frames_dir = self.folder / "frames"
        self._lock = threading.Lock()
        try:
            if readonly:
                if not self.db_path.is_file():
                    raise OutputError(f"--store {self.folder} holds no fleet store ({DB_NAME}); "
                                      "run `clca-edge fleet collect --store` first")
                self.db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, check_same_thread=False)
            else:
                self.folder.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(str(self.db_path), isolation_level=None, check_same_thread=False)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
                self.db.executescript(SCHEMA)
            self.db.execute("PRAGMA busy_timeout=10000")
        except (sqlite3.Error, OSError) as e:
            raise OutputError(f"cannot open the fleet store {self.db_path} ({e}); choose another --store") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _tx(self, statements) -> int:
        """Run ``statements`` in one transaction; the rows they changed (counted under the lock, so
        another thread's transaction is never counted with them)."""
        with self._lock:
            before = self.db.total_changes
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    if args and isinstance(args[0], (list, tuple)):
                        self.db.executemany(sql, args)
                    else:
                        self.db.execute(sql, args)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            return self.db.total_changes - before

    @staticmethod
    def _seen(device: str, now: str):
        return ("INSERT INTO devices (device, last_seen) VALUES (?, ?) "
                "ON CONFLICT(device) DO UPDATE SET last_seen = excluded.last_seen", (device, now))

    def add_records(self, batch: RecordBatch) -> int:
        """Store a batch; the number of records that were new."""
        now = utc_now()
        rows = [(batch.device, batch.log, seq, rec.get("type"), rec.get("time"), _text(rec.get("class")),
                 _number(rec.get("confidence")), _text(rec.get("reason")),
                 json.dumps(rec, separators=(",", ":"), ensure_ascii=False), now) for seq, rec in batch.records]
        changed = self._tx([("INSERT OR IGNORE INTO records (device, log, seq, type, time, class, confidence, reason, "
                              "record, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows),
                             self._seen(batch.device, now)])
        return changed - 1      # the device's last-seen row

    def add_heartbeat(self, beat: Heartbeat) -> None:
        now, body = utc_now(), json.dumps(beat.to_dict(), separators=(",", ":"))
        self._tx([("INSERT INTO heartbeats (device, time, received, body) VALUES (?, ?, ?, ?)",
                   (beat.device, beat.time, now, body)), self._seen(beat.device, now),
                  ("UPDATE devices SET heartbeat = ? WHERE device = ?", (body, beat.device))])

    def set_status(self, status: Status) -> None:
        now = utc_now()
        self._tx([self._seen(status.device, now) if status.state == "online" else
                  ("INSERT OR IGNORE INTO devices (device) VALUES (?)", (status.device,)),
                  ("UPDATE devices SET state = ?, state_time = ? WHERE device = ?",
                   (status.state, status.time or now, status.device))])

    def add_frame(self, frame: FrameMessage) -> bool:
        sha = frame.sha256
        rel = Path("frames") / sha[:2] / f"{sha}.jpg"
        path = self.folder / rel
        if not path.exists():
            atomic_write_bytes(path, frame.jpeg)
        now = utc_now()
        changed = self._tx([("INSERT OR IGNORE INTO frames (device, frame_id, sha256, time, reason, label, confidence, "
                              "topk, record, path, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              (frame.device, frame.frame_id, sha, frame.time, frame.reason, frame.label,
                               frame.confidence, json.dumps(frame.topk), json.dumps(frame.record, separators=(",", ":")),
                               str(rel), now)),
                             self._seen(frame.device, now)])
        return changed > 1      # more than the device's last-seen row

    def add_event(self, event: Event) -> None:
        now = utc_now()
        self._tx([("INSERT OR IGNORE INTO events (device, seq, state, version, reason, figures, time, received, ring, "
                   "installed_version, rings) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (event.device, event.seq, event.state, event.version, event.reason, json.dumps(event.figures),
                    event.time, now, event.ring, event.installed_version, json.dumps(list(event.rings)))),
                  self._seen(event.device, now)])

    def count_drop(self, reason: str) -> None:
        self._tx([("INSERT INTO drops (reason, count) VALUES (?, 1) "
                   "ON CONFLICT(reason) DO UPDATE SET count = count + 1", (reason,))])

    def first_gap(self, device: str, log: str, start: int = 0) -> int:
        """The first seq >= ``start`` of (device, log) that is not stored (a range scan of the unique
        index from ``start``, as long as the records run without a hole)."""
        if not self.query("SELECT 1 FROM records WHERE device = ? AND log = ? AND seq = ?", (device, log, start)):
            return start
        row = self.query("SELECT r.seq + 1 FROM records r WHERE r.device = ? AND r.log = ? AND r.seq >= ? AND NOT EXISTS "
                         "(SELECT 1 FROM records x WHERE x.device = r.device AND x.log = r.log AND x.seq = r.seq + 1) "
                         "ORDER BY r.seq LIMIT 1", (device, log, start))
        return int(row[0][0])

    def resend_asked(self, device: str) -> Optional[tuple]:
        rows = self.query("SELECT log, from_seq FROM resends WHERE device = ?", (device,))
        return tuple(rows[0]) if rows else None

    def set_resend(self, device: str, log: Optional[str], from_seq: int = 0) -> None:
        """Remember the resend asked of a device (``log`` None: none is asked any more)."""
        if log is None:
            self._tx([("DELETE FROM resends WHERE device = ?", (device,))])
        else:
            self._tx([("INSERT OR REPLACE INTO resends (device, log, from_seq) VALUES (?, ?, ?)",
                       (device, log, from_seq))])

    # -- reading -------------------------------------------------------------------------------
    def query(self, sql: str, args: tuple = ()) -> List[tuple]:
        with self._lock:
            return self.db.execute(sql, args).fetchall()

    def first_event_gap(self, device: str) -> Optional[int]:
        """The first event seq of ``device`` missing below its highest stored one (None: whole).
        A device numbers its events 1, 2, ... so the count equals the highest seq when none is missing."""
        n, top = self.query("SELECT COUNT(*), MAX(seq) FROM events WHERE device = ?", (device,))[0]
        if not n or n == top:
            return None
        expected = 1
        for (seq,) in self.query("SELECT seq FROM events WHERE device = ? ORDER BY seq", (device,)):
            if seq != expected:
                return expected
            expected += 1
        return None

    def event_resend_asked(self, device: str) -> Optional[int]:
        rows = self.query("SELECT from_seq FROM event_resends WHERE device = ?", (device,))
        return rows[0][0] if rows else None

    def set_event_resend(self, device: str, from_seq: Optional[int]) -> None:
        if from_seq is None:
            self._tx([("DELETE FROM event_resends WHERE device = ?", (device,))])
        else:
            self._tx([("INSERT OR REPLACE INTO event_resends (device, from_seq) VALUES (?, ?)", (device, from_seq))])

    def add_eval_mix(self, mix: EvalMix) -> None:
        """A bundle's eval-set class counts (``fleet publish --store``), keyed by its manifest's sha256."""
        self._tx([("INSERT OR REPLACE INTO bundles (manifest_sha, bundle, eval_classes, recorded) VALUES (?, ?, ?, ?)",
                   (mix.manifest_sha, mix.bundle, json.dumps(mix.classes), utc_now()))])

    def eval_mixes(self) -> Dict[str, EvalMix]:
        """Every recorded bundle's eval mix by manifest sha256 ({} for a store from before them)."""
        try:
            rows = self.query("SELECT manifest_sha, bundle, eval_classes FROM bundles")
        except sqlite3.OperationalError:   # a store written before the table, opened read-only
            return {}
        return {sha: EvalMix(sha, name, json.loads(classes)) for sha, name, classes in rows}

    def drops(self) -> Dict[str, int]:
        return dict(self.query("SELECT reason, count FROM drops"))

    def records(self, device: Optional[str] = None) -> Iterator[Dict[str, Any]]:
        """Stored records in arrival order (with their device, log and seq)."""
        sql = "SELECT device, log, seq, record FROM records"
        rows = self.query(sql + " WHERE device = ? ORDER BY id" if device else sql + " ORDER BY id",
                          (device,) if device else ())
        for dev, log_id, seq, text in rows:
            yield {"device": dev, "log": log_id, "seq": seq, "record": json.loads(text)}

    def counts(self) -> Counter:
        return Counter(dict(self.query("SELECT type, COUNT(*) FROM records GROUP BY type")))


def _text(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
