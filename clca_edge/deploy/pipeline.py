"""``deploy``: checkpoint -> verified bundle of fp32 / INT8 (Q/DQ) / fp16 ONNX variants, each
checked against the accuracy gate, plus what the device needs to build its TensorRT engines.

Everything is written to a temporary folder next to ``--out`` and renamed into place at the end,
so a failure never leaves a half-written bundle.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from .. import __version__
from ..core.errors import ClcaEdgeError, ConfigError, ExportError
from ..bundle import (LABELS_NAME, PREPROCESS_NAME, AccuracyRecord, CalibrationRecord, CheckpointRef, GateRecord,
                      Manifest, Status, TensorSpec, VariantRecord, WorstClass, load_bundle, write_manifest)
from ..engines.tensorrt import trtexec_command
from ..core.outputs import replace_dir
from .calibration import CalibrationConfig

log = logging.getLogger(__name__)

TARGETS = ("jetson-orin", "cpu")
VARIANT_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
CALIB_MANIFEST = "calibration/manifest.json"
# A jetson-orin bundle's second INT8 file: the ONNX Runtime CPU flavour, for the device's CPU fallback.
CPU_INT8_VARIANT, CPU_INT8_FILE = "int8-cpu", "model.int8-cpu.onnx"


# Where the bundle goes and what --force may replace: deploy/output.py (re-exported for callers).
from .output import BundleExistsError, check_out, pack_tar, tar_path, temp_bundle_dir  # noqa: E402,F401


@dataclass(frozen=True)
class DeployConfig:
    checkpoint: Path
    out: Path
    calib_data: Path
    eval_data: Path
    target: str = "jetson-orin"
    precisions: tuple[str, ...] = ("int8", "fp16", "fp32")
    max_drop: float = 1.0
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    tar: bool = False
    force: bool = False
    parity_images: int = 16
    opset: int = 17
    workspace_mb: int = 1024
    build_engines: Optional[bool] = None  # None: build when TensorRT is importable and target is jetson-orin
    sign_key: Optional[Path] = None  # Ed25519 private key (clca-edge keygen): writes manifest.sig
    # The field robustness suite on --eval-data per variant (robustness/suite.py): "full" (every
    # perturbation at 3 severities), "quick" (severity 2 only) or "off"; recorded in the manifest.
    field_suite: str = "full"
    # Reject a variant whose worst perturbation drops more than this many top-1 points (None: record only).
    max_field_drop: Optional[float] = None

    def __post_init__(self) -> None:
        from ..robustness.suite import SUITES

        if self.field_suite not in SUITES:
            raise ConfigError(f"--field-suite {self.field_suite!r}; choose one of {', '.join(SUITES)}")
        if self.max_field_drop is not None and self.max_field_drop < 0:
            raise ConfigError(f"--max-field-drop {self.max_field_drop} must be >= 0 (points of top-1)")
        if self.max_field_drop is not None and self.field_suite == "off":
            raise ConfigError("--max-field-drop needs the field suite; drop --field-suite off")
        if self.target not in TARGETS:
            raise ConfigError(f"--target {self.target!r}; choose one of {', '.join(TARGETS)}")
        bad = [p for p in self.precisions if p not in VARIANT_FILES]
        if bad or not self.precisions:
            raise ConfigError(f"--precision {','.join(self.precisions)!r}: each must be one of int8, fp16, fp32")
        if self.max_drop < 0:
            raise ConfigError(f"--max-drop {self.max_drop} must be >= 0 (points of top-1)")
        if self.target == "jetson-orin" and self.opset > 17:
            raise ConfigError(f"opset {self.opset} > 17: TensorRT 8.5/8.6 on JetPack 5/6.0 parse up to 17")


@dataclass
class VariantReport:
    name: str
    status: Status
    top1: Optional[float] = None
    drop: Optional[float] = None
    worst: list[tuple[str, float]] = field(default_factory=list)
    note: str = ""
    robustness: Any = None  # robustness.evaluate.RobustnessReport on the gate's images (None: suite off)
    field_rejected: bool = False  # rejected by --max-field-drop (its worst perturbation named in note)


@dataclass
class DeployReport:
    bundle: Path
    tar: Optional[Path]
    variants: list[VariantReport]
    default_variant: Optional[str]
    parity: dict[str, float]
    eval_images: int
    eval_skipped: int
    calib_images: int
    calib_excluded: int
    engines: Any = None
    signed_by: Optional[str] = None  # key id of --sign-key
    confidence: Any = None          # core.confidence.ConfidenceCalibration (temperature, ECE before/after)
    quality_reference: Any = None   # core.image_stats.QualityReference of the training images
    reference: Any = None           # bundle.reference.ReferenceSet: the device self-check's samples

    @property
    def rejected(self) -> list[VariantReport]:
        return [v for v in self.variants if v.status == Status.REJECTED]

    @property
    def failed(self) -> list[VariantReport]:
        """Variants ONNX Runtime could not load here: recorded as failed to run, never used."""
        return [v for v in self.variants if v.status == Status.FAILED_TO_RUN]


def _tensorrt_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


def run_deploy(config: DeployConfig, progress: Optional[Callable[[str], None]] = None) -> DeployReport:
    """Build, gate and write the bundle. ``progress(message)`` hears each stage; if it also has
    ``expect(n)``/``advance()`` (cli.progress.StageProgress), it hears the images of the calibration
    and gate stages too."""
    say = progress or (lambda msg: log.info(msg))
    from ..training.checkpoint import find_checkpoint, load_checkpoint

    # Before any work: a refused --out costs nothing and nothing at it is touched.
    check_out(Path(config.out), config.force, config.tar, Path(config.checkpoint), config.calib_data,
              config.eval_data)
    if config.sign_key is not None:  # a bad key is one line now, not after minutes of work
        from ..bundle.signature import load_private_key

        load_private_key(config.sign_key)
    ckpt = find_checkpoint(config.checkpoint)
    say(f"loading {ckpt}")
    model, meta = load_checkpoint(ckpt)
    classes = list(meta.class_names)
    data = _eval_set(config.eval_data, classes)
    from ..data.cache import checkpoint_cache

    # The gate reads images the training run decoded (its disk cache) rather than decoding them again.
    data.images = checkpoint_cache(ckpt, meta)
    tmp = temp_bundle_dir(Path(config.out))
    try:
        report = _build(config, tmp, model, meta, ckpt, data, say)
        if config.sign_key is not None:
            from ..bundle.signature import sign_bundle

            report.signed_by = sign_bundle(tmp, config.sign_key).key_id
        replace_dir(tmp, Path(config.out))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report.bundle = Path(config.out)
    load_bundle(report.bundle, trusted_keys=_own_key(config))  # verifies every hash (and the signature) we wrote
    if config.tar:
        report.tar = pack_tar(report.bundle, tar_path(Path(config.out)))
        with tempfile.TemporaryDirectory(prefix="clca-verify-") as d:
            load_bundle(report.tar, extract_to=d, trusted_keys=_own_key(config))
    want_engines = config.build_engines
    if want_engines is None:
        want_engines = config.target == "jetson-orin" and _tensorrt_available()
    if want_engines:
        from ..engines.build import BuildEngineConfig, build_engines

        precision = engine_precision(config.precisions)
        if precision is None:
            say("TensorRT found, but no fp16/int8 variant requested: no engine to build")
        else:
            say("TensorRT found: building engines on this machine")
            report.engines = build_engines(BuildEngineConfig(bundle=report.bundle, precision=precision,
                                                             workspace_mb=config.workspace_mb,
                                                             eval_data=config.eval_data, max_drop=config.max_drop))
    return report


def _expect(say, total: int) -> None:
    """Tell a progress reporter that offers it (cli.progress.StageProgress) how many items the stage has."""
    expect = getattr(say, "expect", None)
    if expect is not None:
        expect(total)


def _eval_set(path: Path, classes: list[str]):
    """--eval-data: a folder of class folders, or a split file (a --val-split run's RUN/split/val.csv,
    so a run can be deployed against its own hold-out)."""
    from ..runtime.scoring import EvalSet, eval_set

    if not Path(path).is_file():
        return eval_set(path, classes)
    from ..data.sources import split_file_samples

    samples, root = split_file_samples(path, classes)
    return EvalSet(root=root, class_names=list(classes), items=[(Path(p), label) for p, label in samples])


def engine_precision(precisions: tuple[str, ...]) -> Optional[str]:
    """The build-engine ``--precision`` covering exactly the requested engine precisions (TensorRT
    plans exist for fp16 and int8; an fp32-only deploy builds none)."""
    wanted = [p for p in ("fp16", "int8") if p in precisions]
    if not wanted:
        return None
    return "auto" if len(wanted) == 2 else wanted[0]


def _build(config: DeployConfig, tmp: Path, model, meta, ckpt: Path, data, say) -> DeployReport:
    import torch

    from ..runtime.scoring import drop_and_worst, evaluate, ort_runner
    from .calibration import make_data_reader, sample_calibration
    from .onnx_export import INPUT_NAME, OUTPUT_NAME, OnnxExportConfig, export_onnx

    spec = meta.preprocess
    if spec.img_size != meta.model.img_size:
        raise ConfigError(f"{ckpt}: preprocessing img_size {spec.img_size} != model img_size {meta.model.img_size}")
    classes = list(meta.class_names)
    variants: dict[str, VariantRecord] = {}
    notes: list[str] = []

    calib_info = None
    int8_info = None
    sample = None
    calib_sha256: set[str] = set()  # reference samples never reuse a calibration image
    if "int8" in config.precisions:
        from .quantize import CPU_FLAVOUR, FLAVOURS, TARGET_FLAVOUR, quantize_int8

        # TensorRT needs Q/DQ on GEMM inputs only; ONNX Runtime CPU only runs its integer kernels
        # when MatMul outputs are quantised too, and 7-bit weights keep x86 CPUs without VNNI exact
        # (the flavour table in deploy/quantize.py). A jetson-orin bundle carries both files.
        flavour = TARGET_FLAVOUR[config.target]
        say("sampling calibration images")
        sample = sample_calibration(config.calib_data, classes, config.calibration,
                                    exclude_sha256=data.sha256s(), exclude_paths=data.resolved())
        calib_sha256 = {digest for _, _, digest in sample.items}
        (tmp / CALIB_MANIFEST).parent.mkdir(parents=True, exist_ok=True)
        (tmp / CALIB_MANIFEST).write_text(json.dumps(sample.manifest(), indent=2))
        say("exporting fp32 ONNX")
        export_onnx(model, tmp / VARIANT_FILES["fp32"], OnnxExportConfig(opset=config.opset, batch_size=1))
        say(f"calibrating INT8 {flavour} ({config.calibration.method}, {len(sample.items)} images)")
        _expect(say, len(sample.items))
        reader = make_data_reader(sample, spec, INPUT_NAME, on_batch=getattr(say, "advance", None))
        summary = quantize_int8(tmp / VARIANT_FILES["fp32"], tmp / VARIANT_FILES["int8"], reader,
                                config.calibration.method, max_opset=config.opset, flavour=flavour)
        variants["int8"] = VariantRecord(file=VARIANT_FILES["int8"], precision="int8", status=Status.TO_VERIFY,
                                         runtime="onnxruntime", flavour=flavour, quantization=summary)
        cpu_variant = "int8"
        if flavour != CPU_FLAVOUR:
            # The device's ONNX Runtime CPU fallback gets an INT8 it runs fast and right, not fp32 only.
            say(f"calibrating INT8 {CPU_FLAVOUR} for the CPU fallback")
            cpu_summary = quantize_int8(tmp / VARIANT_FILES["fp32"], tmp / CPU_INT8_FILE,
                                        make_data_reader(sample, spec, INPUT_NAME), config.calibration.method,
                                        max_opset=config.opset, flavour=CPU_FLAVOUR)
            variants[CPU_INT8_VARIANT] = VariantRecord(file=CPU_INT8_FILE, precision="int8", status=Status.TO_VERIFY,
                                                       runtime="onnxruntime", flavour=CPU_FLAVOUR,
                                                       quantization=cpu_summary)
            cpu_variant = CPU_INT8_VARIANT
        from ..bundle.int8 import CpuRecord, Int8Record

        int8_info = Int8Record(cpu_variant=cpu_variant, cpu_flavour=CPU_FLAVOUR,
                               x86_non_vnni_safe=not FLAVOURS[CPU_FLAVOUR].x86_saturates, deploy_cpu=CpuRecord.here(),
                               tensorrt_variant="int8" if flavour != CPU_FLAVOUR else None)
        calib_info = CalibrationRecord(manifest=CALIB_MANIFEST, method=config.calibration.method,
                                       images=len(sample.items), seed=config.calibration.seed,
                                       excluded_also_in_eval=len(sample.excluded_overlap),
                                       skipped_corrupt=len(sample.corrupt))
    else:
        say("exporting fp32 ONNX")
        export_onnx(model, tmp / VARIANT_FILES["fp32"], OnnxExportConfig(opset=config.opset, batch_size=1))
    variants["fp32"] = VariantRecord(file=VARIANT_FILES["fp32"], precision="fp32", status=Status.TO_VERIFY,
                                     runtime="onnxruntime")
    if "fp16" in config.precisions:
        from .quantize import convert_fp16

        say("converting fp16 ONNX")
        convert_fp16(tmp / VARIANT_FILES["fp32"], tmp / VARIANT_FILES["fp16"], max_opset=config.opset)
        variants["fp16"] = VariantRecord(file=VARIANT_FILES["fp16"], precision="fp16", status=Status.TO_VERIFY,
                                         runtime="onnxruntime-gpu", io_dtype="float32")

    runners = {}
    for name, v in variants.items():
        try:
            runners[name] = ort_runner(tmp / v.file, INPUT_NAME, OUTPUT_NAME)
        except Exception as e:  # ORT raises its own types (InvalidGraph, NotImplemented, Fail, ...)
            if name == "fp32":  # the gate's reference: nothing can be gated without it
                raise ExportError(f"ONNX Runtime cannot load the exported fp32 ONNX ({type(e).__name__}: "
                                  f"{_first_line(e)}); nothing can be gated without it") from None
            # Recorded, and never used: the runtime skips a variant that failed to run.
            v.status = Status.FAILED_TO_RUN
            v.note = f"ONNX Runtime cannot load it ({type(e).__name__}: {_first_line(e)})"
            notes.append(f"{name}: {v.note}")
    say(f"evaluating {', '.join(runners)} on {len(data.items)} eval images")
    _expect(say, len(data.items))

    def torch_ref(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    from .field_stats import LogitRecorder, fit_confidence

    # The fp32 logits of the gate's pass are what the temperature is fitted on (no second pass).
    fp32_logits = LogitRecorder(runners["fp32"])
    res = evaluate(data, spec, {**runners, "fp32": fp32_logits}, reference=torch_ref,
                   reference_images=config.parity_images, progress=getattr(say, "advance", None))
    skipped = set(res.skipped)
    confidence = fit_confidence(fp32_logits, [label for p, label in data.items if p not in skipped],
                                f"fp32 ONNX logits of {len(data.items) - len(skipped)} --eval-data images")
    quality_ref = _quality_reference(config, classes, spec, data, sample, say, meta)
    ref = res.accuracy["fp32"]
    reports = []
    for name, v in variants.items():
        if name not in res.accuracy:
            reports.append(VariantReport(name, v.status, note=v.note or ""))
            continue
        acc = res.accuracy[name]
        drop, worst = drop_and_worst(ref, acc)
        v.status = Status.PASSED if drop <= config.max_drop else Status.REJECTED
        v.accuracy = AccuracyRecord.from_dict(acc.to_dict())
        v.drop = round(drop, 4)
        v.worst_classes = [WorstClass(c, round(d, 2)) for c, d in worst]
        # The gate's timing runs on ONNX Runtime's CPU provider (ort_runner); the runtime's
        # --precision auto on ort-cpu trusts default_variant only when it was measured there.
        v.measured_on = "ort-cpu"
        if name == "fp32":
            v.parity = {"torch_vs_onnx_max_abs": res.parity.get("torch_vs_fp32"), "images": min(config.parity_images, acc.count)}
        else:
            v.parity = {"fp32_onnx_vs_this_max_abs": res.parity.get(f"fp32_vs_{name}"), "images": acc.count}
        reports.append(VariantReport(name, v.status, acc.top1, drop, worst))
    _field_gate(config, data, spec, runners, variants, reports, say, quality_ref)

    plans: dict[str, VariantRecord] = {}
    if config.target == "jetson-orin":
        for prec, src in (("fp16", "fp32"), ("int8", "int8")):
            if src in variants and prec in config.precisions:
                # A plan from an ONNX that was rejected or does not run here inherits that verdict
                # (build-engine skips it); otherwise it is checked on the device.
                source_status = variants[src].status
                plans[f"trt-{prec}"] = VariantRecord(
                    file=None, precision=prec, runtime="tensorrt", source=src,
                    status=source_status if not source_status.usable else Status.TO_VERIFY)
    for name, v in plans.items():
        reports.append(VariantReport(name, v.status, note=f"built by build-engine from {v.source} ONNX"))

    # TensorRT's Q/DQ INT8 is for engines: ONNX Runtime CPU runs the int8-cpu file instead.
    runnable = [n for n, v in variants.items() if v.status == Status.PASSED and n in res.accuracy
                and v.runtime == "onnxruntime" and not (int8_info is not None and n == int8_info.tensorrt_variant)]
    default = min(runnable, key=lambda n: res.accuracy[n].latency_ms) if runnable else "fp32"

    from .reference import build_reference

    say("storing reference samples for the device self-check")
    reference = build_reference(data.items, classes, spec, tmp, runners["fp32"],
                                {n: r for n, r in runners.items() if n != "fp32"},
                                precisions={n: v.precision for n, v in variants.items()},
                                usable=[n for n, v in variants.items() if v.status == Status.PASSED],
                                exclude_sha256=calib_sha256, seed=config.calibration.seed)

    (tmp / LABELS_NAME).write_text("\n".join(classes) + "\n")
    (tmp / PREPROCESS_NAME).write_text(json.dumps(spec.to_dict(), indent=2))
    trtexec = ["#!/bin/sh", "# What `clca-edge build-engine` does, as trtexec commands (run inside the bundle).",
               "# TensorRT < 8.4: replace --memPoolSize=workspace:NM with --workspace=N.", "set -e", "mkdir -p engines"]
    for name, v in plans.items():
        trtexec.append(trtexec_command(VARIANT_FILES[v.source], v.precision, config.workspace_mb,
                                       f"engines/{v.precision}.plan"))
    (tmp / "trtexec.sh").write_text("\n".join(trtexec) + "\n")

    mc = meta.model
    manifest = Manifest(
        version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        target=config.target,
        checkpoint=CheckpointRef(file=ckpt.name, epoch=meta.epoch),
        model=mc.to_dict(),
        backbone=mc.backbone,
        method=mc.method,
        # Resolved against the backbone's depth: what the device-side graph actually does.
        keep_rate=list(model.plan.keep_rates),
        locations=list(model.plan.locations),
        tokens_per_block=list(model.tokens_per_block),
        clca=mc.clca.enabled,
        opset=config.opset,
        input=TensorSpec(INPUT_NAME, [1, 3, mc.img_size, mc.img_size]),
        output=TensorSpec(OUTPUT_NAME, [1, len(classes)]),
        class_names=classes,
        labels=LABELS_NAME,
        preprocess=spec,
        preprocess_file=PREPROCESS_NAME,
        gate=GateRecord(max_drop=config.max_drop, eval_data=str(config.eval_data), eval_images=ref.count,
                        eval_skipped=len(res.skipped), field_suite=config.field_suite,
                        max_field_drop=config.max_field_drop),
        calibration=calib_info,
        variants={**variants, **plans},
        default_variant=default,
        trtexec="trtexec.sh",
        notes=notes,
        augment=(meta.extra or {}).get("augment"),
    )
    manifest.confidence = confidence
    manifest.quality_reference = quality_ref
    manifest.reference = reference
    manifest.int8 = int8_info
    write_manifest(tmp, manifest)
    return DeployReport(bundle=tmp, tar=None, variants=reports, default_variant=default, parity=res.parity,
                        eval_images=ref.count, eval_skipped=len(res.skipped),
                        calib_images=calib_info.images if calib_info else 0,
                        calib_excluded=calib_info.excluded_also_in_eval if calib_info else 0,
                        confidence=confidence, quality_reference=quality_ref, reference=reference)


# Views per training image in the quality reference of a model trained with a field preset
# (256 calibration images -> 1024 views: the 1st/99th percentiles the thresholds use are ~10
# views each, about 1 s of augmentation).
QUALITY_VIEWS = 4


def _quality_reference(config: DeployConfig, classes: list, spec, data, sample, say, meta=None):
    """The capture quality guard's reference: the INT8 calibration sample's images when there is
    one (class-balanced training images, never eval ones), else a sample drawn the same way;
    measured as the checkpoint's training augmentation presented them (``_training_view``)."""
    from dataclasses import replace

    from ..core.errors import DataError
    from .calibration import sample_calibration
    from .field_stats import quality_reference

    if sample is None:
        from ..core.files import scan_class_folders

        try:
            available = sum(len(v) for v in scan_class_folders(config.calib_data, "calibration").values())
            cfg = replace(config.calibration, num_images=min(config.calibration.num_images, available))
            sample = sample_calibration(config.calib_data, classes, cfg, exclude_sha256=data.sha256s(),
                                        exclude_paths=data.resolved())
        except DataError as e:
            log.warning("no quality reference: cannot sample --calib-data (%s); capture will judge frames "
                        "without the training images' statistics", e)
            return None
    paths = [p for p, _, _ in sample.items]
    view, preset = _training_view(meta, spec)
    if view is None:
        say(f"measuring {len(paths)} training images for the capture quality guard")
        return quality_reference(paths, spec, "--calib-data")
    import torch

    say(f"measuring {QUALITY_VIEWS} {preset} views of each of {len(paths)} training images for the capture "
        "quality guard")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.calibration.seed)  # --seed: one seed makes the whole deploy repeatable
        return quality_reference(paths, spec, "--calib-data", view=view, draws=QUALITY_VIEWS, augment=preset)


def _training_view(meta, spec):
    """(the checkpoint's training transform's ``view``, its preset's name) when the model was
    trained with more than crop and flip (a field preset), else (None, name or None): crops and
    flips do not move the guard's measures, so the plain crops stay the reference."""
    from ..data.augment import AugmentPreset, build_train_transform

    extra = (getattr(meta, "extra", None) or {})
    record = extra.get("augment")
    if not record:
        return None, None
    preset = AugmentPreset.from_dict(record)
    if preset.only_crop_and_flip:
        return None, preset.name
    hflip = float((extra.get("train_config") or {}).get("hflip", 0.5))
    return build_train_transform(preset, spec, hflip).view, preset.name


def _field_gate(config: DeployConfig, data, spec, runners: dict, variants: dict, reports: list, say,
                quality_ref=None) -> None:
    """The field robustness suite on the gate's images for every variant that ran here, recorded
    per variant; with --max-field-drop, a variant whose worst perturbation drops more is rejected
    (the perturbation named). Variants' drops are measured against their own clean accuracy.
    Each frame is also judged by the capture quality guard this bundle gives (its default
    thresholds): the record says, per condition, what capture would refuse and classify wrongly."""
    if config.field_suite == "off":
        return
    from ..bundle.robustness import FieldRobustness
    from ..capture.quality import QualityGuard
    from ..robustness.evaluate import one_at_a_time, run_suite

    gated = [r for r in reports if r.top1 is not None and r.name in runners]
    if not gated:
        return
    say(f"field robustness suite ({config.field_suite}) on {', '.join(r.name for r in gated)}")
    # The calibration seed also seeds the suite's noise: one --seed makes the whole deploy repeatable.
    guard = QualityGuard.for_bundle(quality_ref)
    result = run_suite(data.items, spec, {r.name: one_at_a_time(runners[r.name]) for r in gated},
                       suite=config.field_suite, seed=config.calibration.seed,
                       judge=guard.accepts)
    for r in gated:
        rep = result.reports[r.name]
        v = variants[r.name]
        v.field_robustness = FieldRobustness.from_dict(rep.to_dict())
        r.robustness = rep
        worst = rep.worst
        if config.max_field_drop is not None and worst is not None and worst.drop > config.max_field_drop:
            v.status = r.status = Status.REJECTED
            r.field_rejected = True
            r.note = v.note = (f"field gate: {worst.name} severity {worst.severity} drops {worst.drop:.2f} points "
                               f"(> {config.max_field_drop:g}) from clean {rep.clean:.2f}%")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""


def _own_key(config: DeployConfig):
    """The public half of --sign-key as the one trusted key: deploy checks its own signature."""
    if config.sign_key is None:
        return None
    from ..bundle.signature import TrustedKeys, key_id, load_private_key

    pub = load_private_key(config.sign_key).public_key()
    return TrustedKeys(Path(config.sign_key), {key_id(pub): pub})
