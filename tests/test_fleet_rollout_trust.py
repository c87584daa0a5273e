"""The centre's rollout commands trust only what its own key signed (review 1.3), and a signed
rollback cannot be replayed to force a downgrade (1.4); on a real Mosquitto with the shipped ACL."""

from __future__ import annotations

import json

import pytest
from support.mosquitto import Mosquitto, needs_mosquitto
from support.rollout import CENTRE_USERS, PASSWORD

from clca_edge.bundle.signature import generate_keypair
from clca_edge.centre.rollout import Centre, RolloutError, halt, promote, retained_announcements, send_announcement
from clca_edge.centre.store import Store
from clca_edge.fleet.announce import Announcement, sign_announcement, utc_now
from clca_edge.fleet.config import BrokerConfig
from clca_edge.fleet.messages import Event

pytestmark = needs_mosquitto


def _ann(**kw) -> Announcement:
    base = dict(bundle_id="leafnet", version=4, size=1234, sha256="ab" * 32, url="http://127.0.0.1:1/evil.tar",
                ring="canary", issued_at=utc_now())
    return Announcement(**{**base, **kw})


@pytest.fixture
def centre(tmp_path):
    priv, _, _ = generate_keypair(tmp_path / "centre-keys")
    other, _, _ = generate_keypair(tmp_path / "attacker-keys")
    with Mosquitto(tmp_path, users={u: PASSWORD for u in CENTRE_USERS}) as broker:
        yield Centre(BrokerConfig(broker.url, username="publisher", password=PASSWORD), sign_key=priv), other


def _passed(store: Store, version: int) -> None:
    for dev in ("c1", "c2"):
        store.add_event(Event(device=dev, seq=1, state="probation_passed", version=str(version), time=utc_now(),
                              ring="canary", installed_version=str(version), rings=("canary",)))


@pytest.mark.parametrize("forged", ["unsigned", "foreign key"])
def test_promote_and_halt_refuse_an_announcement_the_centre_did_not_sign(centre, tmp_path, forged):
    c, other = centre
    signed = json.loads(sign_announcement(_ann(), other).to_bytes())
    if forged == "unsigned":
        signed = {k: v for k, v in signed.items() if k not in ("key_id", "signature")}
        signed.update(key_id="x", signature="AAAA")
    send_announcement(c, "canary", json.dumps(signed).encode())      # someone with write access to rings/#
    store = Store(tmp_path / "store")
    try:
        _passed(store, 4)
        with pytest.raises(RolloutError, match="not signed by this centre's key"):
            promote(c, store, 4, "canary", "all", 0.9)
        with pytest.raises(RolloutError, match="not signed by this centre's key"):
            halt(c, "canary")
    finally:
        store.close()
    current = retained_announcements(c)
    assert set(current) == {"canary"}                     # nothing re-signed onto "all"
    assert json.loads(current["canary"].to_bytes())["key_id"] == signed["key_id"]   # nor on canary


def test_promote_re_signs_what_the_centre_signed(centre, tmp_path):
    c, _ = centre
    send_announcement(c, "canary", sign_announcement(_ann(), c.sign_key).to_bytes())
    store = Store(tmp_path / "store")
    try:
        _passed(store, 4)
        out = promote(c, store, 4, "canary", "all", 0.9)
    finally:
        store.close()
    assert out["announcement"]["ring"] == "all"
    assert retained_announcements(c)["all"].announcement.version == 4
