"""The one way clca-edge finds image files: which extensions count, how folders are walked, how
class-folder trees are read. Training, deploy (calibration and the accuracy gate), ``predict`` and
capture all use it, so a folder holds the same images for each of them.

Rules: a folder is walked recursively; hidden files and hidden folders (names starting with '.')
below it are skipped; symlinked folders are not followed (no cycles); results are sorted by path.

Torch-free and small: the device runtime and capture import it.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Union

from .errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

PathLike = Union[str, os.PathLike]


def has_image_suffix(path: PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _visible(name: str) -> bool:
    return not name.startswith(".")


def list_images(folder: PathLike) -> list[Path]:
    """Image files under ``folder`` (recursive, hidden files and folders skipped), sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if _visible(d)]
        out += [Path(dirpath) / f for f in filenames if _visible(f) and has_image_suffix(f)]
    return sorted(p for p in out if p.is_file())


def glob_images(pattern: str) -> list[Path]:
    """Image files matched by a glob (``**`` recursive, ``~`` expanded), sorted. Like the shell,
    ``*`` does not match hidden names."""
    return sorted(Path(q) for q in glob.glob(os.path.expanduser(pattern), recursive=True)
                  if has_image_suffix(q) and Path(q).is_file())


def class_folders(root: PathLike) -> list[Path]:
    """The visible sub-folders of ``root``, sorted: one per class."""
    return sorted(d for d in Path(root).iterdir() if d.is_dir() and _visible(d.name))


def scan_class_images(root: PathLike) -> dict[str, list[Path]]:
    """``root/<class>/**/<image>`` -> {class name: sorted image paths}, classes sorted. A class
    folder without images maps to an empty list: callers raise their own error for it."""
    return {d.name: list_images(d) for d in class_folders(root)}


def scan_class_folders(root, what: str) -> dict[str, list[Path]]:
    """``root/<class>/**/<image>`` -> {class: sorted image paths}, by the same rules as training
    (``data.files``: recursive, hidden files and folders skipped). Empty class folders are an error."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{what} folder {str(root)!r} does not exist; pass a folder of class sub-folders")
    classes = scan_class_images(root)
    for name, files in classes.items():
        if not files:
            raise DataError(f"{what} class folder {root / name} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                                  "add images or remove the folder")
    if not classes:
        raise DataError(f"{what} folder {root} has no class sub-folders (expected {root}/<class>/<image>)")
    return classes


def check_classes(found: dict[str, list[Path]], class_names: list[str], what: str, root) -> None:
    missing = [c for c in class_names if c not in found]
    extra = [c for c in found if c not in class_names]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unknown {', '.join(extra)}")
        raise DataError(f"{what} classes in {root} do not match the checkpoint's ({'; '.join(parts)}); "
                              f"the checkpoint has: {', '.join(class_names)}")


__all__ = ["IMAGE_EXTENSIONS", "check_classes", "class_folders", "glob_images", "has_image_suffix", "list_images",
           "scan_class_folders", "scan_class_images"]
