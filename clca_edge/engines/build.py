"""``build-engine``: build (or reuse) a bundle's TensorRT engines on the device they will run on,
check them against the accuracy gate when eval images are given, time them, and record the fastest
passing one as the default. Torch-free: this runs on the Jetson.

Where they go: this device's cache folder for the bundle (``runtime/engine_cache.py``, ``--cache-dir``),
never the bundle, which stays byte for byte as it was (read-only media, signed bundles, a ``.tar``'s
extraction). Only deploy, building right away on a Jetson the bundle it has just written, records
engines in that bundle (``into_bundle``): the bundle's own engines, which the device also finds and
which build-engine here reuses (copied into the cache) when one fits this device.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
    cache_dir: Optional[Path] = None  # this device's cache folder (runtime/device_cache.py; None: the default)
    # deploy only: record the engines in the bundle it has just written (the bundle's own engines).
    into_bundle: bool = False

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


class _BundleTarget:
    """Deploy's own engines: plans under the fresh bundle's ``engines/``, recorded in its manifest."""

    where = "bundle"

    def __init__(self, bundle: Bundle) -> None:
        self.bundle, self.record, self.folder = bundle, bundle.manifest, bundle.root
        self.new_files: list[str] = []

    def plan_name(self, key: EngineKey, workspace_mb: int) -> str:
        return key.file_name()

    def path(self, rel: str) -> Path:
        return self.bundle.root / rel

    def read_plan(self, rel: str) -> bytes:
        return self.path(rel).read_bytes()  # verified at load

    def write_plan(self, fname: str, plan: bytes) -> str:
        rel = f"{ENGINE_DIR}/{fname}"
        write_plan(self.bundle.root / rel, plan)
        self.new_files.append(rel)
        return rel

    def save(self) -> None:
        write_manifest(self.bundle.root, self.record, new_files=self.new_files)


class _CacheTarget:
    """build-engine's engines: this device's cache for the bundle (runtime.engine_cache.DeviceEngines)."""

    where = "cache"

    def __init__(self, engines) -> None:
        self.engines, self.record, self.folder = engines, engines.cache, engines.folder

    def plan_name(self, key: EngineKey, workspace_mb: int) -> str:
        from ..runtime.engine_cache import cache_plan_name

        return cache_plan_name(key, workspace_mb)

    def path(self, rel: str) -> Path:
        return self.engines.path(rel)

    def read_plan(self, rel: str) -> bytes:
        return self.engines.read_plan(rel)

    def write_plan(self, fname: str, plan: bytes) -> str:
        return self.engines.write_plan(fname, plan)

    def save(self) -> None:
        self.engines.save()


@contextlib.contextmanager
def _target(bundle: Bundle, config: BuildEngineConfig):
    """Where this run's engines go (deploy: the bundle; else the device cache, one build at a time)."""
    if config.into_bundle:
        yield _BundleTarget(bundle)
        return
    from ..runtime.device_cache import bundle_cache_dir, bundle_digest
    from ..runtime.engine_cache import DeviceEngines, build_lock

    sha = bundle_digest(bundle)
    folder = bundle_cache_dir(sha, config.cache_dir)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(build_lock(folder))  # fails before minutes of building, not after
        except OSError as e:
            raise EngineError(f"cannot write this device's cache folder {folder} ({e.strerror or e}); set "
                              "--cache-dir or CLCA_EDGE_CACHE_DIR to a writable folder (the bundle itself is never "
                              "written)") from None
        yield _CacheTarget(DeviceEngines.open(sha, config.cache_dir))  # read under the lock


def _stale_for(engines: dict, key: EngineKey) -> list[str]:
    out = []
    for fname, rec in engines.items():
        if rec.key.precision == key.precision and rec.key != key:
            out.append(f"{fname} (differs in {', '.join(rec.key.differs_in(key))})")
    return out


def build_engines(config: BuildEngineConfig, trt=None, memory=None,
                  runner_factory: Optional[Callable[[Any, bytes], Callable]] = None) -> BuildEngineReport:
    """Build/reuse, gate and time engines for ``config.precisions`` into this device's cache (deploy:
    into the bundle); the bundle itself is only read.

    One precision failing to build is recorded and does not cost the others; the record is always
    written for what was built. ``trt``/``memory``/``runner_factory`` are injectable so the logic is
    testable without a GPU.
    """
    if config.builder == "torch-tensorrt":
        from .torch_trt import build_with_torch_tensorrt

        return build_with_torch_tensorrt(config)
    bundle = load_bundle(config.bundle, trusted_keys=config.trusted_keys)
    trt = trt or import_tensorrt()
    make_runner = runner_factory or (lambda t, plan: TrtRunner(t, plan, memory=memory))
    data = None
    if config.eval_data is not None:
        from ..runtime.scoring import eval_set

        data = eval_set(config.eval_data, bundle.labels)
    with _target(bundle, config) as target:
        job = _Job(bundle, target, trt, gpu_info(), config, make_runner)
        try:
            outcomes = [job.engine(precision) for precision in config.precisions]
            default = _gate_and_pick(job, outcomes, data, gate_rule(bundle.manifest.gate, config.max_drop))
        finally:
            for runner in job.runners.values():
                getattr(runner, "close", lambda: None)()
            target.save()  # whatever was built is kept
    return BuildEngineReport(bundle.root, outcomes, default, job.gpu.to_dict(), str(trt.__version__),
                             engine_dir=target.folder, where=target.where)


def _gate_and_pick(job: "_Job", outcomes: list[EngineOutcome], data, rule: GateRule) -> Optional[str]:
    """Gate the engines that ran (with eval images), then record the fastest passing one (else the
    fastest unverified one) as the default; returns the default engine."""
    record = job.target.record
    if data is not None and job.runners:
        _gate(job.bundle, data, job.runners, rule)
    for o in outcomes:
        if o.file:
            o.status = o.record.status
    candidates = [o for o in outcomes if o.file and o.status in (Status.PASSED, Status.UNVERIFIED)
                  and o.record.timing is not None]
    verified = [o for o in candidates if o.status == Status.PASSED]
    pool = verified or candidates
    if pool:
        record.default_engine = min(pool, key=lambda o: o.record.timing.p50_ms).file
        record.default_engine_verified = bool(verified)
    return record.default_engine


class _Job:
    """Per-precision build/reuse state of one build-engine run."""

    def __init__(self, bundle: Bundle, target, trt, gpu, config: BuildEngineConfig, make_runner) -> None:
        self.bundle, self.target, self.trt, self.gpu = bundle, target, trt, gpu
        self.config, self.make_runner = config, make_runner
        self.engines = target.record.engines
        self.failures = target.record.engine_build_failures
        self.runners: dict[str, tuple[Callable, EngineRecord]] = {}
        self.checker = None  # runtime.selfcheck.SelfChecker, made on the first engine

    def _reusable(self, key: EngineKey) -> Optional[tuple[str, bytes]]:
        """(name, plan) of an engine built for exactly ``key`` with this workspace: one in the target,
        else (building into the cache) the bundle's own, copied into the cache with its record."""
        ws = self.config.workspace_mb
        for fname, rec in self.engines.items():
            if rec.key == key and rec.workspace_mb == ws and self.target.path(rec.file).is_file():
                try:
                    return fname, self.target.read_plan(rec.file)
                except (BundleError, OSError) as e:  # changed on disk: built again under the same name
                    log.warning("not reusing %s: %s", fname, e)
        if self.target.where == "bundle":
            return None
        for fname, rec in self.bundle.engines.items():
            if rec.key == key and rec.workspace_mb == ws:
                plan = (self.bundle.root / rec.file).read_bytes()  # verified at load
                name = self.target.plan_name(key, ws)
                self.engines[name] = dataclasses.replace(rec, file=self.target.write_plan(name, plan))
                log.info("reusing the bundle's own engine %s (copied into this device's cache)", fname)
                return name, plan
        return None

    def _build(self, precision: str, src, key: EngineKey) -> tuple[Optional[str], Optional[bytes], str]:
        """Build a plan for ``key`` into the target: (name, plan, "") or (None, None, why not)."""
        for stale in _stale_for(self.engines, key):
            log.warning("engine %s was built elsewhere; not loading it, building for this device", stale)
        ws = self.config.workspace_mb
        fname = self.target.plan_name(key, ws)
        t0 = time.perf_counter()
        try:
            plan = build_serialized_engine(self.trt, src.path, EngineBuildConfig(precision, ws))
        except EngineError as e:
            log.error("%s engine not built: %s", precision, e)
            self.failures[fname] = EngineBuildFailure(key=key, source=src.name, note=str(e), workspace_mb=ws)
            return None, None, str(e)
        rel = self.target.write_plan(fname, plan)
        self.failures.pop(fname, None)
        self.engines[fname] = EngineRecord(file=rel, key=key, source=src.name, status=Status.UNVERIFIED,
                                           workspace_mb=ws, build_seconds=round(time.perf_counter() - t0, 3),
                                           gpu_info_source=self.gpu.source)
        if self.target.where == "cache":
            # kept as soon as built: a unit stopped mid-run (systemd's start timeout) keeps what it built
            self.target.save()
        return fname, plan, ""

    def _source(self, precision: str):
        """The ONNX variant a ``precision`` engine is built from, or why there is none to build."""
        src_name = ENGINE_SOURCE[precision]
        src = self.bundle.variants.get(src_name)
        if src is None or src.path is None:
            return None, f"bundle has no {src_name} ONNX"
        if src.status == Status.REJECTED:
            return None, f"the {src_name} ONNX was rejected by the accuracy gate at deploy"
        if not src.status.usable:
            return None, f"the {src_name} ONNX is {src.status} at deploy"
        return src, ""

    def engine(self, precision: str) -> EngineOutcome:
        src, why = self._source(precision)
        if src is None:
            return EngineOutcome(precision, None, "skipped", note=why)
        key = engine_key(self.trt, self.gpu, precision, self.bundle.sha256(src.path))  # verified at load
        found = self._reusable(key)
        reused = found is not None
        if found is not None:
            fname, plan = found
            log.info("reusing cached engine %s", fname)
        else:
            fname, plan, why = self._build(precision, src, key)
            if fname is None:
                return EngineOutcome(precision, None, Status.BUILD_FAILED, note=why)
        rec = self.engines[fname]
        self._run(precision, plan, rec)
        return EngineOutcome(precision, fname, rec.status, reused=reused, record=rec,
                             path=self.target.path(rec.file))

    def _run(self, precision: str, plan: bytes, rec: EngineRecord) -> None:
        """Time the plan and self-check it; an engine that passes joins ``runners`` for the gate."""
        try:
            runner = self.make_runner(self.trt, plan)
            timing = runner.time_ms(iters=self.config.timing_iters) if hasattr(runner, "time_ms") else None
            rec.timing = EngineTiming.from_dict(timing, "timing") if timing is not None else None
        except EngineError as e:
            rec.status = Status.FAILED_TO_RUN
            rec.note = str(e)
            return
        if rec.status == Status.FAILED_TO_RUN:  # runs now (e.g. CUDA bindings installed since)
            rec.status = Status.UNVERIFIED
            rec.note = None
        if self._self_check(precision, runner, rec):
            self.runners[precision] = (runner, rec)

    def _self_check(self, precision: str, runner, rec: EngineRecord) -> bool:
        """Before an engine is gated or can become the default, it classifies the bundle's reference
        samples like the fp32 ONNX did at deploy (runtime.selfcheck). A failure rejects it (the
        runtime never picks it), a check that cannot run marks it failed to run; a bundle without
        reference samples skips this with one warning."""
        from ..runtime.model import self_checker
        from ..runtime.selfcheck import COULD_NOT_RUN, FAILED
        from ..runtime.tensorrt_backend import TensorRTClassifier

        if self.checker is None:
            self.checker = self_checker(self.bundle, self.config.cache_dir)
        # a cached plan's verdict is kept under its sha256, where the runtime looks it up (no re-check at start)
        plan_sha = self.target.record.files.get(rec.file) if self.target.where == "cache" else None
        clf = TensorRTClassifier(runner, precision, source_file=self.target.path(rec.file), source_sha256=plan_sha,
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
