"""What travels between a device and the centre: typed, versioned, size-bounded messages.

Every message is a JSON object with ``v`` (the schema version) and ``kind`` (its topic kind),
sent as is or, for record batches, zlib-compressed (repeated keys shrink several-fold on a
cellular link; the reader tells the two apart by the first byte). The device writes them with
``encode()``; the centre reads them with ``decode(kind, payload)``, which
refuses (``MessageError``) anything too large, not JSON, of another kind or version, or with a
missing or mistyped field, before a byte reaches the store. A reader keeps unknown keys out of
its dataclass, so an older centre reads a newer device's message of the same version.

A message names its device; the centre also checks that name against the topic it came on.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple, Type

SCHEMA_VERSION = 1
MAX_RECORD_BYTES = 16 * 1024     # one field-log record; a larger one travels as a stub that says so
JPEG_MAGIC = b"\xff\xd8\xff"
_MISSING = object()


class MessageError(ValueError):
    """A message that cannot be accepted (the centre counts and drops it)."""


class OversizedMessage(MessageError):
    """A message larger than its kind's bound (counted apart: a device sending these is misbehaving)."""


def _get(d: Mapping[str, Any], name: str, types: tuple, default: Any = _MISSING) -> Any:
    if name not in d or d[name] is None:
        if default is _MISSING:
            raise MessageError(f"missing field {name!r}")
        return default
    value = d[name]
    if isinstance(value, bool) and bool not in types:
        raise MessageError(f"field {name!r} is a bool, expected {'/'.join(t.__name__ for t in types)}")
    if not isinstance(value, types):
        raise MessageError(f"field {name!r} is {type(value).__name__}, expected {'/'.join(t.__name__ for t in types)}")
    return value


def _name(d: Mapping[str, Any], key: str, limit: int = 64) -> str:
    value = _get(d, key, (str,))
    if not value or len(value) > limit or any(c in value for c in "/+#\x00"):
        raise MessageError(f"field {key!r} {value[:80]!r} is not a name (1-{limit} characters, no / + # NUL)")
    return value


def _counts(d: Mapping[str, Any], key: str) -> Dict[str, int]:
    value = _get(d, key, (dict,), {})
    if not all(isinstance(k, str) and isinstance(n, int) and not isinstance(n, bool) and n >= 0
               for k, n in value.items()):
        raise MessageError(f"field {key!r} must map names to counts >= 0")
    return dict(value)


@dataclass(frozen=True)
class Message:
    KIND: ClassVar[str] = ""
    MAX_BYTES: ClassVar[int] = 16 * 1024     # of the JSON text (compressed or not on the wire)
    COMPRESS: ClassVar[bool] = False

    def body(self) -> Dict[str, Any]:
        raise NotImplementedError

    def to_dict(self) -> Dict[str, Any]:
        return {"v": SCHEMA_VERSION, "kind": self.KIND, **self.body()}

    def encode(self) -> bytes:
        data = json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()
        if len(data) > self.MAX_BYTES:
            raise OversizedMessage(f"{self.KIND} message of {len(data)} bytes exceeds {self.MAX_BYTES}")
        return zlib.compress(data, 6) if self.COMPRESS else data

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Message":
        raise NotImplementedError


@dataclass(frozen=True)
class DeviceMessage(Message):
    """A message from or to one device; its topic names the device too, and the centre drops a
    message whose ``device`` is not its topic's."""

    device: str


@dataclass(frozen=True)
class RecordBatch(DeviceMessage):
    """Field-log records in log order. ``log`` names the field log (a hash of its first record), and
    ``seq`` is a record's index in it, so (device, log, seq) names a record for ever: a replay after a
    crash is recognised at the centre and stored once."""

    KIND: ClassVar[str] = "records"
    MAX_BYTES: ClassVar[int] = 512 * 1024
    COMPRESS: ClassVar[bool] = True

    log: str
    records: Tuple[Tuple[int, Dict[str, Any]], ...]

    def body(self) -> Dict[str, Any]:
        return {"device": self.device, "log": self.log,
                "records": [{"seq": s, "record": r} for s, r in self.records]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RecordBatch":
        items = _get(d, "records", (list,))
        if not items:
            raise MessageError("a records message holds no record")
        records, last = [], -1
        for item in items:
            if not isinstance(item, dict):
                raise MessageError("a record item is not an object")
            seq, rec = _get(item, "seq", (int,)), _get(item, "record", (dict,))
            if seq <= last:
                raise MessageError(f"record seq {seq} after {last}: not increasing")
            records.append((seq, rec))
            last = seq
        return cls(device=_name(d, "device"), log=_name(d, "log"), records=tuple(records))


@dataclass(frozen=True)
class Heartbeat(DeviceMessage):
    """How a device is: what it runs, how fast, what it decided and refused, its disk and backlog."""

    KIND: ClassVar[str] = "heartbeat"

    time: str
    uptime_s: float
    bundle: Optional[str] = None            # the bundle's sha256 (its id)
    bundle_version: Optional[str] = None
    backend: Optional[str] = None
    precision: Optional[str] = None
    fps: float = 0.0
    decisions: int = 0
    refused: Dict[str, int] = field(default_factory=dict)   # refusals by reason
    classes: Dict[str, int] = field(default_factory=dict)   # decisions by class
    low_confidence: int = 0
    selfcheck: str = "unknown"              # passed | failed | unknown
    disk_free_mb: Optional[float] = None
    pending: int = 0                        # records not yet acknowledged by the broker
    frames_pending: int = 0
    frames_dropped: int = 0

    def body(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Heartbeat":
        num = (int, float)
        opt_str = {k: _get(d, k, (str,), None) for k in ("bundle", "bundle_version", "backend", "precision")}
        return cls(device=_name(d, "device"), time=_get(d, "time", (str,)), uptime_s=float(_get(d, "uptime_s", num)),
                   fps=float(_get(d, "fps", num, 0.0)), decisions=_get(d, "decisions", (int,), 0),
                   refused=_counts(d, "refused"), classes=_counts(d, "classes"),
                   low_confidence=_get(d, "low_confidence", (int,), 0),
                   selfcheck=_get(d, "selfcheck", (str,), "unknown"),
                   disk_free_mb=_get(d, "disk_free_mb", num, None), pending=_get(d, "pending", (int,), 0),
                   frames_pending=_get(d, "frames_pending", (int,), 0),
                   frames_dropped=_get(d, "frames_dropped", (int,), 0), **opt_str)


@dataclass(frozen=True)
class Status(DeviceMessage):
    """``online`` (retained, on connect) or ``offline`` (retained: the last will, or a clean exit)."""

    KIND: ClassVar[str] = "status"
    MAX_BYTES: ClassVar[int] = 1024
    STATES: ClassVar[Tuple[str, ...]] = ("online", "offline")

    state: str
    time: Optional[str] = None              # None in the last will: it is written before it happens
    log: Optional[str] = None               # the log being sent, and the seq of its next unsent record:
    seq: Optional[int] = None               # the centre asks again for what it misses below it

    def body(self) -> Dict[str, Any]:
        return {"device": self.device, "state": self.state, "time": self.time, "log": self.log, "seq": self.seq}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Status":
        state = _get(d, "state", (str,))
        if state not in cls.STATES:
            raise MessageError(f"status state {state!r}; expected one of {', '.join(cls.STATES)}")
        log = _name(d, "log") if d.get("log") is not None else None
        return cls(device=_name(d, "device"), state=state, time=_get(d, "time", (str,), None), log=log,
                   seq=_get(d, "seq", (int,), None))


@dataclass(frozen=True)
class Resend(DeviceMessage):
    """The centre's request (a retained command) to send a log again from ``from_seq``: records the
    broker acknowledged but lost before a collector had them (a broker restart drops shared
    subscriptions until the collectors subscribe again). Cleared (an empty retained message) once
    the centre has the log whole."""

    KIND: ClassVar[str] = "resend"
    MAX_BYTES: ClassVar[int] = 1024

    log: str
    from_seq: int

    def body(self) -> Dict[str, Any]:
        return {"device": self.device, "log": self.log, "from_seq": self.from_seq}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Resend":
        from_seq = _get(d, "from_seq", (int,))
        if from_seq < 0:
            raise MessageError(f"from_seq {from_seq} must be >= 0")
        return cls(device=_name(d, "device"), log=_name(d, "log"), from_seq=from_seq)


@dataclass(frozen=True)
class FrameMessage(DeviceMessage):
    """A frame the model was unsure about: the JPEG, why it was chosen, and its decision (or refusal)
    record. ``frame_id`` orders and names a device's chosen frames (after a crash one may be given
    again: fleet/sampler.py); the centre stores a frame once per (device, sha256 of the JPEG), its
    file named by that sha256, so a frame sent twice or under two ids is kept once."""

    KIND: ClassVar[str] = "frames"
    MAX_BYTES: ClassVar[int] = 3 * 1024 * 1024

    frame_id: int
    time: str
    reason: str                             # low_confidence | small_margin | out_of_distribution | random
    label: Optional[str]                    # what the model said (None for a refused frame)
    confidence: Optional[float]
    topk: Tuple[Tuple[str, float], ...]
    record: Dict[str, Any]                  # the decision or refusal record as the field log has it
    jpeg: bytes = field(repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.jpeg).hexdigest()

    def body(self) -> Dict[str, Any]:
        return {"device": self.device, "frame_id": self.frame_id, "time": self.time, "reason": self.reason,
                "label": self.label, "confidence": self.confidence,
                "topk": [{"class": c, "conf": p} for c, p in self.topk], "record": self.record,
                "sha256": self.sha256, "jpeg": base64.b64encode(self.jpeg).decode("ascii")}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FrameMessage":
        try:
            jpeg = base64.b64decode(_get(d, "jpeg", (str,)), validate=True)
        except ValueError:
            raise MessageError("field 'jpeg' is not base64") from None
        if not jpeg.startswith(JPEG_MAGIC):
            raise MessageError("field 'jpeg' is not a JPEG image")
        if hashlib.sha256(jpeg).hexdigest() != _get(d, "sha256", (str,)):
            raise MessageError("the frame's sha256 does not match its bytes")
        topk = []
        for item in _get(d, "topk", (list,), []):
            if not isinstance(item, dict):
                raise MessageError("a topk item is not an object")
            topk.append((_get(item, "class", (str,)), float(_get(item, "conf", (int, float)))))
        conf = _get(d, "confidence", (int, float), None)
        frame_id = _get(d, "frame_id", (int,))
        if frame_id < 0:
            raise MessageError(f"frame_id {frame_id} must be >= 0")
        return cls(device=_name(d, "device"), frame_id=frame_id, time=_get(d, "time", (str,)),
                   reason=_name(d, "reason"), label=_get(d, "label", (str,), None),
                   confidence=None if conf is None else float(conf), topk=tuple(topk),
                   record=_get(d, "record", (dict,), {}), jpeg=jpeg)


@dataclass(frozen=True)
class Event(DeviceMessage):
    """A device's rollout state change (``seq`` counts a device's events, for idempotence)."""

    KIND: ClassVar[str] = "events"

    seq: int
    state: str
    version: Optional[str] = None
    reason: Optional[str] = None
    figures: Dict[str, float] = field(default_factory=dict)
    time: Optional[str] = None
    # The rollout's context (fleet/rollout_agent.py): the ring whose announcement this is about, the version
    # the device runs now, and every ring the device follows (for the share of a ring that passed).
    ring: Optional[str] = None
    installed_version: Optional[str] = None
    rings: Tuple[str, ...] = ()

    def body(self) -> Dict[str, Any]:
        return {"device": self.device, "seq": self.seq, "state": self.state, "version": self.version,
                "reason": self.reason, "figures": dict(self.figures), "time": self.time, "ring": self.ring,
                "installed_version": self.installed_version, "rings": list(self.rings)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Event":
        figures = _get(d, "figures", (dict,), {})
        if not all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                   for k, v in figures.items()):
            raise MessageError("field 'figures' must map names to numbers")
        seq = _get(d, "seq", (int,))
        if seq < 0:
            raise MessageError(f"event seq {seq} must be >= 0")
        rings = _get(d, "rings", (list,), [])
        if not all(isinstance(r, str) and r and len(r) <= 64 and not any(c in r for c in "/+#") for r in rings):
            raise MessageError("field 'rings' must list ring names")
        ring = _name(d, "ring") if d.get("ring") is not None else None
        return cls(device=_name(d, "device"), seq=seq, state=_name(d, "state"),
                   version=_get(d, "version", (str,), None), reason=_get(d, "reason", (str,), None),
                   figures={k: float(v) for k, v in figures.items()}, time=_get(d, "time", (str,), None),
                   ring=ring, installed_version=_get(d, "installed_version", (str,), None), rings=tuple(rings))


MESSAGE_TYPES: Dict[str, Type[Message]] = {m.KIND: m for m in (RecordBatch, Heartbeat, Status, FrameMessage, Event,
                                                                Resend)}


def _inflate(payload: bytes, limit: int, kind: str) -> bytes:
    """The JSON text of a payload: as is, or zlib-decompressed (never past ``limit`` bytes: a small
    payload that would inflate without bound is refused, not expanded)."""
    if not payload[:1] == b"\x78":     # a zlib stream's first byte (deflate, 32 KiB window)
        return payload
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(payload, limit + 1)
    except zlib.error as e:
        raise MessageError(f"not a zlib stream ({e})") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise OversizedMessage(f"{kind} message inflates past {limit} bytes")
    if not inflater.eof:
        raise MessageError("a zlib stream cut short")
    return data


def decode(kind: str, payload: bytes) -> Message:
    """The message of ``kind`` in ``payload``, checked whole; ``MessageError`` says what is wrong."""
    cls = MESSAGE_TYPES.get(kind)
    if cls is None:
        raise MessageError(f"unknown message kind {kind!r}")
    if len(payload) > cls.MAX_BYTES:
        raise OversizedMessage(f"{kind} message of {len(payload)} bytes exceeds {cls.MAX_BYTES}")
    payload = _inflate(payload, cls.MAX_BYTES, kind)
    try:
        d = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise MessageError(f"not JSON ({e})") from None
    if not isinstance(d, dict):
        raise MessageError("not a JSON object")
    version = _get(d, "v", (int,))
    if version != SCHEMA_VERSION:
        raise MessageError(f"schema version {version}; this reader knows {SCHEMA_VERSION}")
    if d.get("kind") != kind:
        raise MessageError(f"a {d.get('kind')!r} message on a {kind} topic")
    return cls.from_dict(d)
