"""The bundle rollout end to end: a real Mosquitto (the shipped ACL), a real loopback HTTP server,
simulated devices running the real agent and the real capture, the centre's commands."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import pytest
from click.testing import CliRunner

from clca_edge.bundle import sha256_file
from clca_edge.bundle.signature import generate_keypair
from clca_edge.centre.collector import Collector
from clca_edge.centre.rollout import Centre, Release, publish, success
from clca_edge.centre.rollout_store import event_figures, latest_rollout
from clca_edge.centre.store import Store
from clca_edge.cli import main
from clca_edge.fleet.config import BrokerConfig
from support.http_server import LoopbackHTTPServer
from support.mosquitto import Mosquitto, needs_mosquitto
from support.rollout import CENTRE_USERS, PASSWORD, Device, make_tar, wait_for, with_temperature
from support.runtime_bundle import write_bundle, write_leaf_images

pytestmark = needs_mosquitto
DEVICES = ("c1", "c2", "a1", "a2", "a3")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """v1, v2 (another model), a 'doubtful' v1 (every decision low-confidence), leaf images."""
    root = tmp_path_factory.mktemp("rollout-bundles")
    src1 = write_bundle(root / "src1" / "leafnet")
    src2 = write_bundle(root / "src2" / "leafnet", seed=1)
    images = write_leaf_images(root / "images", 16)
    return SimpleNamespace(
        v1=with_temperature(src1, root / "v1" / "leafnet", 0.05),   # confident decisions
        v2=with_temperature(src2, root / "v2" / "leafnet", 0.05),
        doubtful=with_temperature(src1, root / "doubtful" / "leafnet", 50.0),
        images=images)


@pytest.fixture
def fleet(tmp_path, bundles):
    priv, pub, _ = generate_keypair(tmp_path / "centre-keys")
    other_priv, _, _ = generate_keypair(tmp_path / "other-keys")
    served = tmp_path / "served"
    served.mkdir()
    broker = Mosquitto(tmp_path, users={u: PASSWORD for u in DEVICES + CENTRE_USERS}).start()
    http = LoopbackHTTPServer(served).start()
    store = Store(tmp_path / "store")
    publisher = Centre(BrokerConfig(broker.url, username="publisher", password=PASSWORD), sign_key=priv)
    collector = Collector(BrokerConfig(broker.url, username="collector", password=PASSWORD), store,
                          client_id="test-collector").start()
    assert collector.subscribed.wait(10)
    ns = SimpleNamespace(tmp=tmp_path, priv=priv, pub=pub, other_priv=other_priv, served=served, broker=broker,
                         http=http, store=store, publisher=publisher, devices=[], bundles=bundles,
                         collector=collector)

    def device(name, rings, **kw):
        d = Device(name, rings, tmp_path / "devices", broker.url, pub, **kw)
        ns.devices.append(d)
        return d

    def tar(bundle, name):
        path = make_tar(bundle, tmp_path / "tars" / name)
        return path, http.publish(path)

    ns.device, ns.tar = device, tar
    try:
        yield ns
    finally:
        for d in ns.devices:
            d.stop()
        collector.stop()
        http.stop()
        broker.stop()
        store.close()


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _broker_args(ns):
    pw = ns.tmp / "publisher.pw"
    pw.write_text(PASSWORD + "\n")
    return ["--broker", ns.broker.url, "--username", "publisher", "--password-file", pw]


def _latest(store, device):
    return next(d for d in latest_rollout(store) if d.device == device)


def test_canary_passes_probation_promote_reaches_the_rest_and_an_offline_device_catches_up(fleet):
    ns = fleet
    canary = [ns.device(n, ["canary", "all"]).start() for n in ("c1", "c2")]
    rest = [ns.device(n, ["all"]).start() for n in ("a1", "a2")]
    late = ns.device("a3", ["all"])   # offline while v1 is announced
    path, url = ns.tar(ns.bundles.v1, "leafnet.tar")
    res = _cli("fleet", "publish", *_broker_args(ns), "--bundle", path, "--url", url, "--ring", "canary",
               "--sign-key", ns.priv, "--json")
    assert res.exit_code == 0, res.output
    ann = json.loads(res.stdout)
    assert ann["version"] == 1 and ann["sha256"] == sha256_file(path) and ann["ring"] == "canary"
    for d in canary:
        d.wait_state("installed", 1)
        assert d.current_manifest_sha() == sha256_file(ns.bundles.v1 / "manifest.json")
    # Not yet passed: promote refuses.
    res = _cli("fleet", "promote", *_broker_args(ns), "--store", ns.tmp / "store", "--version", 1, "--from", "canary",
               "--to", "all", "--min-success", 0.9, "--sign-key", ns.priv)
    assert res.exit_code != 0 and "passed probation on 0 of 2" in res.output
    for d in canary:
        summary = d.capture(ns.bundles.images, 12)
        assert summary["frames"] == 12
        d.wait_state("probation_passed", 1)
    assert all(d.state.installed_version == 0 for d in rest)   # ring 'all' heard nothing yet
    wait_for(lambda: success(ns.store, "canary", 1)["passed"] == 2, 10, "the centre to see the canary pass")
    res = _cli("fleet", "promote", *_broker_args(ns), "--store", ns.tmp / "store", "--version", 1, "--from", "canary",
               "--to", "all", "--min-success", 0.9, "--sign-key", ns.priv, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["passed"] == 2
    late.start()   # comes back after the announcement: the retained message is waiting
    for d in rest + [late]:
        d.wait_state("installed", 1)
        d.capture(ns.bundles.images, 12)
        d.wait_state("probation_passed", 1)
    wait_for(lambda: sum(d.state == "probation_passed" for d in latest_rollout(ns.store)) == 5, 10, "five passed")
    res = _cli("fleet", "rollout", "status", "--store", ns.tmp / "store", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert {d["device"]: (d["installed_version"], d["state"]) for d in out["devices"]} == {
        n: ("1", "probation_passed") for n in DEVICES}
    assert {d["device"]: d["ring"] for d in out["devices"]}["a3"] == "all"
    rings = {r["ring"]: r for r in out["rings"]}
    assert rings["all"]["devices"] == 5 and rings["canary"]["devices"] == 2
    assert rings["canary"]["versions"] == [{"version": "1", "states": {"probation_passed": 2}}]
    table = _cli("fleet", "rollout", "status", "--store", ns.tmp / "store")
    assert table.exit_code == 0 and "probation_passed" in table.output


def test_a_bundle_refusing_most_frames_in_probation_is_rolled_back_and_not_retried(fleet):
    from clca_edge.fleet.probation import ProbationConfig

    ns = fleet
    # The agent reads the field log while capture writes it: with min_frames at the 12 frames each
    # capture gives, it judges all of them, not the first 10 or 11 (which made the figures below racy).
    d = ns.device("c1", ["canary"], probation=ProbationConfig(duration_s=0.5, min_frames=12,
                                                              low_confidence=0.5)).start()
    path, url = ns.tar(ns.bundles.v1, "v1.tar")
    publish(ns.publisher, Release(path, url, "canary"))
    d.wait_state("installed", 1)
    d.capture(ns.bundles.images, 12)
    d.wait_state("probation_passed", 1)
    v1_sha = d.current_manifest_sha()
    path, url = ns.tar(ns.bundles.doubtful, "v2.tar")
    assert publish(ns.publisher, Release(path, url, "canary")).version == 2
    d.wait_state("installed", 2)
    assert d.current_manifest_sha() != v1_sha
    d.capture(ns.bundles.images, 12)   # every decision low-confidence
    d.wait_state("rolled_back", 2)
    assert d.current_manifest_sha() == v1_sha and d.state.installed_version == 1
    assert "rose from 0.0% to 100.0%" in d.state.refused["2"]
    wait_for(lambda: _latest(ns.store, "c1").state == "rolled_back", 10, "the centre to hear of the rollback")
    figures = event_figures(ns.store, "c1", "rolled_back")
    assert figures["new_frames"] == 12 and figures["new_doubtful_share"] == 1.0 and figures["previous_frames"] == 12
    # A restart (agent and broker): the retained v2 is not tried again, the state is kept.
    seq = d.state.event_seq
    d.stop()
    ns.broker.restart()
    d.start()
    wait_for(lambda: d.agent.state.event_seq > seq, 10, "the restarted agent to say where it stands")
    time.sleep(1.0)   # the retained v2 has come by now, and is passed over
    assert d.state.installed_version == 1 and d.state.state == "rolled_back" and d.state.event_seq == seq + 1
    assert d.current_manifest_sha() == v1_sha


def test_tampered_wrong_sha_unsigned_foreign_key_and_older_versions_change_nothing(fleet):
    from clca_edge.fleet.announce import Announcement, sign_announcement, utc_now

    ns = fleet
    d = ns.device("c1", ["canary"]).start()
    path1, url1 = ns.tar(ns.bundles.v1, "v1.tar")
    path2, url2 = ns.tar(ns.bundles.v2, "v2.tar")
    publish(ns.publisher, Release(path1, url1, "canary", version=5))
    d.wait_state("installed", 5)
    before = d.current_manifest_sha()

    def unchanged():
        assert d.current_manifest_sha() == before and d.state.installed_version == 5

    def send(payload: bytes):
        from clca_edge.centre.rollout import send_announcement

        send_announcement(ns.publisher, "canary", payload)

    base = Announcement(bundle_id="leafnet", version=6, size=path2.stat().st_size, sha256=sha256_file(path2),
                        url=url2, ring="canary", issued_at=utc_now())
    # Unsigned, and signed by a key the device does not trust: ignored (logged), nothing reported.
    ignored = d.agent.ignored
    raw = json.loads(sign_announcement(base, ns.priv).to_bytes())
    send(json.dumps({k: v for k, v in raw.items() if k not in ("key_id", "signature")}).encode())
    send(sign_announcement(base, ns.other_priv).to_bytes())
    wait_for(lambda: d.agent.ignored == ignored + 2, 10, "both announcements to be ignored")
    unchanged()
    # Wrong sha256 (signed, but not the bytes served): downloaded, refused, deleted.
    send(sign_announcement(base.replace(sha256="0" * 64), ns.priv).to_bytes())
    d.wait_state("failed", 6)
    assert "does not match" in d.state.reason
    unchanged()
    assert not list(d.agent.slots.staging.glob("*.tar*"))
    # Tampered bytes on the server (the announcement is right): refused the same way.
    data = bytearray(path2.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (ns.served / "v2.tar").write_bytes(bytes(data))
    send(sign_announcement(base.replace(version=7), ns.priv).to_bytes())
    d.wait_state("failed", 7)
    unchanged()
    # An older version, not a rollback: refused; the same, signed as a rollback: accepted.
    send(sign_announcement(base.replace(version=3, url=url1, sha256=sha256_file(path1),
                                        size=path1.stat().st_size), ns.priv).to_bytes())
    wait_for(lambda: d.agent.inbox.empty(), 5)
    time.sleep(0.5)
    unchanged()
    rollback = base.replace(version=3, url=url1, sha256=sha256_file(path1), size=path1.stat().st_size,
                            rollback=True, from_version=5, seq=d.state.announce_seq + 1)
    send(sign_announcement(rollback, ns.priv).to_bytes())
    d.wait_state("installed", 3)
    assert d.state.announce_seq == rollback.seq       # persisted: the same rollback replayed is refused
    assert d.agent.slots.load_state().announce_seq == rollback.seq


def test_an_agent_download_cut_half_way_resumes_where_it_was(fleet):
    ns = fleet
    path, _ = ns.tar(ns.bundles.v1, "v1.tar")
    size = path.stat().st_size
    port = ns.http.port
    ns.http.stop()
    cut = LoopbackHTTPServer(ns.served, port=port, cut_after=size // 2).start()
    d = ns.device("c1", ["canary"]).start()
    try:
        publish(ns.publisher, Release(path, cut.url("v1.tar"), "canary"))
        wait_for(cut.cut.is_set, 20, "the cut")
    finally:
        cut.stop()   # the server is gone for a while
    part = d.agent.slots.staging / "v1-v1.tar.part"
    wait_for(lambda: part.is_file() and part.stat().st_size == size // 2, 10, "the partial download")
    again = LoopbackHTTPServer(ns.served, port=port).start()
    ns.http = again
    d.wait_state("installed", 1)
    assert again.bytes_sent == size - size // 2 and again.requests[-1] == f"bytes={size // 2}-"
    wait_for(lambda: event_figures(ns.store, "c1", "verified"), 10, "the verified event")
    assert event_figures(ns.store, "c1", "verified")["resumed_from"] == size // 2


def test_halt_stops_a_rollout_in_progress(fleet):
    ns = fleet
    d = ns.device("c1", ["canary"], bandwidth_bps=50_000).start()   # ~20 s for the bundle
    path, url = ns.tar(ns.bundles.v1, "v1.tar")
    publish(ns.publisher, Release(path, url, "canary"))
    d.wait_state("downloading", 1)
    res = _cli("fleet", "halt", *_broker_args(ns), "--ring", "canary", "--sign-key", ns.priv)
    assert res.exit_code == 0, res.output
    d.wait_state("halted", 1, timeout=10)
    assert d.current_manifest_sha() is None and d.state.installed_version == 0


def test_a_bundle_whose_int8_fails_the_device_self_check_is_not_installed(fleet, cpu_int8_bundle, tmp_path):
    import shutil

    from test_selfcheck import _break_int8

    ns = fleet
    good = tmp_path / "good" / "leafnet"
    shutil.copytree(cpu_int8_bundle[1], good, ignore=shutil.ignore_patterns(".selfcheck.json"))
    bad = tmp_path / "bad" / "leafnet"
    shutil.copytree(good, bad)
    _break_int8(bad)
    d = ns.device("c1", ["canary"]).start()
    path, url = ns.tar(good, "v1.tar")
    publish(ns.publisher, Release(path, url, "canary"))
    d.wait_state("installed", 1)
    before = d.current_manifest_sha()
    path, url = ns.tar(bad, "v2.tar")
    publish(ns.publisher, Release(path, url, "canary"))
    d.wait_state("failed", 2)
    assert d.state.reason.startswith("self-check failed: ort-cpu int8")
    assert "max logit distance" in d.state.reason
    assert d.current_manifest_sha() == before and d.state.installed_version == 1
    assert d.state.is_refused(2)
    assert not [p for p in d.agent.slots.staging.iterdir()]   # nothing left behind
    wait_for(lambda: _latest(ns.store, "c1").state == "failed", 10, "the centre to hear why")
    assert _latest(ns.store, "c1").reason.startswith("self-check failed: ort-cpu int8")


def test_only_the_publishers_credentials_may_write_announcements(fleet):
    from clca_edge.fleet.announce import Announcement, sign_announcement, utc_now
    from clca_edge.fleet.mqtt import MqttLink

    ns = fleet
    path, url = ns.tar(ns.bundles.v1, "v1.tar")
    a1 = ns.device("a1", ["all"]).start()
    # A device's credentials, even with a validly signed announcement: the broker's ACL drops it.
    ann = Announcement(bundle_id="leafnet", version=1, size=path.stat().st_size, sha256=sha256_file(path), url=url,
                       ring="all", issued_at=utc_now())
    rogue = MqttLink(BrokerConfig(ns.broker.url, username="c1", password=PASSWORD), "rogue", clean_session=True).start()
    assert rogue.wait_connected(10)
    rogue.client.publish("clca/rings/all/announce", sign_announcement(ann, ns.priv).to_bytes(), qos=1,
                         retain=True).wait_for_publish(5)
    rogue.stop()
    time.sleep(1.0)
    assert a1.state.installed_version == 0 and a1.state.state == "idle"
    assert "Denied PUBLISH from rogue" in ns.broker.log_text()
    publish(ns.publisher, Release(path, url, "all"))   # the publisher's credentials: delivered
    a1.wait_state("installed", 1)


def test_a_full_disk_during_the_download_leaves_the_installed_bundle_alone(fleet, monkeypatch):
    import errno

    from clca_edge.fleet import download as dl

    ns = fleet
    d = ns.device("c1", ["canary"]).start()
    path1, url1 = ns.tar(ns.bundles.v1, "v1.tar")
    publish(ns.publisher, Release(path1, url1, "canary"))
    d.wait_state("installed", 1)
    before = d.current_manifest_sha()
    real_open = open

    def full_open(p, mode="r", *a, **k):
        if str(p).endswith(".part"):
            raise OSError(errno.ENOSPC, "No space left on device", str(p))
        return real_open(p, mode, *a, **k)

    monkeypatch.setattr(dl, "open", full_open, raising=False)
    path2, url2 = ns.tar(ns.bundles.v2, "v2.tar")
    publish(ns.publisher, Release(path2, url2, "canary"))
    d.wait_state("failed", 2)
    assert "no space left" in d.state.reason
    assert d.current_manifest_sha() == before and d.state.installed_version == 1
    assert not list(d.agent.slots.staging.glob("*.part"))
    assert not d.state.is_refused(2)   # a full disk is not the bundle's fault: tried again on the next announcement


def _agent_process(ns, device: str, probation_s: float, stderr):
    """A fleet file for ``device`` (ring all), v1 published to it, and a way to start the real
    ``clca-edge agent`` process on it: (start, bundles folder, its state file as a dict)."""
    import os
    import subprocess
    import sys

    fleet_file = ns.tmp / f"{device}.toml"
    fleet_file.write_text(f'broker = "{ns.broker.url}"\ndevice = "{device}"\nusername = "{device}"\n'
                          f'password = "{PASSWORD}"\nrings = ["all"]\ntrusted_keys = "{ns.pub}"\n'
                          f'[probation]\nduration_s = {probation_s}\n')
    path, url = ns.tar(ns.bundles.v1, "v1.tar")
    publish(ns.publisher, Release(path, url, "all"))
    bundles = ns.tmp / f"{device}-bundles"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-c", "from clca_edge.cli import main; main()", "agent", "--fleet", str(fleet_file),
           "--bundles", str(bundles)]

    def state() -> dict:
        f = bundles / "state.json"
        return json.loads(f.read_text()) if f.is_file() else {}

    return (lambda: subprocess.Popen(cmd, env=env, stderr=stderr, text=True)), bundles, state


def test_the_agent_command_runs_until_sigterm_and_keeps_its_state(fleet):
    import signal
    import subprocess

    ns = fleet
    start, bundles, state = _agent_process(ns, "a1", 0.2, subprocess.PIPE)
    proc = start()
    try:
        wait_for(lambda: state().get("state") == "probation_passed", 60, "the agent process to install v1")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "agent stopped: probation_passed, running v1" in err
    assert (bundles / "current" / "manifest.json").is_file()
    wait_for(lambda: _latest(ns.store, "a1").state == "probation_passed", 10, "the centre to hear it")


def test_an_event_the_broker_never_acknowledged_survives_a_kill_9_of_the_agent(fleet):
    """probation_passed happens while the broker is down; the agent is killed with SIGKILL before it
    could send it; restarted with the broker back, the centre stores that event once and no seq is
    missing."""
    import signal
    import subprocess

    ns = fleet
    start, _, state = _agent_process(ns, "a2", 3, subprocess.DEVNULL)
    proc = start()
    try:
        wait_for(lambda: state().get("state") == "installed", 60, "the agent to install v1")
        ns.broker.stop()
        wait_for(lambda: state().get("state") == "probation_passed", 30, "probation to pass offline")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    seq = state()["event_seq"]
    rows = lambda: [tuple(r) for r in ns.store.query("SELECT seq, state FROM events WHERE device = 'a2' ORDER BY seq")]  # noqa: E731
    assert (seq, "probation_passed") not in rows()   # never reached the centre

    ns.broker.start()
    # A restarted Mosquitto forgets shared subscriptions until the collector subscribes again
    # (centre/collector.py); what a device sends before then is the centre's gap, not this test's.
    wait_for(ns.collector.subscribed.is_set, 30, "the collector to subscribe again")
    proc = start()
    try:
        wait_for(lambda: (seq, "probation_passed") in rows(), 60, "the centre to get the event sent after the restart")
        wait_for(lambda: len(rows()) > seq, 30, "the restarted agent's hello")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    got = rows()
    assert [s for s, _ in got] == list(range(1, len(got) + 1))     # each event once, none missing
    assert got.count((seq, "probation_passed")) == 1


def test_events_the_centre_lost_are_asked_for_and_sent_again(fleet):
    """Events the broker acknowledged but no collector stored (a restarted Mosquitto forgets shared
    subscriptions until the collectors subscribe again) are a hole in the device's event seqs: the
    collector asks (retained commands/resend-events, under the shipped ACL), the agent sends them
    again from its events outbox, and the request is cleared once they are whole."""
    ns = fleet
    d = ns.device("c1", ["canary"]).start()
    path, url = ns.tar(ns.bundles.v1, "v1.tar")
    publish(ns.publisher, Release(path, url, "canary"))
    d.wait_state("installed", 1)
    seqs = lambda: [s for (s,) in ns.store.query("SELECT seq FROM events WHERE device = 'c1' ORDER BY seq")]  # noqa: E731
    wait_for(lambda: _latest(ns.store, "c1").state == "installed", 10, "the centre to hear it")
    top = seqs()[-1]
    ns.store._tx([("DELETE FROM events WHERE device = 'c1' AND seq IN (2, 3)", ())])   # lost at the centre
    d.stop()
    d.start()                # its hello (a new event) shows the hole
    wait_for(lambda: seqs() == list(range(1, top + 2)), 30, "the lost events sent again")
    # Asked again from seq 3 once 2 is in, whichever the device already resends: idempotent.
    assert 1 <= d.agent.sender.rewinds <= 2 and 1 <= ns.collector.counts["resends_asked"] <= 2
    wait_for(lambda: ns.store.event_resend_asked("c1") is None, 10, "the request to be cleared")
    assert seqs() == list(range(1, top + 2))


def _put(slots, state, src, version):
    """Install the bundle folder ``src`` as ``version`` the way the agent does (free slot, then switch)."""
    import os
    import shutil

    from clca_edge.fleet.slots import InstalledBundle

    slot = slots.free_slot(state)
    staged = slots.new_staging_dir("t-")
    shutil.copytree(src, staged / "leafnet", ignore=shutil.ignore_patterns(".selfcheck.json"))
    dest = slots.fill_slot(slot, staged)
    slots.switch(state, InstalledBundle("leafnet", version, "0" * 64, sha256_file(src / "manifest.json"), slot,
                                        os.path.relpath(dest / "leafnet", slots.root)))


def test_capture_follows_the_agents_pointer_between_two_frames(bundles, tmp_path):
    from clca_edge.capture.bundle_runtime import BundleRuntime
    from clca_edge.capture.config import CaptureConfig
    from clca_edge.capture.fieldlog import open_log, read_log
    from clca_edge.capture.hooks import FrameObserver
    from clca_edge.capture.quality import QualityConfig
    from clca_edge.capture.run import CaptureRun
    from clca_edge.capture.sources import make_source, parse_source
    from clca_edge.fleet.slots import Slots
    from clca_edge.fleet.switch import PointerSwitch, resolve_pointer
    from clca_edge.runtime.open import RuntimeConfig, open_runtime

    slots = Slots(tmp_path / "bundles")
    state = slots.load_state()
    _put(slots, state, bundles.v1, 1)
    config, pointer = resolve_pointer(RuntimeConfig(bundle=str(slots.pointer)))
    assert pointer == slots.pointer and config.bundle == str(slots.current())
    model, sel = open_runtime(config)
    off = QualityConfig(enabled=False)
    switch = PointerSwitch(pointer, config, off, poll_s=0.02).start()

    class AgentSwitchesAt(FrameObserver):
        seen = 0

        def on_decision(self, frame, record):
            self.seen += 1
            if self.seen == 6:   # the agent switches while capture runs; capture waits until it is ready
                _put(slots, state, bundles.v2, 2)
                wait_for(lambda: switch._ready is not None, 30, "the switch to open v2")

    try:
        with open_log(tmp_path / "log.jsonl") as flog:
            run = CaptureRun(BundleRuntime.create(model, sel, off, switch.label(switch.target)),
                             make_source(parse_source(str(bundles.images))), flog, CaptureConfig(quality=off),
                             observers=[AgentSwitchesAt()], switch=switch)
            summary = run.run()
    finally:
        switch.close()
        run.runtime.close()
    recs = list(read_log(tmp_path / "log.jsonl"))
    decisions = [r for r in recs if r["type"] == "decision"]
    assert [r["source_frame"] for r in decisions] == list(range(16))   # none lost, none twice
    i = next(k for k, r in enumerate(recs) if r["type"] == "bundle_switch")
    assert recs[i]["after_frames"] == 6 and recs[i]["bundle"] == "leafnet v2"
    v1, v2 = (sha256_file(b / "manifest.json") for b in (bundles.v1, bundles.v2))
    assert {(r["bundle"], r["bundle_sha"]) for r in recs[:i] if r["type"] == "decision"} == {("leafnet v1", v1)}
    assert {(r["bundle"], r["bundle_sha"]) for r in recs[i:] if r["type"] == "decision"} == {("leafnet v2", v2)}
    assert summary.switches == 1 and summary.bundle_sha == v2


def test_capture_keeps_running_while_the_agent_installs_a_new_bundle(fleet, tmp_path):
    import threading

    from support.runtime_bundle import write_video

    ns = fleet
    frames = [cv2.imread(str(p)) for p in sorted(ns.bundles.images.iterdir())]
    video = write_video(tmp_path / "long.avi", frames * 250)   # 4000 frames: seconds of capture
    d = ns.device("c1", ["canary"]).start()
    path, url = ns.tar(ns.bundles.v1, "v1.tar")
    publish(ns.publisher, Release(path, url, "canary"))
    d.wait_state("installed", 1)
    log = tmp_path / "capture.jsonl"
    result = {}

    def capture():
        result["res"] = _cli("capture", "--bundle", d.agent.slots.pointer, "--source", video, "--no-live", "--log", log,
                             "--run-dir", tmp_path / "runs")

    t = threading.Thread(target=capture)
    t.start()
    wait_for(lambda: log.is_file() and log.stat().st_size > 0, 30, "capture to start")
    path, url = ns.tar(ns.bundles.v2, "v2.tar")
    publish(ns.publisher, Release(path, url, "canary"))
    d.wait_state("installed", 2)
    t.join(120)
    assert result["res"].exit_code == 0, result["res"].output
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    decisions = [r for r in recs if r["type"] == "decision"]
    assert [r["source_frame"] for r in decisions] == list(range(4000))   # no frame lost across the switch
    switches = [r for r in recs if r["type"] == "bundle_switch"]
    assert len(switches) == 1 and switches[0]["bundle"] == "v2 v2"   # bundle id (the .tar's name) and version
    n = switches[0]["after_frames"]
    assert 0 < n < 4000
    v1, v2 = (sha256_file(b / "manifest.json") for b in (ns.bundles.v1, ns.bundles.v2))
    assert {(r["bundle"], r["bundle_sha"]) for r in decisions[:n]} == {("v1 v1", v1)}
    assert {(r["bundle"], r["bundle_sha"]) for r in decisions[n:]} == {("v2 v2", v2)}


def test_a_capture_that_crashes_on_the_new_bundle_rolls_it_back(fleet, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from support.runtime_bundle import write_video

    from clca_edge.fleet.probation import ProbationConfig

    ns = fleet
    d = ns.device("c1", ["canary"], probation=ProbationConfig(duration_s=600, min_frames=10)).start()
    path, url = ns.tar(ns.bundles.v1, "v1.tar")
    publish(ns.publisher, Release(path, url, "canary"))
    d.wait_state("installed", 1)
    path, url = ns.tar(ns.bundles.v2, "v2.tar")
    publish(ns.publisher, Release(path, url, "canary"))
    d.wait_state("installed", 2)   # on probation for 10 minutes
    frames = [cv2.imread(str(p)) for p in sorted(ns.bundles.images.iterdir())]
    video = write_video(tmp_path / "long.avi", frames * 250)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", "from clca_edge.cli import main; main()", "capture", "--bundle",
                             str(d.agent.slots.pointer), "--source", str(video), "--no-live", "--log", str(d.log),
                             "--run-dir", str(tmp_path / "runs")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        def classified() -> int:
            return sum(1 for line in d.log.read_text().splitlines() if line.endswith("}") and
                       json.loads(line).get("type") == "decision")

        wait_for(lambda: d.log.is_file() and classified() > 5, 60, "the capture to classify")
    finally:
        proc.send_signal(signal.SIGKILL)   # the capture process dies mid-run: no summary record
        proc.wait(10)
    d.capture(ns.bundles.images, 2)   # systemd starts capture again
    d.wait_state("rolled_back", 2)
    assert d.state.reason == "capture crashed 1 time(s) with the new bundle"
    assert d.current_manifest_sha() == sha256_file(ns.bundles.v1 / "manifest.json")


def test_a_pointer_to_a_bundle_capture_cannot_open_leaves_capture_on_its_bundle(bundles, tmp_path):
    from clca_edge.capture.quality import QualityConfig
    from clca_edge.fleet.slots import InstalledBundle, Slots
    from clca_edge.fleet.switch import PointerSwitch, resolve_pointer
    from clca_edge.runtime.open import RuntimeConfig

    slots = Slots(tmp_path / "bundles")
    state = slots.load_state()
    _put(slots, state, bundles.v1, 1)
    config, pointer = resolve_pointer(RuntimeConfig(bundle=str(slots.pointer)))
    switch = PointerSwitch(pointer, config, QualityConfig(enabled=False), poll_s=0.02).start()
    try:
        broken = slots.root / "slots" / "b" / "leafnet"
        broken.mkdir(parents=True)
        (broken / "manifest.json").write_text("{}")
        slots.point_to(InstalledBundle("leafnet", 2, "0" * 64, "x", "b", "slots/b/leafnet"))
        wait_for(lambda: switch.failures == 1, 10, "the switch to try the broken bundle")
        assert switch.maybe_switch() is None   # capture goes on with v1
    finally:
        switch.close()


def test_a_signed_bundle_must_be_signed_by_a_trusted_key_too(fleet, tmp_path):
    import shutil

    from clca_edge.bundle.signature import sign_bundle

    ns = fleet
    d = ns.device("c1", ["canary"]).start()
    foreign = tmp_path / "foreign" / "leafnet"
    shutil.copytree(ns.bundles.v1, foreign, ignore=shutil.ignore_patterns(".selfcheck.json"))
    sign_bundle(foreign, ns.other_priv)   # the announcement is trusted, the bundle's own signature is not
    path, url = ns.tar(foreign, "v1.tar")
    publish(ns.publisher, Release(path, url, "canary"))
    d.wait_state("failed", 1)
    assert "not among the trusted keys" in d.state.reason and d.state.installed_version == 0
    signed = tmp_path / "signed" / "leafnet"
    shutil.copytree(ns.bundles.v1, signed, ignore=shutil.ignore_patterns(".selfcheck.json"))
    sign_bundle(signed, ns.priv)
    path, url = ns.tar(signed, "v2.tar")
    publish(ns.publisher, Release(path, url, "canary"))
    d.wait_state("installed", 2)


def test_publish_rollback_names_the_version_it_replaces_and_a_newer_seq(fleet):
    from clca_edge.centre.rollout import RolloutError, retained_announcements

    ns = fleet
    path, url = ns.tar(ns.bundles.v1, "v1.tar")
    with pytest.raises(RolloutError, match="replaces the newer version"):
        publish(ns.publisher, Release(path, url, "canary", version=1, rollback=True))      # nothing to replace
    v2 = publish(ns.publisher, Release(path, url, "canary", version=2))
    back = publish(ns.publisher, Release(path, url, "canary", version=1, rollback=True))
    assert (back.from_version, back.rollback) == (2, True) and back.seq > v2.seq >= 1
    assert retained_announcements(ns.publisher)["canary"].announcement == back
