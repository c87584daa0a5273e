"""Device self-check: before a backend/precision classifies anything, it classifies the bundle's
reference samples (``bundle.selfcheck_samples``) and must agree with the fp32 logits deploy stored.

The samples go through this device's own decode and resize (``core.preprocess.load_bgr`` +
``preprocess``), so a decoder or resizer that differs is caught together with a kernel, an INT8
path or a TensorRT engine that computes something else. Two figures, against the bounds the
manifest gives per precision: top-1 agreement (percent of samples) and the max logit distance
(max |logit - fp32 logit| over samples and classes, over the mean fp32 logit spread).

Results are cached per device key (backend, precision, model file sha256, CPU model + instruction
set, GPU + TensorRT version where used, ONNX Runtime / OpenCV / numpy / clca-edge versions and the
reference set itself) in a small JSON file in this device's cache folder for the bundle
(``runtime/device_cache.py``; never in the bundle). A normal start finds its key there and runs
nothing; any change of the key checks again. Verdicts are ``bundle.Status`` values (PASSED, FAILED,
SKIPPED, FAILED_TO_RUN; UNAVAILABLE for a backend ``survey`` cannot open). Torch-free.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ..bundle.manifest import Status
from ..bundle.selfcheck_samples import SelfCheckBounds, SelfCheckSamples
from ..core.atomic_io import atomic_write_bytes
from ..core.logonce import LogOnce

log = logging.getLogger(__name__)

PASSED = Status.PASSED
FAILED = Status.FAILED
SKIPPED = Status.SKIPPED              # nothing to check against (bundle from before reference samples)
COULD_NOT_RUN = Status.FAILED_TO_RUN  # the classifier raised on a sample: a fallback, not a verdict
UNAVAILABLE = Status.UNAVAILABLE
CACHE_ENTRIES = 64
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Figures:
    samples: int
    top1_agreement: float      # percent
    max_abs_diff: float        # max |logit - reference| over samples and classes
    max_logit_distance: float  # max_abs_diff / mean reference spread (max - min logit per sample)

    def to_dict(self) -> Dict[str, Any]:
        # null, not Infinity: strict JSON for --json readers (a non-finite output is null here).
        def num(v: float) -> Optional[float]:
            return round(v, 6) if np.isfinite(v) else None

        return {"samples": self.samples, "top1_agreement": round(self.top1_agreement, 3),
                "max_abs_diff": num(self.max_abs_diff), "max_logit_distance": num(self.max_logit_distance)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Figures":
        def num(v: Any) -> float:
            return float("inf") if v is None else float(v)

        return cls(int(d["samples"]), float(d["top1_agreement"]), num(d["max_abs_diff"]), num(d["max_logit_distance"]))


def compare_logits(got: np.ndarray, ref: np.ndarray) -> Figures:
    """Figures of ``got`` (N, C) against ``ref`` (N, C)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape or got.ndim != 2 or got.shape[0] == 0:
        raise ValueError(f"logits of shape {got.shape} do not compare with reference logits {ref.shape}")
    # A NaN/inf output (an fp16 overflow, a broken kernel) is infinitely far, never "no difference".
    diff = float(np.max(np.abs(got - ref))) if np.all(np.isfinite(got)) else float("inf")
    spread = float(np.mean(ref.max(axis=1) - ref.min(axis=1)))
    agree = float(np.mean(got.argmax(axis=1) == ref.argmax(axis=1))) * 100.0
    return Figures(int(got.shape[0]), agree, diff, diff / max(spread, 1e-6))


@dataclass
class SelfCheckResult:
    backend: str
    precision: str
    status: Status
    reason: str = ""
    figures: Optional[Figures] = None
    bounds: Optional[SelfCheckBounds] = None
    latency_ms: Optional[float] = None   # mean per reference sample (preprocessed beforehand)
    cached: bool = False
    forced: bool = False
    key: Dict[str, Any] = field(default_factory=dict)
    checked: str = ""                    # UTC time the samples ran

    @property
    def usable(self) -> bool:
        """May this backend/precision classify? Passed, or nothing to check against."""
        return self.status in (PASSED, SKIPPED)

    def figures_text(self) -> str:
        if self.figures is None or self.bounds is None:
            return ""
        f, b = self.figures, self.bounds
        return (f"top-1 agreement {f.top1_agreement:.1f}% (min {b.min_top1_agreement:g}%), max logit distance "
                f"{f.max_logit_distance:.4f} (max {b.max_logit_distance:g}; max abs logit diff {f.max_abs_diff:.4g}) "
                f"on {f.samples} reference samples")

    def summary(self) -> str:
        what = f"{self.backend} {self.precision}"
        if self.status == PASSED:
            return f"{what} passed the device self-check{' (cached)' if self.cached else ''}: {self.figures_text()}"
        if self.status == FAILED:
            return f"{what} failed the device self-check ({self.reason}): {self.figures_text()}"
        return f"{what}: device self-check {self.status}: {self.reason}"

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"backend": self.backend, "precision": self.precision, "status": self.status.value}
        if self.reason:
            d["reason"] = self.reason
        if self.figures is not None:
            d["figures"] = self.figures.to_dict()
        if self.bounds is not None:
            d["bounds"] = self.bounds.to_dict()
        if self.latency_ms is not None:
            d["latency_ms"] = round(self.latency_ms, 4)
        d.update(cached=self.cached, forced=self.forced)
        if self.checked:
            d["checked"] = self.checked
        if self.key:
            d["key"] = dict(self.key)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "SelfCheckResult":
        return cls(backend=str(d["backend"]), precision=str(d["precision"]), status=Status(d["status"]),
                   reason=str(d.get("reason", "")),
                   figures=Figures.from_dict(d["figures"]) if d.get("figures") else None,
                   bounds=SelfCheckBounds.from_dict(d["bounds"]) if d.get("bounds") else None,
                   latency_ms=d.get("latency_ms"), key=dict(d.get("key") or {}), checked=str(d.get("checked", "")))

    def to_record(self) -> Dict[str, Any]:
        """The field log's ``selfcheck`` record."""
        return {"type": "selfcheck", **self.to_dict()}


def judge(figures: Figures, bounds: SelfCheckBounds) -> str:
    """Which checks fail, as text ("" when both pass)."""
    bad = []
    if figures.top1_agreement < bounds.min_top1_agreement:
        bad.append("top-1 agreement below its bound")
    if figures.max_logit_distance > bounds.max_logit_distance:
        bad.append("max logit distance above its bound")
    return " and ".join(bad)


# ------------------------------------------------------------------------------ device key
def _library_versions() -> Dict[str, str]:
    from .. import __version__

    out = {"clca_edge": __version__, "numpy": np.__version__}
    try:
        import cv2

        out["opencv"] = cv2.__version__
    except ImportError:
        out["opencv"] = "missing"
    try:
        import onnxruntime as ort

        out["onnxruntime"] = ort.__version__
    except ImportError:
        out["onnxruntime"] = "missing"
    return out


def device_key(backend: str, precision: str, model_sha256: str, reference_digest: str,
               extra: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Everything a self-check's verdict depends on; any change means checking again."""
    from ..core.cpuinfo import cpu_info

    cpu = cpu_info()
    key: Dict[str, Any] = {"backend": backend, "precision": precision, "model_sha256": model_sha256,
                           "reference_sha256": reference_digest, "cpu_model": cpu.model, "cpu_arch": cpu.arch,
                           "cpu_flags_sha256": cpu.flags_sha256, **_library_versions()}
    key.update(extra or {})
    return key


def key_digest(key: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------------------ cache
class SelfCheckCache:
    """{key digest: result} in one small JSON file; unreadable or foreign content is ignored (and
    rewritten), a write that fails is logged at debug and never stops a run."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def _read(self) -> Dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or not isinstance(data.get("entries"), dict):
            return {}
        return data["entries"]

    def get(self, digest: str) -> Optional[SelfCheckResult]:
        entry = self._read().get(digest)
        if not isinstance(entry, dict):
            return None
        try:
            res = SelfCheckResult.from_dict(entry)
        except (KeyError, TypeError, ValueError, Exception) as e:  # a hand-edited file: check again
            log.debug("self-check cache entry %s unreadable (%s)", digest[:12], e)
            return None
        res.cached = True
        return res

    def put(self, digest: str, result: SelfCheckResult) -> None:
        entries = self._read()
        entries.pop(digest, None)
        entries[digest] = result.to_dict()
        while len(entries) > CACHE_ENTRIES:  # oldest first (insertion order)
            entries.pop(next(iter(entries)))
        try:
            atomic_write_bytes(self.path, json.dumps({"format": CACHE_FORMAT, "entries": entries}, indent=1).encode())
        except OSError as e:
            log.debug("cannot write the self-check cache %s (%s); the next start checks again", self.path, e)


# ------------------------------------------------------------------------------ the checker
ModelHash = Callable[[Any], Optional[str]]  # classifier -> sha256 of the model file it runs, if known


class SelfChecker:
    """Runs (or finds cached) self-checks of classifiers opened on one bundle."""

    def __init__(self, root: Path, reference: Optional[SelfCheckSamples], spec, model_sha256: ModelHash,
                 cache: Optional[SelfCheckCache] = None, skip_reason: str = ""):
        self.root = Path(root)
        self.reference = reference
        self.spec = spec
        self.model_sha256 = model_sha256
        self.cache = cache
        self.skip_reason = skip_reason or ("the bundle has no reference samples (written by a clca-edge deploy "
                                           "before the device self-check); self-check skipped")
        self._tensors: Optional[List[np.ndarray]] = None
        self._unreadable: Optional[str] = None
        self._said = LogOnce(log)
        self.runs = 0  # samples actually classified (cache misses), for tests and benchmarks

    def _inputs(self) -> Optional[List[np.ndarray]]:
        """The samples through this device's decode + preprocessing, once per process."""
        from ..core.preprocess import load_bgr, preprocess

        if self._tensors is None and self._unreadable is None:
            out = []
            for s in self.reference.samples:
                bgr = load_bgr(self.root / s.file)
                if bgr is None:
                    self._unreadable = s.file
                    break
                out.append(preprocess(bgr, self.spec, bgr=True))
            else:
                self._tensors = out
        return self._tensors

    def key_for(self, classifier) -> Optional[Dict[str, Any]]:
        sha = self.model_sha256(classifier)
        if sha is None or self.reference is None:
            return None  # an unknown model file (a classifier built by hand): never cached
        info = getattr(classifier, "key_info", lambda: {})()
        return device_key(classifier.backend, classifier.precision, sha, self.reference.digest(), info)

    def check(self, classifier, use_cache: bool = True) -> SelfCheckResult:
        backend, precision = classifier.backend, classifier.precision
        if self.reference is None or not self.reference.samples:
            self._said.warning("no reference", "%s: %s", self.root, self.skip_reason)
            return SelfCheckResult(backend, precision, SKIPPED, self.skip_reason)
        key = self.key_for(classifier)
        digest = key_digest(key) if key is not None else None
        if use_cache and digest is not None and self.cache is not None:
            hit = self.cache.get(digest)
            if hit is not None and hit.key == key:
                return hit
        res = self._run(classifier, key)
        if digest is not None and self.cache is not None and res.status in (PASSED, FAILED):
            self.cache.put(digest, res)
        return res

    def _run(self, classifier, key: Optional[Dict[str, Any]]) -> SelfCheckResult:
        backend, precision = classifier.backend, classifier.precision
        bounds = self.reference.bounds_for(precision)
        stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        tensors = self._inputs()
        if tensors is None:
            import cv2

            return SelfCheckResult(backend, precision, FAILED, f"reference sample {self._unreadable} cannot be decoded "
                                   f"by this device's OpenCV {cv2.__version__}", bounds=bounds, key=key or {},
                                   checked=stamp)
        ref = np.asarray([s.logits for s in self.reference.samples], np.float64)
        got = []
        t0 = time.perf_counter()
        try:
            for x in tensors:
                got.append(np.asarray(classifier.logits(x), np.float64).reshape(-1))
                self.runs += 1
        except Exception as e:  # a provider/engine that fails at run time: a fallback, not a verdict
            return SelfCheckResult(backend, precision, COULD_NOT_RUN, f"{type(e).__name__}: {e}", key=key or {},
                                   checked=stamp)
        latency = 1000.0 * (time.perf_counter() - t0) / len(tensors)
        try:
            figures = compare_logits(np.stack(got), ref)
        except ValueError as e:
            return SelfCheckResult(backend, precision, FAILED, str(e), bounds=bounds, key=key or {}, checked=stamp)
        bad = judge(figures, bounds)
        return SelfCheckResult(backend, precision, FAILED if bad else PASSED, bad, figures, bounds, latency,
                               key=key or {}, checked=stamp)


# ------------------------------------------------------------------------------ doctor --bundle
@dataclass
class SurveyRow:
    """One row of ``doctor --bundle``: a backend/precision and its self-check (or why it cannot run)."""

    backend: str
    precision: str
    status: Status
    reason: str = ""
    result: Optional[SelfCheckResult] = None

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"backend": self.backend, "precision": self.precision, "verdict": self.status.value}
        if self.reason:
            d["reason"] = self.reason
        if self.result is not None:
            r = self.result.to_dict()
            d.update({k: r[k] for k in ("figures", "bounds", "latency_ms") if k in r})
        return d


def survey(model, threads: int = 0) -> List[SurveyRow]:
    """The self-check of every backend/precision this machine can open for ``model`` (a
    runtime.model.RuntimeModel), run fresh (the cache is refreshed, not read). A backend that cannot
    open is one row per distinct reason, never an error."""
    from .backends import BACKENDS, BackendUnavailable, open_backend

    files = model.files
    rows: List[SurveyRow] = []
    for backend in BACKENDS:
        precisions = (list(files.engine_precisions) or ["fp16", "int8"]) if backend == "tensorrt" else \
            [p for p in ("fp32", "fp16", "int8") if p in files.onnx]
        down: Dict[str, List[str]] = {}
        for prec in precisions:
            try:
                clf = open_backend(files, backend, prec, threads)
            except BackendUnavailable as e:
                down.setdefault(str(e), []).append(prec)
                continue
            try:
                res = model.checker.check(clf, use_cache=False) if model.checker is not None else \
                    SelfCheckResult(backend, prec, SKIPPED, "no self-checker")
            finally:
                clf.close()
            rows.append(SurveyRow(backend, prec, res.status, res.reason, res))
        rows += [SurveyRow(backend, ",".join(precs), UNAVAILABLE, reason) for reason, precs in down.items()]
    return rows


__all__ = ["COULD_NOT_RUN", "FAILED", "Figures", "PASSED", "SKIPPED", "SelfCheckCache", "SelfCheckResult",
           "SelfChecker", "SurveyRow", "UNAVAILABLE", "compare_logits", "device_key", "judge", "key_digest", "survey"]
