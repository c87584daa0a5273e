"""Frames the model was unsure about, kept on the device and sent to the centre for labelling: the
start of an active-learning loop.

``FrameSampler.on_decision(bgr, record)`` sees every decision and refusal (the field-log record as
written) and keeps the frame when the fleet file's policy (``SamplingPolicy``) picks it and its
reason's cap for the last hour is not reached. A kept frame goes into the ``FrameSpool``: the JPEG
and then its sidecar (reason, decision) are written atomically, so a crash leaves either a whole
frame or nothing the uploader would send. The spool stays within its quota: the oldest frames are
dropped first and counted; the decision log is never touched.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..capture.fieldlog import utc_now
from ..core.atomic_io import atomic_write_bytes
from .config import SamplingPolicy

log = logging.getLogger(__name__)

HOUR_S = 3600.0
STATE = "spool.json"
ORPHAN_GRACE_S = 60.0    # a JPEG without sidecar (or a temp file) younger than this may be being written
STATE_EVERY = 16      # the next id is saved every this many frames (and whenever a frame is dropped)


def margin_of(record: Dict[str, Any]) -> Optional[float]:
    """Top-1 minus top-2 calibrated probability from a decision's ``topk`` (None with fewer than 2)."""
    topk = record.get("topk") or []
    if len(topk) < 2:
        return None
    return float(topk[0]["conf"]) - float(topk[1]["conf"])


class FrameSpool:
    """Chosen frames waiting to travel: ``{id:010d}.jpg`` + ``{id:010d}.json`` in one folder, with
    the next id and the count of frames dropped for the quota in ``spool.json``. An id only orders
    and names frames on the device; after a crash one may be given again, which is harmless: the
    centre keys a frame by its content (sha256)."""

    def __init__(self, folder, quota_bytes: int):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.quota_bytes = quota_bytes
        self._lock = threading.Lock()
        self.next_id, self.dropped = self._load_state()
        self._clean()

    def _load_state(self) -> Tuple[int, int]:
        try:
            d = json.loads((self.folder / STATE).read_bytes())
            state = int(d["next_id"]), int(d["dropped"])
        except (OSError, ValueError, KeyError, TypeError):
            state = (0, 0)
        # Never reuse an id the centre may already hold: at least one past every frame still here.
        ids = [int(p.stem) for p in self.folder.glob("*.jpg") if p.stem.isdigit()]
        return max([state[0]] + [i + 1 for i in ids]), state[1]

    def _save_state(self) -> None:
        atomic_write_bytes(self.folder / STATE, json.dumps({"next_id": self.next_id, "dropped": self.dropped}).encode())

    def _clean(self) -> None:
        """Remove what a crash left half-written: temp files, and a JPEG whose sidecar never came;
        only once older than ORPHAN_GRACE_S, since another process (a capture beside a ``fleet
        sync``) may be between writing a frame's JPEG and its sidecar right now."""
        cutoff = time.time() - ORPHAN_GRACE_S
        orphans = list(self.folder.glob(".*.tmp"))
        orphans += [jpg for jpg in self.folder.glob("*.jpg") if not jpg.with_suffix(".json").exists()]
        for path in orphans:
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                pass   # its writer finished (renamed it) or removed it meanwhile

    def frames(self) -> List[int]:
        """Ids of the complete frames waiting, oldest first."""
        return sorted(int(p.stem) for p in self.folder.glob("*.json") if p.stem.isdigit()
                      and p.with_suffix(".jpg").exists())

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("*.jpg"))

    def add(self, jpeg: bytes, meta: Dict[str, Any]) -> Optional[int]:
        """Store a frame (its id), making room by dropping the oldest; None if it can never fit."""
        with self._lock:
            if len(jpeg) > self.quota_bytes:
                self.dropped += 1
                self._save_state()
                return None
            dropped_before = self.dropped
            waiting, used = self.frames(), self.size()
            while waiting and used + len(jpeg) > self.quota_bytes:
                oldest = waiting.pop(0)
                used -= self._remove(oldest)
                self.dropped += 1
            frame_id = self.next_id
            self.next_id += 1
            if dropped_before != self.dropped or frame_id % STATE_EVERY == 0:
                self._save_state()   # not every frame: an fsync less per frame (ids only name frames here)
            base = self.folder / f"{frame_id:010d}"
            atomic_write_bytes(base.with_suffix(".jpg"), jpeg)
            atomic_write_bytes(base.with_suffix(".json"), json.dumps({**meta, "frame_id": frame_id}).encode())
            return frame_id

    def read(self, frame_id: int) -> Optional[Tuple[bytes, Dict[str, Any]]]:
        base = self.folder / f"{frame_id:010d}"
        try:
            return base.with_suffix(".jpg").read_bytes(), json.loads(base.with_suffix(".json").read_bytes())
        except (OSError, ValueError):
            return None

    def _remove(self, frame_id: int) -> int:
        base = self.folder / f"{frame_id:010d}"
        size = 0
        for path in (base.with_suffix(".json"), base.with_suffix(".jpg")):   # sidecar first: never half-sent
            try:
                size += path.stat().st_size if path.suffix == ".jpg" else 0
                path.unlink()
            except FileNotFoundError:
                pass
        return size

    def remove(self, frame_id: int) -> None:
        """The centre has it (the broker acknowledged it)."""
        with self._lock:
            self._remove(frame_id)


class FrameSampler:
    """Picks frames by the policy, within each reason's cap per hour, into the spool."""

    def __init__(self, policy: SamplingPolicy, spool: FrameSpool, rng: Optional[random.Random] = None,
                 clock: Callable[[], float] = time.monotonic, encode: Optional[Callable[[Any, int], bytes]] = None):
        self.policy = policy
        self.spool = spool
        self.rng = rng or random.Random()
        self._clock = clock
        self._encode = encode or encode_jpeg
        self._recent: Dict[str, deque] = {}
        self.chosen: Counter = Counter()
        self.capped: Counter = Counter()

    def reason_for(self, record: Dict[str, Any], margin: Optional[float] = None) -> Optional[str]:
        """Why the policy would keep this frame (None: it would not), caps aside. ``margin``: the
        frame's top-1 minus top-2 probability when the caller has it (else read from ``topk``)."""
        p = self.policy
        if record.get("type") == "refused":
            return "out_of_distribution" if p.out_of_distribution and record.get("reason") == "out_of_distribution" \
                else None
        if record.get("type") != "decision":
            return None
        conf = record.get("confidence")
        if isinstance(conf, (int, float)) and conf < p.low_confidence:
            return "low_confidence"
        margin = margin_of(record) if margin is None else margin
        if margin is not None and margin < p.small_margin:
            return "small_margin"
        if p.random_share > 0 and self.rng.random() < p.random_share:
            return "random"
        return None

    def _within_cap(self, reason: str) -> bool:
        now = self._clock()
        recent = self._recent.setdefault(reason, deque())
        while recent and now - recent[0] >= HOUR_S:
            recent.popleft()
        if len(recent) >= self.policy.cap(reason):
            return False
        if recent and now - recent[-1] < self.policy.min_gap_s:
            return False
        recent.append(now)
        return True

    def on_decision(self, bgr, record: Dict[str, Any]) -> Optional[int]:
        """A decision or refusal and its frame: the id of the stored frame, or None if not kept."""
        if not self.policy.enabled:
            return None
        reason = self.reason_for(record)
        return None if reason is None else self.keep(bgr, record, reason)

    def keep(self, bgr, record: Dict[str, Any], reason: str) -> Optional[int]:
        """Store a frame the policy chose for ``reason``, if that reason's cap allows (its id, or None)."""
        if not self._within_cap(reason):
            self.capped[reason] += 1
            return None
        try:
            jpeg = self._encode(bgr, self.policy.jpeg_quality)
        except Exception as e:   # a frame that will not encode must not stop the capture
            log.warning("could not encode a chosen frame as JPEG (%s); skipped", e)
            return None
        topk = [(str(t["class"]), float(t["conf"])) for t in record.get("topk") or []]
        meta = {"time": record.get("time") or utc_now(), "reason": reason, "label": record.get("class"),
                "confidence": record.get("confidence"), "topk": topk, "record": record}
        try:
            frame_id = self.spool.add(jpeg, meta)
        except OSError as e:
            log.warning("could not store a chosen frame (%s); the decision log goes on", e)
            return None
        if frame_id is not None:
            self.chosen[reason] += 1
        return frame_id


def encode_jpeg(bgr, quality: int) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError("cv2.imencode failed")
    return buf.tobytes()
