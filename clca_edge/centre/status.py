"""``fleet status``: one row per device from the store: online and last seen, what it runs, how fast,
what it decided and refused (in all and today), its share of low-confidence decisions, its class
mix (and, where its bundle's eval-set mix is known, the distance to it: ``centre/eval_mix.py``), its
self-check, and what it still has to send."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from .eval_mix import ClassComparison, EvalMix, compare
from .store import Store

STALE_S = 600.0     # a device silent this long is not counted online, whatever it last said


@dataclass(frozen=True)
class DeviceStatus:
    device: str
    online: bool
    state: Optional[str]             # the last status it (or its last will) published
    last_seen: Optional[str]
    decisions: int
    refused: int
    decisions_today: int
    refused_today: int
    low_confidence_share: Optional[float]
    classes: Dict[str, int] = field(default_factory=dict)
    refused_reasons: Dict[str, int] = field(default_factory=dict)
    frames: int = 0
    bundle: Optional[str] = None
    bundle_version: Optional[str] = None
    backend: Optional[str] = None
    precision: Optional[str] = None
    fps: Optional[float] = None
    selfcheck: Optional[str] = None
    pending: Optional[int] = None
    disk_free_mb: Optional[float] = None
    # The decisions on the bundle it runs now against that bundle's eval set (None: the eval mix is
    # not known, or no decision on it yet).
    eval_mix: Optional[ClassComparison] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _parse_time(text: Optional[str]) -> Optional[dt.datetime]:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _per_device(store: Store, sql: str, args: tuple = ()) -> Dict[str, Dict[str, int]]:
    out: Dict[str, Dict[str, int]] = {}
    for device, key, n in store.query(sql, args):
        out.setdefault(device, {})[str(key)] = n
    return out


def _bundle_classes(store: Store) -> Dict[tuple, Dict[str, int]]:
    """Decisions by class per (device, bundle sha) (the bundle each decision record names)."""
    out: Dict[tuple, Dict[str, int]] = {}
    for device, sha, cls, n in store.query(
            "SELECT device, json_extract(record, '$.bundle_sha'), class, COUNT(*) FROM records "
            "WHERE type = 'decision' GROUP BY 1, 2, 3"):
        out.setdefault((device, sha), {})[str(cls)] = n
    return out


def device_statuses(store: Store, low_confidence: float = 0.5, stale_s: float = STALE_S,
                    now: Optional[dt.datetime] = None,
                    eval_mixes: Optional[Mapping[str, EvalMix]] = None) -> List[DeviceStatus]:
    """``eval_mixes``: eval-set mixes by manifest sha256 besides those the store holds (``--bundle``)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    mixes = {**store.eval_mixes(), **(eval_mixes or {})}
    by_bundle = _bundle_classes(store) if mixes else {}
    today = now.strftime("%Y-%m-%d")
    types = _per_device(store, "SELECT device, type, COUNT(*) FROM records GROUP BY device, type")
    today_types = _per_device(store, "SELECT device, type, COUNT(*) FROM records WHERE time >= ? "
                                     "GROUP BY device, type", (today,))
    classes = _per_device(store, "SELECT device, class, COUNT(*) FROM records WHERE type = 'decision' "
                                 "GROUP BY device, class")
    reasons = _per_device(store, "SELECT device, reason, COUNT(*) FROM records WHERE type = 'refused' "
                                 "GROUP BY device, reason")
    low = dict(store.query("SELECT device, COUNT(*) FROM records WHERE type = 'decision' AND confidence < ? "
                           "GROUP BY device", (low_confidence,)))
    frames = dict(store.query("SELECT device, COUNT(*) FROM frames GROUP BY device"))
    rows = []
    for device, last_seen, state, heartbeat in store.query(
            "SELECT device, last_seen, state, heartbeat FROM devices ORDER BY device"):
        beat = json.loads(heartbeat) if heartbeat else {}
        seen = _parse_time(last_seen)
        fresh = seen is not None and (now - seen).total_seconds() <= stale_s
        decisions = types.get(device, {}).get("decision", 0)
        rows.append(DeviceStatus(
            device=device, online=state == "online" and fresh, state=state, last_seen=last_seen,
            decisions=decisions, refused=types.get(device, {}).get("refused", 0),
            decisions_today=today_types.get(device, {}).get("decision", 0),
            refused_today=today_types.get(device, {}).get("refused", 0),
            low_confidence_share=round(low.get(device, 0) / decisions, 4) if decisions else None,
            classes=classes.get(device, {}), refused_reasons=reasons.get(device, {}), frames=frames.get(device, 0),
            bundle=beat.get("bundle"), bundle_version=beat.get("bundle_version"), backend=beat.get("backend"),
            precision=beat.get("precision"), fps=beat.get("fps"), selfcheck=beat.get("selfcheck"),
            pending=beat.get("pending"), disk_free_mb=beat.get("disk_free_mb"),
            eval_mix=_eval_mix(by_bundle, mixes, device, beat.get("bundle"))))
    return rows


def _eval_mix(by_bundle, mixes: Mapping[str, EvalMix], device: str, sha: Optional[str]) -> Optional[ClassComparison]:
    mix = mixes.get(sha) if sha else None
    return compare(by_bundle.get((device, sha), {}), mix) if mix is not None else None
