"""Where ``deploy`` writes its bundle, and what ``--force`` may replace there.

``--force`` replaces only a bundle (a folder whose ``manifest.json`` is a clca-edge bundle
manifest, or an ``OUT.tar`` archive of one); anything else at ``--out`` (a data set, a file, a
folder of other things) is refused and left untouched, with or without ``--force``. An ``--out``
that is the working folder, the home folder or holds the checkpoint or the data is refused
outright. Checked before any work, so a refusal costs nothing; the bundle is built in a temp
folder next to ``--out`` and swapped in at the end (``core.output_paths.replace_dir``).
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path, PurePosixPath
from typing import Optional

from ..bundle import MANIFEST_NAME
from ..core.errors import OutputError
from ..core.atomic_io import make_temp_dir
from ..core.output_paths import is_empty_dir, refuse_enclosing


class BundleExistsError(OutputError):
    """--out is a bundle already and --force was not given."""


def is_bundle_folder(folder: Path) -> bool:
    """A folder deploy wrote: its ``manifest.json`` parses as a bundle manifest (a format number
    and the sha256 table of its files). Any format version counts: an old bundle is still ours."""
    try:
        m = json.loads((Path(folder) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(m, dict) and isinstance(m.get("format"), int) and isinstance(m.get("files"), dict)


def is_bundle_archive(path: Path) -> bool:
    """A ``.tar`` deploy packed: a tar archive with a bundle manifest at its top (or one folder down)."""
    try:
        with tarfile.open(path, "r:*") as tf:
            names = [m.name for m in tf.getmembers() if m.isfile()]
    except (tarfile.TarError, OSError, EOFError):
        return False
    return any(PurePosixPath(n).name == MANIFEST_NAME and len(PurePosixPath(n).parts) <= 2 for n in names)


def tar_path(out: Path) -> Path:
    return Path(str(out).rstrip("/") + ".tar")


def check_out(out: Path, force: bool, tar: bool, checkpoint: Path, calib_data: Optional[Path],
              eval_data: Optional[Path]) -> None:
    """Refuse (``OutputError``) an ``--out`` deploy may not write or replace; see the module docstring."""
    out = Path(out)
    refuse_enclosing(out, "--out", {"checkpoint": checkpoint, "calibration data": calib_data,
                                    "eval data": eval_data})
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} exists and is a file; deploy never replaces a file: choose another --out")
    if out.is_dir() and not is_empty_dir(out):
        if not is_bundle_folder(out):
            raise OutputError(f"--out {out} exists and is not a clca-edge bundle (no bundle {MANIFEST_NAME}); "
                              "--force replaces only a bundle deploy wrote: choose another --out")
        if not force:
            raise BundleExistsError(f"{out} already exists; pass --force to replace it or choose another --out")
    if tar:
        archive = tar_path(out)
        if archive.is_dir() or (archive.exists() and not is_bundle_archive(archive)):
            raise OutputError(f"{archive} exists and is not a bundle archive; --tar would replace it: choose "
                              "another --out")
        if archive.exists() and not force:
            raise BundleExistsError(f"{archive} already exists; pass --force to replace it or choose another --out")


def temp_bundle_dir(out: Path) -> Path:
    """The folder the bundle is built in: next to ``--out`` (same file system, so the final rename
    is atomic), with the user's umask."""
    parent = Path(out).resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return make_temp_dir(parent, prefix=f".{Path(out).name}.")
    except OSError as e:
        raise OutputError(f"cannot write the bundle under {parent} ({e.strerror or e}); choose a writable --out") \
            from None


def pack_tar(folder: Path, archive: Path) -> Path:
    """``folder`` as one uncompressed tar, written to a temp name and renamed (never half-written)."""
    tmp = archive.with_name(f".{archive.name}.tmp")
    try:
        with tarfile.open(tmp, "w") as tf:
            tf.add(folder, arcname=folder.name)
        os.replace(tmp, archive)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {archive} ({e.strerror or e}); choose a writable --out") from None
    return archive


__all__ = ["BundleExistsError", "check_out", "is_bundle_archive", "is_bundle_folder", "pack_tar", "tar_path",
           "temp_bundle_dir"]
