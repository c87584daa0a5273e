"""Bundle rollout on loopback: time from announcement to installed (and where it goes), bytes
downloaded after a cut at 50%, and capture frames/s while the agent downloads a bundle and
while it switches the one capture runs.

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


def machine() -> str:
    from clca_edge.benchmark.report import machine_description

    return machine_description()["machine"]


class TimedAgent:
    """An agent whose state changes are time-stamped here (monotonic), by state and version."""

    def __init__(self, config, trusted):
        from clca_edge.fleet.rollout_agent import RolloutAgent

        self.times = {}
        outer = self

        class _Agent(RolloutAgent):
            def report(self, state, version, *a, **k):
                outer.times[(state, version)] = time.monotonic()
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


def _capture_fps(bundle_path: Path, video: Path, frames: int, log: Path) -> float:
    from click.testing import CliRunner

    from clca_edge.cli import main

    res = CliRunner().invoke(main, ["capture", "--bundle", str(bundle_path), "--source", str(video), "--max-frames",
                                    str(frames), "--no-live", "--log", str(log), "--run-dir", str(log.parent)])
    if res.exit_code != 0:
        raise RuntimeError(res.output)
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    return next(r for r in reversed(recs) if r["type"] == "summary")["fps"]


def _looped(video: Path, dest: Path, frames: int) -> Path:
    """``video`` repeated to at least ``frames`` frames (a quick-start video is 90 frames)."""
    import cv2
    from test_runtime_helpers import write_video

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


def fps_during_download(bundle: Path, video: Path, frames: int, mb: int, bandwidth_bps: float) -> dict:
    """Capture frames/s before, during and after a rate-limited download by the in-process agent."""
    from clca_edge.centre.rollout import publish

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = _looped(video, tmp / "long.avi", frames)
        big = _padded(bundle, tmp / "big" / bundle.name, mb)
        timed, centre, http, tar, close = _setup(tmp / "fleet", big, bandwidth_bps)
        proc, base = _http_process(tar.parent)
        try:
            idle = [_capture_fps(bundle, video, frames, tmp / "idle0.jsonl")]
            publish(centre, tar, f"{base}/{tar.name}", "canary", version=1)
            _wait(lambda: ("downloading", 1) in timed.times)
            busy = [_capture_fps(bundle, video, frames, tmp / f"busy{i}.jsonl") for i in range(2)]
            still = ("verified", 1) not in timed.times
            _wait(lambda: ("installed", 1) in timed.times, 300)
            idle.append(_capture_fps(bundle, video, frames, tmp / "idle1.jsonl"))
        finally:
            proc.terminate()
            proc.wait(10)
            close()
    return {"frames": frames, "idle_fps": idle, "downloading_fps": busy, "download_still_running": still,
            "download_mb": mb, "bandwidth_bps": bandwidth_bps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--video", type=Path, default=None,
                    help="Capture's source (default: heldout.avi next to a quick-start bundle).")
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    out = {"machine": machine(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes"),
           "load": os.getloadavg(), "announce_to_installed": announce_to_installed(args.bundle, args.rounds),
           "cut_at_half": cut_at_half(args.bundle),
           "capture_during_download": fps_during_download(args.bundle, args.video or args.bundle.parent / "heldout.avi",
                                                          args.frames, 40, 4e6)}
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
