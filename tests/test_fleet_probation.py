"""Probation verdicts from counts: a real rise rolls back, noise and too few frames do not."""

from __future__ import annotations

import pytest

from clca_edge.core.errors import ConfigError
from clca_edge.fleet.probation import (PASS, ROLLBACK, WAIT, Evidence, FrameCounts, ProbationConfig, Tally, judge,
                                       two_proportion_z, wilson_lower)

CFG = ProbationConfig(duration_s=60, min_frames=50, low_confidence=0.5, max_rise=0.1)


def ev(new, old=None, elapsed=120.0, ok=True, crashes=0):
    return Evidence(ok, "" if ok else "int8: top-1 agreement below its bound", crashes, FrameCounts(*new),
                    FrameCounts(*old) if old else None, elapsed)


def test_verdicts():
    assert judge(ev((200, 10, 10), (200, 12, 8)), CFG).decision == PASS
    v = judge(ev((200, 150, 20), (200, 12, 8)), CFG)
    assert v.decision == ROLLBACK and "rose from 10.0% to 85.0%" in v.reason
    assert v.figures["new"]["doubtful_share"] == 0.85 and v.figures["z"] > 10
    # A rise past the bound on few frames is not yet evidence; nor is a small rise on many.
    assert judge(ev((20, 15, 0), (200, 10, 0)), CFG).decision == WAIT
    assert judge(ev((60, 12, 0), (60, 6, 0)), CFG).decision == PASS   # +10 points, z ~1.6 < 2.33
    # Enough frames but not long enough: wait; a bad bundle is rolled back without waiting.
    assert judge(ev((200, 10, 10), (200, 12, 8), elapsed=5), CFG).decision == WAIT
    assert judge(ev((200, 190, 0), (200, 12, 8), elapsed=5), CFG).decision == ROLLBACK
    # Self-check or crash: at once, with the reason.
    assert judge(ev((0, 0, 0), ok=False), CFG).reason.startswith("self-check failed: int8")
    assert judge(ev((0, 0, 0), crashes=2), CFG).reason == "capture crashed 2 time(s) with the new bundle"
    # No previous bundle: the absolute bound.
    assert judge(ev((100, 90, 0)), CFG).decision == ROLLBACK
    assert judge(ev((100, 30, 0)), CFG).decision == PASS


def test_statistics():
    assert two_proportion_z(50, 100, 50, 100) == 0.0
    assert two_proportion_z(80, 100, 20, 100) > 8
    assert 0.4 < wilson_lower(50, 100, 1.96) < 0.41
    with pytest.raises(ConfigError):
        ProbationConfig(max_rise=2)


def test_tally_reads_a_field_log():
    recs = [{"type": "start", "bundle_sha": "A"},
            {"type": "decision", "bundle_sha": "A", "confidence": 0.9},
            {"type": "refused", "bundle_sha": "A"},
            {"type": "summary"},
            {"type": "start", "bundle_sha": "A"},
            {"type": "decision", "bundle_sha": "B", "confidence": 0.2},   # switched in the run
            {"type": "start", "bundle_sha": "B"},                         # ... which then died
            {"type": "decision", "bundle_sha": "B", "confidence": 0.7}]
    t = Tally(low_confidence=0.5).add_all(recs)
    assert t.of("A").to_dict() == {"frames": 2, "refused": 1, "low_confidence": 0, "doubtful_share": 0.5}
    assert t.of("B").frames == 2 and t.of("B").low_confidence == 1
    assert t.crashes == {"B": 1}   # the run still going at the end is not a crash
    # A switch inside a run: the run's crash and a failed check of the switch are the new bundle's.
    t = Tally().add_all([{"type": "start", "bundle_sha": "A"},
                         {"type": "bundle_switch", "bundle_sha": "C",
                          "self_checks": [{"backend": "ort-cpu", "precision": "int8", "status": "failed",
                                           "reason": "top-1"}]},
                         {"type": "start", "bundle_sha": "C"}])
    assert t.crashes == {"C": 1} and t.selfcheck_failed == {"C": "ort-cpu int8: top-1"}
