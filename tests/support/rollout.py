"""Simulated devices for the rollout tests: each a real ``fleet.rollout_agent.RolloutAgent`` on its own thread,
its own bundles folder and field log, connected to the test's Mosquitto with its own credentials;
``capture()`` runs the real ``clca-edge capture`` on the bundle the device's pointer names."""

from __future__ import annotations

import json
import shutil
import tarfile
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional

from clca_edge.bundle.signature import TrustedKeys
from clca_edge.fleet.rollout_agent import RolloutAgent
from clca_edge.fleet.agent_config import AgentConfig
from clca_edge.fleet.config import BrokerConfig, FleetConfig
from clca_edge.fleet.probation import ProbationConfig
from support.waiting import wait_for  # noqa: F401  (the rollout tests import it from here)

PASSWORD = "pw"
CENTRE_USERS = ("publisher", "collector")


def make_tar(bundle: Path, out: Path) -> Path:
    """The bundle folder as deploy's .tar (one top folder)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w") as tf:
        tf.add(bundle, arcname=bundle.name, filter=lambda ti: None if ti.name.endswith(".selfcheck.json") else ti)
    return out


def with_temperature(src: Path, dst: Path, temperature: float) -> Path:
    """A copy of a bundle whose calibrated temperature is ``temperature`` (its confidences change,
    nothing else): a high one makes every decision low-confidence."""
    from clca_edge.bundle import read_manifest, write_manifest
    from clca_edge.core.confidence import ConfidenceCalibration

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".selfcheck.json"))
    m = read_manifest(dst)
    m.confidence = ConfidenceCalibration(temperature=temperature)
    write_manifest(dst, m, new_files=[])
    return dst


class Device:
    def __init__(self, name: str, rings: List[str], root: Path, broker_url: str, trusted: Path,
                 probation: Optional[ProbationConfig] = None, bandwidth_bps: Optional[float] = None):
        from clca_edge.fleet.download import DownloadConfig

        self.name, self.root = name, root / name
        self.log = self.root / "field.jsonl"
        fleet = FleetConfig(BrokerConfig(broker_url, username=name, password=PASSWORD, keepalive_s=5), device=name)
        self.config = AgentConfig(fleet=fleet, rings=tuple(rings), trusted_keys=trusted, bundles=self.root / "bundles",
                                  field_log=self.log,
                                  probation=probation or ProbationConfig(duration_s=0.5, min_frames=10,
                                                                         low_confidence=0.5),
                                  download=DownloadConfig(bandwidth_bps=bandwidth_bps, timeout_s=5),
                                  retry_s=(0.2, 1.0), poll_s=0.05)
        self.trusted = trusted
        self.agent: Optional[RolloutAgent] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "Device":
        self.agent = RolloutAgent(self.config, TrustedKeys.load(self.trusted))
        self._stop = threading.Event()
        self.agent.connect()
        assert self.agent.link.wait_connected(10), f"{self.name} did not connect"
        self._thread = threading.Thread(target=self.agent.run, args=(self._stop,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self.agent is None:
            return
        self._stop.set()
        self._thread.join(30)
        self.agent.close()
        self.agent = None

    @property
    def state(self):
        return self.agent.state

    def wait_state(self, state: str, version: Optional[int] = None, timeout: float = 60.0) -> None:
        def ok() -> bool:
            st = self.agent.state
            return st.state == state and (version is None or st.version == version)

        wait_for(ok, timeout, f"{self.name} to reach {state} v{version}")

    def current_manifest_sha(self) -> Optional[str]:
        from clca_edge.bundle import sha256_file

        cur = Path(self.config.bundles) / "current"
        return sha256_file(cur / "manifest.json") if cur.exists() else None

    def capture(self, images: Path, frames: int) -> dict:
        """The real capture command on the device's current bundle, appending to its field log."""
        from click.testing import CliRunner

        from clca_edge.cli import main

        res = CliRunner().invoke(main, ["capture", "--bundle", str(Path(self.config.bundles) / "current"),
                                        "--source", str(images), "--max-frames", str(frames), "--no-live",
                                        "--log", str(self.log), "--run-dir", str(self.root / "runs")])
        assert res.exit_code == 0, res.output
        recs = [json.loads(line) for line in self.log.read_text().splitlines()]
        return next(r for r in reversed(recs) if r["type"] == "summary")
