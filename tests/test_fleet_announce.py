"""Signed bundle announcements: schema, signature over what was received, refusal of the rest."""

from __future__ import annotations

import json

import pytest

from clca_edge.bundle.signature import TrustedKeys, generate_keypair
from clca_edge.fleet.announce import (Announcement, AnnouncementError, parse_announcement, sign_announcement,
                                      verified_announcement)


def _ann(**kw):
    base = dict(bundle_id="leafnet", version=3, size=1234, sha256="ab" * 32, url="http://127.0.0.1:1/b.tar",
                ring="canary", issued_at="2026-12-06T16:00:00+00:00")
    base.update(kw)
    return Announcement(**base)


@pytest.fixture
def keys(tmp_path):
    priv, pub, kid = generate_keypair(tmp_path / "centre")
    other_priv, _, _ = generate_keypair(tmp_path / "other")
    return priv, TrustedKeys.load(pub), other_priv, kid


def test_signed_announcement_round_trips_and_verifies(keys):
    priv, trusted, _, kid = keys
    signed = sign_announcement(_ann(rollback=True, from_version=4, seq=7), priv)
    assert signed.key_id == kid
    got = verified_announcement(signed.to_bytes(), trusted)
    assert got == _ann(rollback=True, from_version=4, seq=7)


def test_tampered_unsigned_and_foreign_key_are_refused(keys):
    priv, trusted, other_priv, _ = keys
    doc = json.loads(sign_announcement(_ann(), priv).to_bytes())
    doc["announcement"]["version"] = 99          # edited after signing
    with pytest.raises(AnnouncementError, match="does not verify"):
        verified_announcement(json.dumps(doc).encode(), trusted)
    unsigned = {k: v for k, v in doc.items() if k not in ("signature", "key_id")}
    with pytest.raises(AnnouncementError, match="not signed"):
        verified_announcement(json.dumps(unsigned).encode(), trusted)
    with pytest.raises(AnnouncementError, match="not among the trusted keys"):
        verified_announcement(sign_announcement(_ann(), other_priv).to_bytes(), trusted)


def test_a_newer_publishers_extra_field_is_signed_and_still_verifies(keys, tmp_path):
    from clca_edge.bundle.signature import sign_bytes
    from clca_edge.fleet import announce

    priv, trusted, _, _ = keys
    body = {**_ann().to_dict(), "min_disk_mb": 50}
    kid, sig = sign_bytes(priv, announce._payload(body))
    data = json.dumps({"schema": announce.SCHEMA, "format": 1, "announcement": body, "key_id": kid,
                       "signature": sig}).encode()
    assert verified_announcement(data, trusted) == _ann()
    body["min_disk_mb"] = 1   # the unknown field is covered by the signature too
    data = json.dumps({"schema": announce.SCHEMA, "format": 1, "announcement": body, "key_id": kid,
                       "signature": sig}).encode()
    with pytest.raises(AnnouncementError):
        verified_announcement(data, trusted)


@pytest.mark.parametrize("bad, match", [
    (dict(version=0), "version"), (dict(version="3"), "version"), (dict(size=-1), "size"),
    (dict(sha256="XYZ"), "sha256"), (dict(url="ftp://x/b.tar"), "url"), (dict(ring="a/+"), "ring"),
    (dict(bundle_id=""), "bundle_id"), (dict(rollback="yes"), "rollback"),
])
def test_schema_violations_name_the_field(bad, match):
    with pytest.raises(AnnouncementError, match=match):
        _ann(**bad)


def test_garbage_oversized_and_newer_formats_are_refused_unread():
    for data, match in [(b"\xff\x00", "not JSON"), (b"[]", "not a"), (b"x" * 20000, "limit"),
                        (json.dumps({"schema": "clca-edge.announce", "format": 9}).encode(), "newer")]:
        with pytest.raises(AnnouncementError, match=match):
            parse_announcement(data)
