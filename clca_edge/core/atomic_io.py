"""Torch-free file helpers shared by training (checkpoints, metrics), deploy (bundle manifests) and
the device runtime (TensorRT plans): importing this never pulls torch or numpy.

Temp files and folders from ``tempfile`` are private (0600 / 0700) by design; what we rename into
place from them is a user's output (a bundle copied to a device, a checkpoint shared with a
colleague), so it gets the permissions a plain ``open``/``mkdir`` would give: 0666 / 0777 less the
umask.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union


def current_umask() -> int:
    """The process umask, read without changing it where Linux exposes it (``os.umask`` can only
    be read by setting it, which briefly changes it for every thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_temp_dir(parent: Union[str, Path], prefix: str, suffix: str = ".tmp") -> Path:
    """A new temp folder in ``parent`` (to be renamed into place) with the user's umask applied."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync and ``os.replace``, so a
    crash or power cut never leaves a truncated file under the final name. The file gets the
    permissions of a plain ``open(path, "wb")`` (0666 less the umask), not mkstemp's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


__all__ = ["atomic_write_bytes", "current_umask", "make_temp_dir"]
