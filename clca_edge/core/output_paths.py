"""Where commands write, and what they may replace.

The rule: an output path that exists and is not ours (a data set, a file) is never replaced, with
or without ``--force``; ``--force`` replaces only what the tool itself wrote (a bundle, a run
folder, a synthetic data set). Each command knows what "ours" means for its output; the checks
every output path goes through first are here: a file where a folder belongs, a folder that
holds the working folder, the home folder or an input (the checkpoint, the data), an unwritable
location. Every refusal is an ``OutputError`` (exit 11) naming the path and what to do instead.

Torch-free: the device side (capture) uses it too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Optional, Union

from .errors import OutputError

PathLike = Union[str, os.PathLike]


def _resolved(p: PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(p))).resolve()


def holds(outer: PathLike, inner: PathLike) -> bool:
    """``outer`` is ``inner`` or one of its ancestors (symlinks resolved)."""
    o, i = _resolved(outer), _resolved(inner)
    return o == i or o in i.parents


def refuse_enclosing(out: PathLike, option: str, protected: Mapping[str, Optional[PathLike]] = {}) -> None:
    """Refuse an output that would replace (or write into the middle of) what must survive: the
    working folder or a folder above it, the home folder or one above it, or any ``protected``
    input (name -> path; e.g. the checkpoint and the data), equal to ``out`` or inside it."""
    if holds(out, Path.cwd()):
        raise OutputError(f"{option} {out} is the working folder or holds it; give a folder of its own, "
                          f"e.g. {option} {Path(out) / 'out'}")
    if holds(out, Path.home()):
        raise OutputError(f"{option} {out} is the home folder or holds it; give a folder of its own")
    for what, path in protected.items():
        if path is not None and holds(out, path):
            raise OutputError(f"{option} {out} holds the {what} {path}; give a folder of its own")


def refuse_overlap(out: PathLike, option: str, what: str, path: Optional[PathLike]) -> None:
    """Refuse an output folder that is, holds, or lies inside ``path`` (e.g. the data: a run folder
    inside a class-folder tree would become a class, and its PNGs training images)."""
    if path is None:
        return
    if holds(out, path) or holds(path, out):
        raise OutputError(f"{option} {out} overlaps the {what} {path}; put outputs outside it")


def is_empty_dir(path: PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and next(p.iterdir(), None) is None


def make_dirs(path: PathLike, option: str) -> Path:
    """``mkdir -p`` that says in one line why it cannot (a file in the way, no permission)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{option} {p} exists and is a file, not a folder; choose another {option}")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {option} {p} ({e.strerror or e}); choose a writable {option}") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {p} is not writable; choose a writable {option}")
    return p


def check_writable_dir(path: PathLike, option: str) -> Path:
    """That ``make_dirs(path)`` would work, without creating anything (so a command that fails later
    leaves no empty folder): not a file, and the nearest existing folder above it writable."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{option} {p} exists and is a file, not a folder; choose another {option}")
    q = p.absolute()
    while not q.exists():
        q = q.parent
    if not q.is_dir():
        raise OutputError(f"cannot create {option} {p}: {q} is a file; choose another {option}")
    if not os.access(q, os.W_OK | os.X_OK):
        raise OutputError(f"cannot create {option} {p}: {q} is not writable; choose a writable {option}")
    return p


def writable_parent(path: PathLike, option: str) -> Path:
    """The (created) parent folder of an output file, checked writable; the path must not be a folder."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{option} {p} is a folder; give a file path")
    make_dirs(p.parent if str(p.parent) else Path("."), option)
    return p


def missing_dirs(path: PathLike) -> list[Path]:
    """``path`` and those of its ancestors that do not exist yet, deepest first: the folders a
    ``mkdir -p`` of it would create."""
    out, p = [], Path(path).absolute()
    while not p.exists() and p != p.parent:
        out.append(p)
        p = p.parent
    return out


def remove_empty_dirs(dirs: Iterable[PathLike]) -> None:
    """``rmdir`` each folder that exists and is empty, in the order given (deepest first); never
    removes anything with content."""
    for d in dirs:
        try:
            Path(d).rmdir()
        except OSError:
            pass


@contextlib.contextmanager
def removes_empty_dirs(dirs: Iterable[PathLike]) -> Iterator[None]:
    """On leaving (success or error), the given folders that stayed empty are removed."""
    dirs = list(dirs)
    try:
        yield
    finally:
        remove_empty_dirs(dirs)


def replace_dir(tmp: PathLike, out: PathLike) -> None:
    """Put the finished folder ``tmp`` at ``out``: an existing ``out`` (already checked to be ours)
    is moved aside first and removed after, so no instant has a half-deleted ``out``."""
    tmp, out = Path(tmp), Path(out)
    old = None
    if out.is_symlink() or (out.exists() and not is_empty_dir(out)):
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
    elif out.exists():
        out.rmdir()
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["check_writable_dir", "holds", "is_empty_dir", "make_dirs", "missing_dirs", "refuse_enclosing", "refuse_overlap",
           "remove_empty_dirs", "removes_empty_dirs", "replace_dir", "writable_parent"]
