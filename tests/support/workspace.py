"""Synthetic class-folder image trees and a tiny model trained on them for a few seconds, saved as
a real checkpoint: the workspace the deploy/bundle/engine tests deploy from (conftest's session
fixture ``trained_workspace`` makes one, read-only, for every module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TREE_CLASSES = ["ash", "birch", "cedar"]
# Per-class colour and stripe direction: easy for a tiny ViT to learn in a few steps, so fp32
# accuracy is far above chance and a broken variant shows as a real drop.
_COLOURS = {"ash": (200, 60, 60), "birch": (60, 190, 70), "cedar": (60, 80, 210)}


def write_class_tree(root: Path, n_per_class: int, seed: int, size: int = 80, classes=TREE_CLASSES) -> Path:
    import cv2

    rng = np.random.default_rng(seed)
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = np.empty((size, size, 3), np.float32)
            img[:] = _COLOURS[c]
            img += rng.normal(0, 25, img.shape)
            band = slice(int(rng.integers(0, size // 2)), None, 7)
            if ci % 2:
                img[band, :, :] *= 0.6
            else:
                img[:, band, :] *= 0.6
            bgr = np.clip(img, 0, 255).astype(np.uint8)[:, :, ::-1]
            cv2.imwrite(str(root / c / f"{c}_{seed}_{i:03d}.png"), bgr)
    return root


def load_tensors(root: Path, spec, classes=TREE_CLASSES):
    from clca_edge.core.preprocess import load_rgb, preprocess

    xs, ys = [], []
    for ci, c in enumerate(classes):
        for p in sorted((root / c).iterdir()):
            rgb = load_rgb(p)
            if rgb is not None:
                xs.append(preprocess(rgb, spec))
                ys.append(ci)
    return np.stack(xs), np.asarray(ys)


def train_checkpoint(path: Path, train_root: Path, steps: int = 12, seed: int = 0, spec=None) -> Path:
    """A tiny CLCA model trained a few Adam steps on ``train_root``, saved with save_checkpoint."""
    import torch

    from clca_edge.core.preprocess import PreprocessSpec
    from clca_edge.training.checkpoint import CheckpointMeta, save_checkpoint
    from support.tiny import TINY_IMG, tiny_model

    torch.manual_seed(seed)
    spec = spec or PreprocessSpec(img_size=TINY_IMG)
    model = tiny_model(num_classes=len(TREE_CLASSES))
    x, y = load_tensors(train_root, spec)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    meta = CheckpointMeta(model=model.config, class_names=list(TREE_CLASSES), preprocess=spec, epoch=1)
    return save_checkpoint(path, model, meta)


def make_workspace(root: Path, steps: int = 12) -> dict[str, Path]:
    """calib/ (3 x 8), eval/ (3 x 6), train/ and a trained checkpoint under ``root``."""
    calib = write_class_tree(root / "calib", 8, seed=1)
    ev = write_class_tree(root / "eval", 6, seed=2)
    train = write_class_tree(root / "train", 6, seed=3)
    ckpt = train_checkpoint(root / "model.safetensors", train, steps=steps)
    return {"calib": calib, "eval": ev, "train": train, "ckpt": ckpt}


def deploy_with_spec(root: Path, spec):
    """A tiny checkpoint trained with preprocessing ``spec``, deployed through the gate to an fp32
    cpu bundle (quick field suite): (model, checkpoint meta, bundle folder, the bundle's
    preprocess.json, its temperature)."""
    import json

    from clca_edge.deploy.pipeline import DeployConfig, run_deploy
    from clca_edge.training.checkpoint import load_checkpoint

    train = write_class_tree(root / "train", 6, seed=3)
    ev = write_class_tree(root / "eval", 6, seed=2)
    calib = write_class_tree(root / "calib", 4, seed=1)
    model, meta = load_checkpoint(train_checkpoint(root / "m.safetensors", train, spec=spec))
    out = root / "bundle"
    run_deploy(DeployConfig(checkpoint=root / "m.safetensors", out=out, calib_data=calib, eval_data=ev,
                            target="cpu", precisions=("fp32",), field_suite="quick", build_engines=False))
    manifest = json.loads((out / "manifest.json").read_text())
    temperature = (manifest.get("confidence") or {}).get("temperature", 1.0)
    return model, meta, out, json.loads((out / "preprocess.json").read_text()), temperature
