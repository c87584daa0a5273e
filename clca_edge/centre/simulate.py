"""A fleet in one process, for the quick start: a local Mosquitto, a collector, and simulated
devices that each run a capture with the fleet link on. The broker is stopped while the last
device captures (its records wait in its field log) and started again for `fleet sync`; at the end
every decision of every device must be at the centre exactly once."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Sequence

from ..capture.fieldlog import read_log
from ..core.errors import FleetLinkError
from ..fleet.agent import FleetAgent
from ..fleet.config import BrokerConfig, FleetConfig
from ..fleet.observer import FleetObserver
from ..fleet.sync import sync_log
from .collector import Collector
from .local_broker import LocalBroker
from .status import device_statuses
from .store import Store

# run_device(log_file, observers): one capture run that logs to log_file with these observers.
RunDevice = Callable[[Path, tuple], object]


@dataclass
class FleetSimulation:
    store: Path
    decisions_logged: Dict[str, int] = field(default_factory=dict)
    decisions_at_centre: Dict[str, int] = field(default_factory=dict)
    pending_after_capture: Dict[str, int] = field(default_factory=dict)
    synced: Dict[str, int] = field(default_factory=dict)
    duplicates_ignored: int = 0

    @property
    def every_decision_once(self) -> bool:
        return self.decisions_logged == self.decisions_at_centre

    def to_dict(self) -> dict:
        return {"store": str(self.store), "decisions_logged": self.decisions_logged,
                "decisions_at_centre": self.decisions_at_centre, "pending_after_capture": self.pending_after_capture,
                "synced": self.synced, "every_decision_once": self.every_decision_once}


def _device(name: str, url: str, folder: Path, run_device: RunDevice, offline: bool) -> tuple:
    """Capture on one device with the link on; (log, records still pending when it ended)."""
    log = folder / name / "log.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    cfg = FleetConfig(BrokerConfig(url), name, reconnect_max_s=1, heartbeat_s=1, replay_rate=10000)
    agent = FleetAgent(cfg, log).start()
    try:
        run_device(log, (FleetObserver(agent),))
        agent.uploader.drain(0.5 if offline else 10.0)
    finally:
        agent.stop()
    return cfg, log, agent.uploader.pending()[0]


def simulate_fleet(folder, run_device: RunDevice, devices: Sequence[str] = ("field-a", "field-b"),
                   timeout_s: float = 30.0) -> FleetSimulation:
    folder = Path(folder)
    result = FleetSimulation(store=folder / "store")
    with LocalBroker(folder / "broker") as broker, Store(result.store) as store:
        collector = Collector(BrokerConfig(broker.url), store, client_id="quickstart-collector",
                              reconnect_max_s=1).start()
        try:
            if not collector.subscribed.wait(10):
                raise FleetLinkError("the collector could not subscribe to the local broker")
            for i, name in enumerate(devices):
                offline = i == len(devices) - 1        # the last device captures with the broker down
                if offline:
                    broker.stop()
                cfg, log, pending = _device(name, broker.url, folder, run_device, offline)
                result.pending_after_capture[name] = pending
                result.decisions_logged[name] = sum(r.get("type") == "decision" for r in read_log(log))
                if offline:
                    broker.start()
                    collector.subscribed.wait(10)
                    result.synced[name] = sync_log(cfg, log, timeout_s).records_sent
            total = sum(len(list(read_log(folder / n / "log.jsonl"))) for n in devices)
            deadline = time.monotonic() + timeout_s
            while collector.counts["records"] < total and time.monotonic() < deadline:
                time.sleep(0.05)
            result.duplicates_ignored = collector.counts["duplicates"]
        finally:
            collector.stop()
        result.decisions_at_centre = {s.device: s.decisions for s in device_statuses(store)}
    return result
