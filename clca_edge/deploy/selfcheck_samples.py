"""Reference samples for the device self-check: a few held-out images, stored in the bundle as
encoded files, with the fp32 ONNX logits computed from exactly what is stored.

Which images: a seeded, class-balanced pick from the eval set (``DEFAULT_PER_CLASS`` per class, at
most ``DEFAULT_MAX_IMAGES``), never a calibration image (checked by sha256, as calibration checks
against the eval set), never an unreadable file, no two with the same content.

How they are stored: the device must decode and resize them itself, so they are encoded files, not
tensors. A PNG/JPEG eval file within its share of the byte budget is copied byte for byte (the
device decodes the very bytes deploy did); a larger one (or another format) is shrunk, never below
the preprocessing's resize size so the device still resizes, and re-encoded as JPEG, stepping the
quality down until it fits. The logits always come from the stored file, read back through
``core.preprocess``, so re-encoding changes nothing the check compares.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..bundle.selfcheck_samples import (DEFAULT_BOUNDS, DEFAULT_BUDGET_BYTES, DEFAULT_MAX_IMAGES, DEFAULT_PER_CLASS,
                                REFERENCE_DIR, SelfCheckSample, SelfCheckSamples, SelfCheckBounds)
from ..bundle import sha256_file
from ..core.errors import ConfigError
from ..core.preprocess import PreprocessSpec, load_bgr, preprocess
from ..runtime.selfcheck import compare_logits
from .calibration import _quotas

log = logging.getLogger(__name__)

COPY_SUFFIXES = (".png", ".jpg", ".jpeg")
JPEG_QUALITIES = (95, 90, 80, 70)
# A deploy-measured figure outside the default bound widens it to this multiple of the figure: the
# gate already accepted the variant, so its own deviation on the deploy machine is not an error.
WIDEN_MARGIN = 2.0

Runner = Callable[[np.ndarray], np.ndarray]  # (1, 3, H, W) -> (1, C), as runtime.scoring


def choose_samples(items: Sequence[tuple[Path, int]], class_names: Sequence[str], exclude_sha256: set[str],
                   per_class: int = DEFAULT_PER_CLASS, max_images: int = DEFAULT_MAX_IMAGES, seed: int = 0
                   ) -> tuple[list[tuple[Path, str, str]], list[Path]]:
    """(path, class, sha256) of the picked eval images, class-balanced and seeded, and the eval
    files passed over because they are also calibration images."""
    if per_class < 1 or max_images < 1:
        raise ConfigError(f"reference samples: per_class={per_class} and max_images={max_images} must be >= 1")
    by_class: dict[str, list[Path]] = {c: [] for c in class_names}
    for path, label in items:
        by_class[class_names[label]].append(path)
    rng = np.random.default_rng(seed)
    order = {c: [ps[i] for i in rng.permutation(len(ps))] for c, ps in by_class.items()}
    want = min(max_images, per_class * len(class_names))
    quotas = _quotas(want, {c: min(per_class, len(ps)) for c, ps in order.items()})
    picked: list[tuple[Path, str, str]] = []
    overlap: list[Path] = []
    seen: set[str] = set()
    for c in class_names:
        taken = 0
        for p in order[c]:
            if taken >= quotas[c]:
                break
            digest = sha256_file(p)
            if digest in exclude_sha256:
                overlap.append(p)
            elif digest not in seen and load_bgr(p) is not None:
                seen.add(digest)
                picked.append((p, c, digest))
                taken += 1
    if overlap:
        log.info("reference samples: passed over %d eval file(s) that are also calibration images", len(overlap))
    return picked, overlap


def _encode_within(bgr: np.ndarray, spec: PreprocessSpec, max_bytes: int) -> tuple[bytes, str]:
    """JPEG bytes of ``bgr`` within ``max_bytes``: quality steps down, then the image shrinks (the
    shorter side never below the resize size, so the device's resize still runs)."""
    import cv2

    img = bgr
    h, w = img.shape[:2]
    limit = 2 * spec.resize_size  # more detail than the model sees is only bytes
    if min(h, w) > limit:
        s = limit / min(h, w)
        img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    while True:
        for q in JPEG_QUALITIES:
            ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
            if ok and enc.size <= max_bytes:
                return enc.tobytes(), f"jpeg q{q}, {img.shape[1]}x{img.shape[0]} from {w}x{h}"
        short = min(img.shape[:2])
        if short <= spec.resize_size:
            return enc.tobytes(), f"jpeg q{JPEG_QUALITIES[-1]}, {img.shape[1]}x{img.shape[0]} from {w}x{h} (over its share)"
        s = max(spec.resize_size / short, 0.75)
        img = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))),
                         interpolation=cv2.INTER_AREA)


def store_samples(picked: Sequence[tuple[Path, str, str]], bundle_root: Path, spec: PreprocessSpec,
                  budget_bytes: int = DEFAULT_BUDGET_BYTES) -> list[tuple[str, str, str, str]]:
    """Write the picked images under ``bundle_root/reference/``; returns (relative file, class,
    source sha256, how stored) per image. Each image gets an equal share of the budget."""
    folder = bundle_root / REFERENCE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    share = budget_bytes // max(1, len(picked))
    out = []
    for i, (path, cls, digest) in enumerate(picked):
        data = path.read_bytes()
        suffix = path.suffix.lower()
        if suffix in COPY_SUFFIXES and len(data) <= share:
            how = "original"
        else:
            data, how = _encode_within(load_bgr(path), spec, share)
            suffix = ".jpg"
        rel = f"{REFERENCE_DIR}/{i:02d}{suffix}"
        (bundle_root / rel).write_bytes(data)
        out.append((rel, cls, digest, how))
    return out


def _bounds(runners_figures: dict[str, dict], precisions: dict[str, str]) -> dict[str, SelfCheckBounds]:
    """Default bounds per precision, widened where a variant that passed the gate already comes
    close to them on the deploy machine: the distance to WIDEN_MARGIN x its own, the agreement to
    its own less one sample."""
    bounds = dict(DEFAULT_BOUNDS)
    for name, fig in runners_figures.items():
        prec = precisions.get(name)
        if prec is None or fig.get("max_logit_distance") is None:
            continue
        b = bounds.get(prec, DEFAULT_BOUNDS["int8"])
        dist = max(b.max_logit_distance, round(WIDEN_MARGIN * fig["max_logit_distance"], 4))
        # One more flipped near-tie than the deploy machine saw is still the same model.
        agree = min(b.min_top1_agreement, max(0.0, round(fig["top1_agreement"] - 100.0 / max(1, fig["samples"]), 3)))
        if (dist, agree) != (b.max_logit_distance, b.min_top1_agreement):
            log.warning("self-check bounds for %s widened to the deploy machine's own figures: agreement >= %.1f%%, "
                        "logit distance <= %.4f", prec, agree, dist)
            bounds[prec] = SelfCheckBounds(agree, dist)
    return bounds


def build_reference(items: Sequence[tuple[Path, int]], class_names: Sequence[str], spec: PreprocessSpec,
                    bundle_root: Path, fp32: Runner, others: dict[str, Runner], precisions: dict[str, str],
                    usable: Sequence[str], exclude_sha256: set[str] = frozenset(), seed: int = 0,
                    per_class: int = DEFAULT_PER_CLASS, max_images: int = DEFAULT_MAX_IMAGES,
                    budget_bytes: int = DEFAULT_BUDGET_BYTES) -> Optional[SelfCheckSamples]:
    """Pick, store and score the reference samples; ``None`` (with a warning) if no eval image is
    left to use. ``others`` are the other variants' runners (their figures on the samples are
    recorded, and passed ones in ``usable`` may widen the bounds)."""
    import cv2
    import onnxruntime as ort

    picked, _ = choose_samples(items, class_names, set(exclude_sha256), per_class, max_images, seed)
    if not picked:
        log.warning("no eval image is left for reference samples (all unreadable or calibration images); "
                    "the bundle has no device self-check")
        return None
    stored = store_samples(picked, bundle_root, spec, budget_bytes)
    samples, tensors = [], []
    for rel, cls, digest, how in stored:
        bgr = load_bgr(bundle_root / rel)
        if bgr is None:  # our own encoder's output: never expected
            raise ConfigError(f"reference sample {rel} written from {digest[:12]} cannot be read back")
        x = preprocess(bgr, spec, bgr=True)
        tensors.append(x)
        logits = np.asarray(fp32(x[None]), np.float32).reshape(-1)
        samples.append(SelfCheckSample(rel, cls, digest, how, tuple(float(v) for v in logits)))
    ref = np.stack([np.asarray(s.logits, np.float32) for s in samples])
    figures = {}
    for name, run in others.items():
        got = np.stack([np.asarray(run(x[None]), np.float32).reshape(-1) for x in tensors])
        figures[name] = compare_logits(got, ref).to_dict()
    size = sum((bundle_root / rel).stat().st_size for rel, *_ in stored)
    bounds = _bounds({n: f for n, f in figures.items() if n in usable}, precisions)
    return SelfCheckSamples(samples=tuple(samples), bounds=bounds, budget_bytes=budget_bytes, stored_bytes=size,
                        computed_with={"onnxruntime": ort.__version__, "opencv": cv2.__version__,
                                       "numpy": np.__version__},
                        deploy_figures=figures)
