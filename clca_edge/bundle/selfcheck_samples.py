"""Reference samples: the bundle's ``"reference"`` manifest section, what the device self-check runs.

``deploy`` stores a few held-out images (encoded files under ``reference/``, hashed like every
other bundle file) with the fp32 ONNX logits it computed from exactly those stored files, plus the
bounds a variant must meet on the device. The device decodes and resizes the stored files with its
own OpenCV and runs them through each backend/precision before it classifies anything, so a kernel,
an engine or a decoder/resizer that computes something else is caught where it runs.

The records are plain dataclasses with ``to_dict``/``from_dict`` (``bundle.manifest`` declares the
section as ``Manifest.reference`` and calls them), so this module imports only ``core``: no import
cycle with the manifest. Torch-free; Python 3.8 (``typing`` annotations).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..core.errors import BundleError

REFERENCE_DIR = "reference"
# Total bytes the stored samples may take: small next to any model (a ViT-Ti INT8 is ~0.5 MB, a
# ViT-B one ~90 MB).
DEFAULT_BUDGET_BYTES = 2_000_000
DEFAULT_PER_CLASS = 2
DEFAULT_MAX_IMAGES = 16
FIX = "re-run clca-edge deploy"
PRECISIONS = ("fp32", "fp16", "int8")  # as bundle.manifest.PRECISIONS (not imported: no cycle)


def _bad(where: str, problem: str) -> BundleError:
    return BundleError(f"manifest field {where!r} {problem}; {FIX}")


def _number(d: Dict[str, Any], key: str, where: str) -> float:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _bad(f"{where}.{key}", f"must be a number, not {v!r:.40}")
    return float(v)


def _obj(d: Any, where: str) -> Dict[str, Any]:
    if not isinstance(d, dict):
        raise _bad(where, f"must be an object, not {type(d).__name__}")
    return d


@dataclass
class SelfCheckBounds:
    """What a variant must meet on the reference samples against the stored fp32 logits.

    ``min_top1_agreement``: percent of samples whose top-1 class equals the fp32 one.
    ``max_logit_distance``: the largest |logit - fp32 logit| over all samples and classes, divided
    by the mean spread (max - min) of the fp32 logits over the samples: scale-free, so one default
    fits models whose logits span 5 or 50.
    """

    min_top1_agreement: float
    max_logit_distance: float

    def check(self, where: str = "reference.bounds") -> "SelfCheckBounds":
        if not 0.0 <= self.min_top1_agreement <= 100.0 or not self.max_logit_distance > 0.0:
            raise _bad(where, f"has min_top1_agreement {self.min_top1_agreement} (must be in [0, 100]) and "
                       f"max_logit_distance {self.max_logit_distance} (must be > 0)")
        return self

    def to_dict(self) -> Dict[str, float]:
        return {"min_top1_agreement": float(self.min_top1_agreement), "max_logit_distance": float(self.max_logit_distance)}

    @classmethod
    def from_dict(cls, d: Any, where: str = "reference.bounds") -> "SelfCheckBounds":
        d = _obj(d, where)
        return cls(_number(d, "min_top1_agreement", where), _number(d, "max_logit_distance", where)).check(where)


# Defaults per precision; the quick-start figures they rest on are in BENCHMARKS.md ("Device
# self-check", benchmarks/selfcheck_bounds.py). fp32 runs the very graph the logits came from: only
# kernel order, TF32 on Ampere GPUs and decoder rounding move it (+-1 grey level on every pixel:
# <= 0.014), so every top-1 must agree within 0.02; another resize filter (0.017-0.046) is caught.
# fp16 rounds every activation (ORT fp16: <= 0.0015): 0.03. INT8 rounds weights and activations
# (the cpu flavour: <= 0.018) and a near-tie may flip: 0.05 and 75%, which an 8-bit-weight INT8 on
# a saturating x86 non-VNNI kernel (0.063-0.107, a 2.2-point drop) fails. Deploy widens a bound to
# twice a passed variant's own figure on the deploy machine when that is larger (bigger models
# deviate more), so the defaults can stay tight. A model that computes wrongly (a weight scaled,
# colour channels swapped) lands at 1.4-3.4.
DEFAULT_BOUNDS: Dict[str, SelfCheckBounds] = {
    "fp32": SelfCheckBounds(100.0, 0.02),
    "fp16": SelfCheckBounds(90.0, 0.03),
    "int8": SelfCheckBounds(75.0, 0.05),
}


@dataclass
class SelfCheckSample:
    file: str            # bundle-relative path of the stored encoded image
    label: str           # its true class (from the eval folder)
    source_sha256: str   # sha256 of the eval file it was taken from
    stored: str          # "original" (the eval file's bytes) or how it was re-encoded
    logits: List[float]  # fp32 ONNX logits of the stored file through core.preprocess

    def to_dict(self) -> Dict[str, Any]:
        return {"file": self.file, "label": self.label, "source_sha256": self.source_sha256, "stored": self.stored,
                "logits": [float(v) for v in self.logits]}

    @classmethod
    def from_dict(cls, d: Any, where: str = "reference.samples") -> "SelfCheckSample":
        d = _obj(d, where)
        for key in ("file", "label", "source_sha256", "stored"):
            if not isinstance(d.get(key), str):
                raise _bad(f"{where}.{key}", f"must be a string, not {d.get(key)!r:.40}")
        logits = d.get("logits")
        if not isinstance(logits, list) or not logits:
            raise _bad(f"{where}.logits", "must be a non-empty list of numbers")
        return cls(d["file"], d["label"], d["source_sha256"], d["stored"],
                   [_number({"v": v}, "v", f"{where}.logits") for v in logits])


@dataclass
class SelfCheckSamples:
    """The manifest's ``"reference"`` section."""

    samples: List[SelfCheckSample]
    bounds: Dict[str, SelfCheckBounds] = field(default_factory=lambda: dict(DEFAULT_BOUNDS))
    budget_bytes: int = DEFAULT_BUDGET_BYTES
    stored_bytes: int = 0
    reference_variant: str = "fp32"
    preprocessing: str = "core.preprocess.load_bgr + preprocess(bgr=True)"
    # Library versions the logits were computed with, and each other variant's figures on the
    # samples on the deploy machine (what the device's own figures can be compared with).
    computed_with: Dict[str, str] = field(default_factory=dict)
    deploy_figures: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # keys of newer versions, kept

    def bounds_for(self, precision: str) -> SelfCheckBounds:
        return self.bounds.get(precision) or DEFAULT_BOUNDS.get(precision) or DEFAULT_BOUNDS["int8"]

    def digest(self) -> str:
        """sha256 of the canonical JSON: part of the self-check cache key (other samples or bounds
        mean a new check)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> Dict[str, Any]:
        d = {"reference_variant": self.reference_variant, "preprocessing": self.preprocessing,
             "budget_bytes": self.budget_bytes, "stored_bytes": self.stored_bytes,
             "bounds": {k: b.to_dict() for k, b in self.bounds.items()}, "computed_with": dict(self.computed_with),
             "deploy_figures": dict(self.deploy_figures), "samples": [s.to_dict() for s in self.samples]}
        for k, v in self.extra.items():
            d.setdefault(k, v)
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "reference") -> "SelfCheckSamples":
        d = _obj(d, where)
        samples = d.get("samples")
        if not isinstance(samples, list):
            raise _bad(f"{where}.samples", "must be a list")
        bounds = _obj(d.get("bounds", {}), f"{where}.bounds")
        unknown = sorted(set(bounds) - set(PRECISIONS))
        if unknown:
            raise _bad(f"{where}.bounds", f"names unknown precisions {unknown}")
        parsed = [SelfCheckSample.from_dict(s, f"{where}.samples[{i}]") for i, s in enumerate(samples)]
        if len({len(s.logits) for s in parsed}) > 1:
            raise _bad(f"{where}.samples", "has logits of different lengths")
        known = {"samples", "bounds", "budget_bytes", "stored_bytes", "reference_variant", "preprocessing",
                 "computed_with", "deploy_figures"}
        try:
            return cls(samples=parsed,
                       bounds={k: SelfCheckBounds.from_dict(v, f"{where}.bounds.{k}") for k, v in bounds.items()},
                       budget_bytes=int(d.get("budget_bytes", DEFAULT_BUDGET_BYTES)),
                       stored_bytes=int(d.get("stored_bytes", 0)),
                       reference_variant=str(d.get("reference_variant", "fp32")),
                       preprocessing=str(d.get("preprocessing", "")),
                       computed_with={str(k): str(v) for k, v in _obj(d.get("computed_with", {}), where).items()},
                       deploy_figures=dict(_obj(d.get("deploy_figures", {}), where)),
                       extra={k: v for k, v in d.items() if k not in known})
        except (TypeError, ValueError) as e:
            raise _bad(where, f"is malformed ({e})") from None

    def problems(self, files: Dict[str, str], num_classes: int) -> Optional[str]:
        """Why this set cannot be checked against the bundle (a sample not hashed, a logit count
        that is not the class count), or None."""
        for s in self.samples:
            if s.file not in files:
                return f"reference sample {s.file} is not hashed in the manifest"
            if len(s.logits) != num_classes:
                return f"reference sample {s.file} has {len(s.logits)} logits for {num_classes} classes"
        return None


__all__ = ["DEFAULT_BOUNDS", "DEFAULT_BUDGET_BYTES", "DEFAULT_MAX_IMAGES", "DEFAULT_PER_CLASS", "REFERENCE_DIR",
           "SelfCheckBounds", "SelfCheckSample", "SelfCheckSamples"]
