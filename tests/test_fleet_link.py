"""The fleet link on a real Mosquitto: store and forward from the field log, nothing lost, nothing
counted twice, whatever the broker or the device process does; and the collector trusts nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.mosquitto import Mosquitto, needs_mosquitto
from support.netcut import LinkCut

from clca_edge.capture.fieldlog import open_log
from clca_edge.centre.collector import Collector
from clca_edge.centre.store import Store
from clca_edge.fleet.config import BrokerConfig, FleetConfig, load_fleet
from clca_edge.fleet.messages import Heartbeat, RecordBatch
from clca_edge.fleet.mqtt import MqttLink
from clca_edge.fleet.outbox import LogOutbox
from clca_edge.fleet.uploader import Uploader
from support.waiting import wait_for

pytestmark = needs_mosquitto
REPO = Path(__file__).resolve().parents[1]
CLI = "import sys; sys.argv[0] = 'clca-edge'; from clca_edge.cli import main; main()"


def write_records(path: Path, n: int, start: int = 0, every_s: float = 0.0) -> None:
    with open_log(path) as flog:
        for i in range(start, start + n):
            flog.write({"type": "decision", "frame": i, "class": f"c{i % 3}", "confidence": 0.9})
            if every_s:
                time.sleep(every_s)


def stored_frames(store: Store, device: str) -> list:
    return [r["record"]["frame"] for r in store.records(device) if r["record"]["type"] == "decision"]


def test_broker_down_at_start_then_up_every_record_once_in_order(tmp_path):
    log = tmp_path / "dev" / "log.jsonl"
    write_records(log, 150)
    broker = Mosquitto(tmp_path)       # configured, not started: the link is down
    link = LinkCut(broker.port, up=False)   # the device's own network path to it, down too
    store = Store(tmp_path / "store")
    cfg = FleetConfig(BrokerConfig(link.url), "dev-1", batch_size=20, replay_rate=2000, reconnect_max_s=1)
    uploader = Uploader(cfg, LogOutbox(log)).start()
    # The capture goes on while the link is down: more records arrive in the log meanwhile.
    writer = threading.Thread(target=write_records, args=(log, 100, 150, 0.01))
    writer.start()
    collector = None
    try:
        time.sleep(1.5)
        assert uploader.records_sent == 0 and uploader.pending()[0] > 150
        broker.start()
        collector = Collector(BrokerConfig(broker.url), store, reconnect_max_s=1).start()
        assert collector.subscribed.wait(10)
        link.restore()                 # the device reaches the broker
        writer.join()
        wait_for(lambda: uploader.pending() == (0, 0) and len(stored_frames(store, "dev-1")) == 250, 30,
                 "every record at the centre")
        assert stored_frames(store, "dev-1") == list(range(250))        # once each, in log order
        assert [r["seq"] for r in store.records("dev-1")] == list(range(250))
        assert collector.counts["duplicates"] == 0 and collector.counts.get("resends_asked", 0) == 0
    finally:
        uploader.stop()
        if collector is not None:
            collector.stop()
        link.cut()
        broker.stop()
        store.close()


def _fleet_file(tmp_path: Path, url: str, **extra) -> Path:
    lines = [f'broker = "{url}"', 'device = "dev-k"', "reconnect_max_s = 1"]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    path = tmp_path / "fleet.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _sync(fleet: Path, log: Path, timeout: float = 60) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", CLI, "fleet", "sync", "--fleet", str(fleet), "--log", str(log),
                             "--timeout", str(timeout), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, text=True)


@pytest.mark.slow
def test_broker_restart_and_device_sigkill_lose_nothing_and_count_nothing_twice(tmp_path):
    total = 3000
    log = tmp_path / "dev" / "log.jsonl"
    write_records(log, total)
    with Mosquitto(tmp_path) as broker:
        store = Store(tmp_path / "store")
        collector = Collector(BrokerConfig(broker.url), store, reconnect_max_s=1).start()
        fleet = _fleet_file(tmp_path, broker.url, replay_rate=600, batch_size=30)
        proc = _sync(fleet, log)
        try:
            wait_for(lambda: len(stored_frames(store, "dev-k")) >= 600, 30, "the upload to start")
            broker.restart()                                            # mid-run
            after_restart = len(stored_frames(store, "dev-k"))
            wait_for(lambda: len(stored_frames(store, "dev-k")) >= after_restart + 600, 30, "the upload to resume")
            proc.send_signal(signal.SIGKILL)                            # mid-upload, no goodbye
            proc.wait(10)
            cursor = json.loads((log.parent / "log.jsonl.fleet-cursor").read_text())
            assert 0 < cursor["seq"] < total                            # it was cut short
            proc = _sync(fleet, log)                                    # the device comes back
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            result = json.loads(out)
            assert result["records_left"] == 0 and result["done"]
            assert result["records_sent"] <= total - cursor["seq"] + 30   # it resumed from its cursor
            wait_for(lambda: len(stored_frames(store, "dev-k")) >= total, 30, "every record at the centre")
            time.sleep(0.5)
            frames = stored_frames(store, "dev-k")
            assert sorted(frames) == list(range(total))                 # none lost, none twice
            # Records the restarted broker acknowledged before the collector subscribed again were
            # asked for again (commands/resend); the request is cleared once the log is whole.
            assert store.resend_asked("dev-k") is None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            collector.stop()
            store.close()
    status = subprocess.run([sys.executable, "-c", CLI, "fleet", "status", "--store", str(tmp_path / "store"),
                             "--json"], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert status.returncode == 0, status.stderr
    (dev,) = json.loads(status.stdout)["devices"]
    assert dev["device"] == "dev-k" and dev["decisions"] == total and dev["refused"] == 0
    assert dev["online"] is False and dev["last_seen"]     # sync never says online (capture would, not sync)


def test_sync_says_how_much_is_left_when_the_broker_is_unreachable(tmp_path):
    log = tmp_path / "log.jsonl"
    write_records(log, 10)
    broker = Mosquitto(tmp_path)       # never started
    proc = _sync(_fleet_file(tmp_path, broker.url), log, timeout=1.5)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert json.loads(out)["records_left"] == 10
    assert "10 record(s)" in err and "never reached" in err and "Traceback" not in err


def test_the_collector_drops_and_counts_malformed_oversized_and_misaddressed_messages(tmp_path):
    with Mosquitto(tmp_path) as broker:
        store = Store(tmp_path / "store")
        collector = Collector(BrokerConfig(broker.url), store).start()
        sender = MqttLink(BrokerConfig(broker.url), "raw-sender", clean_session=True).start()
        try:
            assert collector.link.wait_connected(10) and sender.wait_connected(10)
            time.sleep(0.3)
            good = RecordBatch("dev-1", "log1", ((0, {"type": "decision", "class": "a", "confidence": 0.9}),))
            forged = RecordBatch("dev-2", "log1", ((0, {"type": "decision", "class": "b"}),))
            huge = RecordBatch("dev-1", "log1", tuple((i, {"pad": "x" * 9000}) for i in range(1, 70)))
            huge_payload = json.dumps(huge.to_dict()).encode()
            beat = Heartbeat("dev-1", "2026-01-01T00:00:00Z", 5.0, backend="ort-cpu", decisions=1)
            for topic, payload in [("clca/devices/dev-1/records", b"{not json"),
                                   ("clca/devices/dev-1/records", b'{"v": 1, "kind": "records", "device": "dev-1"}'),
                                   ("clca/devices/dev-1/records", huge_payload),
                                   ("clca/devices/dev-1/records", forged.encode()),
                                   ("clca/devices/dev-1/heartbeat", beat.encode()),
                                   ("clca/devices/dev-1/records", good.encode())]:
                sender.client.publish(topic, payload, qos=1).wait_for_publish(5)
            wait_for(lambda: collector.counts["records"] == 1, 10, "the good batch")
        finally:
            sender.stop()
            collector.stop()
        assert len(huge_payload) > RecordBatch.MAX_BYTES
        assert store.drops() == {"malformed": 2, "oversized": 1, "misaddressed": 1}
        assert [r["record"]["class"] for r in store.records()] == ["a"]     # nothing of the others written
        assert [r[0] for r in store.query("SELECT device FROM devices")] == ["dev-1"]
        assert collector.counts["heartbeats"] == 1
        store.close()


def test_a_fleet_file_from_disk_drives_the_uploader(tmp_path):
    """The fleet file's limits reach the uploader (batch size and rate)."""
    cfg = load_fleet(_fleet_file(tmp_path, "mqtt://127.0.0.1:1", batch_size=7, replay_rate=70))
    up = Uploader(cfg, LogOutbox(tmp_path / "log.jsonl"))
    assert (up.config.batch_size, up.bucket.rate) == (7, 70.0)


def test_the_centre_asks_again_for_records_the_broker_lost(tmp_path):
    """Records acknowledged by the broker but never delivered (a restarted Mosquitto drops shared
    subscriptions until collectors subscribe again) are found missing and sent again; the shipped
    ACL lets the collector ask and the device read the request."""
    log = tmp_path / "log.jsonl"
    write_records(log, 30)
    with Mosquitto(tmp_path, users={"dev-r": "pw-r", "collector": "pw-c"}) as broker:
        cfg = FleetConfig(BrokerConfig(broker.url, "dev-r", "pw-r"), "dev-r", batch_size=10, reconnect_max_s=1)
        centre = BrokerConfig(broker.url, "collector", "pw-c")
        store = Store(tmp_path / "store")
        collector = Collector(centre, store).start()
        assert collector.subscribed.wait(10)
        uploader = Uploader(cfg, LogOutbox(log)).start()
        wait_for(lambda: len(stored_frames(store, "dev-r")) == 30, 10, "the first upload")
        uploader.stop()
        collector.stop()
        store.query("DELETE FROM records WHERE seq BETWEEN 10 AND 19")   # lost between broker and collector
        collector = Collector(centre, store).start()   # a collector that starts afresh
        assert collector.subscribed.wait(10)
        uploader = Uploader(cfg, LogOutbox(log)).start()   # its status says it has sent up to seq 30
        try:
            wait_for(lambda: len(stored_frames(store, "dev-r")) == 30 and store.resend_asked("dev-r") is None, 10,
                     "the lost records sent again")
            assert uploader.rewinds == 1
            assert stored_frames(store, "dev-r") == list(range(10)) + list(range(20, 30)) + list(range(10, 20))
            assert "Denied" not in broker.log_text()
        finally:
            uploader.stop()
            collector.stop()
            store.close()


def test_fleet_collect_runs_until_sigterm_with_the_collectors_credentials(tmp_path):
    users = {"collector": "pw-c", "dev-c": "pw-d"}
    (tmp_path / "collector.pass").write_text("pw-c\n")
    log = tmp_path / "log.jsonl"
    write_records(log, 40)
    with Mosquitto(tmp_path, users=users) as broker:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, "-c", CLI, "fleet", "collect", "--broker", broker.url,
                                 "--username", "collector", "--password-file", str(tmp_path / "collector.pass"),
                                 "--store", str(tmp_path / "store")], stderr=subprocess.PIPE, text=True, env=env)
        try:
            wait_for(lambda: "Sending SUBACK to clca-collector" in broker.log_text(), 30, "the collector to subscribe")
            cfg = FleetConfig(BrokerConfig(broker.url, "dev-c", "pw-d"), "dev-c", reconnect_max_s=1)
            uploader = Uploader(cfg, LogOutbox(log)).start()
            assert uploader.drain(10)
            uploader.stop()
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert proc.returncode == 0, err
    assert "records 40" in err
    with Store(tmp_path / "store", readonly=True) as store:
        assert stored_frames(store, "dev-c") == list(range(40))


def test_two_collectors_share_the_load_and_restarted_ones_lose_nothing(tmp_path):
    """Shared subscriptions hand each batch to one collector of the group; collectors that stop
    (their sessions persist at the broker) get what arrived meanwhile when they come back."""
    log = tmp_path / "log.jsonl"
    write_records(log, 400)
    with Mosquitto(tmp_path) as broker:
        store = Store(tmp_path / "store")       # one store folder, two collectors writing into it

        def collector(name):
            c = Collector(BrokerConfig(broker.url), store, client_id=name).start()
            assert c.subscribed.wait(10)
            return c

        a, b = collector("collector-a"), collector("collector-b")
        cfg = FleetConfig(BrokerConfig(broker.url), "dev-s", batch_size=10, replay_rate=100, reconnect_max_s=1)
        uploader = Uploader(cfg, LogOutbox(log)).start()
        try:
            wait_for(lambda: a.counts["records"] >= 50 and b.counts["records"] >= 50, 20, "both to take a share")
            a.stop()
            b.stop()                                    # the centre goes away mid-run
            wait_for(lambda: uploader.pending()[0] == 0, 30, "the broker to take everything")
            before = len(stored_frames(store, "dev-s"))
            assert before < 400
            a, b = collector("collector-a"), collector("collector-b")     # and comes back
            wait_for(lambda: len(stored_frames(store, "dev-s")) == 400, 20, "every record at the centre")
            assert sorted(stored_frames(store, "dev-s")) == list(range(400))   # none lost, none twice
            assert a.counts["records"] + b.counts["records"] == 400 - before
        finally:
            uploader.stop()
            a.stop()
            b.stop()
            store.close()
