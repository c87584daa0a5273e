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


__all__ = ["IMAGE_EXTENSIONS", "class_folders", "glob_images", "has_image_suffix", "list_images",
           "scan_class_images"]
