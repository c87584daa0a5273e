"""``build-engine``: build (or reuse) TensorRT engines inside a bundle, on the device they will run
on, check them against the accuracy gate when eval images are given, time them, and record the
fastest passing one as the default. Torch-free: this runs on the Jetson.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..core.errors import ConfigError
from ..bundle import (ENGINE_SOURCE, PRECISIONS, AccuracyRecord, Agreement, Bundle, BundleError, EngineBuildFailure,
                      EngineRecord, EngineTiming, GateBaseline, GateRecord, PairedTest, Status, WorstClass, load_bundle,
                      write_manifest)
from ..core.gate_stats import GateRule, TopOneRecorder, judge, paired_outcome
from .report import ENGINE_DIR, BuildEngineReport, EngineOutcome
from .tensorrt import (EngineBuildConfig, EngineError, EngineKey, TrtRunner, build_serialized_engine,
                       engine_key, gpu_info, import_tensorrt, write_plan)

log = logging.getLogger(__name__)

BUILDERS = ("tensorrt", "torch-tensorrt")
# The gate's reference: the bundle's fp32 ONNX in ONNX Runtime CPU, scored on the same images in the
# same pass as the engines, so the drop never compares two different image sets.
REFERENCE = "fp32-onnx"


@dataclass(frozen=True)
class BuildEngineConfig:
    bundle: Path
    precision: str = "auto"
    workspace_mb: int = 1024
    eval_data: Optional[Path] = None
    max_drop: Optional[float] = None  # default: the one deploy used
    builder: str = "tensorrt"
    checkpoint: Optional[Path] = None  # torch-tensorrt compiles from the checkpoint
    # bundle.signature.TrustedKeys: refuse a bundle not signed by one of them (--trusted-keys).
    trusted_keys: Any = None
    timing_iters: int = 50

    def __post_init__(self) -> None:
        if self.precision not in ("auto", *PRECISIONS):
            raise ConfigError(f"--precision {self.precision!r}; choose fp16, int8, fp32 or auto")
        if self.builder not in BUILDERS:
            raise ConfigError(f"--builder {self.builder!r}; choose one of {', '.join(BUILDERS)}")
        if self.workspace_mb < 1:
            raise ConfigError(f"--workspace-mb {self.workspace_mb} must be >= 1")

    @property
    def precisions(self) -> tuple[str, ...]:
        return ("fp16", "int8") if self.precision == "auto" else (self.precision,)


def _find_cached(bundle: Bundle, key: EngineKey) -> Optional[str]:
    """The cached plan for exactly ``key``; any other plan (other TRT, GPU, ONNX) is never loaded."""
    for fname, rec in bundle.engines.items():
        if rec.key == key and (bundle.root / rec.file).is_file():
            return fname
    return None


def _stale_for(bundle: Bundle, key: EngineKey) -> list[str]:
    out = []
    for fname, rec in bundle.engines.items():
        if rec.key.precision == key.precision and rec.key != key:
            out.append(f"{fname} (differs in {', '.join(rec.key.differs_in(key))})")
    return out


def build_engines(config: BuildEngineConfig, trt=None, memory=None,
                  runner_factory: Optional[Callable[[Any, bytes], Callable]] = None) -> BuildEngineReport:
    """Build/reuse, gate and time engines for ``config.precisions``; updates the bundle manifest.

    A ``.tar`` bundle is worked on through its persistent extracted folder (engines are cached
    there). One precision failing to build is recorded and does not cost the others; the manifest
    is always written for what was built. ``trt``/``memory``/``runner_factory`` are injectable so
    the logic is testable without a GPU.
    """
    if config.builder == "torch-tensorrt":
        from .torch_trt import build_with_torch_tensorrt

        return build_with_torch_tensorrt(config)
    bundle = load_bundle(config.bundle, trusted_keys=config.trusted_keys)
    trt = trt or import_tensorrt()
    gpu = gpu_info()
    make_runner = runner_factory or (lambda t, plan: TrtRunner(t, plan, memory=memory))
    manifest = bundle.manifest
    rule = gate_rule(manifest.gate, config.max_drop)

    data = None
    if config.eval_data is not None:
        from ..runtime.scoring import eval_set

        data = eval_set(config.eval_data, bundle.labels)

    job = _Job(bundle, trt, gpu, config, make_runner)
    default = manifest.default_engine
    try:
        outcomes = [job.engine(precision) for precision in config.precisions]
        if data is not None and job.runners:
            _gate(bundle, data, job.runners, rule)
        for o in outcomes:
            if o.file:
                o.status = o.record.status
        candidates = [o for o in outcomes if o.file and o.status in (Status.PASSED, Status.UNVERIFIED)
                      and o.record.timing is not None]
        verified = [o for o in candidates if o.status == Status.PASSED]
        pool = verified or candidates
        if pool:
            default = min(pool, key=lambda o: o.record.timing.p50_ms).file
            manifest.default_engine = default
            manifest.default_engine_verified = bool(verified)
    finally:
        for runner in job.runners.values():
            getattr(runner, "close", lambda: None)()
        write_manifest(bundle.root, manifest, new_files=job.new_files)  # whatever was built is kept
    return BuildEngineReport(bundle.root, outcomes, default, gpu.to_dict(), str(trt.__version__))


class _Job:
    """Per-precision build/reuse state of one build-engine run."""

    def __init__(self, bundle: Bundle, trt, gpu, config: BuildEngineConfig, make_runner) -> None:
        self.bundle, self.trt, self.gpu, self.config, self.make_runner = bundle, trt, gpu, config, make_runner
        self.engines = bundle.manifest.engines
        self.failures = bundle.manifest.engine_build_failures
        self.runners: dict[str, tuple[Callable, EngineRecord]] = {}
        self.checker = None  # runtime.selfcheck.SelfChecker, made on the first engine
        self.new_files: list[str] = []

    def engine(self, precision: str) -> EngineOutcome:
        bundle, src_name = self.bundle, ENGINE_SOURCE[precision]
        src = bundle.variants.get(src_name)
        if src is None or src.path is None:
            return EngineOutcome(precision, None, "skipped", note=f"bundle has no {src_name} ONNX")
        if src.status == Status.REJECTED:
            return EngineOutcome(precision, None, "skipped",
                                 note=f"the {src_name} ONNX was rejected by the accuracy gate at deploy")
        if not src.status.usable:
            return EngineOutcome(precision, None, "skipped", note=f"the {src_name} ONNX is {src.status} at deploy")
        key = engine_key(self.trt, self.gpu, precision, bundle.sha256(src.path))  # verified at load
        fname = _find_cached(bundle, key)
        reused = fname is not None
        if reused:
            plan = (bundle.root / self.engines[fname].file).read_bytes()
            log.info("reusing cached engine %s", fname)
        else:
            for stale in _stale_for(bundle, key):
                log.warning("engine %s was built elsewhere; not loading it, building for this device", stale)
            fname = key.file_name()
            t0 = time.perf_counter()
            try:
                plan = build_serialized_engine(self.trt, src.path, EngineBuildConfig(precision, self.config.workspace_mb))
            except EngineError as e:
                log.error("%s engine not built: %s", precision, e)
                self.failures[fname] = EngineBuildFailure(key=key, source=src_name, note=str(e),
                                                          workspace_mb=self.config.workspace_mb)
                return EngineOutcome(precision, None, Status.BUILD_FAILED, note=str(e))
            rel = f"{ENGINE_DIR}/{fname}"
            write_plan(bundle.root / rel, plan)
            self.new_files.append(rel)
            self.failures.pop(fname, None)
            self.engines[fname] = EngineRecord(file=rel, key=key, source=src_name, status=Status.UNVERIFIED,
                                               workspace_mb=self.config.workspace_mb,
                                               build_seconds=round(time.perf_counter() - t0, 3),
                                               gpu_info_source=self.gpu.source)
        rec = self.engines[fname]
        try:
            runner = self.make_runner(self.trt, plan)
            timing = runner.time_ms(iters=self.config.timing_iters) if hasattr(runner, "time_ms") else None
            rec.timing = EngineTiming.from_dict(timing, "timing") if timing is not None else None
        except EngineError as e:
            rec.status = Status.FAILED_TO_RUN
            rec.note = str(e)
        else:
            if rec.status == Status.FAILED_TO_RUN:  # runs now (e.g. CUDA bindings installed since)
                rec.status = Status.UNVERIFIED
                rec.note = None
            if self._self_check(precision, runner, rec):
                self.runners[precision] = (runner, rec)
        return EngineOutcome(precision, fname, rec.status, reused=reused, record=rec)

    def _self_check(self, precision: str, runner, rec: EngineRecord) -> bool:
        """Before an engine is gated or can become the default, it classifies the bundle's reference
        samples like the fp32 ONNX did at deploy (runtime.selfcheck). A failure rejects it (the
        runtime never picks it), a check that cannot run marks it failed to run; a bundle without
        reference samples skips this with one warning."""
        from ..runtime.model import self_checker
        from ..runtime.selfcheck import COULD_NOT_RUN, FAILED
        from ..runtime.tensorrt_backend import TensorRTClassifier

        if self.checker is None:
            self.checker = self_checker(self.bundle)
        clf = TensorRTClassifier(runner, precision, source_file=self.bundle.root / rec.file,
                                 key={"tensorrt": str(self.trt.__version__), "gpu": self.gpu.name,
                                      "compute_capability": self.gpu.compute_capability})
        res = self.checker.check(clf, use_cache=False)
        rec.self_check = {k: v for k, v in res.to_dict().items() if k != "key"}
        if res.status in (FAILED, COULD_NOT_RUN):
            log.error("%s engine not used: %s", precision, res.summary())
            rec.status = Status.REJECTED if res.status == FAILED else Status.FAILED_TO_RUN
            rec.note = res.summary()
            getattr(runner, "close", lambda: None)()
            return False
        if rec.status == Status.REJECTED and "device self-check" in (rec.note or ""):
            rec.status, rec.note = Status.UNVERIFIED, None  # passes now (a rebuilt or fixed engine)
        return True


def gate_rule(deployed: Optional[GateRecord], max_drop: Optional[float]) -> GateRule:
    """The engines' gate is the one deploy used (core/gate_stats.py), ``--max-drop`` replacing its
    fixed bound when given. A bundle from before the statistical gate (no ``alpha``) keeps its
    fixed rule: drop above ``max_drop`` (1 point unless set), no agreement bound."""
    if deployed is None or deployed.alpha is None:
        fixed = next(d for d in (max_drop, deployed.max_drop if deployed else None, 1.0) if d is not None)
        return GateRule(min_agreement=0.0, max_drop=fixed)
    return GateRule(alpha=deployed.alpha,
                    min_agreement=deployed.min_agreement if deployed.min_agreement is not None else 0.0,
                    max_drop=max_drop if max_drop is not None else deployed.max_drop)


def _scored(data, spec, runners: dict[str, Callable]):
    """One pass of ``runners`` (REFERENCE among them) over ``data``: (EvalResult, the labels of the
    images read, each runner's top-1 class per image)."""
    from ..runtime.scoring import evaluate

    recorders = {n: TopOneRecorder(r) for n, r in runners.items()}
    res = evaluate(data, spec, recorders, parity_against=REFERENCE)
    skipped = set(res.skipped)
    return res, [label for p, label in data.items if p not in skipped], {n: r.top1 for n, r in recorders.items()}


def _gate(bundle: Bundle, data, runners: dict[str, tuple[Callable, EngineRecord]], rule: GateRule) -> None:
    """Score the fp32 ONNX (ONNX Runtime CPU) and every engine on the same images in one pass; the
    drop and the logit agreement of each engine are against that reference."""
    from ..runtime.scoring import ort_runner

    fp32 = bundle.variants.get("fp32")
    if fp32 is None or fp32.path is None:
        raise BundleError(f"bundle {bundle.source} has no fp32 ONNX to score the engines against")
    try:
        ref = ort_runner(fp32.path, bundle.manifest.input.name, bundle.manifest.output.name)
    except ImportError as e:
        raise EngineError(f"--eval-data scores the fp32 ONNX with ONNX Runtime as the reference ({e}); "
                          "install onnxruntime or leave out --eval-data") from None
    engines = {p: r for p, (r, _) in runners.items()}
    if getattr(data, "images", False) is None and len(engines) > 1:
        from ..core.image_cache import RamImageCache, ram_budget

        # Should one engine fail mid-run, the others are scored again one by one: from decoded
        # images kept in memory (a quarter of what is free), not from the files.
        data.images = RamImageCache(bundle.preprocess, ram_budget().bytes // 2)
    try:
        scored = _scored(data, bundle.preprocess, {REFERENCE: ref, **engines})
        per = {p: scored for p in engines}
    except EngineError as e:  # one engine failing mid-run: score each alone so the others keep a verdict
        log.warning("an engine failed during the accuracy gate (%s); scoring each engine separately", e)
        per = {}
        for p, run in engines.items():
            try:
                per[p] = _scored(data, bundle.preprocess, {REFERENCE: ref, p: run})
            except EngineError as err:
                runners[p][1].status = Status.FAILED_TO_RUN
                runners[p][1].note = str(err)
    for p, scored in per.items():
        _record_gate(runners[p][1], p, scored, rule, data)


def _record_gate(rec: EngineRecord, precision: str, scored, rule: GateRule, data) -> None:
    from ..runtime.scoring import drop_and_worst

    res, labels, top1 = scored
    ref, acc = res.accuracy[REFERENCE], res.accuracy[precision]
    drop, worst = drop_and_worst(ref, acc)
    rec.accuracy = AccuracyRecord.from_dict(acc.to_dict(), "accuracy")
    rec.skipped_images = len(res.skipped)
    rec.reference = GateBaseline(variant="fp32", runtime="onnxruntime CPU", eval_data=str(data.root),
                                  accuracy=AccuracyRecord.from_dict(ref.to_dict(), "reference.accuracy"))
    rec.agreement = Agreement(vs="fp32 ONNX (onnxruntime CPU)", images=acc.count,
                              max_abs_logit_diff=res.parity.get(f"{REFERENCE}_vs_{precision}"),
                              top1_agreement=res.agreement.get(precision))
    rec.drop = round(drop, 4)
    rec.worst_classes = [WorstClass(c, round(d, 2)) for c, d in worst]
    verdict = judge(paired_outcome(labels, top1[REFERENCE], top1[precision]), rule)
    o = verdict.outcome
    rec.paired = PairedTest(images=o.images, agreement=round(o.agreement, 4), lost=o.lost, gained=o.gained,
                            p_value=round(verdict.p_value, 6))
    rec.status = Status.PASSED if verdict.passed else Status.REJECTED
    rec.rejected_by = verdict.rule or None
    rec.note = verdict.reason or None
