"""`clca-edge capture --fleet`: a real capture run on a video sends its decisions, health and the
frames its policy picks to a real Mosquitto and collector; with the broker down the run is not held
up, and `fleet sync` sends the rest later."""

from __future__ import annotations

import json
import time

import cv2
import pytest
from click.testing import CliRunner
from support.mosquitto import Mosquitto, needs_mosquitto

from clca_edge.capture.fieldlog import read_log
from clca_edge.centre.collector import Collector
from clca_edge.centre.store import Store
from clca_edge.cli import main
from clca_edge.fleet.config import BrokerConfig
from support.runtime_bundle import leaf_images, write_leaf_images, write_video

pytestmark = needs_mosquitto
N_FRAMES = 16


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "field.avi", leaf_images(N_FRAMES, seed=3), fps=10.0)


def fleet_file(tmp_path, url, device="cam-1"):
    path = tmp_path / f"{device}.toml"
    # Every decision is 'low confidence' (below 1.0): the cap of 5 per hour decides how many travel.
    path.write_text(f'broker = "{url}"\ndevice = "{device}"\nreconnect_max_s = 1\nheartbeat_s = 1\n'
                    "[sampling]\nlow_confidence = 1.0\nrandom_share = 0.0\nmin_gap_s = 0\n"
                    "[sampling.per_hour]\nlow_confidence = 5\nsmall_margin = 0\n")
    return path


def run_capture(bundle, video, tmp_path, fleet):
    log = tmp_path / "run" / "log.jsonl"
    res = CliRunner().invoke(main, ["capture", "--bundle", str(bundle), "--source", str(video), "--log", str(log),
                                    "--run-dir", str(tmp_path / "runs"), "--no-live", "--fleet", str(fleet)])
    assert res.exit_code == 0, res.output
    return res, log


def wait_for(cond, timeout_s):
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.05)
    return cond()


def test_capture_sends_every_decision_once_and_the_frames_its_policy_picks(bundle_dir, video, tmp_path):
    with Mosquitto(tmp_path) as broker:
        store = Store(tmp_path / "store")
        collector = Collector(BrokerConfig(broker.url), store).start()
        assert collector.subscribed.wait(10)
        try:
            res, log = run_capture(bundle_dir, video, tmp_path, fleet_file(tmp_path, broker.url))
            logged = list(read_log(log))
            assert wait_for(lambda: collector.counts["records"] >= len(logged), 10), collector.counts
            assert wait_for(lambda: len(store.query("SELECT 1 FROM frames")) == 5, 10)
            # The run's last heartbeat (sent as the agent stops) carries its final figures.
            assert wait_for(lambda: store.query("SELECT 1 FROM heartbeats WHERE body LIKE '%\"decisions\":16%'"), 10)
            # ... and then its retained offline status, which may reach the collector after that heartbeat
            assert wait_for(lambda: store.query("SELECT state FROM devices WHERE device = 'cam-1'") == [("offline",)], 10)
        finally:
            collector.stop()
        stored = [r["record"] for r in store.records("cam-1")]
        assert stored == logged                                  # the whole log, once, in order
        assert sum(r["type"] == "decision" for r in stored) == N_FRAMES
        assert "pending 0 record(s), 0 frame(s)" in res.output
        for (path,) in store.query("SELECT path FROM frames"):
            img = cv2.imread(str(tmp_path / "store" / path))
            assert img is not None and img.shape[2] == 3
        (beat,) = store.query("SELECT heartbeat FROM devices WHERE device = 'cam-1'")[0:1]
        beat = json.loads(beat[0])
        assert beat["backend"] == "ort-cpu" and beat["bundle"] and beat["decisions"] > 0
        assert beat["selfcheck"] in ("passed", "skipped")      # the run's own check of the variant it runs
        assert not any((tmp_path / "run" / "fleet-frames").glob("*.jpg"))   # all sent, none left behind
        store.close()


def test_capture_with_the_broker_down_finishes_and_fleet_sync_sends_the_rest(bundle_dir, video, tmp_path):
    broker = Mosquitto(tmp_path)                                  # not started
    fleet = fleet_file(tmp_path, broker.url, device="cam-2")
    t0 = time.monotonic()
    res, log = run_capture(bundle_dir, video, tmp_path, fleet)
    assert time.monotonic() - t0 < 30
    logged = list(read_log(log))
    assert f"pending {len(logged)} record(s), 5 frame(s)" in res.output
    with broker:
        store = Store(tmp_path / "store")
        collector = Collector(BrokerConfig(broker.url), store).start()
        assert collector.subscribed.wait(10)
        try:
            sync = CliRunner().invoke(main, ["fleet", "sync", "--fleet", str(fleet), "--log", str(log), "--json"])
            assert sync.exit_code == 0, sync.output
            doc = json.loads(sync.stdout)
            assert doc["records_sent"] == len(logged) and doc["frames_sent"] == 5 and doc["done"]
            assert wait_for(lambda: collector.counts["records"] >= len(logged), 10)
        finally:
            collector.stop()
        assert [r["record"] for r in store.records("cam-2")] == logged
        assert len(store.query("SELECT 1 FROM frames WHERE device = 'cam-2'")) == 5
        store.close()


def test_a_bad_fleet_file_stops_capture_before_it_starts(bundle_dir, video, tmp_path):
    bad = tmp_path / "fleet.toml"
    bad.write_text('broker = "http://x"\ndevice = "a"\n')
    res = CliRunner().invoke(main, ["capture", "--bundle", str(bundle_dir), "--source", str(video), "--no-live",
                                    "--run-dir", str(tmp_path / "runs"), "--fleet", str(bad)])
    assert res.exit_code == 2 and "broker" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_predict_on_a_folder_sends_its_decisions_and_picked_images(bundle_dir, tmp_path):
    folder = write_leaf_images(tmp_path / "photos", 6, seed=4, name="leaf{}.png")
    with Mosquitto(tmp_path) as broker:
        store = Store(tmp_path / "store")
        collector = Collector(BrokerConfig(broker.url), store).start()
        assert collector.subscribed.wait(10)
        try:
            log = tmp_path / "predict.jsonl"
            res = CliRunner().invoke(main, ["predict", "--bundle", str(bundle_dir), str(folder), "--json", "--log",
                                            str(log), "--fleet", str(fleet_file(tmp_path, broker.url, "rig-3"))])
            assert res.exit_code == 0, res.output
            assert len(json.loads(res.stdout)["predictions"]) == 6        # stdout: the one JSON document
            assert wait_for(lambda: collector.counts["records"] >= 7 and collector.counts["frames"] >= 5, 10)
        finally:
            collector.stop()
        stored = [r["record"] for r in store.records("rig-3")]
        assert [r["type"] for r in stored] == ["start"] + ["decision"] * 6
        assert sorted(r["file"] for r in stored[1:]) == sorted(str(p) for p in folder.iterdir())
        assert len(store.query("SELECT 1 FROM frames WHERE device = 'rig-3'")) == 5     # the hourly cap
        store.close()
    no_log = CliRunner().invoke(main, ["predict", "--bundle", str(bundle_dir), str(folder), "--fleet",
                                       str(tmp_path / "rig-3.toml")])
    assert no_log.exit_code == 2 and "--fleet needs --log" in no_log.output
