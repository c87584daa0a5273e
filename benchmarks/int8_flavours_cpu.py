"""fp32 vs every INT8 flavour of ``deploy.quantize.FLAVOURS`` on ONNX Runtime CPU (the shipped
``ort-cpu-u8s8-w7`` and ``tensorrt-qdq``, and the measured candidates). ViT-S/16 EViT + CLCA at 224, random init (no weights
here), calibrated on a few random tensors; batch 1, p50 of ``--runs`` after warm-up.

    python benchmarks/int8_flavours_cpu.py [--runs 15] [--keep-rate 0.1]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--keep-rate", type=float, default=0.1)
    ap.add_argument("--calib", type=int, default=8)
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # ORT's "consider pre-processing" chatter

    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import CalibrationDataReader

    from clca_edge.deploy.onnx_export import export_onnx
    from clca_edge.deploy.quantize import FLAVOURS, quantize_int8
    from clca_edge.models import create_model

    torch.manual_seed(0)
    model = create_model("vit_small_patch16_224", method="evit", keep_rate=args.keep_rate, img_size=224,
                         num_classes=100).eval()
    d = Path(tempfile.mkdtemp(prefix="int8-flavours-"))
    paths = {"fp32": export_onnx(model, d / "fp32.onnx")}

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"images": np.random.default_rng(i).standard_normal((1, 3, 224, 224)).astype(np.float32)}
                            for i in range(args.calib)])

        def get_next(self):
            return next(self.it, None)

    for flavour in FLAVOURS:
        paths[flavour] = d / f"{flavour}.onnx"
        quantize_int8(paths["fp32"], paths[flavour], Reader(), flavour=flavour)
    x = np.random.default_rng(123).standard_normal((1, 3, 224, 224)).astype(np.float32)
    ref = None
    print(f"onnxruntime {ort.__version__}, ViT-S/16 EViT r={args.keep_rate} + CLCA @224, batch 1, "
          f"p50 of {args.runs} after {args.warmup} warm-up")
    for name, path in paths.items():
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        for _ in range(args.warmup):
            sess.run(None, {"images": x})
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            y = sess.run(None, {"images": x})[0]
            times.append(time.perf_counter() - t0)
        ref = y if ref is None else ref
        print(f"{name:14s} p50 {1000 * np.median(times):6.1f} ms   max |logit - fp32| {float(np.abs(y - ref).max()):.4f}")


if __name__ == "__main__":
    main()
