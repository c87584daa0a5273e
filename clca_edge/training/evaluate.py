"""Evaluation: one loop shared by training's validation and ``clca-edge eval``. Images go through
``core.preprocess`` (the deploy/device transform), so the accuracy reported here is the one the
deployed model sees on the same files."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..data.dataset import LeafImages, collate_skipping
from ..data.sources import DataError, Sample, scan_class_tree, split_file_samples
from ..data.transforms import EvalTransform
from ..core.preprocess import PreprocessSpec
from .distributed import DistInfo, ShardSampler, all_reduce_sum, gather_objects
from .metrics import ClassificationReport, topk_counts, write_confusion_csv, write_confusion_png, write_per_class_csv

log = logging.getLogger(__name__)


def eval_loader(samples: list[Sample], spec: PreprocessSpec, batch_size: int, workers: int,
                info: DistInfo = DistInfo(), images=None, pin_memory: bool = False,
                persistent: bool = False) -> DataLoader:
    """``images``: a decoded-image cache (core.image_cache) to read through; ``persistent``: keep
    the workers for the next pass (training validates every epoch)."""
    ds = LeafImages(samples, EvalTransform(spec), images=images)
    return DataLoader(ds, batch_size=batch_size, sampler=ShardSampler(len(ds), info), num_workers=workers,
                      collate_fn=collate_skipping, pin_memory=pin_memory, persistent_workers=persistent and workers > 0)


@torch.no_grad()
def evaluate_model(model, loader: DataLoader, class_names: list[str], device: torch.device,
                   info: DistInfo = DistInfo(), amp: bool = False,
                   on_batch: Optional[Callable[[int], None]] = None) -> ClassificationReport:
    """Top-1/top-5/confusion over the loader's images (summed over ranks); corrupt files skipped.
    ``on_batch(n)`` hears the images of each batch (progress)."""
    was_training = model.training
    model.eval()
    k = len(class_names)
    confusion = torch.zeros(k * k, dtype=torch.float64)
    top5 = torch.zeros((), dtype=torch.float64)
    loss_sum = torch.zeros((), dtype=torch.float64)
    skipped: list[str] = []
    samples = loader.dataset.samples
    for batch in loader:
        skipped += [samples[i][0] for i in batch.skipped]
        if on_batch is not None:
            on_batch(len(batch.indices) + len(batch.skipped))
        if not batch.indices:
            continue
        images, labels = batch.images.to(device, non_blocking=True), batch.labels.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            logits = model(images)
        logits = logits.float()
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        pred, hit5 = topk_counts(logits, labels)
        top5 += hit5
        confusion += torch.bincount(torch.as_tensor(labels.cpu().numpy() * k + pred), minlength=k * k).double()
    stats = all_reduce_sum(torch.cat([confusion, top5[None], loss_sum[None]]), info)
    all_skipped = sorted({p for part in gather_objects(skipped, info) for p in part})
    model.train(was_training)
    return ClassificationReport(list(class_names), stats[: k * k].numpy().astype(np.int64).reshape(k, k),
                                int(stats[k * k]), float(stats[k * k + 1]), all_skipped)


def map_samples_to_classes(tree: dict[str, list[str]], class_names: list[str], where: Path) -> list[Sample]:
    index = {n: i for i, n in enumerate(class_names)}
    unknown = sorted(set(tree) - set(index))
    if unknown:
        raise DataError(f"{where} has class folder(s) {unknown[:10]} the checkpoint was not trained on "
                        f"(it knows {len(class_names)} classes: {class_names[:5]}...)")
    return [(p, index[c]) for c in sorted(tree) for p in tree[c]]


def eval_samples(data: Path, split: str, class_names: list[str], image_root: Optional[Path] = None) -> list[Sample]:
    """Images to evaluate: ``DATA/<split>/<class>/`` (ImageFolder), ``DATA/<split>.csv`` (UFG split
    files), or ``DATA/<class>/`` (one class-folder tree, all of it)."""
    data = Path(data)
    if not data.exists():
        raise DataError(f"data folder {str(data)!r} does not exist")
    if (data / split).is_dir():
        return map_samples_to_classes(scan_class_tree(data / split), class_names, data / split)
    if (data / f"{split}.csv").is_file():
        return split_file_samples(data / f"{split}.csv", class_names, image_root)[0]
    if any((data / s).is_dir() for s in ("train", "val", "test")):
        raise DataError(f"{data} has no {split}/ folder; pick another --split")
    return map_samples_to_classes(scan_class_tree(data), class_names, data)


@dataclass(frozen=True)
class EvalConfig:
    checkpoint: str
    data: Optional[str] = None
    split: str = "val"
    image_root: Optional[str] = None
    out: Optional[str] = None
    batch_size: int = 64
    workers: int = 2
    device: str = "auto"
    # A disk cache of decoded images to read through (core.image_cache); None: the training run's
    # own (its --cache-dir, or RUN/cache) when there is one with this checkpoint's preprocessing.
    cache_dir: Optional[str] = None


def resolve_device(kind: str) -> torch.device:
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        from ..core.errors import ConfigError

        raise ConfigError("--device cuda: no CUDA device is available; use --device cpu")
    return torch.device(kind)


def evaluate_checkpoint(cfg: EvalConfig, progress: Optional[Callable[[str], None]] = None
                        ) -> tuple[ClassificationReport, Path]:
    """Load a checkpoint, evaluate it, write per-class/confusion CSV and the confusion PNG.
    ``progress(message)`` hears each stage (and, with ``expect``/``advance``, the images)."""
    from ..core.output_paths import check_writable_dir, make_dirs, refuse_overlap
    from .checkpoint import find_checkpoint, load_checkpoint, read_checkpoint_meta

    path = find_checkpoint(cfg.checkpoint)
    read_checkpoint_meta(path)   # a missing or foreign checkpoint is said first
    out = Path(cfg.out) if cfg.out else path.parent / f"eval_{path.stem}_{cfg.split}"
    # Before any work: the outputs folder must be writable and outside the data (its confusion.png
    # would become an image of the data set).
    refuse_overlap(out, "--out", "data folder", cfg.data)
    check_writable_dir(out, "--out")
    say = progress or log.info
    say(f"loading {path}")
    model, meta = load_checkpoint(path)
    if cfg.data is None:
        samples = _training_split(path, meta, cfg.split)
    else:
        samples = eval_samples(Path(cfg.data), cfg.split, meta.class_names,
                               Path(cfg.image_root) if cfg.image_root else None)
    device = resolve_device(cfg.device)
    model.to(device)
    say(f"evaluating {len(samples)} images on {device}")
    if hasattr(say, "expect"):
        say.expect(len(samples))
    from ..data.cache import checkpoint_cache

    images = checkpoint_cache(path, meta, cfg.cache_dir)
    report = evaluate_model(model, eval_loader(samples, meta.preprocess, cfg.batch_size, cfg.workers, images=images,
                                               pin_memory=device.type == "cuda"),
                            meta.class_names, device, on_batch=getattr(say, "advance", None))
    say(f"writing the confusion matrix and per-class accuracy to {out}")
    make_dirs(out, "--out")
    write_confusion_csv(out / "confusion.csv", report)
    write_per_class_csv(out / "per_class.csv", report)
    write_confusion_png(out / "confusion.png", report)
    return report, out


def _training_split(path: Path, meta, split: str) -> list[Sample]:
    """No --data: the split the checkpoint was trained with (its recorded data config)."""
    from ..data.sources import DataConfig, load_splits

    cfg = (meta.extra or {}).get("train_config", {}).get("data")
    if not cfg:
        raise DataError(f"{path} records no training data; pass --data DIR")
    splits = load_splits(DataConfig(**cfg), split_dir=path.parent / "split")
    samples = splits.split(split)
    if not samples:
        raise DataError(f"the training data of {path} has no {split} split; pass --data DIR or another --split")
    return samples
