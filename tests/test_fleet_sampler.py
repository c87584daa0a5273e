"""The uncertain-frame policy: the right frames, within each reason's cap per hour, within the
device's quota (oldest dropped first and counted), stored atomically, and sent to the centre."""

from __future__ import annotations

import hashlib
import os
import random
import time

import numpy as np
from support.mosquitto import Mosquitto, needs_mosquitto

from clca_edge.capture.fieldlog import open_log
from clca_edge.centre.collector import Collector
from clca_edge.centre.store import Store
from clca_edge.fleet.agent import FleetAgent
from clca_edge.fleet.config import BrokerConfig, FleetConfig, SamplingPolicy
from clca_edge.fleet.sampler import ORPHAN_GRACE_S, FrameSampler, FrameSpool

CAPS = {"low_confidence": 3, "small_margin": 2, "out_of_distribution": 2, "random": 1}


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def decision(conf, second, frame=0):
    return {"type": "decision", "frame": frame, "class": "a", "confidence": conf,
            "topk": [{"class": "a", "conf": conf}, {"class": "b", "conf": second}]}


def refused(reason):
    return {"type": "refused", "reason": reason, "reasons": [reason]}


def fake_jpeg(size):
    return lambda bgr, quality: b"\xff\xd8\xff" + bytes([len(bgr) % 256]) * (size - 3)


def test_the_policy_picks_uncertain_frames_within_its_caps(tmp_path):
    policy = SamplingPolicy(low_confidence=0.5, small_margin=0.1, random_share=0.1, per_hour=CAPS, quota_mb=10,
                            min_gap_s=0.0)
    clock = Clock()
    sampler = FrameSampler(policy, FrameSpool(tmp_path / "spool", policy.quota_bytes), random.Random(1), clock,
                           encode=fake_jpeg(1000))
    bgr = np.zeros((8, 8, 3), np.uint8)
    kept = []
    feed = ([decision(0.3, 0.2)] * 5 + [decision(0.55, 0.5)] * 4 + [refused("out_of_distribution")] * 3
            + [refused("too_dark"), refused("blurred")] + [decision(0.95, 0.01)] * 60)
    for rec in feed:
        if sampler.on_decision(bgr, rec) is not None:
            kept.append(sampler.spool.read(sampler.spool.frames()[-1])[1]["reason"])
    assert kept[:7] == ["low_confidence"] * 3 + ["small_margin"] * 2 + ["out_of_distribution"] * 2
    assert kept[7:] == ["random"]                       # one confident frame, its cap is 1
    assert sampler.chosen == {"low_confidence": 3, "small_margin": 2, "out_of_distribution": 2, "random": 1}
    assert sampler.capped["low_confidence"] == 2 and sampler.capped["small_margin"] == 2
    assert sampler.capped["out_of_distribution"] == 1 and sampler.capped["random"] >= 1
    # Neither a dark nor a blurred frame, nor a sure one beyond the random share: 8 frames in all.
    assert len(sampler.spool.frames()) == 8
    clock.t += 3600.0                                   # an hour later the caps are free again
    assert sampler.on_decision(bgr, decision(0.3, 0.2)) is not None
    meta = sampler.spool.read(sampler.spool.frames()[-1])[1]
    assert meta["reason"] == "low_confidence" and meta["confidence"] == 0.3
    assert meta["topk"] == [["a", 0.3], ["b", 0.2]] and meta["record"]["frame"] == 0


def test_frames_of_one_reason_are_spaced_by_the_minimum_gap(tmp_path):
    policy = SamplingPolicy(low_confidence=0.5, random_share=0.0, per_hour=CAPS, min_gap_s=2.0)
    clock = Clock()
    sampler = FrameSampler(policy, FrameSpool(tmp_path / "spool", policy.quota_bytes), random.Random(0), clock,
                           encode=fake_jpeg(100))
    bgr = np.zeros((8, 8, 3), np.uint8)
    low, margin = [], []
    for _ in range(10):                                         # a frame every 0.5 s for 5 s
        low.append(sampler.on_decision(bgr, decision(0.3, 0.2)) is not None)
        margin.append(sampler.on_decision(bgr, decision(0.55, 0.5)) is not None)
        clock.t += 0.5
    assert low == [True, False, False, False, True, False, False, False, True, False]
    assert margin == [True, False, False, False, True, False, False, False, False, False]   # then its cap of 2


def test_the_quota_drops_the_oldest_frames_first_and_counts_them(tmp_path):
    policy = SamplingPolicy(low_confidence=0.5, per_hour={r: 100 for r in CAPS}, quota_mb=50_000 / 2 ** 20,
                            min_gap_s=0.0)
    spool = FrameSpool(tmp_path / "spool", policy.quota_bytes)
    sampler = FrameSampler(policy, spool, random.Random(0), Clock(), encode=fake_jpeg(20_000))
    bgr = np.zeros((8, 8, 3), np.uint8)
    ids = [sampler.on_decision(bgr, decision(0.2, 0.1, frame=i)) for i in range(5)]
    assert ids == [0, 1, 2, 3, 4]
    assert spool.frames() == [3, 4] and spool.dropped == 3            # the newest two fit in 50 kB
    assert spool.size() <= policy.quota_bytes
    # A crash mid-write leaves a temp file or a JPEG without its sidecar: neither survives a restart
    # once older than the grace period, ids are never reused, and the dropped count is kept. A fresh
    # one may be a frame another process (capture beside a fleet sync) is writing now: kept.
    old = time.time() - ORPHAN_GRACE_S - 5
    for name, data in ((".0000000009.jpg.abc.tmp", b"partial"), ("0000000005.jpg", b"\xff\xd8\xffhalf")):
        (tmp_path / "spool" / name).write_bytes(data)
        os.utime(tmp_path / "spool" / name, (old, old))
    (tmp_path / "spool" / ".0000000011.jpg.def.tmp").write_bytes(b"being written")
    (tmp_path / "spool" / "0000000010.jpg").write_bytes(b"\xff\xd8\xffsidecar next")
    again = FrameSpool(tmp_path / "spool", policy.quota_bytes)
    assert again.frames() == [3, 4] and again.dropped == 3 and again.next_id == 11
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == [
        ".0000000011.jpg.def.tmp", "0000000003.jpg", "0000000003.json", "0000000004.jpg", "0000000004.json",
        "0000000010.jpg", "spool.json"]


@needs_mosquitto
class FullDisk(FrameSpool):
    def add(self, jpeg, meta):
        raise OSError(28, "No space left on device")


def test_a_frame_that_will_not_encode_or_store_is_skipped_and_capture_goes_on(tmp_path, caplog):
    policy = SamplingPolicy(low_confidence=0.5, per_hour=CAPS, min_gap_s=0.0)
    bgr = np.zeros((8, 8, 3), np.uint8)

    def broken(bgr, quality):
        raise ValueError("cv2.imencode failed")

    sampler = FrameSampler(policy, FrameSpool(tmp_path / "a", policy.quota_bytes), random.Random(0), Clock(), broken)
    assert sampler.on_decision(bgr, decision(0.3, 0.2)) is None and sampler.spool.frames() == []
    sampler = FrameSampler(policy, FullDisk(tmp_path / "b", policy.quota_bytes), random.Random(0), Clock(),
                           fake_jpeg(100))
    assert sampler.on_decision(bgr, decision(0.3, 0.2)) is None and not sampler.chosen
    said = [r.getMessage() for r in caplog.records]
    assert any("could not encode a chosen frame as JPEG (cv2.imencode failed)" in m for m in said)
    assert any("could not store a chosen frame ([Errno 28] No space left on device)" in m for m in said)


def test_what_the_policy_never_keeps_and_a_frame_over_the_whole_quota(tmp_path):
    policy = SamplingPolicy(low_confidence=0.5, small_margin=0.1, random_share=0.0, per_hour=CAPS, min_gap_s=0.0)
    spool = FrameSpool(tmp_path / "spool", 500)
    sampler = FrameSampler(policy, spool, random.Random(0), Clock(), fake_jpeg(100))
    bgr = np.zeros((8, 8, 3), np.uint8)
    assert sampler.reason_for({"type": "start"}) is None
    sure_alone = {"type": "decision", "confidence": 0.9, "topk": [{"class": "a", "conf": 0.9}]}
    assert sampler.reason_for(sure_alone) is None                  # one class in top-k: no margin to judge
    off = FrameSampler(SamplingPolicy(enabled=False), spool, random.Random(0), Clock(), fake_jpeg(100))
    assert off.on_decision(bgr, decision(0.1, 0.05)) is None and spool.frames() == []
    assert spool.add(b"x" * 501, {}) is None and spool.dropped == 1   # can never fit: dropped, counted
    assert FrameSpool(tmp_path / "spool", 500).dropped == 1            # ... and remembered
    assert spool.read(12345) is None


def test_chosen_frames_travel_to_the_centre_content_addressed(tmp_path):
    log = tmp_path / "run" / "log.jsonl"
    with open_log(log) as flog:
        flog.write({"type": "start"})
    with Mosquitto(tmp_path) as broker:
        store = Store(tmp_path / "store")
        collector = Collector(BrokerConfig(broker.url), store).start()
        assert collector.subscribed.wait(10)
        cfg = FleetConfig(BrokerConfig(broker.url), "cam-1", heartbeat_s=1,
                          sampling=SamplingPolicy(random_share=0.0, per_hour=CAPS, min_gap_s=0.0))
        agent = FleetAgent(cfg, log, rng=random.Random(0)).start()
        rng = np.random.default_rng(0)
        try:
            for i, (conf, second) in enumerate([(0.3, 0.2), (0.9, 0.05), (0.6, 0.55)]):
                rec = decision(conf, second, frame=i)
                flog_rec = {**rec, "time": "2026-01-01T00:00:0%dZ" % i}
                agent.on_record(flog_rec, rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
            deadline = time.monotonic() + 10
            while len(store.query("SELECT 1 FROM frames")) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
        finally:
            agent.stop()
            collector.stop()
        rows = store.query("SELECT frame_id, reason, label, confidence, sha256, path FROM frames ORDER BY frame_id")
        assert [(r[0], r[1], r[3]) for r in rows] == [(0, "low_confidence", 0.3), (1, "small_margin", 0.6)]
        for *_, sha, path in rows:
            data = (tmp_path / "store" / path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == sha and path.endswith(f"{sha[:2]}/{sha}.jpg")
        assert agent.spool.frames() == []                 # sent and acknowledged: gone from the device
        beats = store.query("SELECT body FROM heartbeats")
        assert beats and '"decisions":' in beats[-1][0]
        store.close()
