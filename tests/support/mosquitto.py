"""A real Eclipse Mosquitto for tests: its own config, password file and persistence in a temp
folder, a free 127.0.0.1 port, started, stopped, restarted on the same port, always killed.

The ACL is the shipped deploy/fleet/acl itself (its path, not a copy of its content), so the
tests prove the file a farm installs.

    with Mosquitto(tmp_path, users={"dev-a": "pw"}) as broker:
        broker.url        # mqtt://127.0.0.1:PORT
        broker.restart()  # same port, same persistence
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
SHIPPED_ACL = REPO / "deploy" / "fleet" / "acl"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def have_mosquitto() -> bool:
    return os.access(MOSQUITTO, os.X_OK)


needs_mosquitto = pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed "
                                     "(scripts/setup_env.sh installs it: apt-get install mosquitto)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """One broker process. ``users``: name -> password (then anonymous clients are refused);
    ``acl``: use the shipped ACL (with users only)."""

    def __init__(self, folder: Path, users: Optional[Dict[str, str]] = None, acl: bool = True,
                 port: Optional[int] = None, max_queued: int = 1_000_000):
        self.folder = Path(folder) / f"mosquitto-{id(self):x}"
        self.folder.mkdir(parents=True)
        self.users = dict(users or {})
        self.acl = acl and bool(self.users)
        self.port = port or free_port()
        self.max_queued = max_queued
        self.proc: Optional[subprocess.Popen] = None
        self.conf = self.folder / "mosquitto.conf"
        self.log = self.folder / "mosquitto.log"
        self._write_conf()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _write_conf(self) -> None:
        lines = [f"listener {self.port} 127.0.0.1", "per_listener_settings false",
                 "persistence true", f"persistence_location {self.folder}/", "autosave_interval 1",
                 f"log_dest file {self.log}", "log_type all", f"max_queued_messages {self.max_queued}",
                 "max_packet_size 4194304", "max_inflight_messages 100"]
        if os.geteuid() == 0:
            lines.append(f"user {getpass.getuser()}")   # else it drops to 'mosquitto', who cannot write here
        if self.users:
            passwd = self.folder / "passwd"
            passwd.touch(mode=0o600)
            for name, password in self.users.items():
                subprocess.run([MOSQUITTO_PASSWD, "-b", str(passwd), name, password], check=True,
                               capture_output=True, timeout=30)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
            if self.acl:
                lines.append(f"acl_file {SHIPPED_ACL}")
        else:
            lines.append("allow_anonymous true")
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout_s: float = 10.0) -> "Mosquitto":
        assert self.proc is None, "already running"
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")
                self.proc = None
                raise RuntimeError(f"mosquitto exited at start: {err} {self.log_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"mosquitto did not accept connections within {timeout_s} s: {self.log_text()[-2000:]}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (mosquitto saves its persistence file), then SIGKILL if it lingers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
            self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        if down_s:
            time.sleep(down_s)
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> "Mosquitto":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.kill()
