"""`clca-edge capture` end to end on a video file the test writes (MJPG .avi): the logged
decisions equal `predict` on the same decoded frames; smoothing, abstention, triggers, formats."""

import hashlib
import json
import sqlite3
import threading
import time

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from clca_edge.capture.fieldlog import read_log
from clca_edge.capture.sources import make_source, parse_source
from clca_edge.cli import main
from support.runtime_bundle import BUNDLE_CLASSES as CLASSES, leaf_images, write_video

N_FRAMES = 24


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    folder = tmp_path_factory.mktemp("video")
    path = write_video(folder / "field.avi", leaf_images(N_FRAMES, seed=11), fps=10.0)
    # What the capture will see: the decoded (lossy) frames, saved losslessly for predict.
    frames_dir = folder / "decoded"
    frames_dir.mkdir()
    source = make_source(parse_source(str(path)))
    source.open()
    i = 0
    while (frame := source.read()) is not None:
        cv2.imwrite(str(frames_dir / f"{i:04d}.png"), frame.bgr)
        i += 1
    source.close()
    assert i == N_FRAMES
    return path, frames_dir


def capture(bundle, source, tmp_path, *extra, log_name="log.jsonl"):
    log = tmp_path / log_name
    res = CliRunner().invoke(main, ["capture", "--bundle", str(bundle), "--source", str(source), "--log", str(log),
                                    "--run-dir", str(tmp_path / "runs"), "--no-live", *map(str, extra)])
    assert res.exit_code == 0, res.output
    return res, log


def decisions(log):
    return [r for r in read_log(log) if r["type"] == "decision"]


def predict_probs(bundle, frames_dir):
    res = CliRunner().invoke(main, ["predict", "--bundle", str(bundle), "--json", "--top-k", str(len(CLASSES)),
                                    str(frames_dir)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    return [{d["class"]: d["conf"] for d in p["topk"]} for p in out["predictions"]]


def test_logged_decisions_equal_predict_on_the_same_frames(bundle_dir, video, tmp_path):
    path, frames_dir = video
    ref = predict_probs(bundle_dir, frames_dir)
    assert len(ref) == N_FRAMES
    # Smoothed confidences over a window of 3, from predict's probabilities; abstain below their median.
    probs = np.array([[p[c] for c in CLASSES] for p in ref])
    smoothed = np.array([probs[max(0, i - 2):i + 1].mean(0) for i in range(N_FRAMES)])
    min_conf = float(np.median(smoothed.max(1)))

    res, log = capture(bundle_dir, path, tmp_path, "--top-k", len(CLASSES), "--smooth", 3, "--min-conf", min_conf)
    recs = decisions(log)
    assert [r["frame"] for r in recs] == list(range(N_FRAMES))
    assert [r["source_frame"] for r in recs] == list(range(N_FRAMES))   # files: every frame, none dropped
    manifest_sha = hashlib.sha256((bundle_dir / "manifest.json").read_bytes()).hexdigest()
    n_uncertain = 0
    for i, r in enumerate(recs):
        got = {d["class"]: d["conf"] for d in r["topk"]}
        assert list(got) == sorted(got, key=lambda c: -got[c])
        for c in CLASSES:
            assert got[c] == pytest.approx(ref[i][c], abs=2e-5)
        assert r["raw_class"] == max(ref[i], key=ref[i].get)
        best = int(np.argmax(smoothed[i]))
        assert r["confidence"] == pytest.approx(smoothed[i, best], abs=2e-5)
        if smoothed[i, best] < min_conf - 1e-5:
            assert r["class"] == "uncertain"
            n_uncertain += 1
        elif smoothed[i, best] > min_conf + 1e-5:
            assert r["class"] == CLASSES[best]
        assert r["bundle_sha"] == manifest_sha and r["backend"] == "ort-cpu" and r["precision"] == "fp32"
        assert r["source"] == f"video:{path}"
        assert r["time"].endswith("Z")
        lat = r["latency_ms"]
        assert all(lat[k] >= 0 for k in ("grab", "preprocess", "infer", "total"))
        assert lat["preprocess"] > 0
        # Files: decoding and preprocessing ran ahead on the reader thread, so the loop's own
        # time for the frame is inference (plus bookkeeping), not the sum of the stages.
        assert lat["total"] >= lat["infer"]
    assert n_uncertain > 0
    summary = list(read_log(log))[-1]
    assert summary["type"] == "summary" and summary["frames"] == N_FRAMES and summary["stop_reason"] == "end of source"
    assert summary["class_counts"].get("uncertain", 0) == n_uncertain
    assert sum(summary["class_counts"].values()) == N_FRAMES
    assert f"{N_FRAMES} in" in res.stdout and "end of source" in res.stdout


def test_every_interval_and_max_frames(bundle_dir, video, tmp_path):
    path, _ = video
    _, log = capture(bundle_dir, path, tmp_path, "--every", 3, "--max-frames", 5, log_name="every.jsonl")
    assert [r["source_frame"] for r in decisions(log)] == [0, 3, 6, 9, 12]
    summary = list(read_log(log))[-1]
    assert summary["stop_reason"] == "max frames" and summary["not_triggered"] == 8
    # 10 fps file: one frame per 0.5 s of media time is every 5th frame.
    _, log = capture(bundle_dir, path, tmp_path, "--interval", 0.5, log_name="interval.jsonl")
    assert [r["source_frame"] for r in decisions(log)] == list(range(0, N_FRAMES, 5))


def test_sqlite_log_in_wal_mode(bundle_dir, video, tmp_path):
    path, _ = video
    _, log = capture(bundle_dir, path, tmp_path, "--log-format", "sqlite", "--max-frames", 4, log_name="log.sqlite")
    db = sqlite3.connect(str(log))
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = db.execute("SELECT type, frame, label FROM records WHERE type='decision' ORDER BY id").fetchall()
    assert [r[1] for r in rows] == [0, 1, 2, 3] and all(r[2] in CLASSES + ["uncertain"] for r in rows)
    recs = list(read_log(log))
    assert recs[0]["type"] == "start" and recs[-1]["type"] == "summary"


def test_image_glob_source_skips_unreadable_files(bundle_dir, video, tmp_path):
    _, frames_dir = video
    (frames_dir.parent / "mixed").mkdir(exist_ok=True)
    mixed = frames_dir.parent / "mixed"
    for name in ("0000.png", "0001.png", "0002.png"):
        (mixed / name).write_bytes((frames_dir / name).read_bytes())
    (mixed / "0001b.png").write_bytes(b"\x89PNG broken")
    _, log = capture(bundle_dir, str(mixed / "*.png"), tmp_path)
    recs = decisions(log)
    assert [r["file"].rsplit("/", 1)[-1] for r in recs] == ["0000.png", "0001.png", "0002.png"]
    assert list(read_log(log))[-1]["unreadable"] == 1


def test_missing_source_and_bad_options(bundle_dir, tmp_path):
    res = CliRunner().invoke(main, ["capture", "--bundle", str(bundle_dir), "--source", str(tmp_path / "nope.avi")])
    assert res.exit_code == 6 and "nope.avi" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["capture", "--bundle", str(bundle_dir)])
    assert res.exit_code == 2 and "exactly one of --camera" in res.output
    res = CliRunner().invoke(main, ["capture", "--bundle", str(bundle_dir), "--camera", "0", "--min-conf", "2"])
    assert res.exit_code == 2 and "Invalid value" in res.output
    res = CliRunner().invoke(main, ["capture", "--bundle", str(bundle_dir), "--source", "csi://front"])
    assert res.exit_code == 2 and "csi://N" in res.output


def test_image_frames_are_decoded_once_without_colour_round_trips(bundle_dir, video, tmp_path, monkeypatch):
    """Image sources hand the decoded BGR frame on as is and the loop preprocesses it with
    bgr=True: no cv2.cvtColor per frame, and the same decisions as predict on the files."""
    _, frames_dir = video
    calls = []
    real = cv2.cvtColor
    monkeypatch.setattr(cv2, "cvtColor", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    _, log = capture(bundle_dir, str(frames_dir / "000*.png"), tmp_path, "--top-k", len(CLASSES))
    assert calls == []
    monkeypatch.undo()
    got = [{d["class"]: d["conf"] for d in r["topk"]} for r in decisions(log)]
    ref = predict_probs(bundle_dir, frames_dir)[:len(got)]
    assert len(got) == 10
    for g, e in zip(got, ref):
        assert g.keys() == e.keys() and all(abs(g[c] - e[c]) <= 1e-5 for c in g)


class _BlockingSource:
    """A recorded source whose 4th read hangs until released; records if close() ran during a read."""

    live, description, skipped = False, "blocking", 0

    def __init__(self):
        self.release = threading.Event()
        self.blocked = threading.Event()
        self.reading = False
        self.closed = threading.Event()
        self.closed_during_read = False
        self._n = 0

    def open(self):
        pass

    def read(self):
        from clca_edge.capture.sources import Frame

        self.reading = True
        try:
            if self._n >= 3:
                self.blocked.set()
                self.release.wait(10)
            self._n += 1
            return Frame(leaf_images(1, seed=self._n)[0], self._n - 1, time.monotonic(), float(self._n), 0.0)
        finally:
            self.reading = False

    def close(self):
        self.closed_during_read = self.reading
        self.closed.set()


def test_stop_while_a_read_hangs_does_not_close_the_source_under_it(tmp_path):
    from clca_edge.capture.fieldlog import open_log
    from clca_edge.capture.config import CaptureConfig
    from clca_edge.capture.loop import run_capture
    from test_capture_camera import OnDecision, SlowClassifier, fake_model, runtime_of

    src = _BlockingSource()
    with open_log(tmp_path / "log.jsonl") as flog:
        summary = run_capture(runtime_of(fake_model(), SlowClassifier(0)), src, flog, CaptureConfig(max_frames=1),
                              observers=[OnDecision(lambda _r: src.blocked.wait(5))])   # stop once the read hangs
    assert summary.frames == 1 and summary.stop_reason == "max frames"
    assert not src.closed.is_set()                  # the read is still in progress: not closed under it
    src.release.set()
    assert src.closed.wait(5) and not src.closed_during_read


def test_the_cli_closes_the_classifier(bundle_dir, video, tmp_path, monkeypatch):
    from clca_edge.runtime.backends import OrtClassifier

    closed = []
    real_close = OrtClassifier.close
    monkeypatch.setattr(OrtClassifier, "close", lambda self: closed.append(self.backend) or real_close(self))
    path, frames_dir = video
    capture(bundle_dir, path, tmp_path, "--max-frames", 2)
    assert closed == ["ort-cpu"]
    predict_probs(bundle_dir, frames_dir)
    assert closed == ["ort-cpu", "ort-cpu"]
