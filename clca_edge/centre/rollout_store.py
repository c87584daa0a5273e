"""The rollout's events at the centre: one SQLite table (WAL) in the collector's store, each
(device, seq) stored once, so a device re-sending after a reconnect never counts twice.

``fleet rollout status`` and ``fleet promote`` read the latest event of every device: its
state, the version it is about, the version it runs and the rings it follows."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

from ..core.errors import OutputError
from ..fleet.messages import Event

STORE_DB = "fleet.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollout_events (
    device TEXT NOT NULL, seq INTEGER NOT NULL, time TEXT, state TEXT NOT NULL, version TEXT,
    ring TEXT, installed_version TEXT, reason TEXT, figures TEXT NOT NULL, rings TEXT NOT NULL,
    received TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    PRIMARY KEY (device, seq)
)"""


@dataclass(frozen=True)
class DeviceRollout:
    """A device's latest rollout event."""

    device: str
    state: str
    version: str
    ring: str
    installed_version: str
    reason: str
    rings: Tuple[str, ...]
    time: str

    def to_dict(self) -> dict:
        return {"device": self.device, "ring": self.ring, "installed_version": self.installed_version,
                "state": self.state, "reason": self.reason, "version": self.version, "rings": list(self.rings),
                "time": self.time}


class EventStore:
    def __init__(self, store_dir: Path, create: bool = True):
        self.path = Path(store_dir) / STORE_DB
        if not create and not self.path.is_file():
            raise OutputError(f"--store {store_dir} holds no fleet store ({STORE_DB}); point it at the folder "
                              "`clca-edge fleet collect --store` writes")
        try:
            Path(store_dir).mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute(_SCHEMA)
            self.db.commit()
        except (OSError, sqlite3.Error) as e:
            raise OutputError(f"cannot open the fleet store {self.path} ({e})") from None

    def add(self, event: Event) -> bool:
        """Store ``event``; False when this (device, seq) is already there."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO rollout_events (device, seq, time, state, version, ring, installed_version, "
            "reason, figures, rings) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (event.device, event.seq, event.time, event.state, event.version, event.ring, event.installed_version,
             event.reason, json.dumps(event.figures), json.dumps(list(event.rings))))
        self.db.commit()
        return cur.rowcount == 1

    def latest(self) -> List[DeviceRollout]:
        rows = self.db.execute(
            "SELECT e.device, e.state, e.version, e.ring, e.installed_version, e.reason, e.rings, e.time "
            "FROM rollout_events e JOIN (SELECT device, MAX(seq) AS seq FROM rollout_events GROUP BY device) m "
            "ON e.device = m.device AND e.seq = m.seq ORDER BY e.device").fetchall()
        return [DeviceRollout(d, s, v or "", r or "", iv or "", why or "", tuple(json.loads(rings)), t or "")
                for d, s, v, r, iv, why, rings, t in rows]

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM rollout_events").fetchone()[0]

    def close(self) -> None:
        self.db.close()


__all__ = ["DeviceRollout", "EventStore", "STORE_DB"]
