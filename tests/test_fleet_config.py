"""The fleet file, the topic names and the message schemas: validated, one-line errors, bounded."""

from __future__ import annotations

import base64
import json
import zlib

import pytest

from clca_edge.core.errors import ConfigError
from clca_edge.fleet.config import BrokerConfig, load_fleet
from clca_edge.fleet.messages import (Event, FrameMessage, Heartbeat, MessageError, RecordBatch, Status, decode)
from clca_edge.fleet.topics import Topics

JPEG = b"\xff\xd8\xff\xe0" + b"x" * 100


def _write(tmp_path, text):
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return path


def test_a_full_fleet_file_is_read(tmp_path):
    (tmp_path / "pw").write_text("s3cret\n")
    path = _write(tmp_path, '''
broker = "mqtts://broker.example:8884"
device = "tractor-07"
username = "tractor-07"
password_file = "pw"
topic_prefix = "farm1/clca"
heartbeat_s = 15
replay_rate = 50
batch_size = 20
[sampling]
low_confidence = 0.4
random_share = 0.05
quota_mb = 1.5
[sampling.per_hour]
random = 3
''')
    cfg = load_fleet(path)
    assert cfg.broker.endpoint() == ("broker.example", 8884, True)
    assert cfg.broker.password == "s3cret" and cfg.device == "tractor-07"
    assert (cfg.heartbeat_s, cfg.replay_rate, cfg.batch_size) == (15.0, 50.0, 20)
    assert cfg.sampling.low_confidence == 0.4 and cfg.sampling.cap("random") == 3
    assert cfg.sampling.cap("low_confidence") == 60 and cfg.sampling.quota_bytes == int(1.5 * 1024 * 1024)
    assert Topics(cfg.topic_prefix).records(cfg.device) == "farm1/clca/devices/tractor-07/records"
    assert BrokerConfig("mqtt://h").endpoint() == ("h", 1883, False)


@pytest.mark.parametrize("text, names", [
    ('broker = "http://h"\ndevice = "a"', "broker"),
    ('broker = "mqtt://h:99999"\ndevice = "a"', "port"),
    ('broker = "mqtt://h"\ndevice = "a/b"', "device"),
    ('broker = "mqtt://h"\ndevice = "a"\nbatch_size = 0', "batch_size"),
    ('broker = "mqtt://h"\ndevice = "a"\nheartbeat_s = "often"', "heartbeat_s"),
    ('broker = "mqtt://h"\ndevice = "a"\ncolour = 1', "colour"),
    ('broker = "mqtt://h"\ndevice = "a"\ntopic_prefix = "a/#"', "topic_prefix"),
    ('broker = "mqtt://h"\ndevice = "a"\ncert = "c.pem"', "cert and key"),
    ('broker = "mqtt://h"\ndevice = "a"\n[sampling]\nlow_confidence = 2', "sampling.low_confidence"),
    ('broker = "mqtt://h"\ndevice = "a"\n[sampling.per_hour]\nblurry = 2', "sampling.per_hour.blurry"),
    ('broker = "mqtt://h"', "device"),
    ('broker = "mqtt://h"\ndevice = "a"\npassword_file = "missing"', "password_file"),
    ('broker = [', "not valid TOML"),
    ('broker = "mqtt://h"\ndevice = "a"\nbatch_size = true', "batch_size = True: expected int"),
    ('broker = "mqtt://h"\ndevice = "a"\npassword = "pw"', "password without username"),
    ('broker = "mqtt://h"\ndevice = "a"\npassword = "pw"\npassword_file = "pw"', "password and password_file"),
    ('broker = "mqtt://h"\ndevice = "a"\nca = "ca.pem"', "ca.pem is not a readable file"),
    ('broker = "mqtt://h"\ndevice = "a"\nkeepalive_s = 1', "keepalive_s 1 must be within 5..3600"),
    ('broker = "mqtt://u@h"\ndevice = "a"', "give only scheme, host and port"),
    ('broker = "mqtt://h"\ndevice = "a"\nheartbeat_s = 0', "heartbeat_s 0.0 must be within"),
    ('broker = "mqtt://h"\ndevice = "a"\nreplay_rate = 0', "replay_rate 0.0 must be within"),
    ('broker = "mqtt://h"\ndevice = "a"\nreconnect_max_s = 0', "reconnect_max_s 0 must be within"),
    ('broker = "mqtt://h"\ndevice = "a"\n[sampling.per_hour]\nrandom = -1', "sampling.per_hour.random -1"),
    ('broker = "mqtt://h"\ndevice = "a"\n[sampling]\nquota_mb = -1', "sampling.quota_mb -1.0 must be >= 0"),
    ('broker = "mqtt://h"\ndevice = "a"\n[sampling]\nmin_gap_s = 4000', "sampling.min_gap_s 4000.0 must be"),
    ('broker = "mqtt://h"\ndevice = "a"\n[sampling]\njpeg_quality = 5', "sampling.jpeg_quality 5 must be"),
])
def test_a_wrong_value_is_one_line_naming_the_key(tmp_path, text, names):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_fleet(path)
    msg = str(e.value)
    assert names in msg and str(path) in msg and "\n" not in msg


def test_an_empty_password_file_or_a_missing_fleet_file_is_one_line(tmp_path):
    (tmp_path / "pw").write_text("")
    path = _write(tmp_path, 'broker = "mqtt://h"\ndevice = "a"\nusername = "a"\npassword_file = "pw"')
    with pytest.raises(ConfigError, match=r"password_file .*pw is empty; its first line is the password"):
        load_fleet(path)
    with pytest.raises(ConfigError, match=r"--fleet .*none\.toml: cannot read it \(No such file or directory\)"):
        load_fleet(tmp_path / "none.toml")


def test_topics_parse_back_and_share():
    t = Topics("clca")
    assert t.parse_device_topic(t.heartbeat("d1")) == ("d1", "heartbeat")
    assert t.parse_device_topic("clca/devices/d1/records/x") is None
    assert t.parse_device_topic("other/devices/d1/records") is None
    assert t.shared(t.all_devices("records")) == "$share/clca-collectors/clca/devices/+/records"
    assert t.commands("d1") == "clca/devices/d1/commands/#" and t.ring_announce("r1") == "clca/rings/r1/announce"


@pytest.mark.parametrize("msg", [
    RecordBatch("d1", "abc123", ((0, {"type": "start"}), (1, {"type": "decision", "class": "x"}))),
    Heartbeat("d1", "2026-01-01T00:00:00Z", 12.5, bundle="ab" * 8, fps=3.5, decisions=10, refused={"dark": 2},
              classes={"x": 10}, selfcheck="passed", disk_free_mb=100.0, pending=4),
    Status("d1", "online", "2026-01-01T00:00:00Z"),
    FrameMessage("d1", 7, "2026-01-01T00:00:00Z", "low_confidence", "x", 0.3, (("x", 0.3), ("y", 0.2)),
                 {"type": "decision", "frame": 3}, JPEG),
    Event("d1", 3, "installed", "1.2.0", None, {"fps": 12.0}),
])
def test_every_message_round_trips(msg):
    assert decode(msg.KIND, msg.encode()) == msg


@pytest.mark.parametrize("kind, payload, why", [
    ("records", b"{not json", "not JSON"),
    ("records", b"[]", "not a JSON object"),
    ("records", json.dumps({"v": 1, "kind": "records", "device": "d", "log": "l", "records": []}).encode(), "no record"),
    ("records", json.dumps({"v": 1, "kind": "records", "device": "d", "log": "l",
                            "records": [{"seq": 2, "record": {}}, {"seq": 1, "record": {}}]}).encode(), "increasing"),
    ("records", json.dumps({"v": 2, "kind": "records"}).encode(), "schema version"),
    ("status", json.dumps({"v": 1, "kind": "heartbeat", "device": "d"}).encode(), "heartbeat"),
    ("status", json.dumps({"v": 1, "kind": "status", "device": "d", "state": "asleep"}).encode(), "asleep"),
    ("status", json.dumps({"v": 1, "kind": "status", "device": "a/b", "state": "online"}).encode(), "not a name"),
    ("status", b"{" + b" " * 2000 + b"}", "exceeds"),
    ("frames", json.dumps({"v": 1, "kind": "frames", "device": "d", "frame_id": 1, "time": "t",
                           "reason": "random", "jpeg": base64.b64encode(JPEG).decode(), "sha256": "0" * 64}).encode(),
     "sha256"),
    ("heartbeat", json.dumps({"v": 1, "kind": "heartbeat", "device": "d", "time": "t", "uptime_s": 1,
                              "refused": {"dark": -1}}).encode(), "counts"),
])
def test_a_bad_message_is_refused_with_a_reason(kind, payload, why):
    with pytest.raises(MessageError, match=why):
        decode(kind, payload)


def test_record_batches_travel_compressed_and_a_zip_bomb_is_refused():
    batch = RecordBatch("d1", "l", tuple((i, {"type": "decision", "class": "cultivar_003", "confidence": 0.9})
                                         for i in range(100)))
    wire = batch.encode()
    assert wire[:1] == b"\x78" and len(wire) * 4 < len(json.dumps(batch.to_dict()))
    assert decode("records", wire) == batch
    bomb = zlib.compress(b'{"v": 1, "kind": "records", "pad": "' + b"x" * (RecordBatch.MAX_BYTES + 10) + b'"}')
    assert len(bomb) < 2000
    with pytest.raises(MessageError, match="inflates past"):
        decode("records", bomb)
    with pytest.raises(MessageError, match="zlib"):
        decode("records", wire[:-5])


def test_an_oversized_batch_is_refused_by_the_sender_too():
    big = RecordBatch("d1", "l", tuple((i, {"pad": "x" * 10_000}) for i in range(60)))
    with pytest.raises(MessageError, match="exceeds"):
        big.encode()
