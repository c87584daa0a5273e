"""Which INT8 flavour is safe on every CPU: the candidates of ``deploy.quantize.FLAVOURS`` on the
quick start's model, on this CPU and on an emulated x86 CPU without VNNI.

For each ONNX Runtime CPU flavour, calibrated exactly as the quick start's ``deploy --target cpu``
(the same 120 training images, minmax), on the quick start's 90 held-out images:
- top-1 and drop vs fp32 in ONNX Runtime on this CPU;
- ``VPMADDUBSW`` saturations on the calibration images' real Q/DQ inputs (``deploy.saturation``);
- top-1 and drop when every weight MatMul accumulates as ONNX Runtime's x86 non-VNNI U8S8 kernel
  does (saturating 16-bit pair sums; ``saturation.x86_non_vnni_runner``);
- latency p50 (batch 1, ONNX Runtime CPU, the runtime's session settings) of fp32 and INT8.
With ``--vit-s`` the latency of ViT-S/16 @ 224 (EViT r=0.25 + CLCA, random weights) per flavour too.

    .venv/bin/clca-edge quickstart --out runs/quickstart     # once
    .venv/bin/python benchmarks/int8_cpu_flavours.py --quickstart runs/quickstart [--vit-s]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np


def p50_ms(paths: dict, shape, runs: int, rounds: int = 5) -> dict:
    """p50 ms per file, batch 1, in ``rounds`` round-robin passes of ``runs // rounds`` calls each
    (median of the rounds' medians), so a noisy shared CPU hits every variant alike."""
    from clca_edge.runtime.backends import OrtClassifier

    clfs = {name: OrtClassifier(p) for name, p in paths.items()}
    x = np.random.default_rng(0).standard_normal(shape[1:]).astype(np.float32)
    per = {name: [] for name in clfs}
    for clf in clfs.values():
        for _ in range(5):
            clf.logits(x)
    for _ in range(rounds):
        for name, clf in clfs.items():
            t = []
            for _ in range(max(1, runs // rounds)):
                t0 = time.perf_counter()
                clf.logits(x)
                t.append(time.perf_counter() - t0)
            per[name].append(np.median(t))
    return {name: round(1000 * float(np.median(v)), 3) for name, v in per.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quickstart", type=Path, default=Path("runs/quickstart"))
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--vit-s", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    logging.disable(logging.WARNING)

    from clca_edge.benchmark.report import machine_description
    from clca_edge.core.cpuinfo import cpu_info
    from clca_edge.core.preprocess import PreprocessSpec, load_rgb, preprocess
    from clca_edge.deploy.calibration import CalibrationConfig, calibration_batches, make_data_reader, sample_calibration
    from clca_edge.deploy.quantize import FLAVOURS, quantize_int8
    from clca_edge.deploy.saturation import inspect, x86_non_vnni_runner
    from clca_edge.runtime.scoring import drop_and_worst, eval_set, evaluate, ort_runner

    qs = args.quickstart
    bundle = qs / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    classes = manifest["class_names"]
    spec = PreprocessSpec.from_dict(json.loads((bundle / "preprocess.json").read_text()))
    data = eval_set(qs / "data" / "val", classes)
    n_calib = manifest["calibration"]["images"]
    sample = sample_calibration(qs / "data" / "train", classes, CalibrationConfig(num_images=n_calib),
                                exclude_sha256=data.sha256s(), exclude_paths=data.resolved())
    fp32 = bundle / "model.onnx"
    work = Path(tempfile.mkdtemp(prefix="int8-cpu-flavours-"))
    cpu_flavours = [f for f in FLAVOURS.values() if not f.op_types.count("Conv")]  # the ORT CPU rows
    paths = {}
    for f in cpu_flavours:
        paths[f.name] = work / f"{f.name}.onnx"
        quantize_int8(fp32, paths[f.name], make_data_reader(sample, spec, "images"), flavour=f.name)

    runners = {"fp32": ort_runner(fp32, "images", "logits"), **{n: ort_runner(p, "images", "logits") for n, p in paths.items()}}
    here = evaluate(data, spec, runners)
    emulated_runners = {n: x86_non_vnni_runner(p) for n, p in paths.items() if FLAVOURS[n].weights == "int8"}
    emulated = evaluate(data, spec, emulated_runners) if emulated_runners else None
    shape = manifest["input"]["shape"]
    rows = []
    ms = p50_ms({"fp32": fp32, **paths}, shape, args.runs)
    rows.append({"variant": "fp32", "top1": round(here.accuracy["fp32"].top1, 2), "drop": 0.0, "p50_ms": ms["fp32"]})
    for f in cpu_flavours:
        drop, _ = drop_and_worst(here.accuracy["fp32"], here.accuracy[f.name])
        sat = inspect(paths[f.name], calibration_batches(sample, spec))
        row = {"variant": f.name, "weight_bits": f.weight_bits, "types": f"{f.activations[0]}{f.activations[-1]}"
               f"/{f.weights}", "top1": round(here.accuracy[f.name].top1, 2), "drop": round(drop, 2),
               "saturated_pair_sums": sat.saturated, "pair_sums": sat.pairs, "largest_pair_sum": sat.largest_pair_sum,
               "kernel": sat.kernel, "p50_ms": ms[f.name]}
        if emulated is not None and f.name in emulated.accuracy:
            edrop, _ = drop_and_worst(here.accuracy["fp32"], emulated.accuracy[f.name])
            row.update(emulated_non_vnni_top1=round(emulated.accuracy[f.name].top1, 2), emulated_non_vnni_drop=round(edrop, 2))
        else:
            row.update(emulated_non_vnni_top1=row["top1"], emulated_non_vnni_drop=row["drop"])  # no u8s8 kernel
        rows.append(row)

    if args.vit_s:
        import torch

        from clca_edge.deploy.onnx_export import export_onnx
        from clca_edge.models import create_model

        torch.manual_seed(0)
        model = create_model("vit_small_patch16_224", method="evit", keep_rate=0.25, img_size=224, num_classes=100).eval()
        big = export_onnx(model, work / "vits.onnx")
        rng = np.random.default_rng(0)

        class Reader:
            def __init__(self):
                self.it = iter([{"images": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)} for _ in range(8)])

            def get_next(self):
                return next(self.it, None)

        big_paths = {"fp32": big}
        for f in cpu_flavours:
            big_paths[f.name] = work / f"vits.{f.name}.onnx"
            quantize_int8(big, big_paths[f.name], Reader(), flavour=f.name)
        rows_vits = p50_ms(big_paths, [1, 3, 224, 224], 50)
        for r in rows:
            r["vit_s_p50_ms"] = rows_vits.get(r["variant"])

    cpu = cpu_info()
    result = {**machine_description(), "cpu_flags": cpu.notable(), "avx512_vnni": cpu.has("avx512_vnni"),
              "eval_images": here.accuracy["fp32"].count, "calib_images": len(sample.items), "rows": rows}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    cols = ["variant", "types", "weight_bits", "top1", "drop", "emulated_non_vnni_drop", "saturated_pair_sums", "p50_ms",
            "vit_s_p50_ms"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")


if __name__ == "__main__":
    main()
