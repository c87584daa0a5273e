"""The bundle manifest as typed, versioned records: what deploy, build-engine and the device runtime
agree on. Torch-free; imports only ``core`` and the standard library (it runs on Python 3.8, so
annotations use ``typing.List``/``Dict``/``Optional``).

``Manifest.to_dict`` is the ONE writer and ``Manifest.from_dict`` the ONE reader of
``manifest.json``; ``bundle.store.write_manifest``/``read_manifest`` wrap them with the file and its
hashes, and every module and test goes through those. Both are driven by the dataclass fields below,
so a field is declared once and is then written, read and type-checked the same way everywhere.

Format (``FORMAT_VERSION`` = 3):
- JSON keys are the field names (``WorstClass.class_name`` is written ``"class"``); a field whose
  value is ``None`` and whose default is ``None`` is left out; statuses are written as their text.
- Reading checks every field's type; a missing required field, a mistyped one, an unknown status or
  precision, or an unknown format version raises ``BundleError`` (exit code 8) with ONE line naming
  the field and the fix (re-run deploy, or upgrade clca-edge), never a KeyError/TypeError.
- Format 1 (clca-edge 0.1 before this schema; the same layout) is converted on read: Torch-TensorRT
  modules move from ``engines`` to ``torch_tensorrt`` (the device runtime cannot run them), and an
  ONNX variant left "to verify on device" because ONNX Runtime could not load it becomes
  "failed to run".
- Format 2 stored the model config twice (``model`` and ``backbone``/``method``/``clca``) and the
  preprocessing twice (``preprocess`` beside ``preprocess_file``), and ``gate.max_drop`` was always
  set. Format 3 keeps each once: the model config in ``model``, the preprocessing in its file
  (``Bundle.preprocess``); ``gate.max_drop`` is null when the gate was statistical only (``alpha``,
  ``min_agreement``, ``detectable_drop``; per variant ``paired``). ``upgrade_format_2`` drops the
  copies of older bundles on read (a ``model``-less one gets its ``backbone``/``method`` moved into
  ``model``). The writer always writes format 3; each ``upgrade_format_N`` turns N into N + 1.
- Unknown keys are KEPT, not refused: a file written by a newer minor version keeps the sections this
  version does not know through a read/modify/write (deploy adding its engines), in each
  record's ``extra``. They are ignored otherwise; an ``EngineKey`` with unknown keys never matches one
  computed here, so such a plan is treated as built elsewhere. A new *major* change bumps
  ``FORMAT_VERSION`` (older readers then refuse it with "upgrade clca-edge").

Where a new bundle field goes: write its record as a dataclass deriving from ``ManifestRecord``
(typed fields, ``typing`` annotations, ``Optional`` for what may be absent, a ``str``-valued
``enum.Enum`` for a closed set of values, and ``extra: Dict[str, Any] = extra_field()`` last) in its
own module under ``clca_edge/bundle/`` (torch-free, importing only ``core``: the bundle layer cannot
import runtime, deploy or engines), and declare ONE optional field for it on ``Manifest`` (a
top-level section) or on ``VariantRecord``/``EngineRecord`` (a per-variant/per-engine result), e.g.
``reference_samples: Optional[ReferenceSamples] = None``. ``ManifestRecord`` gives it
``to_dict``/``from_dict`` with the same validation; a type that is not a ``ManifestRecord`` but has
``to_dict()``/``from_dict(d)`` (like ``PreprocessSpec``) also works, its errors reported against the
field. The producer sets the field on the ``Manifest`` it gets from ``read_manifest`` (or builds)
and calls ``write_manifest``; consumers read ``bundle.manifest.<field>`` and treat ``None`` as "bundle
from before this feature" (never a crash). No format bump for an optional field: older readers keep
it in ``extra``. Add the field to a test that deploys a bundle and reads it back.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..core.confidence import ConfidenceCalibration
from ..core.errors import BundleError
from ..core.image_stats import QualityReference
from .int8 import Int8Record
from .selfcheck_samples import SelfCheckSamples
from .robustness import FieldRobustness

FORMAT_VERSION = 3
READABLE_FORMATS = (1, 2, 3)

MANIFEST_NAME = "manifest.json"
# Manifest keys left out of a bundle's signature: deploy on a Jetson records the bundle's own engines
# after it signed (and packed) the bundle, and a build-engine before engines moved to the device cache
# (runtime/engine_cache.py) added its engines here on the device; such signed bundles still verify.
# Everything else is deploy's and must match what was signed. build-engine no longer writes a manifest.
ENGINE_KEYS = ("engines", "engine_build_failures", "default_engine", "default_engine_verified", "torch_tensorrt",
               "files")
LABELS_NAME = "labels.txt"
PREPROCESS_NAME = "preprocess.json"

PRECISIONS = ("fp32", "fp16", "int8")
# Which ONNX variant an engine of a precision is built from: fp16 is a builder flag on fp32.
ENGINE_SOURCE = {"fp32": "fp32", "fp16": "fp32", "int8": "int8"}
# Torch-TensorRT compiles fp16/fp32 only (INT8 through it needs ModelOpt quantisation).
TORCH_TRT_PRECISIONS = ("fp16", "fp32")

FIX = "re-run clca-edge deploy to write a valid bundle"


class Status(str, enum.Enum):
    """Status of a variant, engine or build attempt. Values are the manifest's text (compare equal
    to plain strings, hash like them, print as them)."""

    PASSED = "passed"
    REJECTED = "rejected"  # below the accuracy gate
    TO_VERIFY = "to verify on device"  # a TensorRT plan still to be built and checked there
    UNVERIFIED = "built, not verified"  # built, no --eval-data given to gate it
    FAILED_TO_RUN = "failed to run"  # the runtime could not load or run it
    BUILD_FAILED = "build failed"
    # The device self-check's verdicts (runtime/selfcheck.py; with PASSED and FAILED_TO_RUN, a
    # classifier that raised on a sample); never written in a manifest.
    FAILED = "failed"  # outputs beyond the self-check's bounds
    SKIPPED = "skipped"  # nothing to check against (a bundle from before reference samples)
    UNAVAILABLE = "unavailable"  # the backend cannot open here (doctor --bundle)

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    def __hash__(self) -> int:
        return hash(self.value)

    @property
    def usable(self) -> bool:
        """Whether the runtime may ever pick something with this status."""
        return self not in UNUSABLE


# The self-check's own verdicts are never a manifest status: a manifest that holds one has nothing usable.
UNUSABLE = (Status.REJECTED, Status.FAILED_TO_RUN, Status.BUILD_FAILED, Status.FAILED, Status.SKIPPED,
            Status.UNAVAILABLE)


def extra_field() -> Any:
    """The ``extra`` field every record declares last: keys this version does not know, kept."""
    return field(default_factory=dict, repr=False, compare=False)


def _where(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def _field_error(where: str, problem: str, fix: str = FIX) -> BundleError:
    return BundleError(f"manifest field {where!r} {problem}; {fix}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_HINTS: Dict[type, Dict[str, Any]] = {}


def _hints(cls: type) -> Dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _decode(tp: Any, value: Any, where: str) -> Any:
    """``value`` (parsed JSON) checked against the annotation ``tp``; BundleError naming ``where``."""
    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        if value is None and len(inner) < len(args):
            return None
        if len(inner) != 1:
            raise TypeError(f"manifest field {where}: only Optional[X] unions are supported, not {tp!r}")
        return _decode(inner[0], value, where)
    if origin is list:
        if not isinstance(value, list):
            raise _field_error(where, f"must be a list, not {_kind(value)}")
        return [_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _field_error(where, f"must be an object, not {_kind(value)}")
        return {k: _decode(args[1], v, _where(where, k)) for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in tp)
            raise _field_error(where, f"is {_short(value)}, not one of {choices}") from None
    if tp is bool or tp is str:
        if not isinstance(value, tp):
            raise _field_error(where, f"must be {_kind(tp())}, not {_kind(value)} {_short(value)}")
        return value
    if tp is int or tp is float:
        ok = isinstance(value, (int, float) if tp is float else int) and not isinstance(value, bool)
        if not ok:
            raise _field_error(where, f"must be {_kind(tp())}, not {_kind(value)} {_short(value)}")
        return tp(value)
    if isinstance(tp, type) and issubclass(tp, ManifestRecord):
        return tp.from_dict(value, where)
    if isinstance(tp, type) and hasattr(tp, "from_dict"):
        if not isinstance(value, dict):
            raise _field_error(where, f"must be an object, not {_kind(value)}")
        try:
            return tp.from_dict(value)
        except BundleError:
            raise
        except (TypeError, ValueError, KeyError) as e:  # ConfigError is a ValueError
            raise _field_error(where, f"is not a valid {tp.__name__} ({e})") from None
    raise TypeError(f"manifest field {where}: unsupported annotation {tp!r}")  # a programming error


def _encode(value: Any) -> Any:
    if isinstance(value, ManifestRecord):
        return value.to_dict()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


class ManifestRecord:
    """Base of every manifest record (a dataclass): ``to_dict``/``from_dict`` driven by its fields.

    Field metadata: ``key`` (the JSON key, when it is not a valid Python name), ``required`` (must be
    present on read although construction gives a default), ``choices`` (allowed values of a str).
    """

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and f.default is None:
                continue
            out[f.metadata.get("key", f.name)] = _encode(value)
        for k, v in getattr(self, "extra", {}).items():
            out.setdefault(k, v)
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = ""):
        if not isinstance(data, dict):
            raise _field_error(where or cls.__name__, f"must be an object, not {_kind(data)}")
        hints = _hints(cls)
        kwargs: Dict[str, Any] = {}
        known = set()
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            key = f.metadata.get("key", f.name)
            known.add(key)
            sub = _where(where, key)
            if key not in data:
                if f.metadata.get("required") or (f.default is dataclasses.MISSING
                                                  and f.default_factory is dataclasses.MISSING):
                    raise _field_error(sub, "is missing")
                continue
            value = _decode(hints[f.name], data[key], sub)
            choices = f.metadata.get("choices")
            if choices and value is not None and value not in choices:
                raise _field_error(sub, f"is {_short(value)}, not one of {', '.join(map(repr, choices))}")
            kwargs[f.name] = value
        if "extra" in {f.name for f in dataclasses.fields(cls)}:
            kwargs["extra"] = {k: v for k, v in data.items() if k not in known}
        obj = cls(**kwargs)
        obj.check(where)
        return obj

    def check(self, where: str) -> None:
        """Rules across fields, run after reading (override; raise ``BundleError`` via ``_field_error``)."""


def _precision(**kw: Any) -> Any:
    return field(metadata={"choices": PRECISIONS}, **kw)


# ------------------------------------------------------------------------------- small records
@dataclass
class TensorSpec(ManifestRecord):
    name: str
    shape: Optional[List[int]] = None
    dtype: str = "float32"
    extra: Dict[str, Any] = extra_field()


@dataclass
class CheckpointRef(ManifestRecord):
    file: str
    epoch: Optional[int] = None
    extra: Dict[str, Any] = extra_field()


@dataclass
class GateRecord(ManifestRecord):
    """How deploy gated the variants against fp32 on ``eval_data`` (core/gate_stats.py): rejected
    when the one-sided exact McNemar test finds a drop at ``alpha``, when top-1 agreement with fp32
    is below ``min_agreement`` percent, or (``max_drop`` set) when the drop exceeds ``max_drop``
    points. ``detectable_drop``: the smallest drop these images can show (null: none can)."""

    max_drop: Optional[float] = None
    metric: str = "top-1 points vs fp32 ONNX"
    alpha: Optional[float] = None
    min_agreement: Optional[float] = None
    detectable_drop: Optional[float] = None
    eval_data: Optional[str] = None
    eval_images: Optional[int] = None
    eval_skipped: Optional[int] = None
    # The field gate: the suite run per variant ("full", "quick" or "off") and the largest drop under
    # any perturbation a variant may have (None: not gated, only recorded).
    field_suite: Optional[str] = None
    max_field_drop: Optional[float] = None
    extra: Dict[str, Any] = extra_field()


@dataclass
class CalibrationRecord(ManifestRecord):
    manifest: str  # the calibration sample's own file list + hashes, inside the bundle
    method: str
    images: int
    seed: Optional[int] = None
    excluded_also_in_eval: int = 0
    skipped_corrupt: int = 0
    extra: Dict[str, Any] = extra_field()


@dataclass
class AccuracyRecord(ManifestRecord):
    """Top-1 (percent) and per-class accuracy on ``images`` gate images (runtime.scoring.Accuracy)."""

    top1: float
    per_class: Dict[str, float]
    images: int
    latency_ms_mean: Optional[float] = None
    extra: Dict[str, Any] = extra_field()


@dataclass
class WorstClass(ManifestRecord):
    class_name: str = field(metadata={"key": "class"})
    drop: float = field()
    extra: Dict[str, Any] = extra_field()


@dataclass
class PairedTest(ManifestRecord):
    """A variant against fp32 on the gate's images, paired: top-1 agreement (percent), the images
    only fp32 got right (``lost``) and only the variant got right (``gained``), and the one-sided
    exact McNemar p-value of a drop."""

    images: int
    agreement: float
    lost: int
    gained: int
    p_value: float
    extra: Dict[str, Any] = extra_field()


# Why a variant was rejected (VariantRecord.rejected_by): core/gate_stats.py's rules, the field
# gate, or a TensorRT plan inheriting its source ONNX's verdict.
REJECTIONS = ("significant drop", "agreement", "max drop", "field gate", "source")


@dataclass
class GateBaseline(ManifestRecord):
    """What an engine's drop is measured against: the fp32 ONNX on the same images."""

    variant: str
    runtime: str
    eval_data: str
    accuracy: AccuracyRecord
    extra: Dict[str, Any] = extra_field()


@dataclass
class Agreement(ManifestRecord):
    vs: str
    images: int
    max_abs_logit_diff: Optional[float] = None
    top1_agreement: Optional[float] = None  # percent of images with the reference's top-1 class
    extra: Dict[str, Any] = extra_field()


@dataclass
class EngineTiming(ManifestRecord):
    p50_ms: float
    p90_ms: Optional[float] = None
    iters: Optional[int] = None
    extra: Dict[str, Any] = extra_field()


@dataclass(frozen=True)
class EngineKey(ManifestRecord):
    """What a serialised TensorRT plan depends on: a plan is only valid for exactly this combination.
    Unknown keys (``extra``) take part in equality, so a key from a newer version never matches."""

    trt_version: str
    gpu_name: str
    compute_capability: str
    precision: str = _precision()
    onnx_sha256: str = field()
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    def file_name(self) -> str:
        import re

        gpu = re.sub(r"[^A-Za-z0-9]+", "-", self.gpu_name).strip("-").lower()[:40] or "gpu"
        cc = self.compute_capability.replace(".", "")
        return f"{self.precision}_trt{self.trt_version}_{gpu}_sm{cc}_{self.onnx_sha256[:12]}.plan"

    def differs_in(self, other: "EngineKey") -> List[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(other, f.name)]


# ------------------------------------------------------------------------------- variants and engines
@dataclass
class VariantRecord(ManifestRecord):
    """One precision variant: an ONNX file (``file``) deploy gated, or a TensorRT plan still to be
    built on the device from the ``source`` ONNX variant (``file`` null)."""

    precision: str = _precision()
    status: Status = field()
    file: Optional[str] = field()  # written as null for a plan still to build
    runtime: Optional[str] = None  # "onnxruntime", "onnxruntime-gpu" or "tensorrt"
    source: Optional[str] = None  # TensorRT plans: the ONNX variant it is built from
    flavour: Optional[str] = None  # INT8: a deploy.quantize.FLAVOURS name ("tensorrt-qdq", "ort-cpu-u8s8-w7")
    quantization: Optional[Dict[str, Any]] = None
    io_dtype: Optional[str] = None
    note: Optional[str] = None
    # The accuracy gate at deploy.
    accuracy: Optional[AccuracyRecord] = None
    drop: Optional[float] = None
    paired: Optional[PairedTest] = None  # format 3: the gate's paired test against fp32
    rejected_by: Optional[str] = field(default=None, metadata={"choices": REJECTIONS})
    worst_classes: Optional[List[WorstClass]] = None
    measured_on: Optional[str] = None  # where its latency was measured ("ort-cpu")
    parity: Optional[Dict[str, Any]] = None  # max abs logit difference against torch / the fp32 ONNX
    # Accuracy under the field perturbation suite on the gate's images (bundle/robustness.py; None:
    # deployed with --field-suite off, or before the suite existed).
    field_robustness: Optional[FieldRobustness] = None
    extra: Dict[str, Any] = extra_field()


@dataclass
class EngineRecord(ManifestRecord):
    """A TensorRT plan built for one device: a bundle's own (deploy on a Jetson, under its ``engines/``),
    or one build-engine built on a device (in that device's cache, ``runtime/engine_cache.py``)."""

    file: str
    key: EngineKey
    status: Status
    source: Optional[str] = None  # the ONNX variant it was built from
    workspace_mb: Optional[int] = None
    build_seconds: Optional[float] = None
    gpu_info_source: Optional[str] = None
    timing: Optional[EngineTiming] = None
    note: Optional[str] = None
    # The accuracy gate on the device (build-engine --eval-data).
    accuracy: Optional[AccuracyRecord] = None
    skipped_images: Optional[int] = None
    reference: Optional[GateBaseline] = None
    agreement: Optional[Agreement] = None
    drop: Optional[float] = None
    worst_classes: Optional[List[WorstClass]] = None
    paired: Optional[PairedTest] = None  # format 3: the gate's paired test against the fp32 ONNX
    rejected_by: Optional[str] = field(default=None, metadata={"choices": REJECTIONS})
    # The device self-check on the bundle's reference samples (runtime.selfcheck result, without its
    # key); a failed one makes the engine "rejected" before it is gated or timed as the default.
    self_check: Optional[Dict[str, Any]] = None
    extra: Dict[str, Any] = extra_field()


@dataclass
class EngineBuildFailure(ManifestRecord):
    """A precision build-engine (or deploy) tried and could not build here; cleared once it builds."""

    key: EngineKey
    note: str
    status: Status = Status.BUILD_FAILED
    source: Optional[str] = None
    workspace_mb: Optional[int] = None
    extra: Dict[str, Any] = extra_field()


@dataclass
class TorchTrtModule(ManifestRecord):
    """A module ``build-engine --builder torch-tensorrt`` compiled from the checkpoint (an
    ExportedProgram, ``torch_tensorrt.load``). It needs torch + torch_tensorrt, which the device
    runtime never imports, so it is kept apart from ``engines`` and never picked by predict/capture."""

    file: str
    precision: str = field(metadata={"choices": TORCH_TRT_PRECISIONS})
    torch_tensorrt_version: str = field()
    gpu_name: str = field()
    compute_capability: str = field()
    torch_version: Optional[str] = None
    status: Status = Status.UNVERIFIED
    build_seconds: Optional[float] = None
    extra: Dict[str, Any] = extra_field()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _package_version() -> str:
    from .. import __version__

    return __version__


@dataclass
class Manifest(ManifestRecord):
    """``manifest.json``. ``files`` (sha256 of every other file) is filled by ``write_manifest``."""

    class_names: List[str]
    input: TensorSpec
    output: TensorSpec
    variants: Dict[str, VariantRecord]
    format: int = FORMAT_VERSION
    package: str = "clca-edge"
    version: str = field(default_factory=_package_version)
    created: str = field(default_factory=_now)
    target: Optional[str] = None
    checkpoint: Optional[CheckpointRef] = None
    # models.ModelConfig.to_dict() (the bundle cannot import models): backbone, method, clca, ...
    model: Optional[Dict[str, Any]] = None
    # Resolved against the backbone's depth: what the device-side graph actually does.
    keep_rate: Optional[List[float]] = None
    locations: Optional[List[int]] = None
    tokens_per_block: Optional[List[int]] = None
    opset: Optional[int] = None
    labels: str = LABELS_NAME
    preprocess_file: str = PREPROCESS_NAME
    gate: Optional[GateRecord] = None
    calibration: Optional[CalibrationRecord] = None
    default_variant: Optional[str] = None
    trtexec: Optional[str] = None
    engines: Dict[str, EngineRecord] = field(default_factory=dict)
    engine_build_failures: Dict[str, EngineBuildFailure] = field(default_factory=dict)
    default_engine: Optional[str] = None
    default_engine_verified: Optional[bool] = None
    torch_tensorrt: Dict[str, TorchTrtModule] = field(default_factory=dict)
    # The training augmentation preset of the checkpoint (data.augment.AugmentPreset.to_dict(): name
    # and strengths; None: a checkpoint from before presets, or one not written by clca-edge train).
    augment: Optional[Dict[str, Any]] = None
    # Temperature scaling fitted at deploy (None: bundle from before it; the runtime uses T = 1).
    confidence: Optional[ConfidenceCalibration] = None
    # The training images' statistics the capture quality guard judges frames against (None: bundle
    # from before it; the guard then has no out-of-distribution check).
    quality_reference: Optional[QualityReference] = None
    # Held-out images + fp32 logits the device self-check runs every backend/precision on before it
    # classifies (bundle/selfcheck_samples.py; None: bundle from before it, the check is skipped).
    reference: Optional[SelfCheckSamples] = None
    # Which INT8 file ONNX Runtime CPU runs, its flavour, and the deploy machine's instruction set
    # (bundle/int8.py; None: bundle from before it).
    int8: Optional[Int8Record] = None
    # The deploy eval set's images per class name (the ones evaluated): the class mix a device's
    # decisions are compared with in `fleet status` (None: bundle from before it).
    eval_classes: Optional[Dict[str, int]] = None
    notes: List[str] = field(default_factory=list)
    files: Dict[str, str] = field(default_factory=dict, metadata={"required": True})
    extra: Dict[str, Any] = extra_field()

    def to_dict(self) -> Dict[str, Any]:
        d = super().to_dict()
        lead = {k: d.pop(k) for k in ("format", "package", "version", "created") if k in d}
        return {**lead, **d}  # what and whose it is first, for whoever opens the file

    @classmethod
    def from_dict(cls, data: Any, where: str = "") -> "Manifest":
        if not isinstance(data, dict):
            raise BundleError(f"not a clca-edge bundle manifest (a JSON {_kind(data)}, not an object); {FIX}")
        fmt = data.get("format")
        if fmt is None:
            raise BundleError(f"not a clca-edge bundle manifest (no 'format' field); {FIX}")
        if type(fmt) is int and 1 <= fmt < FORMAT_VERSION:
            for step in UPGRADES[fmt - 1:]:
                data = step(data)
        elif fmt != FORMAT_VERSION or type(fmt) is not int:
            newer = isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > FORMAT_VERSION
            fix = ("upgrade clca-edge on this machine, or re-deploy the bundle with this version" if newer
                   else FIX)
            raise _field_error("format", f"is {_short(fmt)}; this clca-edge reads formats "
                               f"{', '.join(map(str, READABLE_FORMATS))}", fix)
        return super().from_dict(data, where)

    def check(self, where: str) -> None:
        if not self.input.shape or len(self.input.shape) != 4:
            raise _field_error("input.shape", f"is {_short(self.input.shape)}, not [1, 3, H, W]")
        if self.default_variant is not None and self.default_variant not in self.variants:
            raise _field_error("default_variant", f"is {self.default_variant!r}, not one of the variants "
                               f"({', '.join(self.variants)})")
        if self.default_engine is not None and self.default_engine not in self.engines:
            raise _field_error("default_engine", f"is {self.default_engine!r}, not one of the engines",
                               "re-run clca-edge build-engine")

    def onnx_variants(self) -> List[Tuple[str, VariantRecord]]:
        return [(n, v) for n, v in self.variants.items() if v.file is not None]


def upgrade_format_1(data: Dict[str, Any]) -> Dict[str, Any]:
    """A format-1 manifest (same layout, looser rules) as format-2 JSON, before validation."""
    out = dict(data, format=2)
    engines = data.get("engines")
    if isinstance(engines, dict):
        moved = {}
        for name, rec in engines.items():
            if isinstance(rec, dict) and rec.get("builder") == "torch-tensorrt":
                key = rec.get("key") if isinstance(rec.get("key"), dict) else {}
                version = str(key.get("trt_version", "")).replace("torch-tensorrt", "").strip() or "unknown"
                moved[name] = {"file": rec.get("file"), "precision": key.get("precision"),
                               "torch_tensorrt_version": version, "gpu_name": key.get("gpu_name"),
                               "compute_capability": key.get("compute_capability"),
                               "status": rec.get("status", Status.UNVERIFIED.value),
                               "build_seconds": rec.get("build_seconds")}
                moved[name] = {k: v for k, v in moved[name].items() if v is not None}
        if moved:
            out["engines"] = {k: v for k, v in engines.items() if k not in moved}
            out["torch_tensorrt"] = {**(data.get("torch_tensorrt") or {}), **moved}
    variants = data.get("variants")
    if isinstance(variants, dict):
        fixed = {}
        for name, v in variants.items():
            # Format 1 left an ONNX variant that ONNX Runtime could not load "to verify on device".
            if isinstance(v, dict) and v.get("file") and v.get("status") == Status.TO_VERIFY.value:
                v = dict(v, status=Status.FAILED_TO_RUN.value)
            fixed[name] = v
        out["variants"] = fixed
    return out


# The keys format 2 kept beside ``model`` (the manifest's ``clca`` was ``model.clca`` enabled).
_MODEL_COPIES = ("backbone", "method", "clca")


def upgrade_format_2(data: Dict[str, Any]) -> Dict[str, Any]:
    """A format-2 manifest as format-3 JSON, before validation: the copies of the model config and of
    the preprocessing go (``preprocess_file`` is the preprocessing); a manifest without ``model``
    keeps its backbone and method there."""
    out = {k: v for k, v in data.items() if k not in _MODEL_COPIES and k != "preprocess"}
    out["format"] = 3
    if data.get("model") is None:
        model = {k: data[k] for k in ("backbone", "method") if data.get(k) is not None}
        if model:
            out["model"] = model
    return out


# UPGRADES[n - 1] turns format n into n + 1; reading format n runs UPGRADES[n - 1:] in order.
UPGRADES = (upgrade_format_1, upgrade_format_2)


__all__ = ["AccuracyRecord", "Agreement", "CalibrationRecord", "CheckpointRef", "ENGINE_SOURCE", "EngineBuildFailure",
           "EngineKey", "EngineRecord", "EngineTiming", "FORMAT_VERSION", "GateRecord", "GateBaseline",
           "LABELS_NAME", "MANIFEST_NAME", "Manifest", "ManifestRecord", "PRECISIONS", "PREPROCESS_NAME",
           "PairedTest", "READABLE_FORMATS", "REJECTIONS", "Status", "TORCH_TRT_PRECISIONS", "TensorSpec",
           "TorchTrtModule", "UNUSABLE", "UPGRADES", "VariantRecord", "WorstClass", "extra_field", "upgrade_format_1",
           "upgrade_format_2"]
