"""Bundle announcements: what the centre tells a ring of devices about a bundle, signed.

An announcement names a bundle (id, version, size, sha256, where to download it) for one ring; the
bundle's bytes never travel through the broker. It is retained on the ring's topic, so a device
that was offline finds it when it comes back. Versions are monotonic per fleet: a device refuses a
version older than the one it runs unless the announcement is a signed ``rollback``; ``halted``
marks a rollout stopped by ``fleet halt`` (devices that have not switched stay where they are).

A rollback must not be replayable (an old signed rollback would force a downgrade): it names
``from_version``, the version it replaces, and carries ``seq``, the centre's announcement sequence
(monotonic per fleet: ``centre.rollout``). A device takes a rollback only while it runs
``from_version`` and only if its ``seq`` is newer than that of every announcement it installed
(``fleet.rollout_agent``). Both fields are optional in format 1 (an older device ignores them, and
still verifies them: they are signed) but required of a rollback: a rollback without them (from a
publisher before they existed) cannot be told from a replay and is refused.

Wire form (JSON): ``{"schema": SCHEMA, "format": FORMAT, "announcement": {...}, "key_id": ...,
"signature": ...}``. The Ed25519 signature (``bundle.signature``'s keys: ``clca-edge keygen``)
covers the canonical JSON of schema, format and the announcement object *as received*, so a
newer publisher's extra optional fields are signed too and an older device still verifies them.
Torch-free (device side).
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from ..bundle.signature import TrustedKeys, sign_bytes, verify_bytes
from ..core.errors import TrustError

SCHEMA = "clca-edge.announce"
FORMAT = 1
MAX_MESSAGE_BYTES = 16 * 1024   # an announcement is a few hundred bytes; anything larger is refused unread
URL_SCHEMES = ("http://", "https://", "file://")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")   # a ring or bundle id: safe in a topic and a path
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class AnnouncementError(TrustError):
    """An announcement does not parse, breaks its schema, or is not signed by a trusted key."""


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Announcement:
    """One bundle for one ring."""

    bundle_id: str
    version: int
    size: int
    sha256: str
    url: str
    ring: str
    rollback: bool = False
    halted: bool = False
    issued_at: str = ""
    seq: int = 0                 # the centre's announcement sequence (0: a publisher without one)
    from_version: int = 0        # a rollback: the version it replaces

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise AnnouncementError(f"announcement: {problem}")

    def problem(self) -> str:
        """What breaks the schema ("" when nothing)."""
        if not isinstance(self.bundle_id, str) or not NAME_RE.match(self.bundle_id):
            return f"bundle_id {self.bundle_id!r} must be 1-64 letters, digits, '.', '_' or '-'"
        if not isinstance(self.ring, str) or not NAME_RE.match(self.ring):
            return f"ring {self.ring!r} must be 1-64 letters, digits, '.', '_' or '-'"
        for name in ("version", "size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                return f"{name} {v!r} must be an integer >= 1"
        if not isinstance(self.sha256, str) or not SHA256_RE.match(self.sha256):
            return "sha256 must be 64 lower-case hex digits"
        if not isinstance(self.url, str) or not self.url.startswith(URL_SCHEMES):
            return f"url {self.url!r} must start with {', '.join(URL_SCHEMES)}"
        if not isinstance(self.rollback, bool) or not isinstance(self.halted, bool):
            return "rollback and halted must be true or false"
        if not isinstance(self.issued_at, str):
            return "issued_at must be a string"
        for name in ("seq", "from_version"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                return f"{name} {v!r} must be an integer >= 0"
        if self.rollback and (self.seq < 1 or not self.version < self.from_version):
            return ("a rollback must carry seq >= 1 and from_version, the newer version it replaces (a rollback "
                    "without them cannot be told from a replay)")
        return ""

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "Announcement":
        if not isinstance(d, dict):
            raise AnnouncementError("announcement: not a JSON object")
        known = {f.name for f in fields(cls)}
        missing = sorted(n for n in ("bundle_id", "version", "size", "sha256", "url", "ring") if n not in d)
        if missing:
            raise AnnouncementError(f"announcement: missing {', '.join(missing)}")
        # Unknown keys are a newer publisher's optional fields: kept out of the typed record, still signed.
        return cls(**{k: v for k, v in d.items() if k in known})

    def replace(self, **changes: Any) -> "Announcement":
        return Announcement(**{**self.to_dict(), **changes})


def _payload(body: Dict[str, Any]) -> bytes:
    doc = {"schema": SCHEMA, "format": FORMAT, "announcement": body}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


@dataclass(frozen=True)
class SignedAnnouncement:
    announcement: Announcement
    key_id: str
    signature: str
    raw: Optional[Dict[str, Any]] = None   # the announcement object as received (what was signed)

    def to_bytes(self) -> bytes:
        doc = {"schema": SCHEMA, "format": FORMAT, "announcement": self.raw or self.announcement.to_dict(),
               "key_id": self.key_id, "signature": self.signature}
        return json.dumps(doc, sort_keys=True).encode()

    def verify(self, trusted: TrustedKeys) -> Announcement:
        """The announcement, if signed by a trusted key over what was received; AnnouncementError otherwise."""
        what = f"announcement of {self.announcement.bundle_id} v{self.announcement.version} for ring {self.announcement.ring}"
        try:
            verify_bytes(trusted, self.key_id, self.signature, _payload(self.raw or self.announcement.to_dict()), what)
        except AnnouncementError:
            raise
        except TrustError as e:
            raise AnnouncementError(str(e)) from None
        return self.announcement


def sign_announcement(announcement: Announcement, key_path: Union[str, Path]) -> SignedAnnouncement:
    kid, sig = sign_bytes(key_path, _payload(announcement.to_dict()))
    return SignedAnnouncement(announcement, kid, sig)


def parse_announcement(data: bytes) -> SignedAnnouncement:
    """Parse (not verify) a message; AnnouncementError names what is wrong."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise AnnouncementError(f"announcement of {len(data)} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise AnnouncementError(f"announcement is not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise AnnouncementError(f"message is not a {SCHEMA} document")
    if not isinstance(doc.get("format"), int) or doc["format"] > FORMAT:
        raise AnnouncementError(f"announcement format {doc.get('format')!r} is newer than this device reads "
                                f"({FORMAT}); upgrade clca-edge")
    if not isinstance(doc.get("key_id"), str) or not isinstance(doc.get("signature"), str):
        raise AnnouncementError("announcement is not signed (no key_id/signature); refused")
    raw = doc.get("announcement")
    return SignedAnnouncement(Announcement.from_dict(raw), doc["key_id"], doc["signature"], raw=raw)


def describe_archive(path: Union[str, Path]) -> Tuple[int, str, str]:
    """(size, sha256, bundle id) of a bundle archive about to be announced; it must open and verify
    as a bundle (every file's sha256), so a broken archive is never announced. The id is the file
    name without ``.tar`` (deploy names it after the bundle)."""
    import hashlib
    import tempfile

    from ..bundle.store import load_bundle
    from ..core.errors import BundleError

    path = Path(path)
    if not path.is_file():
        raise BundleError(f"--bundle {path} is not a file; give the bundle .tar that deploy wrote")
    with tempfile.TemporaryDirectory(prefix="clca-edge-announce-") as tmp:
        load_bundle(path, extract_to=tmp)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    stem = path.name[:-4] if path.name.endswith(".tar") else path.stem
    bundle_id = re.sub(r"[^A-Za-z0-9_.-]", "-", stem).lstrip("._-")[:64] or "bundle"
    return path.stat().st_size, h.hexdigest(), bundle_id


def verified_announcement(data: bytes, trusted: TrustedKeys) -> Announcement:
    return parse_announcement(data).verify(trusted)


__all__ = ["Announcement", "AnnouncementError", "FORMAT", "describe_archive", "MAX_MESSAGE_BYTES", "SCHEMA", "SignedAnnouncement",
           "parse_announcement", "sign_announcement", "utc_now", "verified_announcement"]
