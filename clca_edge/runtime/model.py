"""What the device runtime classifies with: a verified bundle seen as ONNX variants, the
preprocessing spec, class names and an identity (the manifest's sha256) for the field log."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Tuple

from ..core.confidence import ConfidenceCalibration
from ..core.image_stats import QualityReference
from ..core.preprocess import PreprocessSpec
from .backends import BackendUnavailable, Classifier, ModelFiles

if TYPE_CHECKING:
    from .selfcheck import SelfChecker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeModel:
    files: ModelFiles
    spec: PreprocessSpec
    class_names: tuple[str, ...]
    sha: str
    # Logits are divided by this before the softmax (deploy's temperature scaling; 1.0 for bundles
    # deployed before it).
    temperature: float = 1.0
    # The training images' statistics the quality guard judges frames against (None: older bundle).
    quality_reference: Optional[QualityReference] = None
    # The device self-check over the bundle's reference samples (files.self_check is its check);
    # doctor --bundle runs it uncached for every backend/precision.
    checker: Optional["SelfChecker"] = None


def _engine_opener(bundle, cached) -> Callable[[str], Classifier]:
    """A TensorRT opener for the bundle (``cached``: this device's engine cache for it); any missing
    piece (tensorrt, CUDA bindings, an engine for this device) is a BackendUnavailable, i.e. a
    fallback to ONNX Runtime."""

    def open_engine(precision: str) -> Classifier:
        try:
            from .tensorrt_backend import TensorRTClassifier
        except ImportError as e:
            raise BackendUnavailable(f"TensorRT support is not importable ({e})") from None
        return TensorRTClassifier.from_bundle(bundle, precision, cached)

    return open_engine


def _engine_precisions(bundle, cached) -> Tuple[Tuple[str, ...], str]:
    """(precisions with a usable engine, the one ``--precision auto`` tries first): engines
    build-engine built in this device's cache, and the bundle's own (deploy on a Jetson); which one
    matches this device is decided on opening. The cache's default engine comes first, then the
    bundle's. (Torch-TensorRT modules are kept apart, in ``torch_tensorrt``: this runtime cannot run them.)"""
    c = cached.cache
    records = [*c.engines.values(), *bundle.engines.values()]
    precisions = tuple(sorted({e.key.precision for e in records if e.status.usable}))
    for engines, name in ((c.engines, c.default_engine), (bundle.engines, bundle.manifest.default_engine)):
        default = engines.get(name or "")
        if default is not None and default.status.usable:
            return precisions, default.key.precision
    return precisions, precisions[0] if precisions else "fp16"


def _cpu_precision(bundle, onnx: dict) -> str:
    """The bundle's default_variant's precision if it is a passed ONNX variant whose speed deploy
    measured on ONNX Runtime CPU; else fp32 (e.g. a jetson-orin bundle's TensorRT-style INT8)."""
    from ..bundle import PASSED

    v = bundle.variants.get(bundle.manifest.default_variant or "")
    if (v is None or v.status != PASSED or v.record.measured_on != "ort-cpu"
            or onnx.get(v.precision) != v.path):
        return "fp32"
    return v.precision


def load_model(path, trusted_keys=None, cache_dir=None) -> RuntimeModel:
    """Open and verify a bundle folder or .tar (every sha256 checked) for the runtime;
    ``trusted_keys`` (bundle.signature.TrustedKeys): it must be signed by one of them, too.
    ``cache_dir``: this device's cache folder (``runtime/device_cache.py``; None: the default)."""
    from ..bundle import MANIFEST_NAME, load_bundle, sha256_file
    from .engine_cache import DeviceEngines

    bundle = load_bundle(path, trusted_keys=trusted_keys)
    onnx: dict[str, Path] = {}
    for v in bundle.variants.values():
        if not v.usable:
            log.info("variant %s (%s) is %s; not used", v.name, v.precision, v.status)
            continue
        if v.path.suffix == ".onnx":
            onnx.setdefault(v.precision, v.path)
    sha = sha256_file(bundle.root / MANIFEST_NAME)
    cached = DeviceEngines.open(sha, cache_dir)
    engine_precisions, default_precision = _engine_precisions(bundle, cached)
    files = ModelFiles(onnx, bundle.preprocess.img_size, default_precision, _engine_opener(bundle, cached),
                       engine_precisions, _cpu_precision(bundle, onnx))
    checker = self_checker(bundle, cache_dir, sha)
    cpu_onnx = _cpu_onnx(bundle, onnx)
    files = dataclasses.replace(files, self_check=checker.check, cpu_onnx=cpu_onnx,
                                latency=_latency_probe(bundle, checker),
                                cpu_int8_needs_proof="int8" in cpu_onnx and _int8_may_saturate(bundle),
                                target=getattr(bundle.manifest, "target", None))
    confidence = _section(bundle, "confidence", ConfidenceCalibration)
    return RuntimeModel(files, bundle.preprocess, tuple(bundle.labels), sha,
                        temperature=confidence.temperature if confidence is not None else 1.0,
                        quality_reference=_section(bundle, "quality_reference", QualityReference),
                        checker=checker)


def _cpu_onnx(bundle, onnx: dict) -> dict:
    """The files ONNX Runtime CPU runs: ``onnx``, with INT8 taken from the manifest's ``int8.cpu_variant``
    (a jetson-orin bundle's int8-cpu, not TensorRT's Q/DQ file); a CPU INT8 that did not pass is not
    replaced by TensorRT's."""
    rec = bundle.manifest.int8
    out = dict(onnx)
    if rec is None or rec.cpu_variant not in bundle.variants:
        return out  # a bundle from before the int8 section: its int8 variant, as before
    v = bundle.variants[rec.cpu_variant]
    if v.usable and v.path is not None:
        out["int8"] = v.path
    else:
        out.pop("int8", None)
    return out


def _int8_may_saturate(bundle) -> bool:
    """This is an x86 CPU without VNNI and the bundle's CPU INT8 is not declared safe there."""
    from ..bundle.int8 import int8_isa

    rec = bundle.manifest.int8
    return "no VNNI" in int8_isa() and not (rec is not None and rec.x86_non_vnni_safe)


def _latency_probe(bundle, checker):
    from .cpu_latency import LatencyProbe
    from .device_cache import LATENCY_FILE

    cache = checker.cache.path.with_name(LATENCY_FILE) if checker.cache is not None else None
    return LatencyProbe(bundle.preprocess.img_size, checker.key_for, cache)


def self_checker(bundle, cache_dir=None, manifest_sha256: Optional[str] = None) -> "SelfChecker":
    """The bundle's self-checker: its reference samples (None for a bundle from before them: every
    check is then skipped with one warning), its verdicts cached in this device's cache folder for
    the bundle (``runtime/device_cache.py``), never in the bundle."""
    from ..bundle import MANIFEST_NAME, sha256_file
    from ..core.errors import BundleError
    from .device_cache import SELFCHECK_FILE, bundle_cache_dir
    from .selfcheck import SelfCheckCache, SelfChecker

    ref = bundle.manifest.reference
    if ref is not None:
        problem = ref.problems(bundle.manifest.files, len(bundle.labels))
        if problem:
            raise BundleError(f"{bundle.source}: {problem}; re-run clca-edge deploy")

    def model_sha256(classifier) -> Optional[str]:
        if getattr(classifier, "source_sha256", None):
            return classifier.source_sha256  # a plan in this device's engine cache
        path = getattr(classifier, "source_file", None)
        try:
            return bundle.sha256(path) if path is not None else None  # verified at load: no re-hash
        except (KeyError, ValueError):
            return None

    sha = manifest_sha256 or sha256_file(bundle.root / MANIFEST_NAME)
    cache = SelfCheckCache(bundle_cache_dir(sha, cache_dir) / SELFCHECK_FILE)
    return SelfChecker(bundle.root, ref, bundle.preprocess, model_sha256, cache)


def _section(bundle, key: str, cls):
    """The manifest's optional ``key`` section as ``cls`` (None: a bundle from before it)."""
    m = bundle.manifest
    value = m.get(key) if isinstance(m, dict) else getattr(m, key, None)
    if value is None and not isinstance(m, dict):
        value = getattr(m, "extra", {}).get(key)
    return value if value is None or isinstance(value, cls) else cls.from_dict(value)
