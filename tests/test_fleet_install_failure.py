"""An install that fails for a reason other than the bundle (a full disk moving it into its slot or
writing the state) is reported as ``failed``, its staging is cleaned and the device stays on the
bundle it runs (review 1.5): the agent never sticks in ``downloading``."""

from __future__ import annotations

import errno
import json

import pytest

from clca_edge.bundle.signature import TrustedKeys, generate_keypair
from clca_edge.fleet import rollout_agent
from clca_edge.fleet.agent_config import AgentConfig
from clca_edge.fleet.announce import Announcement, utc_now
from clca_edge.fleet.config import BrokerConfig, FleetConfig
from clca_edge.fleet.download import DownloadResult
from clca_edge.fleet.install import Staged
from clca_edge.fleet.rollout_agent import Job, RolloutAgent
from clca_edge.fleet.slots import DeviceState, InstalledBundle, Slots


def _disk_full(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["fill_slot", "point_to", "save_state"])
def test_a_full_disk_while_switching_reports_failed_and_keeps_the_running_bundle(tmp_path, monkeypatch, where):
    _, pub, _ = generate_keypair(tmp_path / "keys")
    cfg = AgentConfig(fleet=FleetConfig(BrokerConfig("mqtt://127.0.0.1:1"), device="d1"), rings=("canary",),
                      trusted_keys=pub, bundles=tmp_path / "bundles")
    slots = Slots(cfg.bundles)
    (slots.root / "slots" / "a" / "leafnet").mkdir(parents=True)
    (slots.root / "slots" / "b" / "old").mkdir(parents=True)
    v1 = InstalledBundle("leafnet", 1, "cd" * 32, "aa" * 32, "b", "slots/b/old", "canary")
    v2 = InstalledBundle("leafnet", 2, "cd" * 32, "ef" * 32, "a", "slots/a/leafnet", "canary")
    slots.save_state(DeviceState(installed=v2, previous=v1, state="probation_passed", version=2))
    agent = RolloutAgent(cfg, TrustedKeys.load(pub))
    before = slots.current()

    staged_dir = slots.new_staging_dir("v3-")
    (staged_dir / "leafnet").mkdir()
    monkeypatch.setattr(rollout_agent, "stage", lambda *a: Staged(staged_dir, staged_dir / "leafnet", "12" * 32, ()))
    ann = Announcement(bundle_id="leafnet", version=3, size=10, sha256="ab" * 32, url="http://127.0.0.1:1/v3.tar",
                       ring="canary", issued_at=utc_now())
    dest = slots.staging / "leafnet-v3.tar"
    dest.write_bytes(b"0123456789")
    job = Job(ann, dest, result=DownloadResult(dest, 10, 10, 0, 0.1))
    job.done.set()
    agent.job = job
    agent.report("downloading", 3, ring="canary")
    if where == "save_state":     # the state file cannot be written once the bundle is verified
        real, calls = slots.save_state, []

        def save_state(st):
            calls.append(st.state)
            if st.state == "installed":
                _disk_full()
            real(st)
        monkeypatch.setattr(agent.slots, "save_state", save_state)
    else:
        monkeypatch.setattr(agent.slots, where, _disk_full)

    agent.step()

    assert agent.job is None
    assert agent.state.state == "failed" and "No space left" in agent.state.reason
    sent = [json.loads(line) for line in agent.events.path.read_text().splitlines() if line.strip()]
    assert sent[-1]["state"] == "failed" and sent[-1]["version"] == "3"   # durable in the events outbox
    assert not agent.state.is_refused(3)                    # not the bundle's fault: tried again later
    assert agent.state.installed == v2 and slots.current() == before
    assert not dest.exists() and not staged_dir.exists()    # the staging space is given back
    on_disk = Slots(cfg.bundles).load_state()
    assert on_disk.state == "failed" and on_disk.installed == v2
    assert on_disk.previous is None          # its slot was replaced: never rolled back into
