"""What the device self-check's default bounds (``bundle.selfcheck_samples.DEFAULT_BOUNDS``) rest on: the
check's two figures on the quick start's held-out images, for the bundle's own variants (what a
healthy device sees) and for things a device can get wrong (what it must catch).

Every held-out image is run once per condition (decoded with ``core.preprocess.load_bgr``, the
device path); the check's figures (top-1 agreement, max logit distance = max |logit - fp32| over
the set / mean fp32 logit spread) are then taken over ``--subsets`` random reference sets drawn as
deploy draws them (``--per-class`` per class, at most 16), and the table gives the distance's
median and max over the sets and the share of sets that pass the default bound of that precision.

Conditions: the fp16 and INT8 variants; the INT8 variant as ONNX Runtime's x86 non-VNNI U8S8
kernel would compute an 8-bit-weight INT8 (``deploy.saturation`` emulation, flavour
``ort-cpu-u8s8``); the fp32 model with the colour channels swapped, with another resize filter
(bilinear instead of the spec's), with +-1 grey level of noise on every pixel (more than a
different JPEG decoder changes), and an INT8 file whose largest float initializer is scaled x3
(a model that computes wrongly, hashes updated).

    .venv/bin/clca-edge quickstart --out runs/quickstart     # once
    .venv/bin/python benchmarks/selfcheck_bounds.py --quickstart runs/quickstart
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quickstart", type=Path, default=Path("runs/quickstart"))
    ap.add_argument("--subsets", type=int, default=500)
    ap.add_argument("--per-class", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    logging.disable(logging.WARNING)

    import cv2
    import onnx
    from onnx import numpy_helper

    from clca_edge.benchmark.report import machine_description
    from clca_edge.bundle.selfcheck_samples import DEFAULT_BOUNDS
    from clca_edge.core.cpuinfo import cpu_info
    from clca_edge.core.preprocess import PreprocessSpec, load_bgr, normalize, preprocess
    from clca_edge.runtime.scoring import eval_set, ort_runner
    from clca_edge.runtime.selfcheck import compare_logits, judge

    qs = args.quickstart
    bundle = qs / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    classes = manifest["class_names"]
    spec = PreprocessSpec.from_dict(json.loads((bundle / "preprocess.json").read_text()))
    data = eval_set(qs / "data" / "val", classes)
    images = [(load_bgr(p), label) for p, label in data.items]
    images = [(b, label) for b, label in images if b is not None]
    labels = np.array([label for _, label in images])
    work = Path(tempfile.mkdtemp(prefix="selfcheck-bounds-"))

    def run(path):
        r = ort_runner(path, "images", "logits")
        return lambda x: np.asarray(r(x[None]), np.float64).reshape(-1)

    fp32 = run(bundle / "model.onnx")
    xs = [preprocess(b, spec, bgr=True) for b, _ in images]
    ref = np.stack([fp32(x) for x in xs])

    def other_resize(bgr):
        h, w = bgr.shape[:2]
        s = spec.resize_size / min(h, w)
        img = cv2.resize(bgr, (max(spec.resize_size, round(w * s)), max(spec.resize_size, round(h * s))),
                         interpolation=cv2.INTER_LINEAR if spec.interpolation != "bilinear" else cv2.INTER_CUBIC)
        t, left = (img.shape[0] - spec.img_size) // 2, (img.shape[1] - spec.img_size) // 2
        return normalize(img[t:t + spec.img_size, left:left + spec.img_size], spec, bgr=True)

    rng = np.random.default_rng(0)
    conditions: dict[str, tuple[str, np.ndarray]] = {}
    for name in ("fp16", "int8"):
        v = manifest["variants"].get(name)
        if v and v.get("file"):
            f = run(bundle / v["file"])
            conditions[f"{name} variant ({v.get('flavour') or 'ort'})"] = (name, np.stack([f(x) for x in xs]))
    try:
        from clca_edge.deploy.calibration import CalibrationConfig, make_data_reader, sample_calibration
        from clca_edge.deploy.quantize import quantize_int8
        from clca_edge.deploy.saturation import x86_non_vnni_runner

        sample = sample_calibration(qs / "data" / "train", classes,
                                    CalibrationConfig(num_images=manifest["calibration"]["images"]),
                                    exclude_sha256=data.sha256s(), exclude_paths=data.resolved())
        u8s8 = work / "u8s8.onnx"
        quantize_int8(bundle / "model.onnx", u8s8, make_data_reader(sample, spec, "images"), flavour="ort-cpu-u8s8")
        emu = x86_non_vnni_runner(u8s8)
        conditions["int8 8-bit weights on x86 non-VNNI (emulated)"] = (
            "int8", np.stack([np.asarray(emu(x[None]), np.float64).reshape(-1) for x in xs]))
    except (ImportError, ValueError, KeyError) as e:  # an older tree without the emulation
        print(f"(no non-VNNI emulation: {e})")
    conditions["fp32, colour channels swapped"] = ("fp32", np.stack([fp32(preprocess(b, spec, bgr=False)) for b, _ in images]))
    conditions["fp32, another resize filter"] = ("fp32", np.stack([fp32(other_resize(b)) for b, _ in images]))
    noisy = [np.clip(b.astype(np.int16) + rng.integers(-1, 2, b.shape), 0, 255).astype(np.uint8) for b, _ in images]
    conditions["fp32, +-1 grey level noise"] = ("fp32", np.stack([fp32(preprocess(b, spec, bgr=True)) for b in noisy]))
    m = onnx.load(str(bundle / manifest["variants"]["int8"]["file"]))
    big = max((i for i in m.graph.initializer if i.data_type == onnx.TensorProto.FLOAT), key=lambda i: int(np.prod(i.dims)))
    big.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(big) * 3.0, big.name))
    onnx.save(m, str(work / "broken.onnx"))
    broken = run(work / "broken.onnx")
    conditions["int8 with a weight scaled x3"] = ("int8", np.stack([broken(x) for x in xs]))

    # Reference sets as deploy draws them: per_class per class (seeded permutations), at most 16.
    by_class = [np.flatnonzero(labels == c) for c in range(len(classes))]
    k = min(args.per_class, *(len(ix) for ix in by_class))
    subsets = [np.concatenate([rng.permutation(ix)[:k] for ix in by_class])[:16] for _ in range(args.subsets)]
    rows = []
    for name, (prec, got) in conditions.items():
        bounds = DEFAULT_BOUNDS[prec]
        dists, agrees, passed = [], [], 0
        for s in subsets:
            f = compare_logits(got[s], ref[s])
            dists.append(f.max_logit_distance)
            agrees.append(f.top1_agreement)
            passed += not judge(f, bounds)
        per_image = compare_logits(got, ref)
        rows.append({"condition": name, "bound": f"{prec}: >= {bounds.min_top1_agreement:g}%, <= {bounds.max_logit_distance:g}",
                     "top1_all_images": round(100.0 * float(np.mean(got.argmax(1) == labels)), 2),
                     "agreement_all_images": round(per_image.top1_agreement, 1),
                     "distance_min": round(float(np.min(dists)), 4),
                     "distance_median": round(float(np.median(dists)), 4), "distance_max": round(float(np.max(dists)), 4),
                     "agreement_min": round(float(np.min(agrees)), 1), "sets_passing_pct": round(100.0 * passed / len(subsets), 1)})
    cpu = cpu_info()
    result = {**machine_description(), "avx512_vnni": cpu.has("avx512_vnni"), "eval_images": len(images),
              "fp32_top1": round(100.0 * float(np.mean(ref.argmax(1) == labels)), 2),
              "set_size": int(len(subsets[0])), "sets": len(subsets), "rows": rows}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    cols = ["condition", "bound", "top1_all_images", "agreement_min", "distance_min", "distance_median", "distance_max",
            "sets_passing_pct"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
