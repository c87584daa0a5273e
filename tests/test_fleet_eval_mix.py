"""`fleet status` compares a device's class mix with its bundle's eval set: the bundle records the
eval set's class counts, `fleet publish --store` (or `fleet status --bundle`) brings them to the
centre, matched by the manifest sha256 the device's heartbeat and decision records name."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.mosquitto import Mosquitto, needs_mosquitto
from support.rollout import make_tar

from clca_edge.bundle import MANIFEST_NAME, read_manifest, sha256_file, write_manifest
from clca_edge.bundle.signature import generate_keypair
from clca_edge.capture.fieldlog import open_log
from clca_edge.centre.collector import Collector
from clca_edge.centre.eval_mix import EvalMix, compare, total_variation
from clca_edge.centre.store import Store
from clca_edge.cli import main
from clca_edge.fleet.config import BrokerConfig, FleetConfig
from clca_edge.fleet.outbox import LogOutbox
from clca_edge.fleet.stats import DeviceStats
from clca_edge.fleet.uploader import Uploader


def test_total_variation_and_shares_on_known_mixes():
    assert total_variation({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5}) == 0.0
    assert total_variation({"a": 1.0}, {"b": 1.0}) == 1.0
    got = compare({"a": 6, "b": 2}, EvalMix("sha", "b", {"a": 10, "b": 10, "c": 0}))
    assert got.decisions == 8 and got.shares == {"a": 0.75, "b": 0.25}
    assert got.eval_shares == {"a": 0.5, "b": 0.5, "c": 0.0} and got.tvd == 0.25
    assert compare({}, EvalMix("sha", "b", {"a": 1})) is None


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A bundle whose manifest records an eval set of 10 'a'-class and 10 'b'-class images."""
    from support.runtime_bundle import write_bundle

    root = write_bundle(tmp_path_factory.mktemp("evalmix") / "leafnet")
    m = read_manifest(root)
    a, b = m.class_names[:2]
    m.eval_classes = {name: (10 if name in (a, b) else 0) for name in m.class_names}
    write_manifest(root, m, new_files=[])
    return root, a, b


def _status(store: Path, *extra) -> dict:
    res = CliRunner().invoke(main, ["fleet", "status", "--store", str(store), "--json", *map(str, extra)])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)["devices"][0]


@needs_mosquitto
def test_status_shows_the_class_mix_against_the_eval_set_of_the_bundle_the_device_runs(bundle, tmp_path):
    root, a, b = bundle
    sha = sha256_file(root / MANIFEST_NAME)
    log = tmp_path / "dev" / "log.jsonl"
    log.parent.mkdir()
    with open_log(log) as flog:   # 6 a + 2 b on this bundle; 5 b on the one before (not compared)
        for i, (cls, bundle_sha) in enumerate([(a, sha)] * 6 + [(b, sha)] * 2 + [(b, "0" * 64)] * 5):
            flog.write({"type": "decision", "frame": i, "class": cls, "confidence": 0.9, "bundle_sha": bundle_sha})
    broker = Mosquitto(tmp_path).start()
    store_dir = tmp_path / "store"
    store = Store(store_dir)
    collector = Collector(BrokerConfig(broker.url), store, reconnect_max_s=1).start()
    stats = DeviceStats()
    stats.set_bundle(sha, "v1", "ort-cpu", "fp32", "passed")    # what the heartbeat names
    uploader = Uploader(FleetConfig(BrokerConfig(broker.url), "dev-1", heartbeat_s=1), LogOutbox(log), stats=stats)
    try:
        assert collector.subscribed.wait(10)
        uploader.start()
        deadline = time.monotonic() + 30
        while not (len(list(store.records("dev-1"))) == 13 and _status(store_dir)["bundle"] == sha):
            assert time.monotonic() < deadline, "the records and a heartbeat at the centre"
            time.sleep(0.1)
        assert _status(store_dir)["eval_mix"] is None           # nobody told the centre the eval mix

        got = _status(store_dir, "--bundle", root)["eval_mix"]   # the bundle given to status
        assert got["decisions"] == 8 and got["shares"] == {a: 0.75, b: 0.25} and got["tvd"] == 0.25
        assert got["eval_shares"][a] == 0.5 and got["eval_shares"][b] == 0.5

        keys = generate_keypair(tmp_path / "keys")[0]
        tar = make_tar(root, tmp_path / "tars" / "leafnet.tar")
        res = CliRunner().invoke(main, ["fleet", "publish", "--broker", broker.url, "--bundle", str(tar), "--url",
                                        "http://127.0.0.1:9/leafnet.tar", "--ring", "canary", "--sign-key", str(keys),
                                        "--store", str(store_dir)])
        assert res.exit_code == 0, res.output
        assert _status(store_dir)["eval_mix"] == got             # recorded by the publisher
        table = CliRunner().invoke(main, ["fleet", "status", "--store", str(store_dir)])
        assert "TVD 0.25" in table.output
    finally:
        uploader.stop()
        collector.stop()
        broker.stop()
        store.close()
