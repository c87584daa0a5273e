"""For the runtime/capture/predict tests: a tiny real model exported to ONNX in a bundle (the
session-wide ``bundle_dir`` fixture of conftest.py is built with ``write_bundle``), synthetic
leaf-like images and a video file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

BUNDLE_CLASSES = ["oak", "maple", "birch", "ash", "elm"]


def write_bundle(root: Path, num_classes: int = len(BUNDLE_CLASSES), img_size: int = 64, seed: int = 0) -> Path:
    """A bundle folder: fp32 ONNX of a tiny EViT+CLCA model, labels, preprocessing, manifest."""
    import torch
    from support.tiny import tiny_model

    from clca_edge.deploy.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx
    from clca_edge.core.preprocess import PreprocessSpec
    from clca_edge.bundle import Manifest, Status, TensorSpec, VariantRecord, write_manifest

    torch.manual_seed(seed)
    model = tiny_model(num_classes=num_classes, img_size=img_size)
    # Random heads give near-uniform outputs; scale up the logits so classes actually differ per image.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    root.mkdir(parents=True, exist_ok=True)
    export_onnx(model, root / "model.onnx")
    classes = (BUNDLE_CLASSES[:num_classes] if num_classes <= len(BUNDLE_CLASSES)
               else [f"c{i}" for i in range(num_classes)])
    (root / "labels.txt").write_text("\n".join(classes) + "\n")
    spec = PreprocessSpec(img_size=img_size, crop_pct=0.875, interpolation="bicubic")
    (root / "preprocess.json").write_text(json.dumps(spec.to_dict()))
    manifest = Manifest(
        class_names=classes, input=TensorSpec(INPUT_NAME, [1, 3, img_size, img_size]), output=TensorSpec(OUTPUT_NAME),
        variants={"fp32": VariantRecord(file="model.onnx", precision="fp32", status=Status.PASSED,
                                        runtime="onnxruntime")},
        default_variant="fp32",
    )
    write_manifest(root, manifest)
    return root


def leaf_images(n: int, seed: int = 0, size=(96, 128)) -> list[np.ndarray]:
    """BGR uint8 images with different colours and shapes (so a model tells them apart)."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = size
        img = np.full((h, w, 3), rng.integers(0, 255, 3), np.uint8)
        noise = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
        img = cv2.add(img, noise)
        center = (int(rng.integers(20, w - 20)), int(rng.integers(20, h - 20)))
        axes = (int(rng.integers(10, 40)), int(rng.integers(8, 30)))
        cv2.ellipse(img, center, axes, float(rng.integers(0, 180)), 0, 360,
                    tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
        out.append(img)
    return out


def write_leaf_images(folder: Path, n: int, seed: int = 0, name: str = "{:03d}.png") -> Path:
    """``n`` of ``leaf_images`` as files in ``folder`` (made if missing), named ``name.format(i)``."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(leaf_images(n, seed=seed)):
        cv2.imwrite(str(folder / name.format(i)), img)
    return folder


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    import cv2

    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert vw.isOpened(), "OpenCV cannot write MJPG .avi here"
    for f in frames:
        vw.write(f)
    vw.release()
    return path

