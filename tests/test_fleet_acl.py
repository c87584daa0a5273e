"""The shipped ACL (deploy/fleet/acl) on a real Mosquitto: a device writes only under its own topics
and reads only its own commands; the collector reads all of it through a shared subscription."""

from __future__ import annotations

import threading
import time

from support.mosquitto import Mosquitto, needs_mosquitto

from clca_edge.fleet.config import BrokerConfig
from clca_edge.fleet.mqtt import MqttLink
from clca_edge.fleet.topics import Topics

pytestmark = needs_mosquitto
USERS = {"dev-a": "pw-a", "dev-b": "pw-b", "collector": "pw-c"}
T = Topics()


def _link(broker, user, subscribe=()):
    got, lock = [], threading.Lock()
    link = MqttLink(BrokerConfig(broker.url, user, USERS[user]), f"test-{user}", clean_session=True)
    link.on_connect(lambda c: [c.subscribe(t, qos=1) for t in subscribe])

    def on_message(client, userdata, msg):
        with lock:
            got.append((msg.topic, msg.payload))
    link.client.on_message = on_message
    link.start()
    assert link.wait_connected(10), f"{user} could not connect"
    return link, got


def _settle(got, n, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)   # and nothing more comes


def test_a_device_cannot_publish_under_another_devices_topic(tmp_path):
    with Mosquitto(tmp_path, users=USERS) as broker:
        collector, seen = _link(broker, "collector", [T.shared(T.all_devices("records"))])
        dev_b, b_commands = _link(broker, "dev-b", [T.commands("dev-b")])
        dev_a, a_commands = _link(broker, "dev-a", [T.commands("dev-a"), T.commands("dev-b")])
        time.sleep(0.3)
        for topic, payload in [(T.records("dev-a"), b"own"), (T.records("dev-b"), b"forged"),
                               (T.commands("dev-b", "install"), b"forged-command")]:
            dev_a.client.publish(topic, payload, qos=1).wait_for_publish(5)
        _settle(seen, 1)
        assert seen == [(T.records("dev-a"), b"own")]    # the forged record never reached the centre
        assert b_commands == []                         # nor the forged command device b
        assert a_commands == []                         # and a cannot read b's commands
        for link in (dev_a, dev_b, collector):
            link.stop()
        assert f"Denied PUBLISH from test-dev-a (d0, q1, r0, m" in broker.log_text()   # refused by the ACL itself


def test_bad_credentials_are_refused(tmp_path):
    with Mosquitto(tmp_path, users=USERS) as broker:
        link = MqttLink(BrokerConfig(broker.url, "dev-a", "wrong"), "test-wrong", clean_session=True).start()
        try:
            assert not link.wait_connected(2)
            assert link.refusal is not None and "authori" in link.refusal.lower()
        finally:
            link.stop()


def test_another_devices_client_id_takes_its_session_but_reads_none_of_its_commands(tmp_path):
    """Why the shipped mosquitto.conf does not set use_username_as_clientid (each device runs several
    clients under its one username): a device's credentials can connect with another device's client
    id and take its session over (the other reconnects), but the ACL is checked on every delivery
    against the username, so nothing of the other device's reaches it."""
    with Mosquitto(tmp_path, users=USERS) as broker:
        b_cfg = BrokerConfig(broker.url, "dev-b", USERS["dev-b"])
        b = MqttLink(b_cfg, "clca-edge-dev-b", clean_session=False, backoff_s=(1, 1))
        b_got = []
        b.on_connect(lambda c: c.subscribe(T.resend("dev-b"), qos=1))
        b.client.on_message = lambda client, userdata, msg: b_got.append(msg.payload)
        b.start()
        assert b.wait_connected(10)
        time.sleep(0.3)
        b.stop()                                         # b's session (its subscription) stays at the broker
        thief = MqttLink(BrokerConfig(broker.url, "dev-a", USERS["dev-a"]), "clca-edge-dev-b", clean_session=False)
        stolen = []
        thief.client.on_message = lambda client, userdata, msg: stolen.append(msg.payload)
        thief.start()
        assert thief.wait_connected(10)
        collector, _ = _link(broker, "collector")
        collector.client.publish(T.resend("dev-b"), b"resend-from-7", qos=1, retain=True).wait_for_publish(5)
        _settle(stolen, 1, 2.0)
        assert stolen == []                              # b's session, a's username: the ACL refuses delivery
        thief.stop()
        b.start()                                        # b comes back and gets its (retained) command
        _settle(b_got, 1)
        assert b_got == [b"resend-from-7"]
        for link in (b, collector):
            link.stop()
