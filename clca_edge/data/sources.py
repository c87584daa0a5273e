"""Where labelled images come from: three layouts, one result (class names + sample lists).

(a) ImageFolder: ``DIR/train/<class>/*``, ``DIR/val/<class>/*``, optional ``DIR/test/<class>/*``.
(b) One class-folder tree ``DIR/<class>/*`` plus a validation fraction: a stratified, seeded split,
    written to disk as CSV split files so the run (and its resume) is reproducible.
(c) CSV split files, the layout of the UFG leaf benchmarks: ``train.csv``/``val.csv``/``test.csv``
    with ``class_id`` and ``dir`` (image path) columns, optional ``class_name``; image paths are
    relative to an image folder.

Torch-free, so that deploy and tools can list datasets without it.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..core.errors import DataError
from ..core.atomic_io import atomic_write_bytes
from ..core.image_files import IMAGE_EXTENSIONS, class_folders, scan_class_images

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


Sample = tuple[str, int]  # (image path, class index)


@dataclass
class DataSplits:
    class_names: list[str]
    train: list[Sample] = field(default_factory=list)
    val: list[Sample] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)
    layout: str = ""
    root: Optional[Path] = None  # layout "split": the class-folder tree the split's paths are relative to

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> list[Sample]:
        if name not in SPLITS:
            raise DataError(f"split {name!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, name)


def scan_class_tree(root: Path) -> dict[str, list[str]]:
    """``root/<class>/**/<images>`` -> {class: sorted image paths} (``data.files`` rules: recursive,
    hidden files and folders skipped); an empty class folder is an error."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {str(root)!r} does not exist")
    found = scan_class_images(root)
    if not found:
        raise DataError(f"{root} has no class folders; expected {root}/<class name>/<images>")
    for name, files in found.items():
        if not files:
            raise DataError(f"class folder {root / name} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                            "add images or remove the folder")
    return {name: [str(p) for p in files] for name, files in found.items()}


def load_image_folder(root: Path) -> DataSplits:
    """Layout (a): ``train/`` and ``val/`` (and optional ``test/``) class-folder trees."""
    root = Path(root)
    train = scan_class_tree(root / "train")
    names = sorted(train)
    index = {n: i for i, n in enumerate(names)}
    splits = DataSplits(names, [(p, index[c]) for c in names for p in train[c]], layout="imagefolder")
    for name in ("val", "test"):
        if not (root / name).is_dir():
            continue
        tree = scan_class_tree(root / name)
        unknown = sorted(set(tree) - set(index))
        if unknown:
            raise DataError(f"{root / name} has class folder(s) {unknown} that {root / 'train'} lacks; "
                            "every class must have training images")
        setattr(splits, name, [(p, index[c]) for c in sorted(tree) for p in tree[c]])
    return splits


def stratified_split(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Per class, a seeded shuffle then the first ``round(n * val_fraction)`` (at least 1, and at
    least one left for training) go to validation."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"--val-split {val_fraction} is outside (0, 1)")
    by_class: dict[int, list[str]] = {}
    for path, label in samples:
        by_class.setdefault(label, []).append(path)
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted(by_class):
        paths = sorted(by_class[label])
        if len(paths) < 2:
            raise DataError(f"class {label} has {len(paths)} image ({paths[0]}); a validation split needs >= 2 per class")
        rng.shuffle(paths)
        n_val = min(len(paths) - 1, max(1, round(len(paths) * val_fraction)))
        val += [(p, label) for p in paths[:n_val]]
        train += [(p, label) for p in paths[n_val:]]
    return train, val


def write_split_csv(path: Path, samples: list[Sample], class_names: list[str], root: Optional[Path] = None) -> None:
    """A UFG-style split file (``class_id,dir,class_name``); paths relative to ``root`` when given."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["class_id", "dir", "class_name"])
    for p, label in samples:
        w.writerow([label, os.path.relpath(p, root) if root else p, class_names[label]])
    # fsync'd temp file + rename: a resumed run must never read a half-written split.
    atomic_write_bytes(Path(path), buf.getvalue().encode())


def load_split_tree(root: Path, val_fraction: float, seed: int, split_dir: Optional[Path] = None) -> DataSplits:
    """Layout (b): one class-folder tree split into train/val. When ``split_dir`` already holds a
    split (a resumed run) that split is reused; otherwise the new split is written there."""
    root = Path(root).resolve()
    if split_dir is not None and (Path(split_dir) / "train.csv").is_file():
        log.info("reusing the split written in %s", split_dir)
        return load_csv_splits(Path(split_dir), image_root=root)
    tree = scan_class_tree(root)
    names = sorted(tree)
    samples = [(p, i) for i, n in enumerate(names) for p in tree[n]]
    train, val = stratified_split(samples, val_fraction, seed)
    splits = DataSplits(names, train, val, layout="split", root=root)
    if split_dir is not None:
        write_split_files(Path(split_dir), splits)
    return splits


# Next to a run's split files: the folder their paths are relative to, so that the files alone (e.g.
# ``deploy --eval-data RUN/split/val.csv``) can be read without the training command line.
SPLIT_SOURCE = "source.json"


def write_split_files(split_dir: Path, splits: DataSplits) -> None:
    """``split_dir/train.csv`` and ``val.csv`` of a drawn split (layout "split"), paths relative to its
    tree, and ``source.json`` naming that tree."""
    for name in ("train", "val"):
        write_split_csv(Path(split_dir) / f"{name}.csv", splits.split(name), splits.class_names, splits.root)
    source = {"image_root": str(Path(splits.root).resolve()) if splits.root else None, "written_by": "clca-edge train"}
    atomic_write_bytes(Path(split_dir) / SPLIT_SOURCE, (json.dumps(source) + "\n").encode())
    log.info("wrote the %d/%d train/val split to %s", len(splits.train), len(splits.val), split_dir)


def split_file_samples(path, class_names: list[str], image_root: Optional[Path] = None) -> tuple[list[Sample], Path]:
    """The images one split file lists (``class_id,dir[,class_name]``) as (path, class index) of
    ``class_names``, and the folder its paths are relative to: ``image_root``, else the one a
    training run recorded next to it (``source.json``), else the file's folder or its one sub-folder
    holding them (UFG archives). Class ids outside ``class_names``, a class name that disagrees and
    missing images are errors naming the file."""
    path = Path(path)
    rows = _read_csv(path)
    root = Path(image_root) if image_root else None
    source = path.parent / SPLIT_SOURCE
    if root is None and source.is_file():
        try:
            recorded = json.loads(source.read_text()).get("image_root")
        except (OSError, ValueError, AttributeError):
            recorded = None
        root = Path(recorded) if recorded else None
    if root is None:
        root = _find_image_root(path.parent, rows[0]["dir"])
    samples = []
    for r in rows:
        try:
            cid = int(r["class_id"])
        except ValueError:
            raise DataError(f"{path}: class_id {r['class_id']!r} is not an integer") from None
        if not 0 <= cid < len(class_names):
            raise DataError(f"{path}: class id {cid} is outside the checkpoint's 0..{len(class_names) - 1}")
        if r.get("class_name") and r["class_name"] != class_names[cid]:
            raise DataError(f"{path}: class id {cid} is {r['class_name']!r} there but {class_names[cid]!r} in the "
                            "checkpoint; is it the split of another run?")
        samples.append((str(root / r["dir"]), cid))
    absent = [p for p, _ in samples if not os.path.exists(p)]
    if absent:
        raise DataError(f"{path} lists {len(absent)} image(s) that do not exist, e.g. {absent[0]}")
    return samples, root


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f"split file {str(path)!r} does not exist")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in (reader.fieldnames or [])]
        if "class_id" not in fields or "dir" not in fields:
            raise DataError(f"{path} needs a header with 'class_id' and 'dir' columns (has {fields})")
        rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k is not None} for r in reader]
    if not rows:
        raise DataError(f"split file {path} lists no images")
    return rows


def _find_image_root(csv_dir: Path, first: str) -> Path:
    """UFG archives keep images in one sub-folder next to the CSVs (e.g. ``cotton_square_new``)."""
    if (csv_dir / first).exists():
        return csv_dir
    hits = [d for d in class_folders(csv_dir) if (d / first).exists()]
    if len(hits) == 1:
        return hits[0]
    raise DataError(f"cannot find image {first!r} listed in {csv_dir}/train.csv next to it or in one sub-folder; "
                    "pass --image-root")


def load_csv_splits(csv_dir: Path, image_root: Optional[Path] = None, *, train_csv: Optional[Path] = None,
                    val_csv: Optional[Path] = None, test_csv: Optional[Path] = None) -> DataSplits:
    """Layout (c): ``train.csv``, ``val.csv`` (and optional ``test.csv``) in ``csv_dir``, or given paths."""
    csv_dir = Path(csv_dir)
    paths = {"train": train_csv or csv_dir / "train.csv", "val": val_csv or csv_dir / "val.csv",
             "test": test_csv or csv_dir / "test.csv"}
    rows = {"train": _read_csv(Path(paths["train"])), "val": _read_csv(Path(paths["val"]))}
    if test_csv is not None or Path(paths["test"]).is_file():
        rows["test"] = _read_csv(Path(paths["test"]))
    root = Path(image_root) if image_root else _find_image_root(Path(paths["train"]).parent, rows["train"][0]["dir"])

    def ids(name: str) -> set[int]:
        out = set()
        for r in rows[name]:
            try:
                out.add(int(r["class_id"]))
            except ValueError:
                raise DataError(f"{paths[name]}: class_id {r['class_id']!r} is not an integer") from None
        return out

    train_ids = ids("train")
    if min(train_ids) < 0:
        raise DataError(f"{paths['train']}: class ids must be >= 0 (found {min(train_ids)})")
    num_classes = max(train_ids) + 1
    missing = sorted(set(range(num_classes)) - train_ids)
    if missing:
        raise DataError(f"{paths['train']} has no images of class id(s) {missing[:10]}; "
                        "class ids must run 0..K-1 and every class needs training images")
    names = [str(i) for i in range(num_classes)]
    for r in rows["train"]:
        if r.get("class_name"):
            names[int(r["class_id"])] = r["class_name"]
    splits = DataSplits(names, layout="csv")
    for name, part in rows.items():
        extra = sorted(ids(name) - train_ids)
        if extra:
            raise DataError(f"{paths[name]} has class id(s) {extra[:10]} that {paths['train']} lacks; "
                            "every class must have training images")
        samples = [(str(root / r["dir"]), int(r["class_id"])) for r in part]
        absent = [p for p, _ in samples if not os.path.exists(p)]
        if absent:
            raise DataError(f"{paths[name]} lists {len(absent)} image(s) that do not exist, e.g. {absent[0]}; "
                            "check --image-root")
        setattr(splits, name, samples)
    return splits


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how to split it. ``val_split`` > 0 selects layout (b)."""

    root: str
    val_split: float = 0.0
    split_seed: int = 0
    image_root: Optional[str] = None
    train_csv: Optional[str] = None
    val_csv: Optional[str] = None
    test_csv: Optional[str] = None
    # Labelled class-folder trees (``fleet harvest`` then labelled by moving files) added to train only.
    extra: tuple = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_split < 1.0:
            raise DataError(f"--val-split {self.val_split} is outside [0, 1)")
        object.__setattr__(self, "extra", tuple(str(e) for e in self.extra or ()))


def load_splits(config: DataConfig, split_dir: Optional[Path] = None) -> DataSplits:
    """Pick the layout from what is on disk (or the explicit CSV paths) and load it; the
    ``extra`` trees join the train split only, so the held-out splits stay as they were drawn."""
    return add_extra_train(_load_layout(config, split_dir), config.extra)


def add_extra_train(splits: DataSplits, extra: tuple) -> DataSplits:
    """Append the images of each ``extra`` class-folder tree to ``splits.train``; a class the data
    set does not have is an error (a typo in a folder name would add a class silently)."""
    index = {name: i for i, name in enumerate(splits.class_names)}
    for folder in extra:
        for name, files in scan_class_tree(Path(folder)).items():
            if name not in index:
                raise DataError(f"--extra-data {folder}: class folder {name!r} is not a class of the data set "
                                f"({', '.join(splits.class_names)}); move its images into one that is")
            splits.train.extend((p, index[name]) for p in files)
    return splits


def _load_layout(config: DataConfig, split_dir: Optional[Path] = None) -> DataSplits:
    root = Path(config.root)
    if config.train_csv or config.val_csv:
        if not (config.train_csv and config.val_csv):
            raise DataError("give both --train-csv and --val-csv")
        return load_csv_splits(root, config.image_root and Path(config.image_root), train_csv=Path(config.train_csv),
                               val_csv=Path(config.val_csv), test_csv=config.test_csv and Path(config.test_csv))
    if not root.exists():
        raise DataError(f"data folder {str(root)!r} does not exist")
    if config.val_split > 0:
        return _split_with_val_fraction(root, config, split_dir)
    if (root / "train.csv").is_file():
        return load_csv_splits(root, config.image_root and Path(config.image_root))
    if (root / "train").is_dir():
        splits = load_image_folder(root)
        if not splits.val:
            raise DataError(f"{root} has no val/ folder; add one or pass --val-split 0.2 to split train/")
        return splits
    if any((root / s).is_dir() for s in SPLITS):
        raise DataError(f"{root} has {'/, '.join(s for s in SPLITS if (root / s).is_dir())}/ but no train/ folder; "
                        "training needs train/<class>/ images")
    raise DataError(f"{root} has neither train/ + val/ class folders nor train.csv + val.csv; for a single "
                    "class-folder tree pass --val-split 0.2")


def _split_with_val_fraction(root: Path, config: DataConfig, split_dir: Optional[Path]) -> DataSplits:
    """--val-split on a folder that already has split folders or files: their names are no classes.
    Only train/ (+ test/): train/ is split, test/ kept; a val split or split files already there:
    refused, since --val-split would throw that split away."""
    if (root / "train.csv").is_file() or (root / "val.csv").is_file():
        raise DataError(f"{root} holds split files (train.csv/val.csv); drop --val-split to train on that split")
    if (root / "val").is_dir():
        raise DataError(f"{root} already holds train/ and val/ folders; drop --val-split to train on that split "
                        "as it is")
    if not (root / "train").is_dir():
        if (root / "test").is_dir():
            raise DataError(f"{root} has test/ but no train/ folder; training needs train/<class>/ images")
        return load_split_tree(root, config.val_split, config.split_seed, split_dir)
    log.info("--val-split: %s holds split folders; splitting %s", root, root / "train")
    splits = load_split_tree(root / "train", config.val_split, config.split_seed, split_dir)
    if (root / "test").is_dir():
        tree = scan_class_tree(root / "test")
        index = {n: i for i, n in enumerate(splits.class_names)}
        unknown = sorted(set(tree) - set(index))
        if unknown:
            raise DataError(f"{root / 'test'} has class folder(s) {unknown} that {root / 'train'} lacks; "
                            "every class must have training images")
        splits.test = [(p, index[c]) for c in sorted(tree) for p in tree[c]]
    return splits
