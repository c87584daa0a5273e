"""Resumable bundle download into a staging folder (stdlib only: urllib for http(s)://, a file
copy for file://), at a bounded rate, checked against the announced size and sha256.

Bytes go to ``NAME.part``; a cut link leaves it there and the next try asks for the rest with an
HTTP ``Range`` request (or seeks in a ``file://`` source), so a cellular link that drops at 90%
does not start again from zero. Only a complete file whose sha256 matches is renamed to ``NAME``;
one that does not match (or grows past the announced size) is deleted, never installed. A full
disk deletes the partial file to give the space back and raises ``DiskFullError``: the installed
bundle is elsewhere and is never touched here. Torch-free (device side).
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Optional, Tuple

from ..core.errors import BundleError, ConfigError

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"
CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class DownloadError(BundleError):
    """A download failed. ``transient``: the link failed and a later try resumes; else the bytes
    were wrong (deleted) or the source refuses."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class DiskFullError(DownloadError):
    """No space left for the download (its partial file was deleted)."""


class DownloadCancelled(DownloadError):
    """Stopped on request (the partial file is kept for a later resume)."""

    def __init__(self, message: str = "download cancelled"):
        super().__init__(message, transient=True)


@dataclass(frozen=True)
class DownloadConfig:
    bandwidth_bps: Optional[float] = None   # bytes/s; None: as fast as the link goes
    chunk_bytes: int = 64 * 1024
    timeout_s: float = 30.0                 # a read that waits longer is a cut link

    def __post_init__(self) -> None:
        if self.bandwidth_bps is not None and self.bandwidth_bps <= 0:
            raise ConfigError(f"bandwidth limit {self.bandwidth_bps} must be > 0 bytes/s (or unset)")
        if self.chunk_bytes < 1024 or self.timeout_s <= 0:
            raise ConfigError("download chunk must be >= 1024 bytes and its timeout > 0 s")

    def chunk(self) -> int:
        # About ten writes a second under a limit, so the pacing is smooth.
        if self.bandwidth_bps is None:
            return self.chunk_bytes
        return int(max(1024, min(self.chunk_bytes, self.bandwidth_bps / 10)))


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    size: int
    fetched: int          # bytes transferred by this call
    resumed_from: int     # bytes already there from an earlier, cut try
    seconds: float


class _Pacer:
    """Sleeps so that the bytes counted stay under ``bps`` on average since the start."""

    def __init__(self, bps: Optional[float]):
        self.bps, self.t0, self.done = bps, time.monotonic(), 0

    def add(self, n: int, stop: Optional[threading.Event]) -> None:
        self.done += n
        if self.bps is None:
            return
        ahead = self.done / self.bps - (time.monotonic() - self.t0)
        if ahead > 0:
            (stop.wait(ahead) if stop is not None else time.sleep(ahead))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _open_http(url: str, start: int, timeout: float) -> Tuple[BinaryIO, int]:
    """(response, offset it starts at): 206 from ``start`` or 200 from 0 (a server without Range)."""
    req = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416:
            raise DownloadError(f"{url}: the server has fewer bytes than were already downloaded (416)") from None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}", transient=e.code >= 500 or e.code == 429) from None
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"{url}: cannot connect ({getattr(e, 'reason', e)})", transient=True) from None
    if resp.status == 206:
        m = CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
        if not m or int(m.group(1)) != start:
            resp.close()
            raise DownloadError(f"{url}: the server answered a range request with another range "
                                f"({resp.headers.get('Content-Range')!r})", transient=True)
        return resp, start
    return resp, 0


def _open_file(url: str, start: int) -> Tuple[BinaryIO, int]:
    path = urllib.request.url2pathname(urllib.parse.urlparse(url).path)
    try:
        f = open(path, "rb")
    except OSError as e:
        # A USB stick not mounted yet is worth another try later.
        raise DownloadError(f"{url}: cannot read {path} ({e.strerror})", transient=True) from None
    f.seek(start)
    return f, start


def _open_source(url: str, start: int, config: DownloadConfig) -> Tuple[BinaryIO, int]:
    if url.startswith("file://"):
        return _open_file(url, start)
    if url.startswith(("http://", "https://")):
        return _open_http(url, start, config.timeout_s)
    raise DownloadError(f"{url}: only http://, https:// and file:// URLs are downloaded")


def _write_all(src: BinaryIO, part: Path, offset: int, size: int, config: DownloadConfig,
               stop: Optional[threading.Event], progress: Optional[Callable[[int, int], None]]) -> int:
    """Append ``src``'s bytes to ``part`` (truncated to ``offset``) up to ``size``; returns bytes fetched."""
    pacer, fetched, chunk = _Pacer(config.bandwidth_bps), 0, config.chunk()
    with open(part, "r+b" if part.exists() else "wb") as out:
        out.truncate(offset)
        out.seek(offset)
        have = offset
        while True:
            if stop is not None and stop.is_set():
                raise DownloadCancelled()
            try:
                block = src.read(chunk)
            except (OSError, http.client.HTTPException, socket.timeout) as e:
                raise DownloadError(f"link cut after {have} of {size} bytes ({type(e).__name__}: {e})",
                                    transient=True) from None
            if not block:
                break
            if have + len(block) > size:
                raise DownloadError(f"the source holds more than the announced {size} bytes; refused")
            out.write(block)
            have += len(block)
            fetched += len(block)
            if progress is not None:
                progress(have, size)
            pacer.add(len(block), stop)
        out.flush()
        os.fsync(out.fileno())
    return fetched


def _finish(part: Path, dest: Path, size: int, sha256: str, url: str) -> None:
    got = part.stat().st_size
    if got < size:
        raise DownloadError(f"{url}: the link ended after {got} of {size} bytes", transient=True)
    digest = sha256_of(part)
    if digest != sha256:
        part.unlink()
        raise DownloadError(f"{url}: sha256 {digest[:16]}... does not match the announced {sha256[:16]}...; "
                            "the download was deleted, nothing installed")
    os.replace(part, dest)


def download(url: str, dest: Path, size: int, sha256: str, config: DownloadConfig = DownloadConfig(),
             stop: Optional[threading.Event] = None,
             progress: Optional[Callable[[int, int], None]] = None) -> DownloadResult:
    """Fetch ``url`` into ``dest`` (resuming ``dest.part``) and check it; see the module docstring."""
    dest = Path(dest)
    part = dest.with_name(dest.name + PART_SUFFIX)
    t0 = time.monotonic()
    if dest.is_file() and dest.stat().st_size == size and sha256_of(dest) == sha256:
        return DownloadResult(dest, size, 0, size, 0.0)   # done by an earlier run
    start = part.stat().st_size if part.is_file() else 0
    if start > size:
        part.unlink()
        start = 0
    fetched, offset = 0, start
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if start < size:
            src, offset = _open_source(url, start, config)
            if offset != start:
                log.info("%s ignored the range request: downloading again from zero", url)
            try:
                fetched = _write_all(src, part, offset, size, config, stop, progress)
            finally:
                src.close()
        _finish(part, dest, size, sha256, url)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            part.unlink(missing_ok=True)
            raise DiskFullError(f"no space left in {dest.parent} for {dest.name} ({size} bytes); the partial "
                                "download was deleted, the installed bundle is untouched") from None
        raise DownloadError(f"cannot write {part} ({e.strerror or e})", transient=True) from None
    return DownloadResult(dest, size, fetched, offset, time.monotonic() - t0)


__all__ = ["DiskFullError", "DownloadCancelled", "DownloadConfig", "DownloadError", "DownloadResult", "PART_SUFFIX",
           "download", "sha256_of"]
