"""A local Eclipse Mosquitto run by clca-edge itself (the quick start's fleet stage, the tests, the
benchmarks): its own configuration, password file and persistence in a folder, a free 127.0.0.1
port, started, stopped, restarted on the same port, always stopped on exit. Not for production:
a farm runs Mosquitto as a system service with deploy/fleet/mosquitto.conf.

    with LocalBroker(folder, users={"dev-a": "pw"}, acl_file=Path("deploy/fleet/acl")) as broker:
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
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from ..core.errors import ConfigError, FleetLinkError

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def have_mosquitto() -> bool:
    return os.access(MOSQUITTO, os.X_OK)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class BrokerTls:
    """The broker's TLS listener: its certificate and key, the CA clients' certificates are checked
    against, and whether a client must present one (its CN is then its username, for the ACL)."""

    ca: Path
    cert: Path
    key: Path
    require_client_cert: bool = False


class LocalBroker:
    """One broker process. ``users``: name -> password (then anonymous clients are refused);
    ``acl_file``: the ACL to enforce (with users or client certificates); ``tls``: listen with TLS
    (``mqtts://localhost:PORT``)."""

    def __init__(self, folder: Path, users: Optional[Dict[str, str]] = None, acl_file: Optional[Path] = None,
                 port: Optional[int] = None, max_queued: int = 1_000_000, tls: Optional[BrokerTls] = None):
        if not have_mosquitto():
            raise ConfigError("mosquitto is not installed: apt-get install mosquitto (scripts/setup_env.sh does it)")
        self.folder = Path(folder) / f"mosquitto-{id(self):x}"
        self.folder.mkdir(parents=True)
        self.users = dict(users or {})
        self.tls = tls
        identified = bool(self.users) or (tls is not None and tls.require_client_cert)
        self.acl_file = acl_file if identified else None
        self.port = port or free_port()
        self.max_queued = max_queued
        self.proc: Optional[subprocess.Popen] = None
        self.conf = self.folder / "mosquitto.conf"
        self.log = self.folder / "mosquitto.log"
        self._write_conf()

    @property
    def url(self) -> str:
        return f"mqtts://localhost:{self.port}" if self.tls is not None else f"mqtt://127.0.0.1:{self.port}"

    def _write_conf(self) -> None:
        lines = [f"listener {self.port} 127.0.0.1", "per_listener_settings false",
                 "persistence true", f"persistence_location {self.folder}/", "autosave_interval 1",
                 f"log_dest file {self.log}", "log_type all", f"max_queued_messages {self.max_queued}",
                 "max_packet_size 4194304", "max_inflight_messages 100"]
        if os.geteuid() == 0:
            lines.append(f"user {getpass.getuser()}")   # else it drops to 'mosquitto', who cannot write here
        if self.tls is not None:
            t = self.tls
            lines += [f"cafile {t.ca}", f"certfile {t.cert}", f"keyfile {t.key}", "tls_version tlsv1.2"]
            if t.require_client_cert:
                lines += ["require_certificate true", "use_identity_as_username true"]
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        if self.users:
            passwd = self.folder / "passwd"
            passwd.touch(mode=0o600)
            for name, password in self.users.items():
                subprocess.run([MOSQUITTO_PASSWD, "-b", str(passwd), name, password], check=True,
                               capture_output=True, timeout=30)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append(f"allow_anonymous {'false' if self.acl_file is not None else 'true'}")
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout_s: float = 10.0) -> "LocalBroker":
        assert self.proc is None, "already running"
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")
                self.proc = None
                raise FleetLinkError(f"mosquitto exited at start: {err} {self.log_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise FleetLinkError(f"mosquitto did not accept connections within {timeout_s} s: {self.log_text()[-2000:]}")

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

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.kill()
