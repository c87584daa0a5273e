"""Bundle rollout on loopback: time from announcement to installed (and where it goes), bytes
downloaded after a cut at 50%, and capture frames/s (capture following the agent's pointer) before
an announcement, while the agent downloads and stages the bundle, and around the switch.

A real Mosquitto and a real HTTP server on 127.0.0.1 (the tests' helpers in tests/support/), the
real agent (``fleet.rollout_agent.RolloutAgent``) on a thread of this process, as when capture runs it
in-process (the worst case for capture: one interpreter). The bundle is a quick-start bundle
(``clca-edge quickstart --out DIR``: pass ``--bundle DIR/bundle``) or any bundle folder.

    python benchmarks/rollout.py --bundle runs/quickstart/bundle [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


class TimedAgent:
    """An agent whose state changes are time-stamped here (monotonic), by state and version."""

    def __init__(self, config, trusted):
        from clca_edge.fleet.rollout_agent import RolloutAgent

        self.times = {}
        self.wall = {}
        outer = self

        class _Agent(RolloutAgent):
            def report(self, state, version, *a, **k):
                outer.times[(state, version)] = time.monotonic()
                outer.wall[(state, version)] = time.time()
                return super().report(state, version, *a, **k)

        self.agent = _Agent(config, trusted)


def _setup(tmp: Path, bundle: Path, bandwidth_bps=None):
    from support.http_server import LoopbackHTTPServer
    from support.mosquitto import Mosquitto
    from support.rollout import PASSWORD, make_tar

    from clca_edge.bundle.signature import TrustedKeys, generate_keypair
    from clca_edge.centre.rollout import Centre
    from clca_edge.fleet.agent_config import AgentConfig
    from clca_edge.fleet.config import BrokerConfig, FleetConfig
    from clca_edge.fleet.download import DownloadConfig

    priv, pub, _ = generate_keypair(tmp / "keys")
    served = tmp / "served"
    served.mkdir()
    broker = Mosquitto(tmp, users={"dev": PASSWORD, "publisher": PASSWORD}).start()
    http = LoopbackHTTPServer(served).start()
    tar = make_tar(bundle, served / "bundle.tar")
    centre = Centre(BrokerConfig(broker.url, username="publisher", password=PASSWORD), sign_key=priv)
    fleet = FleetConfig(BrokerConfig(broker.url, username="dev", password=PASSWORD), device="dev")
    config = AgentConfig(fleet=fleet, rings=("canary",), trusted_keys=pub, bundles=tmp / "bundles",
                         download=DownloadConfig(bandwidth_bps=bandwidth_bps), retry_s=(0.2, 1.0), poll_s=0.02)
    timed = TimedAgent(config, TrustedKeys.load(pub))
    timed.agent.connect()
    timed.agent.link.wait_connected(10)
    stop = threading.Event()
    thread = threading.Thread(target=timed.agent.run, args=(stop,), daemon=True)
    thread.start()

    def close():
        stop.set()
        thread.join(30)
        timed.agent.close()
        http.stop()
        broker.stop()

    return timed, centre, http, tar, close


def _wait(pred, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.005)
    raise TimeoutError("rollout did not finish")


def announce_to_installed(bundle: Path, rounds: int) -> dict:
    from clca_edge.centre.rollout import publish

    with tempfile.TemporaryDirectory() as tmp:
        timed, centre, http, tar, close = _setup(Path(tmp), bundle)
        try:
            rows = []
            for v in range(1, rounds + 1):
                t0 = time.monotonic()
                publish(centre, tar, http.url(tar.name), "canary", version=v)
                t_pub = time.monotonic()
                _wait(lambda: ("installed", v) in timed.times)
                t = {s: timed.times[(s, v)] - t0 for s in ("announced", "downloading", "verified", "installed")}
                rows.append({"publish_s": round(t_pub - t0, 3), **{f"{k}_s": round(x, 3) for k, x in t.items()}})
            size = tar.stat().st_size
        finally:
            close()
    med = {k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]}
    return {"bundle_bytes": size, "rounds": rows, "median": med}


def cut_at_half(bundle: Path) -> dict:
    from support.http_server import LoopbackHTTPServer

    from clca_edge.centre.rollout import publish

    with tempfile.TemporaryDirectory() as tmp:
        timed, centre, http, tar, close = _setup(Path(tmp), bundle)
        try:
            size, port = tar.stat().st_size, http.port
            http.stop()
            cut = LoopbackHTTPServer(tar.parent, port=port, cut_after=size // 2).start()
            publish(centre, tar, cut.url(tar.name), "canary", version=1)
            _wait(cut.cut.is_set)
            first = cut.bytes_sent
            cut.stop()
            again = LoopbackHTTPServer(tar.parent, port=port).start()
            _wait(lambda: ("installed", 1) in timed.times)
            after = again.bytes_sent
            again.stop()
        finally:
            close()
    return {"bundle_bytes": size, "before_cut": first, "after_cut": after, "after_cut_share": round(after / size, 4)}


def _looped(video: Path, dest: Path, frames: int) -> Path:
    """``video`` repeated to at least ``frames`` frames (a quick-start video is 90 frames)."""
    import cv2
    from support.runtime_bundle import write_video

    cap = cv2.VideoCapture(str(video))
    got = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        got.append(f)
    cap.release()
    return write_video(dest, (got * (frames // len(got) + 1))[:frames])


def _padded(bundle: Path, dest: Path, mb: int) -> Path:
    """A copy of the bundle with ``mb`` MB of extra (hashed) bytes: a download that lasts."""
    from clca_edge.bundle import read_manifest, write_manifest

    shutil.copytree(bundle, dest, ignore=shutil.ignore_patterns(".selfcheck.json"))
    (dest / "pad.bin").write_bytes(os.urandom(mb * 1024 * 1024))
    write_manifest(dest, read_manifest(dest))
    return dest


def _http_process(folder: Path):
    """A plain HTTP server in its own process (no Range needed here): the bytes sent do not
    compete with capture for this interpreter, as a real web server would not."""
    import socket
    import subprocess

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port), "--directory",
                             str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(lambda: _listening(port), 10)
    return proc, f"http://127.0.0.1:{port}"


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
        return True
    except OSError:
        return False


def _capture_thread(pointer: Path, video: Path, log: Path):
    from click.testing import CliRunner

    from clca_edge.cli import main

    result = {}

    def run():
        result["res"] = CliRunner().invoke(main, ["capture", "--bundle", str(pointer), "--source", str(video),
                                                  "--no-live", "--log", str(log), "--run-dir", str(log.parent)])

    t = threading.Thread(target=run)
    t.start()
    return t, result


def _rate(times, a: float, b: float) -> float:
    n = sum(a <= t < b for t in times)
    return round(n / (b - a), 1) if b > a else 0.0


def _decision_times(log: Path):
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    stamp = lambda r: dt.datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp()  # noqa: E731
    times = [stamp(r) for r in recs if r["type"] == "decision"]
    switch = next((stamp(r) for r in recs if r["type"] == "bundle_switch"), None)
    return times, switch


def capture_across_rollout(bundle: Path, video: Path, frames: int, mb: int, bandwidth_bps: float) -> dict:
    """Capture (following the agent's pointer, in this process) frames/s before the announcement,
    while the agent downloads and stages a bundle, and around the switch between two frames."""
    from support.rollout import make_tar, with_temperature

    from clca_edge.centre.rollout import publish

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = _looped(video, tmp / "long.avi", frames)
        # v2: another manifest (another temperature) padded with mb MB, so the download lasts.
        v2 = _padded(with_temperature(bundle, tmp / "v2src" / bundle.name, 1.5), tmp / "v2" / bundle.name, mb)
        timed, centre, http, tar, close = _setup(tmp / "fleet", bundle, bandwidth_bps)
        proc, base = _http_process(tar.parent)
        try:
            publish(centre, tar, f"{base}/{tar.name}", "canary", version=1)
            _wait(lambda: ("installed", 1) in timed.times)
            v2_tar = make_tar(v2, tar.parent / "v2.tar")
            log = tmp / "runs" / "capture.jsonl"
            log.parent.mkdir()
            t, result = _capture_thread(timed.agent.slots.pointer, video, log)
            time.sleep(2.0)
            t_pub = time.time()
            publish(centre, v2_tar, f"{base}/v2.tar", "canary", version=2)
            _wait(lambda: ("installed", 2) in timed.times, 300)
            t.join(600)
        finally:
            proc.terminate()
            proc.wait(10)
            close()
        times, switch = _decision_times(log)
    w = timed.wall
    out = {"frames": len(times), "before_fps": _rate(times, t_pub - 2.0, t_pub),
           "download_and_stage_fps": _rate(times, w[("downloading", 2)], w[("installed", 2)]),
           "download_and_stage_s": round(w[("installed", 2)] - w[("downloading", 2)], 2),
           "download_mb": mb, "bandwidth_bps": bandwidth_bps, "switched": switch is not None}
    if switch is not None:
        gaps = [b - a for a, b in zip(times, times[1:]) if switch - 1.0 <= a <= switch + 1.0]
        out.update(switch_window_fps=_rate(times, switch - 0.5, switch + 0.5),
                   longest_gap_ms_near_switch=round(1000 * max(gaps), 1),
                   median_gap_ms=round(1000 * statistics.median(b - a for a, b in zip(times, times[1:])), 2))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--video", type=Path, default=None,
                    help="Capture's source (default: heldout.avi next to a quick-start bundle).")
    ap.add_argument("--frames", type=int, default=30000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from clca_edge.benchmark.report import emit_results, run_header

    out = {**run_header(), "announce_to_installed": announce_to_installed(args.bundle, args.rounds),
           "cut_at_half": cut_at_half(args.bundle),
           "capture_across_rollout": capture_across_rollout(args.bundle, args.video or args.bundle.parent / "heldout.avi",
                                                            args.frames, 40, 4e6)}
    emit_results(out, args.json)


if __name__ == "__main__":
    main()
