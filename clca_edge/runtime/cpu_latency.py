"""Which precision ONNX Runtime CPU runs with ``--precision auto``: the faster one, measured on this
device, among the variants that pass the device self-check.

Deploy's timings come from the deploy machine; an INT8 kernel's speed (and whether INT8 beats fp32
at all) depends on the CPU: VNNI, AVX2, ARM dot-product, core count. So at the first start on a
device the runtime times fp32 and INT8 (p50 of a few runs after warm-up, one image, the session
settings capture uses) and caches the figures per device key (the self-check's key: backend,
precision, model sha256, CPU model and instruction-set flags, library versions; plus the thread
setting), in ``latency.json`` next to the self-check cache (this device's cache folder, ``runtime/device_cache.py``). A cached start measures nothing.
Torch-free.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from ..core.atomic_io import atomic_write_bytes

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
CACHE_ENTRIES = 64


def time_p50_ms(classifier, chw: np.ndarray, warmup: int = 5, runs: int = 30) -> float:
    for _ in range(warmup):
        classifier.logits(chw)
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        classifier.logits(chw)
        t.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(t))


@dataclass
class LatencyProbe:
    """Times classifiers on one input and caches the result per device key."""

    img_size: int
    key_for: Callable[[Any], Optional[Dict[str, Any]]]  # runtime.selfcheck.SelfChecker.key_for
    cache: Optional[Path] = None
    warmup: int = 5
    runs: int = 30
    measured: int = 0  # classifiers actually timed (cache misses), for tests and benchmarks

    def _read(self) -> Dict[str, Any]:
        if self.cache is None:
            return {}
        try:
            data = json.loads(self.cache.read_text())
        except (OSError, ValueError):
            return {}
        ok = isinstance(data, dict) and data.get("format") == CACHE_FORMAT and isinstance(data.get("entries"), dict)
        return data["entries"] if ok else {}

    def _write(self, entries: Dict[str, Any]) -> None:
        if self.cache is None:
            return
        while len(entries) > CACHE_ENTRIES:
            entries.pop(next(iter(entries)))
        try:
            atomic_write_bytes(self.cache, json.dumps({"format": CACHE_FORMAT, "entries": entries}, indent=1).encode())
        except OSError as e:
            log.debug("cannot write the latency cache %s (%s); the next start measures again", self.cache, e)

    def measure(self, classifier, threads: int = 0) -> Tuple[float, bool]:
        """(p50 ms per image, whether it came from the cache)."""
        from .selfcheck import key_digest

        key = self.key_for(classifier)
        digest = None
        if key is not None:
            key = {**key, "threads": threads}
            digest = key_digest(key)
            hit = self._read().get(digest)
            if isinstance(hit, dict) and hit.get("key") == key and isinstance(hit.get("p50_ms"), (int, float)):
                return float(hit["p50_ms"]), True
        x = np.random.default_rng(0).standard_normal((3, self.img_size, self.img_size)).astype(np.float32)
        ms = time_p50_ms(classifier, x, self.warmup, self.runs)
        self.measured += 1
        if digest is not None:
            entries = self._read()
            entries.pop(digest, None)
            entries[digest] = {"key": key, "p50_ms": round(ms, 4), "runs": self.runs,
                               "measured": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
            self._write(entries)
        return ms, False


__all__ = ["LatencyProbe", "time_p50_ms"]
