"""The one place paho-mqtt clients are made: URL, TLS (CA, client certificate), credentials, last
will, reconnect back-off. Devices, the collector and the rollout publisher all connect through
``make_client`` / ``MqttLink``.

paho is imported when a client is made, never at import time, so ``clca-edge --help`` stays light.
"""

from __future__ import annotations

import logging
import ssl
import threading
from typing import Any, Callable, List, Optional, Tuple

from ..core.errors import ConfigError
from .config import BrokerConfig

log = logging.getLogger(__name__)

# (topic, payload, qos, retain) of the message the broker publishes when the link dies uncleanly.
Will = Tuple[str, bytes, int, bool]


def make_client(broker: BrokerConfig, client_id: str, *, clean_session: bool = False,
                will: Optional[Will] = None, backoff_s: Tuple[int, int] = (1, 30), manual_ack: bool = False) -> Any:
    """A paho client (MQTT 3.1.1, callback API 2) set up for ``broker``, not yet connected.

    ``clean_session=False`` keeps the session at the broker across reconnects: QoS 1 messages for
    a client that was away are queued for it, and its own unacknowledged ones are sent again.
    ``manual_ack``: a received QoS 1 message is acknowledged only by ``client.ack`` (the collector
    does so once the message is in its store)."""
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise ConfigError("the fleet link needs paho-mqtt: pip install paho-mqtt") from None
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session,
                         protocol=mqtt.MQTTv311, manual_ack=manual_ack)
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        try:
            client.tls_set(ca_certs=str(broker.ca) if broker.ca else None,
                           certfile=str(broker.cert) if broker.cert else None,
                           keyfile=str(broker.key) if broker.key else None,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(f"TLS set-up for {broker.url} failed ({e}); check ca, cert and key") from None
    elif broker.cert is not None:
        raise ConfigError(f"cert/key given for {broker.url}: a client certificate needs mqtts://")
    if will is not None:
        topic, payload, qos, retain = will
        client.will_set(topic, payload, qos=qos, retain=retain)
    client.reconnect_delay_set(min_delay=backoff_s[0], max_delay=backoff_s[1])
    return client


def wait_acked(info, stop: threading.Event, poll_s: float = 0.25) -> bool:
    """Wait for the broker's PUBACK of a QoS 1 publish (paho resends it across reconnects); False if
    ``stop`` is set first, or if the message was never queued (the caller sends it again later: the
    centre stores what it gets once)."""
    while not stop.is_set():
        try:
            info.wait_for_publish(poll_s)
            if info.is_published():
                return True
        except (RuntimeError, ValueError):
            return False
    return False


class MqttLink:
    """A client that connects in the background and keeps reconnecting (paho's network thread),
    so nothing that uses it ever waits for the broker unless it asks to.

    ``on_connect`` callbacks run on every (re)connection: subscribe there, and publish the retained
    ``online`` status there, since a new connection may be to a restarted broker."""

    def __init__(self, broker: BrokerConfig, client_id: str, *, clean_session: bool = False,
                 will: Optional[Will] = None, backoff_s: Tuple[int, int] = (1, 30), manual_ack: bool = False):
        self.broker = broker
        self.client = make_client(broker, client_id, clean_session=clean_session, will=will, backoff_s=backoff_s,
                                  manual_ack=manual_ack)
        self.connected = threading.Event()
        self.connections = 0
        self.refusal: Optional[str] = None     # why the broker last refused us (bad credentials...)
        self._on_connect: List[Callable[[Any], None]] = []
        self._on_disconnect: List[Callable[[], None]] = []
        self.client.on_connect = self._connected
        self.client.on_disconnect = self._disconnected
        self._started = False

    def on_connect(self, fn: Callable[[Any], None]) -> None:
        self._on_connect.append(fn)

    def on_disconnect(self, fn: Callable[[], None]) -> None:
        self._on_disconnect.append(fn)

    def _connected(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:
            if self.refusal != str(reason_code):
                log.error("broker %s refused the connection: %s", self.broker.url, reason_code)
            self.refusal = str(reason_code)
            return
        self.refusal = None
        self.connections += 1
        log.info("connected to %s", self.broker.url)
        for fn in self._on_connect:
            fn(client)
        self.connected.set()

    def _disconnected(self, client, userdata, flags, reason_code, properties=None) -> None:
        if self.connected.is_set() and self._started:
            log.warning("lost the broker %s (%s); reconnecting in the background", self.broker.url, reason_code)
        self.connected.clear()
        for fn in self._on_disconnect:
            fn()

    def start(self) -> "MqttLink":
        host, port, _ = self.broker.endpoint()
        self.client.connect_async(host, port, keepalive=self.broker.keepalive_s)
        self.client.loop_start()   # retries the first connection too, with the back-off
        self._started = True
        return self

    def wait_connected(self, timeout_s: float) -> bool:
        return self.connected.wait(timeout_s)

    def stop(self, last: Optional[Tuple[str, bytes]] = None, timeout_s: float = 2.0) -> None:
        """Disconnect cleanly (after publishing ``last``, retained, if connected) and stop the thread."""
        if not self._started:
            return
        if last is not None and self.connected.is_set():
            info = self.client.publish(last[0], last[1], qos=1, retain=True)
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError):
                pass
        self._started = False
        self.client.disconnect()
        self.client.loop_stop()
