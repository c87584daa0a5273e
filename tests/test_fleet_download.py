"""Resumable, checked, rate-limited bundle download from a real loopback HTTP server and file://."""

from __future__ import annotations

import errno
import hashlib
import os
import time

import pytest

from clca_edge.fleet import download as dl
from clca_edge.fleet.download import (DiskFullError, DownloadConfig, DownloadError, download)
from support.http_server import LoopbackHTTPServer

SIZE = 300_000


@pytest.fixture
def blob(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    data = os.urandom(SIZE)
    (served / "b.tar").write_bytes(data)
    return served, data, hashlib.sha256(data).hexdigest()


def test_http_download_is_checked_and_rate_limited(blob, tmp_path):
    served, data, sha = blob
    with LoopbackHTTPServer(served) as srv:
        t0 = time.monotonic()
        res = download(srv.url("b.tar"), tmp_path / "stage" / "b.tar", SIZE, sha,
                       DownloadConfig(bandwidth_bps=600_000))
        took = time.monotonic() - t0
    assert res.path.read_bytes() == data and res.fetched == SIZE and res.resumed_from == 0
    assert not (tmp_path / "stage" / "b.tar.part").exists()
    assert took >= 0.8 * SIZE / 600_000   # the limit holds the rate down (a floor, not a speed target)
    # Already there and intact: nothing is fetched again.
    with LoopbackHTTPServer(served) as srv:
        again = download(srv.url("b.tar"), tmp_path / "stage" / "b.tar", SIZE, sha)
        assert again.fetched == 0 and srv.requests == []


def test_a_download_cut_half_way_resumes_where_it_was(blob, tmp_path):
    served, data, sha = blob
    dest = tmp_path / "stage" / "b.tar"
    srv = LoopbackHTTPServer(served, cut_after=SIZE // 2).start()
    port = srv.port
    try:
        with pytest.raises(DownloadError) as e:
            download(srv.url("b.tar"), dest, SIZE, sha, DownloadConfig(timeout_s=5))
        assert e.value.transient
        assert srv.cut.is_set()
    finally:
        srv.stop()   # the server is gone, not only the connection
    part = dest.with_name("b.tar.part")
    assert part.stat().st_size == SIZE // 2 and not dest.exists()
    with pytest.raises(DownloadError) as e:   # nothing listening: still transient, the part kept
        download(f"http://127.0.0.1:{port}/b.tar", dest, SIZE, sha, DownloadConfig(timeout_s=2))
    assert e.value.transient and part.stat().st_size == SIZE // 2
    with LoopbackHTTPServer(served, port=port) as srv:
        res = download(srv.url("b.tar"), dest, SIZE, sha)
        assert srv.requests == [f"bytes={SIZE // 2}-"]
        assert srv.bytes_sent == SIZE - SIZE // 2   # the rest only, not from zero
    assert res.resumed_from == SIZE // 2 and res.fetched == SIZE - SIZE // 2
    assert dest.read_bytes() == data


def test_wrong_sha256_or_size_deletes_the_download(blob, tmp_path):
    served, data, sha = blob
    dest = tmp_path / "b.tar"
    with LoopbackHTTPServer(served) as srv:
        with pytest.raises(DownloadError, match="does not match") as e:
            download(srv.url("b.tar"), dest, SIZE, "0" * 64)
        assert not e.value.transient
        assert not dest.exists() and not dest.with_name("b.tar.part").exists()
        with pytest.raises(DownloadError, match="more than the announced"):
            download(srv.url("b.tar"), dest, SIZE - 10, sha)
        with pytest.raises(DownloadError, match="404"):
            download(srv.url("nope.tar"), dest, SIZE, sha)


def test_file_url_copies_and_resumes(blob, tmp_path):
    served, data, sha = blob
    dest = tmp_path / "stage" / "b.tar"
    dest.parent.mkdir()
    dest.with_name("b.tar.part").write_bytes(data[:1000])
    res = download((served / "b.tar").as_uri(), dest, SIZE, sha)
    assert res.resumed_from == 1000 and res.fetched == SIZE - 1000
    assert dest.read_bytes() == data


def test_a_full_disk_deletes_the_partial_file(blob, tmp_path, monkeypatch):
    served, data, sha = blob
    real_open = open

    class Full:
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, b):
            self.n += len(b)
            if self.n > SIZE // 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(b)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(dl, "open", lambda p, mode="r", *a, **k: Full(real_open(p, mode, *a, **k))
                        if "b" in mode and ("w" in mode or "+" in mode) else real_open(p, mode, *a, **k),
                        raising=False)
    dest = tmp_path / "stage" / "b.tar"
    with LoopbackHTTPServer(served) as srv:
        with pytest.raises(DiskFullError, match="no space left"):
            download(srv.url("b.tar"), dest, SIZE, sha)
    assert not dest.exists() and not dest.with_name("b.tar.part").exists()
