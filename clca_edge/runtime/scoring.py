"""The accuracy gate: top-1 and per-class accuracy of every runnable variant on held-out images,
compared with fp32. Torch-free (build-engine runs it on the device with TensorRT runners).

Images stream through once; each image is preprocessed by the one runtime preprocessing and fed
to every variant, so memory stays flat however large the eval set is. An eval set may read its
images through a decoded-image cache (core.image_cache: the training run's disk cache, or a RAM
cache when the same images are scored more than once); a cached image is the decoded file resized
as ``preprocess`` resizes it, so the scores are the same to the bit.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..core.preprocess import PreprocessSpec, load_rgb, preprocess
from ..bundle import sha256_file
from ..core.errors import DataError
from ..core.image_files import check_classes, scan_class_folders

log = logging.getLogger(__name__)

# A runner maps one input batch (1, 3, H, W) float32 to logits (1, num_classes).
Runner = Callable[[np.ndarray], np.ndarray]


@dataclass
class EvalSet:
    root: Path
    class_names: list[str]
    items: list[tuple[Path, int]]
    images: Any = None  # a core.image_cache cache to decode through (None: decode each file)

    def read(self, path: Path) -> Optional[np.ndarray]:
        """The image at ``path`` (RGB uint8), or None when it cannot be read."""
        return self.images.get(path) if self.images is not None else load_rgb(path)

    def sha256s(self) -> set[str]:
        return {sha256_file(p) for p, _ in self.items}

    def resolved(self) -> set[Path]:
        return {p.resolve() for p, _ in self.items}


def eval_set(root, class_names: list[str], images: Any = None) -> EvalSet:
    found = scan_class_folders(root, "eval")
    check_classes(found, class_names, "eval", root)
    items = [(p, class_names.index(c)) for c in class_names for p in found[c]]
    return EvalSet(root=Path(root), class_names=list(class_names), items=items, images=images)


@dataclass
class Accuracy:
    top1: float  # percent
    per_class: dict[str, float]
    count: int
    latency_ms: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        d = {"top1": round(self.top1, 4), "per_class": {k: round(v, 4) for k, v in self.per_class.items()},
             "images": self.count}
        if self.latency_ms is not None:
            d["latency_ms_mean"] = round(self.latency_ms, 4)
        return d


@dataclass
class EvalResult:
    accuracy: dict[str, Accuracy]
    skipped: list[Path] = field(default_factory=list)
    # Max abs logit difference of each named pair (e.g. "torch_vs_fp32", "fp32_vs_int8").
    parity: dict[str, float] = field(default_factory=dict)
    # Percent of images where each runner's top-1 class equals that of ``parity_against``.
    agreement: dict[str, float] = field(default_factory=dict)


def evaluate(data: EvalSet, spec: PreprocessSpec, runners: dict[str, Runner],
             reference: Optional[Runner] = None, reference_images: int = 16, parity_against: str = "fp32",
             progress: Optional[Callable[[], None]] = None) -> EvalResult:
    """Run every runner on every decodable eval image; corrupt files are skipped and counted.

    ``reference`` (the PyTorch model) runs on the first ``reference_images`` images; its max abs
    difference to ``runners[parity_against]`` is recorded as ``torch_vs_<name>``. Every other
    runner's difference to ``parity_against`` is recorded too, over all images.
    """
    n_cls = len(data.class_names)
    correct = {k: np.zeros(n_cls, np.int64) for k in runners}
    totals = np.zeros(n_cls, np.int64)
    spent = {k: 0.0 for k in runners}
    agree = {k: 0 for k in runners}
    parity: dict[str, float] = {}
    skipped: list[Path] = []
    seen_ref = 0
    for path, label in data.items:
        rgb = data.read(path)
        if rgb is None:
            skipped.append(path)
            if progress:
                progress()
            continue
        x = preprocess(rgb, spec)[None]
        totals[label] += 1
        outs = {}
        for name, run in runners.items():
            t0 = time.perf_counter()
            logits = np.asarray(run(x), dtype=np.float32).reshape(1, -1)
            spent[name] += time.perf_counter() - t0
            outs[name] = logits
            correct[name][label] += int(np.argmax(logits[0]) == label)
        base = outs.get(parity_against)
        if base is not None:
            for name, logits in outs.items():
                if name != parity_against:
                    key = f"{parity_against}_vs_{name}"
                    parity[key] = max(parity.get(key, 0.0), float(np.max(np.abs(logits - base))))
                    agree[name] += int(np.argmax(logits[0]) == np.argmax(base[0]))
            if reference is not None and seen_ref < reference_images:
                ref = np.asarray(reference(x), dtype=np.float32).reshape(1, -1)
                key = f"torch_vs_{parity_against}"
                parity[key] = max(parity.get(key, 0.0), float(np.max(np.abs(ref - base))))
                seen_ref += 1
        if progress:
            progress()
    if skipped:
        log.warning("eval: skipped %d corrupt/unreadable image(s): %s", len(skipped),
                    ", ".join(str(p) for p in skipped[:5]))
    n = int(totals.sum())
    if n == 0:
        raise DataError(f"eval set {data.root}: none of its {len(data.items)} images could be read")
    acc = {}
    for name in runners:
        per = {c: (100.0 * correct[name][i] / totals[i]) if totals[i] else float("nan")
               for i, c in enumerate(data.class_names)}
        acc[name] = Accuracy(top1=100.0 * correct[name].sum() / n, per_class=per, count=n,
                             latency_ms=1000.0 * spent[name] / n)
    agreement = {k: 100.0 * agree[k] / n for k in runners if k != parity_against and parity_against in runners}
    return EvalResult(accuracy=acc, skipped=skipped, parity=parity, agreement=agreement)


def drop_and_worst(reference: Accuracy, candidate: Accuracy, k: int = 3) -> tuple[float, list[tuple[str, float]]]:
    """Top-1 drop in points, and the ``k`` classes that lost the most (name, points lost)."""
    drops = [(c, reference.per_class[c] - candidate.per_class[c]) for c in reference.per_class
             if not np.isnan(reference.per_class[c])]
    drops.sort(key=lambda t: -t[1])
    return reference.top1 - candidate.top1, [(c, d) for c, d in drops[:k] if d > 0]


def ort_runner(path, input_name: str, output_name: str, providers: Optional[list[str]] = None) -> Runner:
    """A runner over an ONNX Runtime session opened as the device opens it (runtime.sessions), so
    the gate's latency per variant is the one ``--precision auto`` on ort-cpu relies on."""
    from .sessions import CPU_PROVIDER, open_session

    sess = open_session(path, providers or [CPU_PROVIDER])
    return lambda x: sess.run([output_name], {input_name: x})[0]
