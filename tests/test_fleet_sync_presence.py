"""``fleet sync`` does not speak for the device's presence (review 1.7a): a capture uploading on the
same device stays online at the centre when a sync of an older log finishes."""

from __future__ import annotations

from support.mosquitto import Mosquitto, needs_mosquitto
from support.rollout import wait_for

from clca_edge.capture.fieldlog import open_log
from clca_edge.centre.collector import Collector
from clca_edge.centre.store import Store
from clca_edge.fleet.config import BrokerConfig, FleetConfig
from clca_edge.fleet.outbox import LogOutbox
from clca_edge.fleet.sync import sync_log
from clca_edge.fleet.uploader import Uploader

pytestmark = needs_mosquitto


def _log(path, frames):
    with open_log(path) as flog:
        for i in frames:
            flog.write({"type": "decision", "frame": i})
    return path


def _state(store: Store, device: str):
    return store.query("SELECT state FROM devices WHERE device = ?", (device,))[0][0]


def test_a_sync_beside_a_running_capture_leaves_the_device_online(tmp_path):
    old, live = _log(tmp_path / "old.jsonl", range(20)), _log(tmp_path / "live.jsonl", range(100, 110))
    with Mosquitto(tmp_path) as broker:
        store = Store(tmp_path / "store")
        collector = Collector(BrokerConfig(broker.url), store).start()
        assert collector.subscribed.wait(10)
        cfg = FleetConfig(BrokerConfig(broker.url), "dev-p", reconnect_max_s=1)
        capture = Uploader(cfg, LogOutbox(live)).start()          # the running capture's uploader
        try:
            wait_for(lambda: store.query("SELECT 1 FROM devices WHERE device = 'dev-p' AND state = 'online'"), 10,
                     "the capture online")
            result = sync_log(cfg, old, timeout_s=10)
            assert result.done and result.records_sent == 20
            collector.stop()
            collector = Collector(BrokerConfig(broker.url), store, client_id="late-collector").start()
            assert collector.subscribed.wait(10)      # gets the retained status again
            wait_for(lambda: collector.counts["statuses"] >= 1, 5, "the retained status")
            assert _state(store, "dev-p") == "online"
        finally:
            capture.stop()
            collector.stop()
            store.close()
