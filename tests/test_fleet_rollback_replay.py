"""A signed rollback cannot be replayed to force a downgrade (review 1.4): the agent takes a
rollback only while it runs the version the rollback replaces and only if its announcement seq is
newer than that of every announcement it installed (kept in state.json); a rollback without them
(an older publisher's) is refused."""

from __future__ import annotations

import dataclasses
import json

import pytest

from clca_edge.bundle.signature import TrustedKeys, generate_keypair, sign_bytes
from clca_edge.fleet import announce
from clca_edge.fleet.agent_config import AgentConfig
from clca_edge.fleet.announce import Announcement, AnnouncementError, sign_announcement, utc_now
from clca_edge.fleet.config import BrokerConfig, FleetConfig
from clca_edge.fleet.rollout_agent import RolloutAgent
from clca_edge.fleet.slots import DeviceState, InstalledBundle, Slots


def _ann(**kw) -> Announcement:
    base = dict(bundle_id="leafnet", version=3, size=1234, sha256="ab" * 32, url="http://127.0.0.1:1/v3.tar",
                ring="canary", issued_at=utc_now(), rollback=True, from_version=5, seq=101)
    return Announcement(**{**base, **kw})


@pytest.fixture
def agent(tmp_path):
    priv, pub, _ = generate_keypair(tmp_path / "keys")
    fleet = FleetConfig(BrokerConfig("mqtt://127.0.0.1:1"), device="d1")
    cfg = AgentConfig(fleet=fleet, rings=("canary",), trusted_keys=pub, bundles=tmp_path / "bundles")
    slots = Slots(cfg.bundles)
    v5 = InstalledBundle("leafnet", 5, "cd" * 32, "ef" * 32, "a", "a/leafnet", "canary")
    slots.save_state(DeviceState(installed=v5, state="probation_passed", version=5, announce_seq=100))
    a = RolloutAgent(cfg, TrustedKeys.load(pub))
    started = []
    a._start_job = started.append          # what the agent accepted (no download here)
    return a, priv, started


def _send(agent: RolloutAgent, payload: bytes) -> None:
    agent.handle_message("clca/rings/canary/announce", payload)


def test_a_fresh_rollback_of_the_running_version_is_taken(agent):
    a, priv, started = agent
    _send(a, sign_announcement(_ann(), priv).to_bytes())
    assert [s.version for s in started] == [3]


@pytest.mark.parametrize("change", [dict(from_version=4), dict(from_version=7), dict(seq=100), dict(seq=42)])
def test_a_replayed_or_misdirected_rollback_is_refused(agent, change):
    a, priv, started = agent
    _send(a, sign_announcement(_ann(**change), priv).to_bytes())
    assert started == [] and a.state.installed_version == 5


def test_a_rollback_without_from_version_and_seq_is_refused(agent):
    a, priv, started = agent
    body = {k: v for k, v in _ann().to_dict().items() if k not in ("seq", "from_version")}
    kid, sig = sign_bytes(priv, announce._payload(body))       # as an older publisher signed it
    _send(a, json.dumps({"schema": announce.SCHEMA, "format": 1, "announcement": body, "key_id": kid,
                         "signature": sig}).encode())
    assert started == [] and a.ignored == 1


def test_a_plain_announcement_needs_neither_and_the_seq_is_persisted(agent, tmp_path):
    a, priv, started = agent
    body = {k: v for k, v in _ann(version=6, rollback=False).to_dict().items() if k not in ("seq", "from_version")}
    kid, sig = sign_bytes(priv, announce._payload(body))       # an older publisher's v6: still taken
    _send(a, json.dumps({"schema": announce.SCHEMA, "format": 1, "announcement": body, "key_id": kid,
                         "signature": sig}).encode())
    assert [s.version for s in started] == [6]
    with pytest.raises(AnnouncementError, match="rollback must carry"):
        _ann(seq=0)
    with pytest.raises(AnnouncementError, match="rollback must carry"):
        _ann(from_version=3)
    st = dataclasses.replace(a.state, announce_seq=123)
    assert DeviceState.from_dict(json.loads(json.dumps(st.to_dict()))).announce_seq == 123
