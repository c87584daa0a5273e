"""Deploy bundles: loading with full hash verification, torch-free (runs on the device).

A bundle is a folder (or a ``.tar`` of one) holding ``manifest.json`` and every file it lists
under ``files`` with its sha256: the ONNX variants, ``labels.txt``, ``preprocess.json``, the
calibration manifest, ``trtexec.sh`` and the TensorRT engines deploy built when it ran on a Jetson
(engines ``build-engine`` builds on a device go to that device's cache, never into a bundle). Loading
refuses a bundle with a missing file or a hash that does not match, so a truncated copy or a
tampered file never reaches the model.

A ``.tar`` is extracted once into a persistent folder next to it (``NAME.tar`` -> ``NAME.tar.d/``)
and reused while its manifest is the archive's, so a capture start does not unpack hundreds of MB
again. Nothing else is written there (engines go to the device cache, ``runtime/engine_cache.py``).

The manifest's schema is ``bundle.manifest`` (typed records, format 3); ``read_manifest`` and
``write_manifest`` here are the only code that reads or writes ``manifest.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Optional, Union

from ..core.errors import BundleError, TrustError
from ..core.atomic_io import atomic_write_bytes, make_temp_dir
from ..core.output_paths import replace_dir
from ..core.preprocess import PreprocessSpec
from .manifest import (ENGINE_SOURCE, FORMAT_VERSION, LABELS_NAME, MANIFEST_NAME, PRECISIONS,
                       PREPROCESS_NAME, UNUSABLE, Manifest, Status, VariantRecord)

log = logging.getLogger(__name__)

BUNDLE_FORMAT = FORMAT_VERSION  # what write_manifest writes

# The statuses by name (Status members: equal to, and printed as, their manifest text).
PASSED = Status.PASSED
REJECTED = Status.REJECTED
TO_VERIFY = Status.TO_VERIFY
UNVERIFIED = Status.UNVERIFIED
FAILED_TO_RUN = Status.FAILED_TO_RUN
BUILD_FAILED = Status.BUILD_FAILED

EXTRACT_SUFFIX = ".d"


class BundleIntegrityError(BundleError):
    """A file listed in the manifest is missing or its sha256 does not match."""


def sha256_file(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Variant:
    """One precision variant of the model (an ONNX file or a TensorRT plan still to build), with its
    file resolved inside the bundle; ``record`` is its manifest record."""

    name: str
    record: VariantRecord
    path: Optional[Path]

    @property
    def precision(self) -> str:
        return self.record.precision

    @property
    def status(self) -> Status:
        return self.record.status

    @property
    def usable(self) -> bool:
        """The runtime may run it: an ONNX file whose status is not rejected / failed to run."""
        return self.status.usable and self.path is not None


@dataclass
class Bundle:
    root: Path
    manifest: Manifest
    labels: list[str]
    preprocess: PreprocessSpec
    variants: dict[str, Variant]
    source: Optional[Path] = None  # what was opened: the folder, or the .tar it was extracted from

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest.input.shape or ())

    @property
    def engines(self):
        """The bundle's own TensorRT engines (``EngineRecord``, built by deploy on a Jetson), keyed by
        file name (see ``EngineKey``); a device's own builds are in its cache (``runtime/engine_cache.py``)."""
        return self.manifest.engines

    def sha256(self, path: Path) -> str:
        """A bundle file's sha256 as verified at load (no re-hash)."""
        return self.manifest.files[Path(path).relative_to(self.root).as_posix()]

    def variant(self, name: str) -> Variant:
        if name not in self.variants:
            raise BundleError(f"bundle {self.root} has no variant {name!r}; it has {', '.join(self.variants)}")
        return self.variants[name]


def _safe_rel(rel: str, root: Path) -> Path:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise BundleIntegrityError(f"manifest lists {rel!r}, which points outside the bundle {root}")
    return root.joinpath(*p.parts)


def verify_files(root: Path, files: dict[str, str]) -> None:
    """Every listed file exists and matches its sha256; raises BundleIntegrityError otherwise."""
    missing, changed = [], []
    for rel, digest in sorted(files.items()):
        p = _safe_rel(rel, root)
        if not p.is_file():
            missing.append(rel)
        elif sha256_file(p) != digest:
            changed.append(rel)
    if missing:
        raise BundleIntegrityError(f"bundle {root} is incomplete: {', '.join(missing)} missing; copy the whole bundle again")
    if changed:
        raise BundleIntegrityError(f"bundle {root}: sha256 of {', '.join(changed)} does not match the manifest "
                                   "(corrupted or modified); copy the bundle again or re-run clca-edge deploy")


def _top_manifest(names: list[str], tar_path: Path) -> tuple[str, ...]:
    """The folder parts of the archive's one bundle manifest: its root or one top folder."""
    tops = {PurePosixPath(n).parts[:-1] for n in names
            if PurePosixPath(n).name == MANIFEST_NAME and len(PurePosixPath(n).parts) <= 2}
    if () in tops:  # a bundle at the archive's root; calibration/manifest.json is not another one
        return ()
    if len(tops) != 1:
        raise BundleError(f"{tar_path} holds {len(tops)} bundle manifests at its top; a bundle archive holds exactly one")
    return next(iter(tops))


def _open_tar(tar_path: Path):
    try:
        return tarfile.open(tar_path, "r:*")
    except (tarfile.TarError, OSError, EOFError) as e:
        # tarfile's message lists every compression it tried, over several lines.
        why = "not a tar archive" if isinstance(e, tarfile.ReadError) else " ".join(str(e).split())
        raise BundleError(f"{tar_path} is not a readable bundle archive ({why}); pass a bundle folder or "
                          "the .tar that deploy wrote, or copy it again") from None


def _safe_extract(tar_path: Path, dest: Path) -> Path:
    """Extract regular files and folders only, all inside ``dest``; returns the bundle folder."""
    try:
        with _open_tar(tar_path) as tf:
            members = tf.getmembers()
            for m in members:
                p = PurePosixPath(m.name)
                if p.is_absolute() or ".." in p.parts or not (m.isfile() or m.isdir()):
                    raise BundleIntegrityError(f"{tar_path}: member {m.name!r} is not a plain file inside the bundle")
            top = _top_manifest([m.name for m in members if m.isfile()], tar_path)
            kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tf.extractall(dest, members=members, **kw)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise BundleError(f"{tar_path} is not a readable bundle archive ({e}); copy it again") from None
    return dest.joinpath(*top)


def _tar_manifest(tar_path: Path) -> tuple[Manifest, tuple[str, ...]]:
    """The archive's bundle manifest (read without extracting anything else) and its folder parts."""
    try:
        with _open_tar(tar_path) as tf:
            members = {m.name: m for m in tf.getmembers() if m.isfile()}
            top = _top_manifest(list(members), tar_path)
            name = next(n for n in members if PurePosixPath(n).parts == (*top, MANIFEST_NAME))
            f = tf.extractfile(members[name])
            data = f.read() if f is not None else b""
    except (tarfile.TarError, OSError, EOFError) as e:
        raise BundleError(f"{tar_path} is not a readable bundle archive ({e}); copy it again") from None
    return _parse_manifest(data, f"{tar_path} ({name})"), top


EXTRACT_MARKER = ".clca-edge-extracted"


def extraction_dir(tar_path: Path) -> Path:
    """Where a ``.tar`` bundle is kept extracted: ``NAME.tar.d`` next to it, or, if that folder
    cannot be written (read-only media), a per-archive folder in the user cache."""
    tar_path = Path(tar_path)
    sibling = tar_path.with_name(tar_path.name + EXTRACT_SUFFIX)
    if sibling.exists() or os.access(tar_path.resolve().parent, os.W_OK):
        return sibling
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clca-edge" / "bundles"
    tag = hashlib.sha256(str(tar_path.resolve()).encode()).hexdigest()[:12]
    return cache / f"{tar_path.name}-{tag}{EXTRACT_SUFFIX}"


def _agrees(root: Path, tar_manifest: Manifest) -> bool:
    """The extracted manifest is the archive's. (One where an older build-engine added engines is
    extracted again: engines now live in the device cache.)"""
    try:
        return read_manifest(root).to_dict() == tar_manifest.to_dict()
    except BundleError:
        return False


def _extract_fresh(tar_path: Path, dest: Path) -> None:
    if dest.exists() and not (dest / EXTRACT_MARKER).is_file():
        raise BundleError(f"{dest} exists but was not extracted by clca-edge from {tar_path}; move it away "
                          "so the archive can be extracted there")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(dest.parent, prefix=f".{dest.name}.")
    except OSError as e:
        raise BundleError(f"cannot extract {tar_path} under {dest.parent} ({e.strerror}); extract it yourself "
                          "(tar xf) and pass the folder") from None
    try:
        _safe_extract(tar_path, tmp)
        (tmp / EXTRACT_MARKER).write_text(f"{tar_path.resolve()}\n")
        replace_dir(tmp, dest)  # the stale copy is moved aside first: no half-deleted folder for a reader
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BundleError(f"cannot extract {tar_path} to {dest} ({e.strerror or e}); extract it yourself "
                          "(tar xf) and pass the folder") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load_archive(tar_path: Path) -> Bundle:
    """Reuse the persistent extraction while it agrees with the archive and verifies; else extract again."""
    tar_manifest, top = _tar_manifest(tar_path)
    dest = extraction_dir(tar_path)
    root = dest.joinpath(*top)
    if (dest / EXTRACT_MARKER).is_file():
        if _agrees(root, tar_manifest):
            try:
                return _open(root, source=tar_path)
            except BundleIntegrityError as e:
                log.warning("extracted copy of %s fails verification (%s); extracting it again", tar_path, e)
        else:
            log.info("%s does not match %s (archive replaced or copy edited); extracting it again", dest, tar_path)
    _extract_fresh(tar_path, dest)
    return _open(root, source=tar_path)


def _parse_manifest(data: bytes, where: str) -> Manifest:
    try:
        raw = json.loads(data)
    except ValueError as e:
        raise BundleIntegrityError(f"{where} is not valid JSON ({e}); copy the bundle again") from None
    try:
        return Manifest.from_dict(raw)
    except BundleError as e:
        raise type(e)(f"{where}: {e}") from None


def read_manifest(root: Union[str, Path]) -> Manifest:
    """The bundle's manifest, validated (formats 1 and 2 upgraded); the ONE reader of ``manifest.json``.
    Does not verify the files' hashes (``load_bundle`` does)."""
    mpath = Path(root) / MANIFEST_NAME
    if not mpath.is_file():
        raise BundleError(f"{root} has no {MANIFEST_NAME}; is it a bundle written by clca-edge deploy?")
    try:
        data = mpath.read_bytes()
    except OSError as e:
        raise BundleIntegrityError(f"{mpath} cannot be read ({e.strerror}); copy the bundle again") from None
    return _parse_manifest(data, str(mpath))


def load_bundle(path: Union[str, Path], extract_to: Optional[Union[str, Path]] = None,
                trusted_keys=None) -> Bundle:
    """Open a bundle folder or ``.tar`` archive, verifying every file's sha256.

    An archive is extracted into ``extract_to`` if given, else into its persistent folder
    (``extraction_dir``), which later loads reuse while it matches the archive.
    ``trusted_keys`` (a ``bundle.signature.TrustedKeys``): the bundle must also carry a signature by
    one of them over what deploy wrote, else TrustError; a hash mismatch is then a TrustError too.
    """
    if trusted_keys is not None:
        from .signature import verify_bundle

        try:
            bundle = load_bundle(path, extract_to)
        except BundleIntegrityError as e:
            raise TrustError(f"{e} (refused: this device only runs bundles that verify against their signature)") from None
        verify_bundle(bundle.root, trusted_keys, where=str(path))
        return bundle
    path = Path(path)
    if not path.exists():
        raise BundleError(f"bundle {str(path)!r} does not exist")
    if path.is_dir():
        return _open(path)
    if extract_to is not None:
        dest = Path(extract_to)
        dest.mkdir(parents=True, exist_ok=True)
        return _open(_safe_extract(path, dest), source=path)
    return _load_archive(path)


def _open(root: Path, source: Optional[Path] = None) -> Bundle:
    manifest = read_manifest(root)
    verify_files(root, manifest.files)
    listed = set(manifest.files)
    for rel in (manifest.labels, manifest.preprocess_file):
        if rel not in listed:
            raise BundleIntegrityError(f"{root}: manifest does not list {rel}; re-run clca-edge deploy")
    labels = [ln for ln in _safe_rel(manifest.labels, root).read_text().splitlines() if ln]
    if labels != list(manifest.class_names):
        raise BundleIntegrityError(f"{root}: {manifest.labels} disagrees with the manifest's class names")
    spec_path = _safe_rel(manifest.preprocess_file, root)
    try:
        spec = PreprocessSpec.from_dict(json.loads(spec_path.read_text()))
    except (ValueError, TypeError) as e:  # bad JSON, unknown keys, or values ConfigError refuses
        raise BundleError(f"{spec_path} is not a valid preprocessing spec ({e}); re-run clca-edge deploy") from None
    variants = {}
    for name, v in manifest.variants.items():
        if v.file is not None and v.file not in listed:
            raise BundleIntegrityError(f"{root}: variant {name!r} file {v.file} is not hashed in the manifest")
        variants[name] = Variant(name=name, record=v, path=_safe_rel(v.file, root) if v.file else None)
    for key, e in {**manifest.engines, **manifest.torch_tensorrt}.items():
        if e.file not in listed:
            raise BundleIntegrityError(f"{root}: engine {key} file {e.file} is not hashed in the manifest")
    return Bundle(root=root, manifest=manifest, labels=labels, preprocess=spec, variants=variants,
                  source=source or root)


def write_manifest(root: Path, manifest: Manifest, hash_files: bool = True,
                   new_files: Optional[Iterable[str]] = None) -> None:
    """Write ``manifest`` (format 3) atomically; the ONE writer of ``manifest.json``. ``new_files``
    (paths relative to ``root``): hash only these into ``manifest.files`` and keep the other, already
    verified hashes (deploy adding the bundle's own plans); else with ``hash_files`` re-hash every file under
    ``root`` but the manifest itself (deploy). What is written is read back through the reader
    first, so nothing the reader would refuse is ever written."""
    if not isinstance(manifest, Manifest):
        raise TypeError(f"write_manifest takes a bundle.Manifest, not {type(manifest).__name__}")
    root = Path(root)
    if new_files is not None:
        files = dict(manifest.files)
        for rel in new_files:
            files[rel] = sha256_file(_safe_rel(rel, root))
        manifest.files = files
    elif hash_files:
        files = {}
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_file() and rel != MANIFEST_NAME and not p.name.startswith("."):
                files[rel] = sha256_file(p)
        manifest.files = files
    manifest.format = FORMAT_VERSION
    data = json.dumps(manifest.to_dict(), indent=2, sort_keys=False).encode()
    try:
        Manifest.from_dict(json.loads(data))
    except BundleError as e:
        raise BundleError(f"refusing to write {root / MANIFEST_NAME}: {e}") from None
    atomic_write_bytes(root / MANIFEST_NAME, data)


__all__ = ["BUILD_FAILED", "BUNDLE_FORMAT", "Bundle", "BundleError", "BundleIntegrityError", "ENGINE_SOURCE",
           "FAILED_TO_RUN", "LABELS_NAME", "MANIFEST_NAME", "Manifest", "PASSED", "PRECISIONS", "PREPROCESS_NAME",
           "REJECTED", "Status", "TO_VERIFY", "UNUSABLE", "UNVERIFIED", "Variant", "extraction_dir", "load_bundle",
           "read_manifest", "sha256_file", "verify_files", "write_manifest"]
