"""``clca-edge explain``: for each image, which patches the model still looks at after every
reduction location, from the forward pass that classified it (``models.provenance``).

Checkpoint only: a bundle's ONNX graph keeps no token bookkeeping; exposing it would mean adding
outputs to the deployed graph or re-deriving each method's choices from graph internals.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..core.errors import NoInputError
from .report import ExplainReport, ImageExplanation, LocationView

log = logging.getLogger(__name__)

PNG_SUFFIX = ".explain.png"


@dataclass(frozen=True)
class ExplainConfig:
    checkpoint: str
    inputs: tuple[str, ...]
    out: str
    device: str = "cpu"
    batch_size: int = 8


def _png_name(path: Path, used: set[str]) -> str:
    """``<stem>.explain.png``; the parent folder's name, then a counter, tell equal stems apart."""
    for name in (path.stem, f"{path.parent.name}_{path.stem}"):
        if name + PNG_SUFFIX not in used:
            break
    else:
        i = 2
        while f"{name}_{i}{PNG_SUFFIX}" in used:
            i += 1
        name = f"{name}_{i}"
    used.add(name + PNG_SUFFIX)
    return name + PNG_SUFFIX


def location_views(model, trace, image: int, contributions: Optional[Sequence[float]] = None,
                   cls_blocks: Sequence[int] = ()) -> list[LocationView]:
    """What each reduction location kept of image ``image`` of the traced batch."""
    from ..models.provenance import Role

    plan = model.plan
    rates = dict(zip(plan.locations, plan.keep_rates))
    by_block = {b.index: b for b in model.token_plan}
    views = []
    for loc in trace.locations:
        contribution = None
        if contributions is not None and loc.block in cls_blocks:
            contribution = round(float(contributions[list(cls_blocks).index(loc.block)]), 6)
        views.append(LocationView(
            block=loc.block, keep_rate=rates[loc.block], tokens=loc.num_tokens, kept=loc.kept(image),
            groups=loc.groups(image) if loc.merged else None,
            fused_tokens=loc.count(image, Role.FUSED), cache_tokens=loc.count(image, Role.CACHE),
            placeholders=loc.count(image, Role.PLACEHOLDER), recovered_after=by_block[loc.block].recovered,
            contribution=contribution))
    return views


def explain_images(cfg: ExplainConfig, on_image: Optional[Callable[[ImageExplanation], None]] = None) -> ExplainReport:
    """Classify every input image with the checkpoint, recording token provenance in the same
    pass, and write one picture per image into ``cfg.out``."""
    import torch

    from ..core.atomic_io import atomic_write_bytes
    from ..core.output_paths import check_writable_dir, make_dirs
    from ..core.preprocess import load_rgb, model_crop, normalize
    from ..models.provenance import record_provenance
    from ..runtime.predict import expand_inputs
    from ..training.checkpoint import find_checkpoint, load_checkpoint
    from ..training.evaluate import resolve_device
    from .attribution import cla_contributions
    from .render import render_png

    check_writable_dir(cfg.out, "--out")  # before the model is loaded: a bad --out is one line, at once
    ckpt = find_checkpoint(cfg.checkpoint)
    model, meta = load_checkpoint(ckpt)
    device = resolve_device(cfg.device)
    model.to(device).eval()
    inputs = expand_inputs(cfg.inputs)
    for arg in inputs.unmatched:
        log.warning("%r matches no image file", arg)
    if not inputs.files:
        raise NoInputError(f"no image files found in {', '.join(map(repr, cfg.inputs))}")
    folder = make_dirs(cfg.out, "--out")
    pe = model.backbone.patch_embed
    grid = tuple(int(g) for g in pe.grid_size)
    report = ExplainReport(str(ckpt), model.config.method, list(model.plan.keep_rates), grid, int(pe.patch_size[0]))
    cls_blocks = model.cla_blocks
    spec, names = meta.preprocess, meta.class_names
    used: set[str] = set()

    batch: list[tuple[Path, np.ndarray]] = []

    def flush() -> None:
        crops = [c for _, c in batch]
        x = torch.from_numpy(np.stack([normalize(c, spec) for c in crops])).to(device)
        with torch.no_grad(), record_provenance(model) as trace:
            logits = model(x)
        probs = logits.float().softmax(dim=-1)
        conf, pred = probs.max(dim=-1)
        contributions = reference = None
        if model.cla_head is not None:
            contributions, reference = cla_contributions(model.cla_head, trace.cls_tokens, pred)
        for i, (path, crop) in enumerate(batch):
            contrib_i = None if contributions is None else contributions[i].tolist()
            true = path.parent.name if path.parent.name in names else None
            exp = ImageExplanation(
                path=str(path), png=str(folder / _png_name(path, used)), predicted=names[int(pred[i])],
                confidence=round(float(conf[i]), 6), true=true,
                locations=location_views(model, trace, i, contrib_i, cls_blocks))
            if contrib_i is not None:
                exp.cla = {"blocks": cls_blocks, "contributions": [round(v, 6) for v in contrib_i],
                           "reference": round(float(reference[i]), 6)}
            atomic_write_bytes(Path(exp.png), render_png(crop, exp, report))
            report.images.append(exp)
            if on_image is not None:
                on_image(exp)
        batch.clear()

    for path in inputs.files:
        rgb = load_rgb(path)
        if rgb is None:
            report.skipped.append(str(path))
            continue
        batch.append((path, model_crop(rgb, spec)))  # the crop the model sees, so maps overlay it
        if len(batch) >= cfg.batch_size:
            flush()
    if batch:
        flush()
    if not report.images:
        raise NoInputError(f"none of the {len(report.skipped)} file(s) could be read as an image")
    return report


__all__ = ["ExplainConfig", "ExplainReport", "ImageExplanation", "LocationView", "explain_images", "location_views"]
