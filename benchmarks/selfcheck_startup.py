"""What the device self-check costs a start: ``load_model`` + ``select_classifier`` (what predict
and capture do before their first frame) on a bundle, with the self-check's cache emptied (first
start on a device: every candidate runs the reference samples), with the cache filled (every later
start), and with no self-check at all (the start before this feature), each in a fresh process so
ONNX Runtime's and OpenCV's first-use costs count as they do on the device.

    .venv/bin/clca-edge quickstart --out runs/quickstart     # once
    .venv/bin/python benchmarks/selfcheck_startup.py --bundle runs/quickstart/bundle [--precisions auto,fp32,int8] [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time, logging
logging.disable(logging.WARNING)
t0 = time.perf_counter()
import dataclasses
import cv2, onnxruntime  # every start imports them before its first frame: not the check's cost
from clca_edge.runtime.backends import select_classifier
from clca_edge.runtime.model import load_model
t_import = time.perf_counter()
model = load_model(sys.argv[1])
files = model.files if sys.argv[3] == "on" else dataclasses.replace(model.files, self_check=None)
sel = select_classifier(files, "auto", sys.argv[2])
t1 = time.perf_counter()
print(json.dumps({"ms": 1000 * (t1 - t_import), "import_ms": 1000 * (t_import - t0),
                  "used": sel.classifier.describe(), "samples_run": model.checker.runs if model.checker else 0,
                  "checks": [(c.precision, c.status, c.cached) for c in sel.checks]}))
"""


def start(bundle: Path, precision: str, check: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(bundle), precision, check], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", type=Path, default=Path("runs/quickstart/bundle"))
    ap.add_argument("--precisions", default="auto,fp32,int8", help="comma-separated --precision values to time")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from clca_edge.benchmark.report import emit_results, machine_description
    from clca_edge.core.cpuinfo import cpu_info
    from clca_edge.bundle import MANIFEST_NAME, sha256_file
    from clca_edge.runtime.device_cache import LATENCY_FILE, SELFCHECK_FILE, bundle_cache_dir

    # This device's caches of the bundle (runtime/device_cache.py): the self-check's, and the CPU
    # latencies auto on ort-cpu measures once (runtime.cpu_latency), beside it.
    folder = bundle_cache_dir(sha256_file(args.bundle / MANIFEST_NAME))
    caches = [folder / SELFCHECK_FILE, folder / LATENCY_FILE]
    out_rows = []
    for precision in args.precisions.split(","):
        rows = {"first start (caches empty)": [], "cached start": [], "no self-check": []}
        detail = {}
        for _ in range(args.runs):
            for c in caches:
                c.unlink(missing_ok=True)
            first = start(args.bundle, precision, "on")
            cached = start(args.bundle, precision, "on")
            none = start(args.bundle, precision, "off")
            for name, r in zip(rows, (first, cached, none)):
                rows[name].append(r["ms"])
                detail[name] = {k: r[k] for k in ("used", "samples_run", "checks")}
        out_rows += [{"precision": precision, "start": name, "median_ms": round(statistics.median(v), 1),
                      "min_ms": round(min(v), 1), "max_ms": round(max(v), 1), **detail[name]}
                     for name, v in rows.items()]
    refs = json.loads((args.bundle / "manifest.json").read_text()).get("reference") or {}
    cpu = cpu_info()
    result = {**machine_description(), "avx512_vnni": cpu.has("avx512_vnni"), "bundle": str(args.bundle),
              "reference_samples": len(refs.get("samples", [])), "runs": args.runs, "rows": out_rows}
    emit_results(result, args.json)
    print("| --precision | start | median ms | min | max | samples run | runs on |")
    print("|---|---|---|---|---|---|---|")
    for r in out_rows:
        print(f"| {r['precision']} | {r['start']} | {r['median_ms']} | {r['min_ms']} | {r['max_ms']} | "
              f"{r['samples_run']} | {r['used']} |")


if __name__ == "__main__":
    main()
