"""A/B bundle folders on the device, an atomic pointer to the one in use, and the device's rollout
state, all under the agent's ``--bundles DIR``::

    DIR/state.json      the device state (installed and previous bundle, refused versions, last state)
    DIR/current         symlink to the bundle in use (``slots/a/...`` or ``slots/b/...``): capture runs it
    DIR/slots/a, b      the two bundle folders: the one in use and the previous one, kept as the fallback
    DIR/staging/        downloads (``.part`` while resuming) and bundles being checked

A new bundle is checked in ``staging/`` and only then moved into the slot not in use (the one
holding the bundle before the previous, which is no longer needed). The state file is written
first (atomically), then the pointer is replaced with ``os.replace`` of a fresh symlink, so a power
cut at any moment leaves either the old or the new bundle in use, and a restart re-points to what
the state says (``ensure_pointer``). Torch-free (device side).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Optional

from ..core.errors import ConfigError, OutputError
from ..core.atomic_io import atomic_write_bytes, make_temp_dir

log = logging.getLogger(__name__)

STATE_NAME = "state.json"
POINTER_NAME = "current"
STATE_FORMAT = 1
SLOTS = ("a", "b")

# The rollout states a device reports (``failed`` carries its reason).
IDLE = "idle"
ANNOUNCED = "announced"
DOWNLOADING = "downloading"
VERIFIED = "verified"
INSTALLED = "installed"
PROBATION_PASSED = "probation_passed"
FAILED = "failed"
ROLLED_BACK = "rolled_back"
HALTED = "halted"
STATES = (IDLE, ANNOUNCED, DOWNLOADING, VERIFIED, INSTALLED, PROBATION_PASSED, FAILED, ROLLED_BACK, HALTED)


@dataclass(frozen=True)
class InstalledBundle:
    bundle_id: str
    version: int
    sha256: str          # of the downloaded archive (the announcement's)
    manifest_sha: str    # of the bundle's manifest.json: what capture's field log records name
    slot: str
    root: str            # the bundle folder, relative to DIR
    ring: str = ""
    installed_at: str = ""

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "InstalledBundle":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class DeviceState:
    installed: Optional[InstalledBundle] = None
    previous: Optional[InstalledBundle] = None
    state: str = IDLE
    reason: str = ""
    version: int = 0                 # the version the state is about (the announcement being handled)
    ring: str = ""
    refused: Dict[str, str] = field(default_factory=dict)   # version -> why: never retried
    probation_since: str = ""        # UTC time of the switch while on probation, "" otherwise
    event_seq: int = 0               # the last event reported (the centre stores each (device, seq) once)
    announce_seq: int = 0            # the highest announcement seq installed: an older rollback is a replay

    @property
    def installed_version(self) -> int:
        return self.installed.version if self.installed is not None else 0

    def is_refused(self, version: int) -> bool:
        return str(version) in self.refused

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["format"] = STATE_FORMAT
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "DeviceState":
        if not isinstance(d, dict) or d.get("format") != STATE_FORMAT:
            raise ConfigError(f"device state of format {d.get('format') if isinstance(d, dict) else None!r}; "
                              f"this agent reads format {STATE_FORMAT}")
        bundle = lambda v: InstalledBundle.from_dict(v) if isinstance(v, dict) else None  # noqa: E731
        state = str(d.get("state", IDLE))
        return cls(installed=bundle(d.get("installed")), previous=bundle(d.get("previous")),
                   state=state if state in STATES else IDLE, reason=str(d.get("reason", "")),
                   version=int(d.get("version", 0)), ring=str(d.get("ring", "")),
                   refused={str(k): str(v) for k, v in (d.get("refused") or {}).items()},
                   probation_since=str(d.get("probation_since", "")), event_seq=int(d.get("event_seq", 0)),
                   announce_seq=int(d.get("announce_seq", 0)))


class Slots:
    """The ``--bundles DIR`` of one device."""

    def __init__(self, root: Path):
        self.root = Path(root)
        try:
            for sub in ("slots", "staging"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create the bundles folder {self.root} ({e.strerror}); choose a writable "
                              "--bundles") from None

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def pointer(self) -> Path:
        return self.root / POINTER_NAME

    # -------------------------------------------------------------------------- state
    def load_state(self) -> DeviceState:
        path = self.root / STATE_NAME
        if not path.is_file():
            return DeviceState()
        try:
            return DeviceState.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise ConfigError(f"device state {path} is unreadable ({e}); move it away to start over "
                              "(the bundles in slots/ stay)") from None

    def save_state(self, state: DeviceState) -> None:
        atomic_write_bytes(self.root / STATE_NAME, json.dumps(state.to_dict(), indent=1).encode())

    # -------------------------------------------------------------------------- folders
    def free_slot(self, state: DeviceState) -> str:
        """The slot not holding the bundle in use."""
        used = state.installed.slot if state.installed is not None else None
        return next(s for s in SLOTS if s != used)

    def new_staging_dir(self, prefix: str) -> Path:
        return make_temp_dir(self.staging, prefix=prefix)

    def fill_slot(self, slot: str, staged: Path) -> Path:
        """Move the checked folder ``staged`` (under staging/) into ``slot``, replacing what was there."""
        dest = self.root / "slots" / slot
        trash = None
        if dest.exists():
            trash = self.new_staging_dir(f"old-{slot}-")
            os.replace(dest, trash / slot)
        os.replace(staged, dest)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        return dest

    def resolve(self, bundle: Optional[InstalledBundle]) -> Optional[Path]:
        return self.root / bundle.root if bundle is not None else None

    def current(self) -> Optional[Path]:
        """The bundle folder in use (the pointer's target), or None."""
        return self.pointer.resolve() if self.pointer.is_symlink() and self.pointer.exists() else None

    def point_to(self, bundle: Optional[InstalledBundle]) -> None:
        """Replace the pointer atomically (a new symlink renamed over the old one)."""
        if bundle is None:
            self.pointer.unlink(missing_ok=True)
            return
        tmp = self.root / f".{POINTER_NAME}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(bundle.root, tmp)   # relative: the folder may be moved or mounted elsewhere
        os.replace(tmp, self.pointer)
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)   # the rename itself reaches the disk
        finally:
            os.close(fd)

    def ensure_pointer(self, state: DeviceState) -> None:
        """After a restart: the pointer names what the state says is installed."""
        want = self.resolve(state.installed)
        if want is not None and self.current() != want.resolve():
            log.info("pointer %s re-pointed to %s (the state file's installed bundle)", self.pointer, want)
            self.point_to(state.installed)

    def switch(self, state: DeviceState, new: InstalledBundle) -> None:
        """``new`` becomes the bundle in use, the one in use the fallback: state first, then pointer."""
        state.previous, state.installed = state.installed, new
        self.save_state(state)
        self.point_to(new)

    def roll_back(self, state: DeviceState) -> Optional[InstalledBundle]:
        """Back to the previous bundle (still in its slot); returns the one rolled back from."""
        bad = state.installed
        state.installed, state.previous = state.previous, None
        self.save_state(state)
        self.point_to(state.installed)
        return bad


__all__ = ["ANNOUNCED", "DOWNLOADING", "DeviceState", "FAILED", "HALTED", "IDLE", "INSTALLED", "InstalledBundle",
           "POINTER_NAME", "PROBATION_PASSED", "ROLLED_BACK", "SLOTS", "STATES", "STATE_NAME", "Slots", "VERIFIED"]
