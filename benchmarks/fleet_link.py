"""Fleet link figures, on a real Mosquitto started here on a loopback port:

- capture: the capture loop's frames/s on a video, and the process's CPU time per frame (every
  thread: the uploader, paho's network thread, the frame encoder), with the link off and on (the
  agent as the run's observer, as `capture --fleet` runs it) with the broker up, down (stopped) and
  flapping (restarted every --flap-s seconds, down 0.3 s each time); each condition runs --rounds
  times, round-robin, in this process, and the figure is the median, so load from other processes
  hits every condition alike. The bundle is the tests' tiny EViT+CLCA model (tests/support/runtime_bundle.py) on 640x480
  video frames: a fast loop, where the link's share of each frame is largest.
- on_record: what the link costs the capture loop's thread per frame (``FleetAgent.on_record``: heartbeat
  counts, the sampling policy, the hand-over of a chosen frame, waking the uploader), p50/p99/max
  over --calls calls, with the broker up, down and flapping, in this process.
- collector: records/s from a device's field log into the centre's store, end to end (uploader ->
  broker -> collector -> SQLite WAL, synchronous=FULL), and records/s of the store alone
  (``Collector.handle`` on encoded batches, no broker).
- bytes per decision on the wire: the MQTT payload of the record batches over the decisions sent,
  and with the MQTT framing (fixed header, topic, packet id, and the PUBACK) added.

    python benchmarks/fleet_link.py                       # all three
    python benchmarks/fleet_link.py --only collector --records 20000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

from support.mosquitto import Mosquitto  # noqa: E402

from clca_edge.capture.fieldlog import open_log, read_log  # noqa: E402
from clca_edge.centre.collector import Collector  # noqa: E402
from clca_edge.centre.store import Store  # noqa: E402
from clca_edge.fleet.config import BrokerConfig, FleetConfig, SamplingPolicy  # noqa: E402
from clca_edge.fleet.messages import RecordBatch  # noqa: E402
from clca_edge.fleet.outbox import LogOutbox  # noqa: E402
from clca_edge.fleet.uploader import Uploader  # noqa: E402

# The tests' tiny EViT+CLCA model: the faster the loop, the larger the link's share of each frame
# (the worst case for the link).
IMG = 64


def decision_record(i: int) -> dict:
    """A decision as capture logs it (top-3, latencies, the quality guard's measures)."""
    conf = 0.5 + (i % 50) / 100
    return {"type": "decision", "frame": i, "source_frame": i, "source": "file:field.avi", "backend": "ort-cpu",
            "precision": "fp32", "bundle_sha": "3f" * 32,
            "topk": [{"class": "cultivar_003", "conf": conf}, {"class": "cultivar_011", "conf": 0.08},
                     {"class": "cultivar_007", "conf": 0.03}],
            "class": "cultivar_003", "confidence": conf, "raw_class": "cultivar_003",
            "latency_ms": {"grab": 0.012, "preprocess": 1.234, "infer": 5.678, "total": 7.01},
            "quality": {"luminance": 112.4, "sharpness": 431.2, "ood": 1.92, "cast": 0.31}}


def write_log(path: Path, n: int) -> None:
    with open_log(path) as flog:
        for i in range(n):
            flog.write(decision_record(i))


def bench_collector(work: Path, n: int) -> dict:
    log = work / "dev" / "log.jsonl"
    write_log(log, n)
    with Mosquitto(work) as broker:
        store = Store(work / "store")
        collector = Collector(BrokerConfig(broker.url), store).start()
        collector.subscribed.wait(10)
        cfg = FleetConfig(BrokerConfig(broker.url), "bench-1", batch_size=100, replay_rate=100000)
        uploader = Uploader(cfg, LogOutbox(log))
        t0 = time.perf_counter()
        uploader.start()
        while collector.counts["records"] < n:
            time.sleep(0.01)
        e2e_s = time.perf_counter() - t0
        uploader.stop()
        collector.stop()
        store.close()
        payload = uploader.bytes_sent
        batches = uploader.batches_sent
    topic = len("clca/devices/bench-1/records")
    # PUBLISH: fixed header (1 + up to 4 length bytes; 3 for ~20-40 kB), topic (2 + len), packet id (2);
    # PUBACK: 4 bytes back.
    framing = batches * (1 + 3 + 2 + topic + 2 + 4)
    # The store alone: the same batches through the collector's validation and SQLite.
    store = Store(work / "store-only")
    direct = Collector(BrokerConfig("mqtt://127.0.0.1:1"), store)
    recs = [(i, {"time": "2026-12-06T12:00:00.000Z", **decision_record(i)}) for i in range(n)]
    payloads = [RecordBatch("bench-2", "log0", tuple(recs[i:i + 100])).encode() for i in range(0, n, 100)]
    t0 = time.perf_counter()
    for p in payloads:
        direct.handle("clca/devices/bench-2/records", p)
    store_s = time.perf_counter() - t0
    store.close()
    return {"records": n, "end_to_end_records_per_s": round(n / e2e_s), "store_records_per_s": round(n / store_s),
            "payload_bytes_per_decision": round(payload / n, 1),
            "wire_bytes_per_decision": round((payload + framing) / n, 1),
            "field_log_bytes_per_decision": round(log.stat().st_size / n, 1), "batch_size": 100}


class Flapper(threading.Thread):
    """Restarts the broker every ``period_s`` until stopped (down ``down_s`` each time)."""

    def __init__(self, broker: Mosquitto, period_s: float, down_s: float):
        super().__init__(daemon=True)
        self.broker, self.period_s, self.down_s = broker, period_s, down_s
        self.halt = threading.Event()
        self.flaps = 0

    def run(self) -> None:
        while not self.halt.wait(self.period_s):
            self.broker.stop()
            time.sleep(self.down_s)
            self.broker.start()
            self.flaps += 1


def bench_on_record(work: Path, calls: int, flap_s: float) -> dict:
    import numpy as np

    from clca_edge.fleet.agent import FleetAgent
    from clca_edge.fleet.config import SamplingPolicy

    out = {}
    bgr = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    for cond in ("up", "down", "flapping"):
        folder = work / cond
        broker = Mosquitto(folder)
        log = folder / "log.jsonl"
        cfg = FleetConfig(BrokerConfig(broker.url), f"bench-{cond}", reconnect_max_s=1, heartbeat_s=1,
                          sampling=SamplingPolicy(low_confidence=0.6, random_share=0.01))
        if cond != "down":
            broker.start()
        flapper = Flapper(broker, flap_s, 0.3) if cond == "flapping" else None
        if flapper is not None:
            flapper.start()
        times = []
        with open_log(log) as flog:
            agent = FleetAgent(cfg, log).start()
            for i in range(calls):
                rec = decision_record(i)
                flog.write(rec)
                t = time.perf_counter_ns()
                agent.on_record(rec, bgr)
                times.append(time.perf_counter_ns() - t)
            agent.stop()
        if flapper is not None:
            flapper.halt.set()
            flapper.join()
        broker.stop()
        times.sort()
        out[cond] = {"p50_us": round(times[len(times) // 2] / 1000, 1), "p99_us": round(times[int(len(times) * 0.99)] / 1000, 1),
                     "max_us": round(times[-1] / 1000, 1), "sent_before_stop": agent.uploader.records_sent,
                     "frames_chosen": sum(agent.sampler.chosen.values())}
    return out


def capture_run(model, classifier, video: Path, log: Path, fleet) -> tuple:
    """One capture run in this process, as `capture --fleet` runs it (the agent as the run's
    observer); (loop frames/s, process CPU ms per frame: every thread, the link's included)."""
    from clca_edge.capture.bundle_runtime import BundleRuntime
    from clca_edge.capture.config import CaptureConfig
    from clca_edge.capture.loop import run_capture
    from clca_edge.capture.sources import make_source, parse_source
    from clca_edge.fleet.agent import FleetAgent
    from clca_edge.runtime.backends import Selection
    from clca_edge.fleet.observer import FleetObserver

    log.parent.mkdir(parents=True)
    agent = FleetAgent(fleet, log).start() if fleet is not None else None
    observers = (FleetObserver(agent),) if agent is not None else ()
    cpu0 = time.process_time()
    with open_log(log) as flog:
        runtime = BundleRuntime.create(model, Selection(classifier, [], []))
        summary = run_capture(runtime, make_source(parse_source(str(video))), flog, CaptureConfig(), None, None,
                              observers)
    cpu_ms = 1000.0 * (time.process_time() - cpu0) / max(1, summary.frames)
    if agent is not None:
        agent.stop(1.0)
    return summary.fps, cpu_ms


def bench_capture(work: Path, rounds: int, frames: int, flap_s: float) -> dict:
    from support.runtime_bundle import leaf_images, write_bundle, write_video

    from clca_edge.runtime.backends import select_classifier
    from clca_edge.runtime.model import load_model

    bundle = write_bundle(work / "bundle", img_size=IMG)
    video = write_video(work / "field.avi", leaf_images(frames, seed=1, size=(480, 640)), fps=30.0)
    model = load_model(str(bundle))
    classifier = select_classifier(model.files, "ort-cpu", "fp32", 1).classifier
    # "up, no frames": the records and heartbeats alone (the sampler off), the link's steady state once
    # the hour's frame caps are spent; the other conditions send frames too, and a 600-frame run of a
    # random model (every decision uncertain) spends the hour's caps at once: their worst case.
    fps = {k: [] for k in ("off", "up", "up, no frames", "down", "flapping")}
    cpu = {k: [] for k in fps}
    broker = Mosquitto(work)
    for r in range(rounds):
        for cond in fps:
            fleet = None if cond == "off" else FleetConfig(
                BrokerConfig(broker.url), f"bench-{cond.split(',')[0]}", reconnect_max_s=1, heartbeat_s=1,
                sampling=SamplingPolicy(enabled=cond != "up, no frames"))
            if cond.startswith("up") or cond == "flapping":
                broker.start()
            flapper = Flapper(broker, flap_s, 0.3) if cond == "flapping" else None
            if flapper is not None:
                flapper.start()
            try:
                f, c = capture_run(model, classifier, video, work / f"run-{cond[:4]}-{len(fps[cond])}-{r}" / "log.jsonl",
                                   fleet)
                fps[cond].append(f)
                cpu[cond].append(c)
            finally:
                if flapper is not None:
                    flapper.halt.set()
                    flapper.join()
                broker.stop()
    classifier.close()
    # Bytes per decision of a real capture log (decisions as the run writes them), batched as the uploader does.
    records = list(read_log(work / "run-off-0-0" / "log.jsonl"))
    wire = sum(len(RecordBatch("bench-cam", "log0", tuple(enumerate(records[i:i + 100]))).encode())
               for i in range(0, len(records), 100))
    med = {k: statistics.median(v) for k, v in fps.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    return {"frames": frames, "rounds": rounds, "fps_median": {k: round(v, 1) for k, v in med.items()},
            "fps_all": {k: [round(x, 1) for x in v] for k, v in fps.items()},
            "fps_ratio_to_off": {k: round(v / med["off"], 3) for k, v in med.items()},
            "cpu_ms_per_frame_median": {k: round(v, 3) for k, v in cpu_med.items()},
            "cpu_ratio_to_off": {k: round(v / cpu_med["off"], 3) for k, v in cpu_med.items()},
            "cpu_ms_per_frame_all": {k: [round(x, 3) for x in v] for k, v in cpu.items()},
            "capture_log_payload_bytes_per_decision": round(wire / max(1, sum(r.get("type") == "decision"
                                                                             for r in records)), 1),
            "capture_log_bytes_per_decision": round((work / "run-off-0-0" / "log.jsonl").stat().st_size
                                                    / max(1, len(records)), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["capture", "collector", "on_record"], default=None)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--flap-s", type=float, default=1.0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from clca_edge.benchmark.report import emit_results, run_header

    res = run_header()
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        if args.only in (None, "collector"):
            res["collector"] = bench_collector(Path(tmp) / "collector", args.records)
        if args.only in (None, "on_record"):
            res["on_record"] = bench_on_record(Path(tmp) / "on_record", args.calls, args.flap_s)
        if args.only in (None, "capture"):
            res["capture"] = bench_capture(Path(tmp) / "capture", args.rounds, args.frames, args.flap_s)
    res["load_after"] = os.getloadavg()
    emit_results(res, args.json)


if __name__ == "__main__":
    main()
