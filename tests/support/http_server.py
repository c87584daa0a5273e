"""A real threaded HTTP server on 127.0.0.1 for the tests: serves a folder with Range support
(``http.server.SimpleHTTPRequestHandler`` has none), counts the bytes it sends, and can cut a
transfer after a given number of bytes (the link dropping, then the server stopped) so a download
has to resume."""

from __future__ import annotations

import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import List, Optional

RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args) -> None:  # quiet: pytest shows failures, not access logs
        pass

    def do_GET(self) -> None:
        path = self.server.root / self.path.lstrip("/").split("?")[0]
        if not path.is_file() or self.server.root not in path.resolve().parents:
            self.send_error(404)
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        m = RANGE.match(self.headers.get("Range", ""))
        self.server.requests.append(self.headers.get("Range") or "")
        if m:
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self._send(path, start, end - start + 1)

    def _send(self, path: Path, start: int, length: int) -> None:
        with open(path, "rb") as f:
            f.seek(start)
            while length > 0:
                block = f.read(min(16 * 1024, length))
                cut = self.server.cut_after
                if cut is not None and self.server.bytes_sent + len(block) >= cut:
                    block = block[: max(0, cut - self.server.bytes_sent)]
                    self.wfile.write(block)
                    self.server.bytes_sent += len(block)
                    self.wfile.flush()
                    self.server.cut.set()
                    self.close_connection = True
                    self.connection.shutdown(2)   # the link drops mid-body
                    return
                self.wfile.write(block)
                self.server.bytes_sent += len(block)
                length -= len(block)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, root: Path):
        super().__init__(addr, _Handler)
        self.root = root.resolve()
        self.bytes_sent = 0
        self.requests: List[str] = []
        self.cut_after: Optional[int] = None
        self.cut = threading.Event()


class LoopbackHTTPServer:
    """``with LoopbackHTTPServer(folder) as srv: srv.url("b.tar")``; ``port`` reuses a port (a
    restarted server at the same address)."""

    def __init__(self, root: Path, port: int = 0, cut_after: Optional[int] = None):
        self.root = Path(root)
        self._server = _Server(("127.0.0.1", port), self.root)
        self._server.cut_after = cut_after
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def start(self) -> "LoopbackHTTPServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> "LoopbackHTTPServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def publish(self, src: Path, name: Optional[str] = None) -> str:
        """Copy ``src`` into the served folder; its URL."""
        shutil.copy2(src, self.root / (name or Path(src).name))
        return self.url(name or Path(src).name)

    @property
    def bytes_sent(self) -> int:
        return self._server.bytes_sent

    @property
    def requests(self) -> List[str]:
        """The Range header of every GET ("" for none), in order."""
        return list(self._server.requests)

    @property
    def cut(self) -> threading.Event:
        return self._server.cut
