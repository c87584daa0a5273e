"""The rollout at the centre: announce a bundle to a ring, see where every device stands, promote
to the next ring when enough of the first passed probation, halt.

Announcements are retained, signed messages on ``{prefix}/rings/{ring}/announce`` (``fleet.announce``);
the bundle's bytes stay on the web server, object store or share the URL names. Versions are
monotonic per fleet: ``publish`` takes the next one after every ring's retained announcement unless
given one. ``promote`` and ``halt`` re-sign the announcement retained on a ring (so they need the
signing key too: whoever may not announce may not halt either), and only once it verifies against
that key's public half: an announcement someone else put on the broker is never re-signed. Each
announcement carries the next announcement ``seq`` (monotonic per fleet), and a rollback the
version it replaces (``from_version``), so an old rollback cannot be replayed (``fleet.announce``).
Device states come from the rollout events the collector stores (``centre.rollout_store``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..core.errors import ClcaEdgeError, ConfigError
from ..fleet.announce import (Announcement, AnnouncementError, SignedAnnouncement, parse_announcement,
                              sign_announcement, utc_now)
from ..fleet.config import BrokerConfig
from ..fleet.topics import Topics
from .rollout_store import latest_rollout
from .store import Store

log = logging.getLogger(__name__)

PASSED = "probation_passed"


class RolloutError(ClcaEdgeError):
    """A rollout step the centre refuses (too few devices passed, nothing announced on a ring...)."""


@dataclass(frozen=True)
class Centre:
    """Who the centre is on the broker, and the signing key of its announcements."""

    broker: BrokerConfig
    sign_key: Optional[Path] = None
    topic_prefix: str = "clca"
    timeout_s: float = 10.0

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)


def _link(centre: Centre, role: str, durable: bool = False):
    """A link for one job; ``durable``: a fixed client id with a kept session (QoS 1 messages sent
    while it was away wait at the broker)."""
    import os

    from ..fleet.mqtt import MqttLink

    client_id = f"clca-edge-{role}" if durable else f"clca-edge-{role}-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    return MqttLink(centre.broker, client_id, clean_session=not durable)


def _connected(link, centre: Centre) -> None:
    if not link.wait_connected(centre.timeout_s):
        link.stop()
        why = f" ({link.refusal})" if link.refusal else ""
        raise RolloutError(f"cannot reach the broker {centre.broker.url} within {centre.timeout_s:g} s{why}")


def retained_announcements(centre: Centre, quiet_s: float = 0.5) -> Dict[str, SignedAnnouncement]:
    """ring -> the announcement retained there now (parsed; the centre signed them)."""
    found: Dict[str, SignedAnnouncement] = {}
    subscribed, last = threading.Event(), [time.monotonic()]
    link = _link(centre, "rollout-reader")

    def on_message(client, userdata, msg) -> None:
        last[0] = time.monotonic()
        if not msg.payload:
            return
        try:
            signed = parse_announcement(msg.payload)
        except AnnouncementError as e:
            log.warning("%s holds no valid announcement (%s)", msg.topic, e)
            return
        found[signed.announcement.ring] = signed

    link.client.on_message = on_message
    link.client.on_subscribe = lambda *a, **k: subscribed.set()
    link.on_connect(lambda client: client.subscribe(f"{centre.topic_prefix}/rings/+/announce", qos=1))
    link.start()
    try:
        _connected(link, centre)
        subscribed.wait(centre.timeout_s)
        last[0] = time.monotonic()
        while time.monotonic() - last[0] < quiet_s:   # retained messages come right after the subscription
            time.sleep(0.05)
    finally:
        link.stop()
    return found


def send_announcement(centre: Centre, ring: str, payload: bytes) -> None:
    """Publish ``payload`` retained on ``ring``'s announcement topic and wait for the broker's ack."""
    link = _link(centre, "rollout-publisher")
    link.start()
    try:
        _connected(link, centre)
        info = link.client.publish(centre.topics.ring_announce(ring), payload, qos=1, retain=True)
        info.wait_for_publish(centre.timeout_s)
        if not info.is_published():
            raise RolloutError(f"the broker {centre.broker.url} did not acknowledge the announcement")
    finally:
        link.stop()


def _sign_key(centre: Centre) -> Path:
    if centre.sign_key is None:
        raise ConfigError("--sign-key is needed: devices accept only announcements signed by a key they trust")
    return centre.sign_key


def _send(centre: Centre, ann: Announcement) -> None:
    send_announcement(centre, ann.ring, sign_announcement(ann, _sign_key(centre)).to_bytes())


def _verify_all(centre: Centre) -> Dict[str, Tuple[Optional[Announcement], str]]:
    """ring -> (the retained announcement if this centre's key signed it, else None; why not).
    Checked against the public half of ``sign_key``: whoever can write on the broker must not get the
    centre to re-sign, promote or build on an announcement of theirs."""
    from ..bundle.signature import own_keys

    keys = own_keys(_sign_key(centre))
    found: Dict[str, Tuple[Optional[Announcement], str]] = {}
    for ring, signed in retained_announcements(centre).items():
        try:
            found[ring] = (signed.verify(keys), "")
        except AnnouncementError as e:
            log.warning("ring %s: the retained announcement is not this centre's (%s); ignored", ring, e)
            found[ring] = (None, str(e))
    return found


def verified_retained(centre: Centre) -> Dict[str, Announcement]:
    """ring -> the retained announcement, only those this centre's key signed (the others are logged
    and left out)."""
    return {ring: ann for ring, (ann, _) in _verify_all(centre).items() if ann is not None}


@dataclass(frozen=True)
class Release:
    """What ``publish`` announces (``fleet publish``): the bundle .tar deploy wrote, the URL devices
    download it from, the ring; ``version`` None: the next after every ring's current one;
    ``rollback``: a signed rollback to an older ``version``. The ring and URL are the announcement's
    to check (``fleet.announce``), so a bad one is refused as an announcement is."""

    bundle: Path
    url: str
    ring: str
    version: Optional[int] = None
    rollback: bool = False

    def __post_init__(self) -> None:
        if self.version is not None and self.version < 1:
            raise ConfigError(f"--version {self.version} must be >= 1")


def publish(centre: Centre, release: Release) -> Announcement:
    """Announce ``release.bundle`` (served at ``release.url``) to ``release.ring``."""
    from ..fleet.announce import describe_archive

    ring, version, rollback = release.ring, release.version, release.rollback
    size, sha, bundle_id = describe_archive(release.bundle)
    current = verified_retained(centre)
    highest = max((a.version for a in current.values()), default=0)
    if version is None:
        version = highest + 1
    elif version <= highest and not rollback:
        raise RolloutError(f"version {version} is not newer than v{highest} already announced; versions are "
                           "monotonic per fleet (leave --version out for the next one, or --rollback)")
    from_version = 0
    if rollback:   # a rollback names what it replaces (the ring's version), so it cannot be replayed later
        if ring not in current or current[ring].version <= version:
            raise RolloutError(f"a rollback to v{version} replaces the newer version announced on ring {ring!r}, "
                               f"and ring {ring!r} announces {_version_of(current.get(ring))}")
        from_version = current[ring].version
    ann = Announcement(bundle_id=bundle_id, version=version, size=size, sha256=sha, url=release.url, ring=ring,
                       rollback=rollback, issued_at=utc_now(), seq=next_seq(current.values()),
                       from_version=from_version)
    _send(centre, ann)
    return ann


def _version_of(ann: Optional[Announcement]) -> str:
    return f"v{ann.version}" if ann is not None else "nothing"


def next_seq(current) -> int:
    """The next announcement seq: after every retained one, and never below the clock's seconds (so it
    stays monotonic even if the retained messages were cleared from the broker)."""
    return max(max((a.seq for a in current), default=0) + 1, int(time.time()))


def _ring_announcement(centre: Centre, ring: str, version: Optional[int]) -> Tuple[Announcement, int]:
    """The announcement retained on ``ring``, verified against this centre's key (never re-sign what
    someone else put there), and the next announcement seq."""
    every = _verify_all(centre)
    if ring not in every:
        raise RolloutError(f"nothing is announced on ring {ring!r}")
    ann, why = every[ring]
    if ann is None:
        raise RolloutError(f"the announcement retained on ring {ring!r} is not signed by this centre's key ({why}); "
                           "refusing to re-sign it: publish the bundle again with `fleet publish`")
    if version is not None and ann.version != version:
        raise RolloutError(f"ring {ring!r} is at v{ann.version}, not v{version}")
    return ann, next_seq(a for a, _ in every.values() if a is not None)


def success(store: Store, ring: str, version: int) -> Dict[str, float]:
    """How many devices of ``ring`` passed probation on ``version``."""
    members = [d for d in latest_rollout(store) if ring in d.rings or d.ring == ring]
    passed = [d for d in members if d.state == PASSED and d.installed_version == str(version)]
    return {"devices": len(members), "passed": len(passed),
            "share": len(passed) / len(members) if members else 0.0}


def promote(centre: Centre, store: Store, version: int, src: str, dst: str,
            min_success: float) -> Dict[str, object]:
    """Announce ring ``src``'s ``version`` to ``dst`` when a share >= ``min_success`` of ``src`` passed."""
    if not 0.0 <= min_success <= 1.0:
        raise ConfigError(f"--min-success {min_success} must be within 0..1")
    got = success(store, src, version)
    if got["devices"] == 0 or got["share"] < min_success:
        raise RolloutError(f"v{version} passed probation on {got['passed']} of {got['devices']} device(s) of ring "
                           f"{src!r} ({got['share']:.0%} < {min_success:.0%}); not promoted to {dst!r}")
    ann, seq = _ring_announcement(centre, src, version)
    promoted = ann.replace(ring=dst, issued_at=utc_now(), halted=False, seq=seq)
    _send(centre, promoted)
    return {"announcement": promoted.to_dict(), **got}


def halt(centre: Centre, ring: str, version: Optional[int] = None) -> Announcement:
    """Mark ring's retained announcement halted: devices not yet switched stay where they are."""
    ann, seq = _ring_announcement(centre, ring, version)
    ann = ann.replace(halted=True, issued_at=utc_now(), seq=seq)
    _send(centre, ann)
    return ann


def status(store: Store) -> Dict[str, object]:
    """``devices`` (each device's latest state) and ``rings`` (per ring and version, devices per state)."""
    devices = latest_rollout(store)
    per_ring: Dict[str, Dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    members: Dict[str, set] = defaultdict(set)
    for d in devices:
        for ring in (d.rings or (d.ring,)):
            members[ring].add(d.device)
            per_ring[ring][d.version or "-"][d.state] += 1
    rings = [{"ring": ring, "devices": len(members[ring]),
              "versions": [{"version": v, "states": dict(sorted(c.items()))} for v, c in sorted(versions.items())]}
             for ring, versions in sorted(per_ring.items())]
    return {"devices": [d.to_dict() for d in devices], "rings": rings}


__all__ = ["Centre", "RolloutError", "halt", "promote", "publish", "retained_announcements", "send_announcement",
           "status", "success", "verified_retained"]
