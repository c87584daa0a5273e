"""From a downloaded archive to a bundle ready to switch to, on the device: extracted into the
staging folder with every file's sha256 verified (``bundle.store``), its TensorRT engine built
where TensorRT is installed (``clca-edge build-engine``, in its own process, into this device's
cache: ``runtime/engine_cache.py``), then the device self-check
of every backend/precision this device can open (``runtime.selfcheck.survey``), uncached: the
bundle is new, and a variant that does not reproduce the reference logits here (an INT8 path
that differs on this CPU or GPU) means the device stays on the bundle it runs. The results go
into this device's cache (``runtime.device_cache``: ``$CLCA_EDGE_CACHE_DIR``, keyed by the bundle's
content; a bundle folder is never written), so capture's start after the switch finds them and the
engines when it uses the same cache folder (the two systemd units in deploy/jetson/ set the same one).
Torch-free.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

from ..core.errors import ClcaEdgeError
from .slots import Slots

log = logging.getLogger(__name__)


class InstallError(ClcaEdgeError):
    """The bundle may not be installed on this device; ``refuse``: never try this version again."""

    def __init__(self, message: str, refuse: bool):
        super().__init__(message)
        self.refuse = refuse


@dataclass(frozen=True)
class Staged:
    folder: Path        # under staging/: moved into a slot as a whole
    root: Path          # the bundle folder inside it
    manifest_sha: str   # what capture's records call the bundle (``bundle_sha``)
    checks: Tuple[str, ...]   # "backend precision: status" of every self-check run


def _extract(slots: Slots, archive: Path, tag: str, trusted) -> Tuple[Path, Path]:
    """Extract and verify; a signed bundle's own signature must verify against the trusted keys too
    (capture with --trusted-keys would refuse it otherwise; an unsigned one is covered by the
    signed announcement's sha256)."""
    from ..bundle.signature import SIGNATURE_NAME, verify_bundle
    from ..bundle.store import load_bundle

    folder = slots.new_staging_dir(f"{tag}-")
    try:
        bundle = load_bundle(archive, extract_to=folder)   # every listed file's sha256 checked
        if (bundle.root / SIGNATURE_NAME).is_file():
            verify_bundle(bundle.root, trusted, where=archive.name)
    except ClcaEdgeError as e:
        shutil.rmtree(folder, ignore_errors=True)
        raise InstallError(f"bundle does not verify: {e}", refuse=True) from None
    return folder, bundle.root


def _self_check(root: Path) -> Tuple[str, List[str]]:
    """(manifest sha, check lines); InstallError when any variant fails or none can run."""
    from ..runtime.model import load_model
    from ..runtime.selfcheck import FAILED, PASSED, SKIPPED, survey

    try:
        model = load_model(root)
    except ClcaEdgeError as e:
        raise InstallError(f"bundle cannot be opened: {e}", refuse=True) from None
    rows = survey(model)
    lines = [f"{r.backend} {r.precision}: {r.status}" for r in rows]
    failed = [r for r in rows if r.status == FAILED]
    if failed:
        why = "; ".join(f"{r.backend} {r.precision} {r.reason} ({r.result.figures_text() if r.result else ''})"
                        for r in failed)
        raise InstallError(f"self-check failed: {why}", refuse=True)
    if not any(r.status in (PASSED, SKIPPED) for r in rows):
        raise InstallError(f"no backend can run the bundle here ({'; '.join(lines)})", refuse=False)
    return model.sha, lines


def _build_engines(root: Path) -> str:
    """Where TensorRT is importable, ``clca-edge build-engine --precision auto`` on the staged bundle,
    in its own process (the engine builder is not device-side code the agent imports; it inherits
    ``CLCA_EDGE_CACHE_DIR``, so its engines land in the cache ``load_model`` reads); engines are
    then self-checked with the rest. A failed build is not a refusal: capture runs ONNX Runtime."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT not installed: no engine to build"
    exe = shutil.which("clca-edge")
    cmd = [exe] if exe else [sys.executable, "-c", "from clca_edge.cli import main; main()"]
    try:
        res = subprocess.run([*cmd, "build-engine", "--bundle", str(root), "--precision", "auto"],
                             capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"build-engine did not run ({e})"
    if res.returncode != 0:
        log.warning("build-engine on %s failed (exit %d): %s", root, res.returncode, res.stderr.strip()[-500:])
        return f"build-engine failed (exit {res.returncode}); ONNX Runtime will run it"
    return "engine built"


def stage(slots: Slots, archive: Path, tag: str, trusted) -> Staged:
    """Extract, verify (``trusted``: bundle.signature.TrustedKeys), build the TensorRT engine (where
    there is TensorRT) and self-check ``archive`` under ``slots.staging``; InstallError otherwise
    (nothing left behind)."""
    folder, root = _extract(slots, archive, tag, trusted)
    try:
        log.info("%s: %s", tag, _build_engines(root))
        sha, lines = _self_check(root)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return Staged(folder, root, sha, tuple(lines))


__all__ = ["InstallError", "Staged", "stage"]
