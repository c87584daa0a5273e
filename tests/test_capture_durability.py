"""What the field does to a run: power cut (SIGKILL), SIGTERM from systemd, a full disk, a
device without torch."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from clca_edge.capture import frames as frames_mod
from clca_edge.capture.fieldlog import read_log
from clca_edge.cli import main
from support.runtime_bundle import leaf_images, write_video

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """Long enough (1500 frames) that the capture is still running when the test interrupts it."""
    imgs = leaf_images(8, seed=4, size=(48, 64))
    return write_video(tmp_path_factory.mktemp("long") / "long.avi", [imgs[i % 8] for i in range(1500)], fps=25)


def start_capture(bundle, source, log, *extra):
    cmd = [sys.executable, "-c", "from clca_edge.cli import main; main()"]
    args = ["capture", "--bundle", str(bundle), "--source", str(source), "--log", str(log),
            "--run-dir", str(log.parent / "runs"), "--no-live", *map(str, extra)]
    return subprocess.Popen(cmd + args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_decisions(log, n, proc, timeout=90):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if log.exists() and log.read_bytes().count(b'"type":"decision"') >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"capture ended early: {proc.communicate()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("capture did not log decisions in time")


def test_sigkill_mid_run_leaves_every_complete_line_parseable(bundle_dir, long_video, tmp_path):
    log = tmp_path / "log.jsonl"
    proc = start_capture(bundle_dir, long_video, log)
    wait_for_decisions(log, 30, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    data = log.read_bytes()
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]     # tail: b"" or the one record cut by the kill
    assert len(complete) >= 30
    parsed = [json.loads(line) for line in complete]   # every complete line parses
    frames = [r["frame"] for r in parsed if r["type"] == "decision"]
    assert frames == list(range(len(frames)))          # nothing lost or reordered before the cut
    assert not any(r["type"] == "summary" for r in parsed)
    # A second run appends to the same log; the reader gets both runs' records, the cut one skipped.
    res = CliRunner().invoke(main, ["capture", "--bundle", str(bundle_dir), "--source", str(long_video), "--log",
                                    str(log), "--max-frames", "3", "--run-dir", str(tmp_path / "runs"), "--no-live"])
    assert res.exit_code == 0, res.output
    recs = list(read_log(log))
    first = len(parsed) + (1 if tail and _parses(tail) else 0)
    assert recs[:len(parsed)] == parsed                 # the killed run's records come back as written
    second = recs[first:]
    # The second run: its start, then what the start logs (backend fallbacks, device self-checks:
    # their number depends on the bundle and host, so they are counted by type against the
    # summary rather than as a fixed total), then exactly 3 decisions and the summary.
    types = [r["type"] for r in second]
    summary = second[-1]
    assert types[0] == "start" and types[-1] == "summary" and summary["frames"] == 3
    assert types.count("fallback") == len(summary["fallbacks"]) == 2
    assert types.count("selfcheck") == len(summary["self_checks"])
    assert types.count("decision") == 3
    assert len(types) == 1 + 2 + len(summary["self_checks"]) + 3 + 1
    for line in log.read_bytes().split(b"\n")[:-1]:
        if line != tail:
            json.loads(line)


def _parses(b):
    try:
        json.loads(b)
        return True
    except ValueError:
        return False


def test_sigterm_stops_cleanly_with_a_summary(bundle_dir, long_video, tmp_path):
    log = tmp_path / "log.jsonl"
    proc = start_capture(bundle_dir, long_video, log)
    wait_for_decisions(log, 10, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    recs = list(read_log(log))
    last = recs[-1]
    assert last["type"] == "summary" and last["stop_reason"] == "SIGTERM"
    n = sum(r["type"] == "decision" for r in recs)
    assert last["frames"] == n and 10 <= n < 1500 and sum(last["class_counts"].values()) == n
    assert "SIGTERM" in out and "capture summary" in out and "fallbacks" in out


def test_frame_quota_stops_frames_but_not_decisions(bundle_dir, tmp_path):
    video = write_video(tmp_path / "v.avi", leaf_images(12, seed=9), fps=10)
    log = tmp_path / "log.jsonl"
    run_dir = tmp_path / "runs"
    res = CliRunner().invoke(main, ["capture", "--bundle", str(bundle_dir), "--source", str(video), "--log", str(log),
                                    "--run-dir", str(run_dir), "--save-frames", "all", "--max-disk-mb", "0.012",
                                    "--min-free-mb", "0", "--no-live"])
    assert res.exit_code == 0, res.output
    saved = list(run_dir.glob("capture-*/frames/*.jpg"))
    assert 1 <= len(saved) < 12 and sum(p.stat().st_size for p in saved) <= 12_000
    recs = list(read_log(log))
    stopped = [r for r in recs if r["type"] == "frames_stopped"]
    assert len(stopped) == 1 and "quota of 0.012 MB" in stopped[0]["reason"]
    dec = [r for r in recs if r["type"] == "decision"]
    assert len(dec) == 12 and sum("saved" in r for r in dec) == len(saved)
    assert recs[-1]["frames_saved"] == len(saved)


def test_low_disk_stops_frames_first(bundle_dir, tmp_path, monkeypatch):
    video = write_video(tmp_path / "v.avi", leaf_images(8, seed=9), fps=10)
    real = frames_mod.shutil.disk_usage
    calls = {"n": 0}

    def filling_disk(path):
        calls["n"] += 1
        u = real(path)
        free = 10**9 if calls["n"] <= 3 else 100 * 10**6    # the disk fills up after 3 frames
        return type(u)(u.total, u.total - free, free)

    monkeypatch.setattr(frames_mod.shutil, "disk_usage", filling_disk)
    log = tmp_path / "log.jsonl"
    res = CliRunner().invoke(main, ["capture", "--bundle", str(bundle_dir), "--source", str(video), "--log", str(log),
                                    "--run-dir", str(tmp_path / "runs"), "--save-frames", "all",
                                    "--min-free-mb", "200", "--no-live"])
    assert res.exit_code == 0, res.output
    recs = list(read_log(log))
    dec = [r for r in recs if r["type"] == "decision"]
    assert len(dec) == 8 and [("saved" in r) for r in dec] == [True] * 3 + [False] * 5
    assert [r["reason"] for r in recs if r["type"] == "frames_stopped"] == ["disk low: 100 MB free, below 200 MB"]
    assert "stopped: disk low" in res.stdout


BLOCK_TORCH = """
import json, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'timm', 'torchvision'):
            raise ImportError('blocked for this test: ' + name)
sys.meta_path.insert(0, Block())
from click.testing import CliRunner
from clca_edge.cli import main
for args in json.loads(sys.argv[1]):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, (args, r.output)
assert not any(m.split('.')[0] in ('torch', 'timm') for m in sys.modules), 'torch imported'
print('NO_TORCH_OK')
"""


def test_capture_and_predict_run_without_torch(bundle_dir, tmp_path):
    import cv2

    video = write_video(tmp_path / "v.avi", leaf_images(4, seed=1), fps=10)
    cv2.imwrite(str(tmp_path / "one.png"), leaf_images(1, seed=1)[0])
    runs = [["predict", "--bundle", str(bundle_dir), "--json", str(tmp_path / "one.png")],
            ["capture", "--bundle", str(bundle_dir), "--source", str(video), "--log", str(tmp_path / "l.jsonl"),
             "--run-dir", str(tmp_path / "runs"), "--no-live"]]
    out = subprocess.run([sys.executable, "-c", BLOCK_TORCH, json.dumps(runs)], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "NO_TORCH_OK" in out.stdout
    assert sum(r["type"] == "decision" for r in read_log(tmp_path / "l.jsonl")) == 4
