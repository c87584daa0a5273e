"""This device's caches: what the runtime learns about a bundle on this machine (self-check
verdicts, CPU latencies) and the TensorRT engines build-engine builds for it here
(``runtime/engine_cache.py``) live in a per-device folder, never in the bundle: reading a bundle, or
building its engines, never writes it (read-only media, one bundle shared by two processes, a signed
bundle stay as they were).

The folder is ``--cache-dir`` (the systemd unit sets one), else ``$CLCA_EDGE_CACHE_DIR``, else
``$XDG_CACHE_HOME/clca-edge`` (``~/.cache/clca-edge``). Each bundle gets a subfolder named by its
content (the sha256 of its manifest, which lists every file's sha256), so two copies of a bundle
share their caches and a changed bundle starts afresh."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

CACHE_DIR_ENV = "CLCA_EDGE_CACHE_DIR"
SELFCHECK_FILE = "selfcheck.json"
LATENCY_FILE = "latency.json"


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_DIR_ENV, "").strip()
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clca-edge"


def bundle_cache_dir(manifest_sha256: str, cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """The folder of one bundle's caches on this device (created when a cache is first written)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "device" / manifest_sha256[:16]


def bundle_digest(bundle) -> str:
    """The sha256 of a loaded bundle's manifest: what names its cache folder (and capture's records)."""
    from ..bundle import MANIFEST_NAME, sha256_file

    return sha256_file(bundle.root / MANIFEST_NAME)
