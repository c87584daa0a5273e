"""The local Mosquitto the quick start, the benchmarks and the tests run (centre/local_broker.py):
a broker that cannot start or does not answer in time is an error that says why and leaves no
process; kill and restart keep the port; missing mosquitto is a one-line configuration error."""

from __future__ import annotations

import socket

import pytest

import clca_edge.centre.local_broker as local_broker
from clca_edge.core.errors import ConfigError, FleetLinkError
from support.mosquitto import Mosquitto, needs_mosquitto


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@needs_mosquitto
def test_a_broker_whose_port_is_taken_fails_at_start_saying_so(tmp_path):
    with socket.socket() as taken:   # bound, not listening: connections are refused, binds too
        taken.bind(("127.0.0.1", 0))
        broker = Mosquitto(tmp_path, port=taken.getsockname()[1])
        try:
            with pytest.raises(FleetLinkError, match="mosquitto exited at start"):
                broker.start()
        finally:
            broker.kill()
        assert broker.proc is None and not broker.running
        assert "Address already in use" in broker.log_text()


@needs_mosquitto
def test_a_broker_that_does_not_answer_in_time_is_killed(tmp_path):
    broker = Mosquitto(tmp_path)
    assert broker.log_text() == ""   # nothing logged before it ran
    with pytest.raises(FleetLinkError, match=r"did not accept connections within 0(\.0)? s"):
        broker.start(timeout_s=0)
    assert broker.proc is None and not _accepts(broker.port)


@needs_mosquitto
def test_kill_and_restart_keep_the_port(tmp_path):
    with Mosquitto(tmp_path) as broker:
        assert broker.running and _accepts(broker.port)
        broker.restart(down_s=0.1)
        assert broker.running and _accepts(broker.port)
        proc = broker.proc
        broker.kill()
        assert not broker.running and proc.returncode is not None and not _accepts(broker.port)
        broker.stop()   # stopping a stopped broker does nothing
        broker.start()
        assert broker.running and _accepts(broker.port)
    assert not broker.running and not _accepts(broker.port)


def test_no_mosquitto_is_a_configuration_error_saying_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(local_broker, "have_mosquitto", lambda: False)
    with pytest.raises(ConfigError, match="mosquitto is not installed: apt-get install mosquitto"):
        local_broker.LocalBroker(tmp_path)
