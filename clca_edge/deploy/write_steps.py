"""Deploy's last steps: the TensorRT plans the device builds, the default variant, the device
self-check's reference samples, the bundle's files and its manifest. Each step is
``step(run: DeployRun) -> None``."""

from __future__ import annotations

import json

from ..bundle import LABELS_NAME, PREPROCESS_NAME, Status, VariantRecord, write_manifest
from ..engines.tensorrt import trtexec_command
from .config import VARIANT_FILES
from .run_state import DeployRun

TRTEXEC_NAME = "trtexec.sh"
# A TensorRT plan per precision and the ONNX variant it is built from (fp16 is a builder flag on fp32).
PLAN_SOURCES = (("fp16", "fp32"), ("int8", "int8"))


def plan_engines(run: DeployRun) -> None:
    """jetson-orin: one record per TensorRT plan build-engine makes on the device. A plan from an
    ONNX that was rejected or does not run here inherits that verdict (build-engine skips it);
    otherwise it is checked on the device."""
    if run.config.target != "jetson-orin":
        return
    for prec, src in PLAN_SOURCES:
        source = run.variants.get(src)
        if source is None or prec not in run.config.precisions:
            continue
        usable = source.status.usable
        run.variants[f"trt-{prec}"] = VariantRecord(
            file=None, precision=prec, runtime="tensorrt", source=src,
            status=Status.TO_VERIFY if usable else source.status,
            rejected_by="source" if source.status == Status.REJECTED else None,
            note=f"built by build-engine from {src} ONNX")


def choose_default(run: DeployRun) -> None:
    """The fastest passing variant on ONNX Runtime CPU; TensorRT's Q/DQ INT8 is for engines (ONNX
    Runtime CPU runs the int8-cpu file instead)."""
    int8 = run.manifest.int8
    qdq = int8.tensorrt_variant if int8 is not None else None
    runnable = {n: v for n, v in run.onnx_variants().items()
                if v.status == Status.PASSED and v.accuracy is not None and v.runtime == "onnxruntime" and n != qdq}
    run.manifest.default_variant = (min(runnable, key=lambda n: runnable[n].accuracy.latency_ms_mean or 0.0)
                                    if runnable else "fp32")


def store_reference(run: DeployRun) -> None:
    from .selfcheck_samples import build_reference

    run.say("storing reference samples for the device self-check")
    calib_sha256 = {digest for _, _, digest in run.sample.items} if run.sample is not None else set()
    variants = run.onnx_variants()
    run.manifest.reference = build_reference(
        run.data.items, run.classes, run.spec, run.root, run.runners["fp32"],
        {n: r for n, r in run.runners.items() if n != "fp32"}, precisions={n: v.precision for n, v in variants.items()},
        usable=[n for n, v in variants.items() if v.status == Status.PASSED], exclude_sha256=calib_sha256,
        seed=run.config.calibration.seed)


def write_files(run: DeployRun) -> None:
    """labels.txt, preprocess.json (the one copy of the preprocessing) and trtexec.sh."""
    (run.root / LABELS_NAME).write_text("\n".join(run.classes) + "\n")
    (run.root / PREPROCESS_NAME).write_text(json.dumps(run.spec.to_dict(), indent=2))
    # The plans go to a folder the caller names: a bundle is never written after deploy (build-engine
    # keeps its engines in the device's cache folder).
    lines = ["#!/bin/sh", "# What `clca-edge build-engine` does, as trtexec commands: sh trtexec.sh OUT_DIR",
             "# TensorRT < 8.4: replace --memPoolSize=workspace:NM with --workspace=N.", "set -e",
             'B="$(cd "$(dirname "$0")" && pwd)"', 'OUT="${1:?usage: sh trtexec.sh OUT_DIR}"', 'mkdir -p "$OUT"']
    for v in run.variants.values():
        if v.runtime == "tensorrt":
            lines.append(trtexec_command(f'"$B/{VARIANT_FILES[v.source]}"', v.precision, run.config.workspace_mb,
                                         f'"$OUT/{v.precision}.plan"'))
    (run.root / TRTEXEC_NAME).write_text("\n".join(lines) + "\n")
    run.manifest.trtexec = TRTEXEC_NAME


def write_bundle_manifest(run: DeployRun) -> None:
    write_manifest(run.root, run.manifest)
