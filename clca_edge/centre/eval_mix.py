"""A device's class mix against its bundle's evaluation set, for ``fleet status``.

The bundle records its eval set's images per class (``Manifest.eval_classes``, set by deploy's
evaluation step). The centre never sees a bundle's files (they travel by URL, not through the
broker), so it learns that mix from whoever has the bundle in hand: ``fleet publish --store`` records
it in the store when announcing the bundle, and ``fleet status --bundle B`` reads it from a bundle
given there (one copied by hand). Either way it is keyed by the sha256 of the bundle's manifest:
what a device's heartbeat names as the bundle it runs (``Heartbeat.bundle``) and what every
decision record carries (``bundle_sha``), so the device's decisions on that bundle are compared
with that bundle's eval set, and nothing is matched by name.

The comparison is the total-variation distance between the two class distributions (half the sum
of the absolute differences of the shares, 0 = the same mix, 1 = no class in common).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional

from ..core.errors import BundleError


@dataclass(frozen=True)
class EvalMix:
    """A bundle's evaluation set, by class: images per class name."""

    manifest_sha: str
    bundle: str                   # the bundle's name (its folder or .tar), for people
    classes: Dict[str, int]

    def __post_init__(self) -> None:
        if not self.classes or any(n < 0 for n in self.classes.values()) or sum(self.classes.values()) <= 0:
            raise BundleError(f"bundle {self.bundle}: its eval class counts are empty or negative")


def read_eval_mix(path) -> Optional[EvalMix]:
    """The eval mix of a bundle folder or .tar (verified as deploy wrote it); None for a bundle from
    before ``eval_classes``."""
    from ..bundle import MANIFEST_NAME, load_bundle, sha256_file

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="clca-edge-evalmix-") as tmp:
        bundle = load_bundle(path, extract_to=tmp if path.is_file() else None)
        sha = sha256_file(bundle.root / MANIFEST_NAME)
        counts = bundle.manifest.eval_classes
    if counts is None:
        return None
    name = path.name[:-4] if path.name.endswith(".tar") else path.name
    return EvalMix(sha, name, dict(counts))


def shares(counts: Mapping[str, int]) -> Dict[str, float]:
    total = sum(counts.values())
    return {c: round(n / total, 4) for c, n in sorted(counts.items())} if total else {}


def total_variation(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Half the L1 distance of two distributions given as shares (a class absent from one counts 0)."""
    return round(0.5 * sum(abs(p.get(c, 0.0) - q.get(c, 0.0)) for c in set(p) | set(q)), 4)


@dataclass(frozen=True)
class ClassComparison:
    """A device's decisions on its current bundle against that bundle's eval set."""

    decisions: int                      # the device's decisions on this bundle
    shares: Dict[str, float]            # of those decisions, by class
    eval_shares: Dict[str, float]       # of the bundle's eval images, by class
    tvd: float                          # total-variation distance between the two


def compare(device_counts: Mapping[str, int], mix: EvalMix) -> Optional[ClassComparison]:
    """None while the device has made no decision on the bundle."""
    n = sum(device_counts.values())
    if n == 0:
        return None
    mine, theirs = shares(device_counts), shares(mix.classes)
    return ClassComparison(n, mine, theirs, total_variation(mine, theirs))


__all__ = ["ClassComparison", "EvalMix", "compare", "read_eval_mix", "shares", "total_variation"]
