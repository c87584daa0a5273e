"""Probation after a switch: does the new bundle behave on this device? Pure functions over counts.

The evidence is what capture writes anyway (its field log): the frames each bundle judged (records
name their bundle by ``bundle_sha``), how many the quality guard refused and how many decisions
were low-confidence ("doubtful" frames together), and capture runs that ended without a summary
(a crash). The new bundle's doubtful share is compared with the previous bundle's on the same
device, so a device that always sees poor light is not held to a lab figure.

A rollback needs a rise past ``max_rise`` that is also unlikely to be chance: a one-sided
two-proportion z-test over the counts at ``z`` (2.33: about 1% false alarms), with at least
``min_frames`` frames of the new bundle. Without a baseline (the first bundle on a device) the new
share's lower Wilson bound is held against ``max_share``. A failed self-check or a crash rolls
back at once; probation passes when ``duration_s`` is over and ``min_frames`` were seen.
Torch-free (device side).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Optional

from ..core.errors import ConfigError

PASS = "pass"
ROLLBACK = "rollback"
WAIT = "wait"


@dataclass(frozen=True)
class ProbationConfig:
    duration_s: float = 600.0     # at least this long after the switch ...
    min_frames: int = 50          # ... and this many frames judged by the new bundle
    low_confidence: float = 0.5   # a decision under this confidence counts as doubtful
    max_rise: float = 0.15        # allowed rise of the doubtful share over the previous bundle's
    max_share: float = 0.5        # without a previous bundle: the highest doubtful share allowed
    z: float = 2.33               # one-sided significance of a rise (2.33: ~1% false alarms)

    def __post_init__(self) -> None:
        if self.duration_s < 0 or self.min_frames < 1:
            raise ConfigError("probation: duration_s must be >= 0 and min_frames >= 1")
        for name in ("low_confidence", "max_rise", "max_share"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"probation: {name} {v} must be in [0, 1]")
        if self.z < 0:
            raise ConfigError(f"probation: z {self.z} must be >= 0")


@dataclass
class FrameCounts:
    frames: int = 0          # decisions + refused frames
    refused: int = 0
    low_confidence: int = 0

    @property
    def doubtful(self) -> int:
        return self.refused + self.low_confidence

    @property
    def share(self) -> float:
        return self.doubtful / self.frames if self.frames else 0.0

    def to_dict(self) -> Dict[str, Any]:
        return {"frames": self.frames, "refused": self.refused, "low_confidence": self.low_confidence,
                "doubtful_share": round(self.share, 4)}


@dataclass
class Tally:
    """Counts per bundle (manifest sha) and crashes, from field-log records fed in order."""

    low_confidence: float = 0.5
    counts: Dict[str, FrameCounts] = field(default_factory=dict)
    crashes: Dict[str, int] = field(default_factory=dict)
    selfcheck_failed: Dict[str, str] = field(default_factory=dict)   # bundle -> a check capture saw fail
    _open_run: Optional[str] = None   # bundle of a capture run started and not yet summarised

    def add(self, record: Dict[str, Any]) -> None:
        kind, sha = record.get("type"), record.get("bundle_sha")
        if kind == "start":
            if self._open_run is not None:   # the previous run never wrote its summary: it died
                self.crashes[self._open_run] = self.crashes.get(self._open_run, 0) + 1
            self._open_run = sha
        elif kind == "summary":
            self._open_run = None
        elif kind == "selfcheck" and record.get("status") == "failed" and self._open_run is not None:
            self._check_failed(self._open_run, record)
        elif kind == "bundle_switch" and isinstance(sha, str):   # capture switched bundles between frames
            self._open_run = sha
            for check in record.get("self_checks") or ():
                if isinstance(check, dict) and check.get("status") == "failed":
                    self._check_failed(sha, check)
        elif kind in ("decision", "refused") and isinstance(sha, str):
            c = self.counts.setdefault(sha, FrameCounts())
            c.frames += 1
            if kind == "refused":
                c.refused += 1
            elif float(record.get("confidence", 1.0)) < self.low_confidence:
                c.low_confidence += 1
            if kind == "decision" and self._open_run is not None:
                self._open_run = sha   # a run that switched bundles: a crash now is the new one's

    def _check_failed(self, sha: str, check: Dict[str, Any]) -> None:
        self.selfcheck_failed.setdefault(sha, f"{check.get('backend')} {check.get('precision')}: "
                                              f"{check.get('reason', '')}")

    def add_all(self, records: Iterable[Dict[str, Any]]) -> "Tally":
        for r in records:
            self.add(r)
        return self

    def of(self, sha: Optional[str]) -> FrameCounts:
        return self.counts.get(sha or "", FrameCounts())


@dataclass(frozen=True)
class Evidence:
    selfcheck_ok: bool
    selfcheck_reason: str
    crashes: int
    new: FrameCounts
    old: Optional[FrameCounts]   # the previous bundle on this device (None: none)
    elapsed_s: float


@dataclass(frozen=True)
class Verdict:
    decision: str   # PASS, ROLLBACK or WAIT
    reason: str
    figures: Dict[str, Any]


def two_proportion_z(k1: int, n1: int, k0: int, n0: int) -> float:
    """z of p1 > p0 (pooled standard error); 0 when it cannot be told."""
    if n1 == 0 or n0 == 0:
        return 0.0
    p = (k1 + k0) / (n1 + n0)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n0))
    return (k1 / n1 - k0 / n0) / se if se > 0 else 0.0


def wilson_lower(k: int, n: int, z: float) -> float:
    if n == 0:
        return 0.0
    p = k / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - margin) / (1 + z * z / n))


def _frames_verdict(ev: Evidence, cfg: ProbationConfig, figures: Dict[str, Any]) -> Optional[str]:
    """Why the frames say roll back ("" when they do not), or None while too few frames."""
    new, old = ev.new, ev.old
    if new.frames < cfg.min_frames:
        return None
    if old is not None and old.frames >= cfg.min_frames:
        rise = new.share - old.share
        z = two_proportion_z(new.doubtful, new.frames, old.doubtful, old.frames)
        figures.update(rise=round(rise, 4), z=round(z, 3))
        if rise > cfg.max_rise and z > cfg.z:
            return (f"doubtful frames (refused or confidence < {cfg.low_confidence:g}) rose from "
                    f"{old.share:.1%} to {new.share:.1%} ({new.doubtful}/{new.frames}; z {z:.1f})")
        return ""
    low = wilson_lower(new.doubtful, new.frames, cfg.z)
    figures.update(share_lower_bound=round(low, 4))
    if low > cfg.max_share:
        return (f"doubtful frames at {new.share:.1%} ({new.doubtful}/{new.frames}) exceed {cfg.max_share:.0%} "
                "with no previous bundle to compare")
    return ""


def judge(ev: Evidence, cfg: ProbationConfig) -> Verdict:
    """PASS, ROLLBACK (with the reason) or WAIT, and the figures behind it."""
    figures: Dict[str, Any] = {"new": ev.new.to_dict(), "previous": ev.old.to_dict() if ev.old else None,
                               "crashes": ev.crashes, "elapsed_s": round(ev.elapsed_s, 1)}
    if not ev.selfcheck_ok:
        return Verdict(ROLLBACK, f"self-check failed: {ev.selfcheck_reason}", figures)
    if ev.crashes > 0:
        return Verdict(ROLLBACK, f"capture crashed {ev.crashes} time(s) with the new bundle", figures)
    why = _frames_verdict(ev, cfg, figures)
    if why:
        return Verdict(ROLLBACK, why, figures)
    if why is None or ev.elapsed_s < cfg.duration_s:
        return Verdict(WAIT, f"{ev.new.frames}/{cfg.min_frames} frames, {ev.elapsed_s:.0f}/{cfg.duration_s:g} s",
                       figures)
    return Verdict(PASS, "", figures)


__all__ = ["Evidence", "FrameCounts", "PASS", "ProbationConfig", "ROLLBACK", "Tally", "Verdict", "WAIT", "judge",
           "two_proportion_z", "wilson_lower"]
