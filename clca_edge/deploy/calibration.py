"""INT8 calibration sampling: a class-balanced, seeded sample of the calibration images, never
one of the evaluation images, read through the one runtime preprocessing.

The chosen files and their sha256 go into ``calibration/manifest.json`` inside the bundle, so the
calibration can be audited and reproduced (see ``calibration/README.md`` at the repo root).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from ..core.image_files import check_classes, scan_class_folders
from ..core.errors import DataError
from ..core.preprocess import PreprocessSpec, load_rgb, preprocess
from ..bundle import sha256_file

log = logging.getLogger(__name__)

CALIB_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_CALIB_IMAGES = 256


@dataclass(frozen=True)
class CalibrationConfig:
    num_images: int = DEFAULT_CALIB_IMAGES
    method: str = "minmax"
    seed: int = 0
    # num_images is an upper bound (the --calib-images default): a data set with fewer usable
    # images calibrates on all of them (and says so) instead of being refused. False: exactly
    # num_images, as asked for on the command line, or an error.
    at_most: bool = False

    def __post_init__(self) -> None:
        from ..core.errors import ConfigError

        if self.num_images < 1:
            raise ConfigError(f"--calib-images {self.num_images} must be >= 1")
        if self.method not in CALIB_METHODS:
            raise ConfigError(f"--calib-method {self.method!r}; choose one of {', '.join(CALIB_METHODS)}")


@dataclass
class CalibrationSample:
    root: Path
    items: list[tuple[Path, str, str]]  # (path, class, sha256)
    corrupt: list[Path] = field(default_factory=list)
    excluded_overlap: list[Path] = field(default_factory=list)
    config: CalibrationConfig = field(default_factory=CalibrationConfig)

    def per_class(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, c, _ in self.items:
            out[c] = out.get(c, 0) + 1
        return out

    def manifest(self) -> dict[str, Any]:
        return {
            "source": str(self.root),
            "method": self.config.method,
            "seed": self.config.seed,
            "requested": self.config.num_images,
            "count": len(self.items),
            "per_class": self.per_class(),
            "skipped_corrupt": [str(p) for p in self.corrupt],
            "excluded_also_in_eval": [str(p) for p in self.excluded_overlap],
            "files": [{"path": str(p.relative_to(self.root)), "class": c, "sha256": h} for p, c, h in self.items],
        }


def _quotas(n: int, available: dict[str, int]) -> dict[str, int]:
    """Split n as evenly as possible over classes, giving a short class's share to the others."""
    quotas = {c: 0 for c in available}
    left = n
    open_classes = sorted(available)
    while left > 0 and open_classes:
        share, extra = divmod(left, len(open_classes))
        nxt = []
        for i, c in enumerate(open_classes):
            want = share + (1 if i < extra else 0)
            take = min(want, available[c] - quotas[c])
            quotas[c] += take
            left -= take
            if quotas[c] < available[c]:
                nxt.append(c)
        if nxt == open_classes and share == 0 and extra == 0:
            break
        open_classes = nxt
    return quotas


def sample_calibration(root, class_names: list[str], config: CalibrationConfig,
                       exclude_sha256: set[str] = frozenset(), exclude_paths: set[Path] = frozenset()) -> CalibrationSample:
    """Pick ``config.num_images`` decodable images, class-balanced, in a seeded order.

    Files whose content (sha256) or resolved path is in the evaluation set are excluded and
    reported: calibrating on eval images would flatter the accuracy gate.
    """
    root = Path(root)
    if root.is_file():  # a split file, e.g. a --val-split run's RUN/split/train.csv
        from ..data.sources import split_file_samples

        samples, root = split_file_samples(root, class_names)
        found = {c: [] for c in class_names}
        for p, label in samples:
            found[class_names[label]].append(Path(p))
        missing = [c for c, v in found.items() if not v]
        if missing:
            raise DataError(f"calibration split file lists no image of class(es) {', '.join(missing)}")
    else:
        found = scan_class_folders(root, "calibration")
        check_classes(found, class_names, "calibration", root)
    if config.num_images < len(class_names):
        raise DataError(f"--calib-images {config.num_images} is fewer than the {len(class_names)} classes; "
                              f"the minimum is {len(class_names)} (one per class), 256 is typical")
    rng = np.random.default_rng(config.seed)
    corrupt: list[Path] = []
    overlap: list[Path] = []
    order = {c: [found[c][i] for i in rng.permutation(len(found[c]))] for c in class_names}
    # Visit files lazily, class by class in seeded order, only as far as each class's quota needs;
    # a class that runs out (few, corrupt or eval files) hands its share to the others.
    cursor = {c: 0 for c in class_names}
    usable = {c: [] for c in class_names}
    while True:
        potential = {c: len(usable[c]) + len(order[c]) - cursor[c] for c in class_names}
        quotas = _quotas(config.num_images, potential)
        short = False
        for c in class_names:
            while len(usable[c]) < quotas[c] and cursor[c] < len(order[c]):
                p = order[c][cursor[c]]
                cursor[c] += 1
                digest = sha256_file(p)
                if digest in exclude_sha256 or p.resolve() in exclude_paths:
                    overlap.append(p)
                elif load_rgb(p) is None:
                    corrupt.append(p)
                else:
                    usable[c].append((p, digest))
            short |= len(usable[c]) < quotas[c]
        if not short:
            break
    total = sum(len(v) for v in usable.values())
    if config.at_most:
        empty = [c for c in class_names if not usable[c]]
        if empty:
            raise DataError(f"calibration set {root}: class(es) {', '.join(empty)} have no usable image ({len(corrupt)} "
                            f"corrupt, {len(overlap)} also in the eval set); every class needs at least one")
        if total < config.num_images:
            log.info("calibration: %s has %d usable images, fewer than %d: calibrating on all of them",
                     root, total, config.num_images)
    elif total < config.num_images:
        raise DataError(
            f"calibration set {root} has {total} usable images ({len(corrupt)} corrupt, {len(overlap)} also in the eval set) "
            f"but --calib-images asks for {config.num_images}; add images or lower --calib-images "
            f"(minimum {len(class_names)}, one per class)")
    items = [(p, c, h) for c in class_names for p, h in usable[c]]
    if overlap:
        log.warning("calibration: excluded %d file(s) that are also in the eval set: %s", len(overlap),
                    ", ".join(str(p) for p in overlap[:5]))
    if corrupt:
        log.warning("calibration: skipped %d corrupt/unreadable image(s): %s", len(corrupt),
                    ", ".join(str(p) for p in corrupt[:5]))
    return CalibrationSample(root=root, items=items, corrupt=corrupt, excluded_overlap=overlap, config=config)


def calibration_batches(sample: CalibrationSample, spec: PreprocessSpec, batch_size: int = 1) -> Iterator[np.ndarray]:
    batch = []
    for p, _, _ in sample.items:
        rgb = load_rgb(p)
        if rgb is None:  # changed on disk since sampling
            log.warning("calibration: %s became unreadable; skipped", p)
            continue
        batch.append(preprocess(rgb, spec))
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []


def make_data_reader(sample: CalibrationSample, spec: PreprocessSpec, input_name: str, batch_size: int = 1,
                     on_batch: Optional[Callable[[int], None]] = None):
    """An ``onnxruntime.quantization.CalibrationDataReader`` over the sample (static batch size);
    ``on_batch(n)`` hears each batch handed to the quantizer (progress)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Optional[Iterator[np.ndarray]] = None
            self.rewind()

        def get_next(self):
            x = next(self._it, None)
            if x is not None and on_batch is not None:
                on_batch(len(x))
            return None if x is None else {input_name: x}

        def rewind(self) -> None:
            self._it = calibration_batches(sample, spec, batch_size)

    return _Reader()
