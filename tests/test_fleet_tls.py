"""mqtts:// on a real Mosquitto with TLS: a device with the farm's CA and its client certificate
(its CN is its MQTT username, so the shipped ACL applies) reaches the centre; a device that does not
trust the broker's certificate never connects, and says so."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from support.mosquitto import BrokerTls, Mosquitto, needs_mosquitto

from clca_edge.capture.fieldlog import open_log
from clca_edge.centre.collector import Collector
from clca_edge.centre.store import Store
from clca_edge.fleet.config import BrokerConfig, FleetConfig
from clca_edge.fleet.outbox import LogOutbox
from clca_edge.fleet.sync import sync_log
from clca_edge.fleet.uploader import Uploader

pytestmark = [needs_mosquitto, pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl CLI")]


def _openssl(*args, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(folder: Path, name: str = "ca") -> dict:
    """A CA, a broker certificate for localhost, and client certificates for a device and the collector."""
    folder.mkdir(parents=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=folder)
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for cn in ("broker", "dev-t", "collector"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}" if cn != "broker" else "/CN=localhost",
                 "-keyout", f"{cn}.key", "-out", f"{cn}.csr", cwd=folder)
        extra = ["-extfile", "san.ext"] if cn == "broker" else []
        _openssl("x509", "-req", "-in", f"{cn}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-out", f"{cn}.pem", *extra, cwd=folder)
    return {k: folder / v for k, v in (("ca", "ca.pem"), ("broker", "broker.pem"), ("broker_key", "broker.key"),
                                       ("dev", "dev-t.pem"), ("dev_key", "dev-t.key"),
                                       ("col", "collector.pem"), ("col_key", "collector.key"))}


def test_tls_with_client_certificates_reaches_the_centre_and_a_wrong_ca_does_not(tmp_path):
    pki = make_pki(tmp_path / "pki")
    other = make_pki(tmp_path / "other", name="another-ca")
    log = tmp_path / "log.jsonl"
    with open_log(log) as flog:
        for i in range(12):
            flog.write({"type": "decision", "frame": i, "class": "oak", "confidence": 0.9})
    tls = BrokerTls(pki["ca"], pki["broker"], pki["broker_key"], require_client_cert=True)
    with Mosquitto(tmp_path, tls=tls) as broker:
        assert broker.url.startswith("mqtts://localhost:")
        store = Store(tmp_path / "store")
        collector = Collector(BrokerConfig(broker.url, ca=pki["ca"], cert=pki["col"], key=pki["col_key"]), store)
        collector.start()
        try:
            assert collector.subscribed.wait(15)
            device = FleetConfig(BrokerConfig(broker.url, ca=pki["ca"], cert=pki["dev"], key=pki["dev_key"]), "dev-t")
            uploader = Uploader(device, LogOutbox(log)).start()
            assert uploader.drain(15)
            uploader.stop()
            deadline = time.monotonic() + 10
            while collector.counts["records"] < 12 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert collector.counts["records"] == 12
            # Trusting another CA: the broker's certificate does not verify, nothing is sent.
            stranger = FleetConfig(BrokerConfig(broker.url, ca=other["ca"], cert=other["dev"], key=other["dev_key"]),
                                   "dev-t", reconnect_max_s=1)
            result = sync_log(stranger, log, timeout_s=2.0)
            assert not result.connected and result.records_sent == 0
        finally:
            collector.stop()
            store.close()
