"""Deploy bundles: loading with full hash verification, torch-free (runs on the device).

A bundle is a folder (or a ``.tar`` of one) holding ``manifest.json`` and every file it lists
under ``files`` with its sha256: the ONNX variants, ``labels.txt``, ``preprocess.json``, the
calibration manifest, ``trtexec.sh`` and any TensorRT engines built on the device. Loading
refuses a bundle with a missing file or a hash that does not match, so a truncated copy or a
tampered file never reaches the model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Optional, Union

from ..errors import ClcaEdgeError
from ..preprocess import PreprocessSpec

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
LABELS_NAME = "labels.txt"
PREPROCESS_NAME = "preprocess.json"
BUNDLE_FORMAT = 1

# Variant statuses written by deploy / build-engine.
PASSED = "passed"
REJECTED = "rejected"
TO_VERIFY = "to verify on device"
UNVERIFIED = "built, not verified"


class BundleError(ClcaEdgeError):
    """The bundle cannot be used: missing, unreadable, incomplete or tampered with."""

    exit_code = 8


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
    """One precision variant of the model (an ONNX file or a TensorRT plan still to build)."""

    name: str
    precision: str
    status: str
    path: Optional[Path]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return self.status != REJECTED and self.path is not None


@dataclass
class Bundle:
    root: Path
    manifest: dict[str, Any]
    labels: list[str]
    preprocess: PreprocessSpec
    variants: dict[str, Variant]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest["input"]["shape"])

    @property
    def input_name(self) -> str:
        return self.manifest["input"]["name"]

    @property
    def output_name(self) -> str:
        return self.manifest["output"]["name"]

    @property
    def default_variant(self) -> Optional[str]:
        return self.manifest.get("default_variant")

    @property
    def engines(self) -> dict[str, dict[str, Any]]:
        """Cached TensorRT engines, keyed by file name (see runtime.tensorrt_engine.EngineKey)."""
        return self.manifest.get("engines", {})

    def path(self, rel: str) -> Path:
        return self.root / rel

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


def _safe_extract(tar_path: Path, dest: Path) -> Path:
    """Extract regular files and folders only, all inside ``dest``; returns the bundle folder."""
    try:
        with tarfile.open(tar_path, "r:*") as tf:
            members = tf.getmembers()
            for m in members:
                p = PurePosixPath(m.name)
                if p.is_absolute() or ".." in p.parts or not (m.isfile() or m.isdir()):
                    raise BundleIntegrityError(f"{tar_path}: member {m.name!r} is not a plain file inside the bundle")
            kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tf.extractall(dest, members=members, **kw)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise BundleError(f"{tar_path} is not a readable bundle archive ({e}); copy it again") from None
    # The bundle is the archive's top folder (or its root); calibration/manifest.json is not it.
    found = [d for d in [dest, *sorted(p for p in dest.iterdir() if p.is_dir())] if (d / MANIFEST_NAME).is_file()]
    if len(found) != 1:
        raise BundleError(f"{tar_path} holds {len(found)} bundle manifests at its top; a bundle archive holds exactly one")
    return found[0]


def read_manifest(root: Path) -> dict[str, Any]:
    mpath = root / MANIFEST_NAME
    if not mpath.is_file():
        raise BundleError(f"{root} has no {MANIFEST_NAME}; is it a bundle written by clca-edge deploy?")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as e:
        raise BundleIntegrityError(f"{mpath} is not valid JSON ({e}); copy the bundle again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT or "files" not in manifest:
        raise BundleError(f"{mpath}: not a clca-edge bundle manifest of format {BUNDLE_FORMAT}")
    return manifest


def load_bundle(path: Union[str, Path], extract_to: Optional[Union[str, Path]] = None) -> Bundle:
    """Open a bundle folder or ``.tar`` archive, verifying every file's sha256.

    An archive is extracted to ``extract_to`` (default: a new temporary folder).
    """
    path = Path(path)
    if not path.exists():
        raise BundleError(f"bundle {str(path)!r} does not exist")
    if path.is_file():
        dest = Path(extract_to) if extract_to else Path(tempfile.mkdtemp(prefix="clca-bundle-"))
        dest.mkdir(parents=True, exist_ok=True)
        root = _safe_extract(path, dest)
    else:
        root = path
    manifest = read_manifest(root)
    verify_files(root, manifest["files"])
    listed = set(manifest["files"])
    for rel in (LABELS_NAME, PREPROCESS_NAME):
        if rel not in listed:
            raise BundleIntegrityError(f"{root}: manifest does not list {rel}; re-run clca-edge deploy")
    labels = [ln for ln in (root / LABELS_NAME).read_text().splitlines() if ln]
    if labels != list(manifest["class_names"]):
        raise BundleIntegrityError(f"{root}: {LABELS_NAME} disagrees with the manifest's class names")
    spec = PreprocessSpec.from_dict(json.loads((root / PREPROCESS_NAME).read_text()))
    variants = {}
    for name, v in manifest.get("variants", {}).items():
        rel = v.get("file")
        if rel is not None and rel not in listed:
            raise BundleIntegrityError(f"{root}: variant {name!r} file {rel} is not hashed in the manifest")
        variants[name] = Variant(name=name, precision=v["precision"], status=v["status"],
                                 path=_safe_rel(rel, root) if rel else None, info=v)
    for key, e in manifest.get("engines", {}).items():
        if e.get("file") not in listed:
            raise BundleIntegrityError(f"{root}: engine {key} file {e.get('file')} is not hashed in the manifest")
    return Bundle(root=root, manifest=manifest, labels=labels, preprocess=spec, variants=variants)


def write_manifest(root: Path, manifest: dict[str, Any], hash_files: bool = True) -> None:
    """Re-hash every file under ``root`` (except the manifest) into ``manifest['files']`` and write
    the manifest atomically. Used by deploy and by build-engine when it adds engines."""
    if hash_files:
        files = {}
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.name != MANIFEST_NAME and not p.name.startswith("."):
                files[p.relative_to(root).as_posix()] = sha256_file(p)
        manifest["files"] = files
    data = json.dumps(manifest, indent=2, sort_keys=False).encode()
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{MANIFEST_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, root / MANIFEST_NAME)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


__all__ = ["BUNDLE_FORMAT", "Bundle", "BundleError", "BundleIntegrityError", "LABELS_NAME", "MANIFEST_NAME",
           "PASSED", "PREPROCESS_NAME", "REJECTED", "TO_VERIFY", "UNVERIFIED", "Variant", "load_bundle",
           "read_manifest", "sha256_file", "verify_files", "write_manifest"]
