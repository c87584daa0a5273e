"""ONNX Runtime CPU latency of CLCA models against the plain ViT of the same backbone, one run.

Random weights (latency does not depend on them). Models are measured round-robin, one
inference each in turn, so that load from other processes hits every model alike.

    python benchmarks/ort_latency.py                                  # ViT-B/16 @ 448: plain vs EViT+CLCA r=0.1
    python benchmarks/ort_latency.py --methods all --keep-rate 0.25   # every method at r=0.25 with CLCA
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def machine() -> str:
    from clca_edge.benchmark.report import machine_description

    return machine_description()["machine"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit_base_patch16_224")
    ap.add_argument("--img-size", type=int, default=448)
    ap.add_argument("--methods", default="evit", help="comma-separated, or 'all'")
    ap.add_argument("--keep-rate", type=float, default=0.1)
    ap.add_argument("--no-clca", action="store_true")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: ORT default)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import onnxruntime as ort
    import torch

    from clca_edge.deploy.onnx_export import INPUT_NAME, export_onnx
    from clca_edge.models import ClcaConfig, ModelConfig, build_model, list_methods
    from clca_edge.models.flops import cost_report

    torch.manual_seed(0)
    methods = list_methods()[1:] if args.methods == "all" else args.methods.split(",")
    configs = [ModelConfig(backbone=args.model, method="none", keep_rate=1.0, clca=ClcaConfig.off(),
                           num_classes=200, img_size=args.img_size)]
    for m in methods:
        configs.append(ModelConfig(backbone=args.model, method=m, keep_rate=args.keep_rate,
                                   clca=ClcaConfig.off() if args.no_clca else ClcaConfig(),
                                   num_classes=200, img_size=args.img_size))
    opts = ort.SessionOptions()
    if args.threads:
        opts.intra_op_num_threads = args.threads
    opts.log_severity_level = 3
    x = np.random.default_rng(0).standard_normal((1, 3, args.img_size, args.img_size)).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sessions = []
        for i, cfg in enumerate(configs):
            model = build_model(cfg).eval()
            path = export_onnx(model, Path(tmp) / f"m{i}.onnx")
            del model
            sessions.append(ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]))
            rows.append({"method": cfg.method, "keep_rate": cfg.keep_rate[0], "clca": cfg.clca.enabled,
                         "gflops": round(cost_report(cfg).gflops, 2), "ms": []})
        for _ in range(args.warmup):
            for s in sessions:
                s.run(None, {INPUT_NAME: x})
        for _ in range(args.repeats):
            for s, row in zip(sessions, rows):
                t0 = time.perf_counter()
                s.run(None, {INPUT_NAME: x})
                row["ms"].append(1000 * (time.perf_counter() - t0))
    base = statistics.median(rows[0]["ms"])
    for row in rows:
        ms = sorted(row.pop("ms"))
        row["p50_ms"] = round(statistics.median(ms), 1)
        row["p90_ms"] = round(ms[int(0.9 * (len(ms) - 1))], 1)
        row["speedup"] = round(base / row["p50_ms"], 2)
        row["cost_ratio"] = round(rows[0]["gflops"] / row["gflops"], 2)
    meta = {"machine": machine(), "date": dt.date.today().isoformat(), "onnxruntime": ort.__version__,
            "model": args.model, "img_size": args.img_size, "batch": 1, "repeats": args.repeats}
    print(json.dumps(meta))
    print(f"| method | keep rate | CLCA | GFLOPs | p50 ms | p90 ms | speedup | cost ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['keep_rate']:g} | {'yes' if r['clca'] else 'no'} | {r['gflops']} | "
              f"{r['p50_ms']} | {r['p90_ms']} | {r['speedup']}x | {r['cost_ratio']}x |")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
