"""The fleet link's device side on Python 3.8 (JetPack 5): `fleet sync` from the torch-free 3.8
environment (tomli for the fleet file, paho-mqtt 2.1) delivers a field log to a collector here.

Runs where scripts/setup_py38_runtime.sh built .venv-py38; skipped elsewhere, saying why."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from support.mosquitto import Mosquitto, needs_mosquitto

from clca_edge.capture.fieldlog import open_log
from clca_edge.centre.collector import Collector
from clca_edge.centre.store import Store
from clca_edge.fleet.config import BrokerConfig

REPO = Path(__file__).resolve().parents[1]
PY38 = REPO / ".venv-py38" / "bin" / "python"
CLI = "import sys; sys.argv[0] = 'clca-edge'; from clca_edge.cli import main; main()"


def _has_fleet_deps() -> bool:
    if not PY38.exists():
        return False
    return subprocess.run([str(PY38), "-c", "import paho.mqtt, tomli"], capture_output=True).returncode == 0


pytestmark = [needs_mosquitto, pytest.mark.skipif(not _has_fleet_deps(), reason=(
    "no .venv-py38 with paho-mqtt and tomli (run scripts/setup_py38_runtime.sh)"))]


def test_fleet_sync_on_python_3_8_delivers_the_log(tmp_path):
    log = tmp_path / "log.jsonl"
    with open_log(log) as flog:
        for i in range(25):
            flog.write({"type": "decision", "frame": i, "class": "oak", "confidence": 0.8})
    with Mosquitto(tmp_path) as broker:
        fleet = tmp_path / "fleet.toml"
        fleet.write_text(f'broker = "{broker.url}"\ndevice = "jetson-38"\n[sampling]\nquota_mb = 10\n')
        store = Store(tmp_path / "store")
        collector = Collector(BrokerConfig(broker.url), store).start()
        try:
            assert collector.subscribed.wait(10)
            out = subprocess.run([str(PY38), "-c", CLI, "fleet", "sync", "--fleet", str(fleet), "--log", str(log),
                                  "--json"], cwd=REPO, capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout)["records_sent"] == 25
            deadline = time.monotonic() + 10
            while collector.counts["records"] < 25 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            collector.stop()
        assert [r["record"]["frame"] for r in store.records("jetson-38")] == list(range(25))
        store.close()
