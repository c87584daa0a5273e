"""The suite over a deploy bundle, through the device runtime (torch-free): every usable variant
opened the way ``predict``/``capture`` open it (``runtime.backends.select_classifier``: TensorRT
engine -> ONNX Runtime GPU -> CPU, or the ``--backend`` given), so on a Jetson it measures the
engines that will classify in the field. By default each frame is also judged by the bundle's
capture quality guard (``capture.quality``, the thresholds capture would use): the report then
says, per condition, what capture would refuse and how it would fare on the rest."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core.errors import BackendError, ConfigError
from .config import SuiteConfig, VariantsConfig
from .evaluate import SuiteResult, run_suite

log = logging.getLogger(__name__)


@dataclass
class BundleSuiteResult:
    result: SuiteResult
    backends: dict[str, str]  # variant -> what ran it ("ort-cpu (fp32, CPUExecutionProvider)")
    notes: list[str] = field(default_factory=list)  # variants that could not run here, and why
    class_names: tuple[str, ...] = ()
    guard: Any = None  # the capture.quality.QualityGuard that judged the frames (None: not judged)


def bundle_items(data, class_names: Sequence[str], split: str = "val") -> list[tuple[Path, int]]:
    """Images of ``data``: ``DATA/<split>/<class>/`` when it exists, else ``DATA/<class>/``; the
    classes must be the bundle's (as for deploy's --eval-data)."""
    from ..runtime.scoring import eval_set

    root = Path(data)
    if (root / split).is_dir():
        root = root / split
    return eval_set(root, list(class_names)).items


def run_bundle_suite(bundle, data, split: str = "val", variants: VariantsConfig = VariantsConfig(),
                     suite: SuiteConfig = SuiteConfig(), quality=None, progress=None) -> BundleSuiteResult:
    """Accuracy of each usable variant of ``bundle`` on ``data`` under the field suite, each
    frame judged by the guard ``quality`` (a ``capture.quality.QualityConfig``; None: capture's
    defaults; ``enabled=False``: not judged)."""
    from ..capture.quality import QualityConfig, QualityGuard
    from ..runtime.model import load_model

    model = load_model(bundle)
    items = bundle_items(data, model.class_names, split)
    classifiers, notes = _open_variants(model, bundle, variants)
    try:
        runners = {name: _runner(clf) for name, clf in classifiers.items()}
        guard = QualityGuard.for_bundle(model.quality_reference, quality or QualityConfig())
        result = run_suite(items, model.spec, runners, suite=suite.suite, seed=suite.seed, names=suite.only,
                           progress=progress, judge=guard.accepts if guard is not None else None)
    finally:
        for clf in classifiers.values():
            clf.close()
    backends = {name: clf.describe() for name, clf in classifiers.items()}
    return BundleSuiteResult(result, backends, notes, tuple(model.class_names), guard)


def _open_variants(model, bundle, variants: VariantsConfig) -> "tuple[dict[str, Any], list[str]]":
    """({precision: classifier} of every variant asked for that runs here, notes on those that do not)."""
    from ..bundle import PRECISIONS
    from ..runtime.backends import select_classifier

    have = [p for p in PRECISIONS if p in model.files.onnx or p in model.files.engine_precisions]
    if variants.precisions:
        missing = [p for p in variants.precisions if p not in have]
        if missing:
            raise ConfigError(f"bundle {bundle} has no usable {', '.join(missing)} variant (usable: {', '.join(have)})")
        have = [p for p in have if p in variants.precisions]
    classifiers, notes = {}, []
    try:
        for prec in have:
            try:
                classifiers[prec] = select_classifier(model.files, variants.backend, prec, variants.threads).classifier
            except BackendError as e:
                notes.append(f"{prec}: cannot run here ({e})")
    except BaseException:   # a refused self-check, an interrupt: what was opened is closed
        for clf in classifiers.values():
            clf.close()
        raise
    if not classifiers:
        raise BackendError(f"no variant of {bundle} can run here: " + "; ".join(notes))
    return classifiers, notes


def _runner(clf):
    return lambda x: np.stack([np.asarray(clf.logits(x[i]), np.float32).reshape(-1) for i in range(len(x))])


__all__ = ["BundleSuiteResult", "bundle_items", "run_bundle_suite"]
