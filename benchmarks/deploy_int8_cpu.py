"""Deploy on the synthetic leaf dataset, and fp32 vs INT8 (Q/DQ) ONNX Runtime CPU latency.

1. A tiny CLCA model (EViT r=0.25, depth 4, 64 px) is trained briefly on the synthetic dataset
   (clca_edge.data.synth), then `deploy` runs with --tar: fp32 parity, INT8/FP16 drops, tar round trip.
2. Latency: fp32 vs INT8 ONNX on ONNX Runtime CPU for that model and for ViT-S/16 @ 224 (EViT r=0.25
   + CLCA, random weights: latency does not depend on the weights), batch 1, p50/p90 over N runs.
Usage: .venv/bin/python benchmarks/deploy_int8_cpu.py [--runs 30] [--steps 150]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def latency(path, shape, runs):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(5):
        sess.run(None, {"images": x})
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {"images": x})
        t.append(1000 * (time.perf_counter() - t0))
    return round(float(np.percentile(t, 50)), 3), round(float(np.percentile(t, 90)), 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--steps", type=int, default=150)
    args = ap.parse_args()
    import torch

    from clca_edge.data.synth import SynthConfig, write_synthetic_dataset
    from clca_edge.deploy.calibration import CalibrationConfig
    from clca_edge.deploy.pipeline import DeployConfig, run_deploy
    from clca_edge.models import create_model
    from clca_edge.core.preprocess import PreprocessSpec
    from clca_edge.bundle import load_bundle, read_manifest
    from clca_edge.core.preprocess import load_rgb, preprocess
    from clca_edge.training.checkpoint import CheckpointMeta, save_checkpoint

    root = Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    summ = write_synthetic_dataset(root / "data", SynthConfig(classes=4, per_class=40, size=64, seed=0))
    spec = PreprocessSpec(img_size=64)
    xs, ys = [], []
    for ci, c in enumerate(summ.class_names if hasattr(summ, "class_names") else sorted(p.name for p in (root / "data/train").iterdir())):
        for p in sorted((root / "data/train" / c).iterdir()):
            xs.append(preprocess(load_rgb(p), spec))
            ys.append(ci)
    classes = sorted(p.name for p in (root / "data/train").iterdir())
    x, y = torch.from_numpy(np.stack(xs)), torch.tensor(ys)
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16_224", method="evit", keep_rate=0.25, clca=True, img_size=64,
                         num_classes=len(classes), depth=4, embed_dim=64, num_heads=2)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    model.train()
    for step in range(args.steps):
        idx = torch.randint(0, len(x), (32,))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()
    ckpt = save_checkpoint(root / "tiny.safetensors", model,
                           CheckpointMeta(model=model.config, class_names=classes, preprocess=spec, epoch=1))
    t0 = time.perf_counter()
    rep = run_deploy(DeployConfig(checkpoint=ckpt, out=root / "bundle", calib_data=root / "data/train",
                                  eval_data=root / "data/val", calibration=CalibrationConfig(num_images=64),
                                  tar=True, build_engines=False))
    deploy_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        verified = load_bundle(rep.tar, extract_to=d).labels == classes
    m = read_manifest(root / "bundle")
    out = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
           "date": time.strftime("%Y-%m-%d"), "deploy_seconds": round(deploy_s, 1), "tar_verified": verified,
           "eval_images": m.gate.eval_images,
           "fp32_parity_torch_vs_onnx": m.variants["fp32"].parity["torch_vs_onnx_max_abs"]}
    for v in ("fp32", "int8", "fp16"):
        out[f"{v}_top1"] = m.variants[v].accuracy.top1 if m.variants[v].accuracy else None
        out[f"{v}_drop"] = m.variants[v].drop
        out[f"{v}_status"] = m.variants[v].status.value
    out["tiny64_fp32_ms_p50_p90"] = latency(root / "bundle/model.onnx", (1, 3, 64, 64), args.runs)
    out["tiny64_int8_ms_p50_p90"] = latency(root / "bundle/model.int8.onnx", (1, 3, 64, 64), args.runs)

    from clca_edge.deploy.calibration import CalibrationSample, make_data_reader
    from clca_edge.deploy.onnx_export import export_onnx
    from clca_edge.deploy.quantize import quantize_int8

    small = create_model("vit_small_patch16_224", method="evit", keep_rate=0.25, clca=True, img_size=224,
                         num_classes=200).eval()
    export_onnx(small, root / "s.onnx")
    files = sorted((root / "data/train").rglob("*.png"))[:16]
    sample = CalibrationSample(root=root / "data/train", items=[(p, p.parent.name, "") for p in files])
    quantize_int8(root / "s.onnx", root / "s.int8.onnx", make_data_reader(sample, PreprocessSpec(img_size=224), "images"))
    out["vit_s224_fp32_ms_p50_p90"] = latency(root / "s.onnx", (1, 3, 224, 224), args.runs)
    out["vit_s224_int8_ms_p50_p90"] = latency(root / "s.int8.onnx", (1, 3, 224, 224), args.runs)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
