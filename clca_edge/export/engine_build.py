"""``build-engine``: build (or reuse) TensorRT engines inside a bundle, on the device they will run
on, check them against the accuracy gate when eval images are given, time them, and record the
fastest passing one as the default. Torch-free: this runs on the Jetson.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import ConfigError
from ..runtime.bundle import (PASSED, REJECTED, UNVERIFIED, Bundle, BundleError, load_bundle, sha256_file,
                              write_manifest)
from ..runtime.tensorrt_engine import (EngineBuildConfig, EngineError, EngineKey, TrtRunner, build_serialized_engine,
                                       engine_key, gpu_info, import_tensorrt, write_plan)

log = logging.getLogger(__name__)

ENGINE_DIR = "engines"
# Which ONNX variant an engine precision is built from: fp16 is a builder flag on fp32.
ENGINE_SOURCE = {"fp32": "fp32", "fp16": "fp32", "int8": "int8"}
BUILDERS = ("tensorrt", "torch-tensorrt")


@dataclass(frozen=True)
class BuildEngineConfig:
    bundle: Path
    precision: str = "auto"
    workspace_mb: int = 1024
    eval_data: Optional[Path] = None
    max_drop: Optional[float] = None  # default: the one deploy used
    builder: str = "tensorrt"
    checkpoint: Optional[Path] = None  # torch-tensorrt compiles from the checkpoint
    timing_iters: int = 50

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "fp32", "fp16", "int8"):
            raise ConfigError(f"--precision {self.precision!r}; choose fp16, int8, fp32 or auto")
        if self.builder not in BUILDERS:
            raise ConfigError(f"--builder {self.builder!r}; choose one of {', '.join(BUILDERS)}")
        if self.workspace_mb < 1:
            raise ConfigError(f"--workspace-mb {self.workspace_mb} must be >= 1")

    @property
    def precisions(self) -> tuple[str, ...]:
        return ("fp16", "int8") if self.precision == "auto" else (self.precision,)


@dataclass
class EngineOutcome:
    precision: str
    file: Optional[str]
    status: str
    reused: bool = False
    note: str = ""
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class BuildEngineReport:
    bundle: Path
    outcomes: list[EngineOutcome]
    default_engine: Optional[str]
    gpu: dict[str, str]
    trt_version: str


def _find_cached(bundle: Bundle, key: EngineKey) -> Optional[str]:
    """The cached plan for exactly ``key``; any other plan (other TRT, GPU, ONNX) is never loaded."""
    for fname, rec in bundle.engines.items():
        try:
            if EngineKey.from_dict(rec["key"]) == key and (bundle.root / rec["file"]).is_file():
                return fname
        except (KeyError, TypeError):
            continue
    return None


def _stale_for(bundle: Bundle, key: EngineKey) -> list[str]:
    out = []
    for fname, rec in bundle.engines.items():
        k = rec.get("key", {})
        if k.get("precision") == key.precision and EngineKey.from_dict(k) != key:
            diff = [f for f in ("trt_version", "gpu_name", "compute_capability", "onnx_sha256") if k.get(f) != getattr(key, f)]
            out.append(f"{fname} (differs in {', '.join(diff)})")
    return out


def build_engines(config: BuildEngineConfig, trt=None, memory=None,
                  runner_factory: Optional[Callable[[Any, bytes], Callable]] = None) -> BuildEngineReport:
    """Build/reuse, gate and time engines for ``config.precisions``; updates the bundle manifest.

    ``trt``/``memory``/``runner_factory`` are injectable so the logic is testable without a GPU.
    """
    if config.builder == "torch-tensorrt":
        from .torch_trt import build_with_torch_tensorrt

        return build_with_torch_tensorrt(config)
    if Path(config.bundle).is_file():
        raise BundleError(f"{config.bundle} is an archive; extract it first (tar xf) so engines can be cached in it")
    bundle = load_bundle(config.bundle)
    trt = trt or import_tensorrt()
    gpu = gpu_info()
    make_runner = runner_factory or (lambda t, plan: TrtRunner(t, plan, memory=memory))
    manifest = bundle.manifest
    engines = manifest.setdefault("engines", {})
    max_drop = config.max_drop if config.max_drop is not None else manifest.get("gate", {}).get("max_drop", 1.0)
    fp32_acc = manifest["variants"]["fp32"].get("accuracy", {}).get("top1")

    data = None
    if config.eval_data is not None:
        from .accuracy import eval_set

        data = eval_set(config.eval_data, bundle.labels)

    outcomes: list[EngineOutcome] = []
    for precision in config.precisions:
        src_name = ENGINE_SOURCE[precision]
        src = bundle.variants.get(src_name)
        if src is None or src.path is None:
            outcomes.append(EngineOutcome(precision, None, "skipped", note=f"bundle has no {src_name} ONNX"))
            continue
        if src.status == REJECTED:
            outcomes.append(EngineOutcome(precision, None, "skipped",
                                          note=f"the {src_name} ONNX was rejected by the accuracy gate at deploy"))
            continue
        key = engine_key(trt, gpu, precision, sha256_file(src.path))
        cached = _find_cached(bundle, key)
        reused = cached is not None
        if reused:
            fname = cached
            plan = (bundle.root / engines[fname]["file"]).read_bytes()
            log.info("reusing cached engine %s", fname)
        else:
            for stale in _stale_for(bundle, key):
                log.warning("engine %s was built elsewhere; not loading it, building for this device", stale)
            fname = key.file_name()
            t0 = time.perf_counter()
            plan = build_serialized_engine(trt, src.path, EngineBuildConfig(precision, config.workspace_mb))
            build_s = time.perf_counter() - t0
            write_plan(bundle.root / ENGINE_DIR / fname, plan)
            engines[fname] = {"file": f"{ENGINE_DIR}/{fname}", "key": key.to_dict(), "source": src_name,
                              "workspace_mb": config.workspace_mb, "build_seconds": round(build_s, 3),
                              "gpu_info_source": gpu.source, "status": UNVERIFIED}
        rec = engines[fname]
        runner = None
        try:
            runner = make_runner(trt, plan)
            rec["timing"] = runner.time_ms(iters=config.timing_iters) if hasattr(runner, "time_ms") else None
        except EngineError as e:
            rec["status"] = "failed to run"
            rec["note"] = str(e)
        if data is not None and runner is not None:
            from .accuracy import drop_and_worst, evaluate

            res = evaluate(data, bundle.preprocess, {precision: runner})
            acc = res.accuracy[precision]
            rec["accuracy"] = acc.to_dict()
            rec["skipped_images"] = len(res.skipped)
            if fp32_acc is not None:
                ref = _reference_accuracy(manifest)
                drop, worst = drop_and_worst(ref, acc)
                rec["drop"] = round(drop, 4)
                rec["worst_classes"] = [{"class": c, "drop": round(d, 2)} for c, d in worst]
                rec["status"] = PASSED if drop <= max_drop else REJECTED
        outcomes.append(EngineOutcome(precision, fname, rec["status"], reused=reused, record=rec))

    candidates = [o for o in outcomes if o.file and o.status in (PASSED, UNVERIFIED) and o.record.get("timing")]
    verified = [o for o in candidates if o.status == PASSED]
    pool = verified or candidates
    default = min(pool, key=lambda o: o.record["timing"]["p50_ms"]).file if pool else manifest.get("default_engine")
    if pool:
        manifest["default_engine"] = default
        manifest["default_engine_verified"] = bool(verified)
    write_manifest(bundle.root, manifest)
    return BuildEngineReport(bundle.root, outcomes, default, gpu.to_dict(), str(trt.__version__))


def _reference_accuracy(manifest: dict[str, Any]):
    from .accuracy import Accuracy

    a = manifest["variants"]["fp32"]["accuracy"]
    return Accuracy(top1=a["top1"], per_class=dict(a["per_class"]), count=a.get("images", 0))
