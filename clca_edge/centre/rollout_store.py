"""The rollout as the centre's store holds it: every device's latest rollout event (the collector
writes each (device, seq) once into the store's ``events`` table, ``centre.store``): its state, the
version it is about, the version it runs and the rings it follows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import List, Tuple

from .store import Store


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


def latest_rollout(store: Store) -> List[DeviceRollout]:
    rows = store.query(
        "SELECT e.device, e.state, e.version, e.ring, e.installed_version, e.reason, e.rings, e.time "
        "FROM events e JOIN (SELECT device, MAX(seq) AS seq FROM events GROUP BY device) m "
        "ON e.device = m.device AND e.seq = m.seq ORDER BY e.device")
    return [DeviceRollout(d, s, v or "", r or "", iv or "", why or "", tuple(json.loads(rings or "[]")), t or "")
            for d, s, v, r, iv, why, rings, t in rows]


def event_figures(store: Store, device: str, state: str) -> dict:
    """The figures of ``device``'s latest event in ``state`` ({} if none)."""
    rows = store.query("SELECT figures FROM events WHERE device = ? AND state = ? ORDER BY seq DESC LIMIT 1",
                       (device, state))
    return json.loads(rows[0][0] or "{}") if rows else {}


__all__ = ["DeviceRollout", "event_figures", "latest_rollout"]
