"""Deploy's first steps: the fp32 ONNX export, INT8 calibration and quantisation, the fp16
conversion, and opening every variant in ONNX Runtime here (one that will not load is recorded as
failed to run, never used). Each step is ``step(run: DeployRun) -> None``."""

from __future__ import annotations

import json
import logging

from ..bundle import CalibrationRecord, Status, VariantRecord
from ..core.errors import ConfigError, ExportError
from .config import CALIB_MANIFEST, CPU_INT8_FILE, CPU_INT8_VARIANT, VARIANT_FILES
from .run_state import DeployRun

log = logging.getLogger(__name__)


def check_preprocessing(run: DeployRun) -> None:
    mc = run.meta.model
    if run.spec.img_size != mc.img_size:
        raise ConfigError(f"{run.checkpoint}: preprocessing img_size {run.spec.img_size} != model img_size "
                          f"{mc.img_size}")


def export_fp32(run: DeployRun) -> None:
    from .onnx_export import OnnxExportConfig, export_onnx

    run.say("exporting fp32 ONNX")
    export_onnx(run.model, run.root / VARIANT_FILES["fp32"], OnnxExportConfig(opset=run.config.opset, batch_size=1))
    run.variants["fp32"] = VariantRecord(file=VARIANT_FILES["fp32"], precision="fp32", status=Status.TO_VERIFY,
                                         runtime="onnxruntime")


def sample_calibration_images(run: DeployRun) -> None:
    """INT8: the class-balanced calibration sample (never an eval image), listed in the bundle."""
    if "int8" not in run.config.precisions:
        return
    from .calibration import sample_calibration

    cfg = run.config
    run.say("sampling calibration images")
    sample = sample_calibration(cfg.calib_data, run.classes, cfg.calibration,
                                exclude_sha256=run.data.sha256s(), exclude_paths=run.data.resolved())
    (run.root / CALIB_MANIFEST).parent.mkdir(parents=True, exist_ok=True)
    (run.root / CALIB_MANIFEST).write_text(json.dumps(sample.manifest(), indent=2))
    run.sample = sample
    run.manifest.calibration = CalibrationRecord(manifest=CALIB_MANIFEST, method=cfg.calibration.method,
                                                 images=len(sample.items), seed=cfg.calibration.seed,
                                                 excluded_also_in_eval=len(sample.excluded_overlap),
                                                 skipped_corrupt=len(sample.corrupt))


def quantise_int8(run: DeployRun) -> None:
    """TensorRT needs Q/DQ on GEMM inputs only; ONNX Runtime CPU only runs its integer kernels when
    MatMul outputs are quantised too, and 7-bit weights keep x86 CPUs without VNNI exact (the
    flavour table in deploy/quantize.py). A jetson-orin bundle carries both files."""
    if run.sample is None:
        return
    from ..bundle.int8 import CpuRecord, Int8Record
    from .quantize import CPU_FLAVOUR, FLAVOURS, TARGET_FLAVOUR

    flavour = TARGET_FLAVOUR[run.config.target]
    run.say(f"calibrating INT8 {flavour} ({run.config.calibration.method}, {len(run.sample.items)} images)")
    run.expect(len(run.sample.items))
    _quantise(run, "int8", VARIANT_FILES["int8"], flavour, on_batch=run.advance)
    cpu_variant = "int8"
    if flavour != CPU_FLAVOUR:
        # The device's ONNX Runtime CPU fallback gets an INT8 it runs fast and right, not fp32 only.
        run.say(f"calibrating INT8 {CPU_FLAVOUR} for the CPU fallback")
        _quantise(run, CPU_INT8_VARIANT, CPU_INT8_FILE, CPU_FLAVOUR)
        cpu_variant = CPU_INT8_VARIANT
    run.manifest.int8 = Int8Record(cpu_variant=cpu_variant, cpu_flavour=CPU_FLAVOUR,
                                   x86_non_vnni_safe=not FLAVOURS[CPU_FLAVOUR].x86_saturates,
                                   deploy_cpu=CpuRecord.here(), tensorrt_variant="int8" if flavour != CPU_FLAVOUR else None)


def _quantise(run: DeployRun, name: str, file: str, flavour: str, on_batch=None) -> None:
    from .calibration import make_data_reader
    from .onnx_export import INPUT_NAME
    from .quantize import quantize_int8

    reader = make_data_reader(run.sample, run.spec, INPUT_NAME, on_batch=on_batch)
    summary = quantize_int8(run.root / VARIANT_FILES["fp32"], run.root / file, reader, run.config.calibration.method,
                            max_opset=run.config.opset, flavour=flavour)
    run.variants[name] = VariantRecord(file=file, precision="int8", status=Status.TO_VERIFY, runtime="onnxruntime",
                                       flavour=flavour, quantization=summary)


def convert_fp16(run: DeployRun) -> None:
    if "fp16" not in run.config.precisions:
        return
    from .quantize import convert_fp16 as convert

    run.say("converting fp16 ONNX")
    convert(run.root / VARIANT_FILES["fp32"], run.root / VARIANT_FILES["fp16"], max_opset=run.config.opset)
    run.variants["fp16"] = VariantRecord(file=VARIANT_FILES["fp16"], precision="fp16", status=Status.TO_VERIFY,
                                         runtime="onnxruntime-gpu", io_dtype="float32")


def open_runners(run: DeployRun) -> None:
    """Every variant in an ONNX Runtime CPU session, as the device opens them (runtime.sessions)."""
    from ..runtime.scoring import ort_runner
    from .onnx_export import INPUT_NAME, OUTPUT_NAME

    for name, v in run.onnx_variants().items():
        try:
            run.runners[name] = ort_runner(run.root / v.file, INPUT_NAME, OUTPUT_NAME)
        except Exception as e:  # ORT raises its own types (InvalidGraph, NotImplemented, Fail, ...)
            if name == "fp32":  # the gate's reference: nothing can be gated without it
                raise ExportError(f"ONNX Runtime cannot load the exported fp32 ONNX ({type(e).__name__}: "
                                  f"{first_line(e)}); nothing can be gated without it") from None
            # Recorded, and never used: the runtime skips a variant that failed to run.
            v.status = Status.FAILED_TO_RUN
            v.note = f"ONNX Runtime cannot load it ({type(e).__name__}: {first_line(e)})"
            run.manifest.notes.append(f"{name}: {v.note}")


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""
