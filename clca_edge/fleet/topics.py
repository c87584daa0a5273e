"""Every MQTT topic of the fleet, in one place (the shipped ACL in deploy/fleet/ follows them).

    {prefix}/devices/{device}/records      decision-record batches (QoS 1)
    {prefix}/devices/{device}/heartbeat    device health every heartbeat_s (QoS 1)
    {prefix}/devices/{device}/status       "online" (retained) / "offline" (retained last will)
    {prefix}/devices/{device}/frames       frames the model was unsure about (QoS 1)
    {prefix}/devices/{device}/events       rollout state changes (QoS 1)
    {prefix}/devices/{device}/commands/#   what the centre asks of one device (commands/resend: the
                                           collector's retained request to send a log again;
                                           commands/resend-events: the same for the rollout events)
    {prefix}/rings/{ring}/announce         what the centre announces to a rollout ring (retained)

A device may write only under its own ``devices/{device}`` and read only its own ``commands``
(the broker's ACL says so); the centre reads everything through shared subscriptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

DEVICE_KINDS = ("records", "heartbeat", "status", "frames", "events")
SHARE_GROUP = "clca-collectors"


@dataclass(frozen=True)
class Topics:
    prefix: str = "clca"

    def device(self, device: str, kind: str) -> str:
        if kind not in DEVICE_KINDS:
            raise ValueError(f"unknown device topic kind {kind!r}")
        return f"{self.prefix}/devices/{device}/{kind}"

    def records(self, device: str) -> str:
        return self.device(device, "records")

    def heartbeat(self, device: str) -> str:
        return self.device(device, "heartbeat")

    def status(self, device: str) -> str:
        return self.device(device, "status")

    def frames(self, device: str) -> str:
        return self.device(device, "frames")

    def events(self, device: str) -> str:
        return self.device(device, "events")

    def commands(self, device: str, name: Optional[str] = None) -> str:
        """One command topic, or (no name) the filter of all of a device's commands."""
        return f"{self.prefix}/devices/{device}/commands/{name or '#'}"

    def resend(self, device: str) -> str:
        return self.commands(device, "resend")

    def resend_events(self, device: str) -> str:
        return self.commands(device, "resend-events")

    def ring_announce(self, ring: str) -> str:
        return f"{self.prefix}/rings/{ring}/announce"

    def all_devices(self, kind: str) -> str:
        """The filter of one kind from every device (the centre's subscriptions)."""
        if kind not in DEVICE_KINDS:
            raise ValueError(f"unknown device topic kind {kind!r}")
        return f"{self.prefix}/devices/+/{kind}"

    def shared(self, topic_filter: str, group: str = SHARE_GROUP) -> str:
        """An MQTT shared subscription: the broker hands each message to one collector of ``group``."""
        return f"$share/{group}/{topic_filter}"

    def parse_device_topic(self, topic: str) -> Optional[Tuple[str, str]]:
        """(device, kind) of a ``{prefix}/devices/{device}/{kind}`` topic, else None."""
        head = f"{self.prefix}/devices/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head):].split("/")
        if len(parts) != 2 or not parts[0] or parts[1] not in DEVICE_KINDS:
            return None
        return parts[0], parts[1]
