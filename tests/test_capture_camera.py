"""Live sources through the grabber thread, with a fake camera: unplugged mid-run and plugged
back (reconnect logged, run goes on), stale frames dropped and counted, stalls logged."""

import threading
import time

import numpy as np
import pytest

from clca_edge.capture.fieldlog import open_log, read_log
from clca_edge.capture.grabber import LatestFrameGrabber, ReconnectPolicy
from clca_edge.capture.bundle_runtime import BundleRuntime
from clca_edge.capture.config import CaptureConfig
from clca_edge.capture.hooks import FrameObserver
from clca_edge.capture.loop import run_capture
from clca_edge.capture.stop import StopRequest
from clca_edge.capture.sources import CameraSource, SourceConfig, csi_pipeline, make_source, parse_source
from clca_edge.core.preprocess import PreprocessSpec
from clca_edge.runtime.backends import Classifier
from clca_edge.core.errors import SourceError
from clca_edge.runtime.model import RuntimeModel
from support.runtime_bundle import BUNDLE_CLASSES as CLASSES, leaf_images

FRAMES = leaf_images(4, seed=2)


class FakeCamera:
    """A camera the test controls: delivers frames every ``period`` s; ``unplug(for_s)`` makes reads
    fail and opens fail for that long; ``hang(for_s)`` blocks one read (a stalled stream)."""

    def __init__(self, period=0.002):
        self.period = period
        self.opens = 0
        self.reads = 0
        self._unplugged_until = 0.0
        self._hang_s = 0.0
        self._lock = threading.Lock()

    def unplug(self, for_s):
        self._unplugged_until = time.monotonic() + for_s

    def hang(self, for_s):
        self._hang_s = for_s

    def opener(self, cfg):
        if time.monotonic() < self._unplugged_until:
            return None   # like cv2.VideoCapture on a missing /dev/video0: not opened
        self.opens += 1
        return _Handle(self)


class _Handle:
    def __init__(self, cam):
        self.cam = cam

    def isOpened(self):
        return True

    def read(self):
        cam = self.cam
        if cam._hang_s:
            hang, cam._hang_s = cam._hang_s, 0.0
            time.sleep(hang)
        time.sleep(cam.period)
        if time.monotonic() < cam._unplugged_until:
            return False, None
        cam.reads += 1
        return True, FRAMES[cam.reads % len(FRAMES)].copy()

    def get(self, prop):
        return 0.0

    def release(self):
        pass


class SlowClassifier(Classifier):
    backend, precision = "fake", "fp32"

    def __init__(self, delay):
        self.delay = delay

    def logits(self, chw):
        time.sleep(self.delay)
        return np.array([float(chw.mean()), 0.0, 0.1, 0.2, 0.3], np.float32)


def fake_model():
    from clca_edge.runtime.backends import ModelFiles

    return RuntimeModel(ModelFiles({"fp32": "unused.onnx"}, 32), PreprocessSpec(img_size=32), tuple(CLASSES),
                        "0" * 64)


def runtime_of(model, clf, quality=None):
    """What run_capture classifies with: ``model`` and ``clf`` behind the quality guard ``quality``."""
    from clca_edge.capture.quality import QualityConfig, QualityGuard

    return BundleRuntime(model, clf, QualityGuard.for_bundle(model.quality_reference, quality or QualityConfig()))


def camera_source(cam):
    return CameraSource(SourceConfig("camera", "0"), opener=cam.opener)


class OnDecision(FrameObserver):
    """Calls ``fn(record)`` for every classified frame."""

    def __init__(self, fn):
        self.fn = fn

    def on_decision(self, frame, record):
        self.fn(record)


FAST_RECONNECT = ReconnectPolicy(initial_s=0.02, max_s=0.1, factor=2.0, stall_s=0.15)


def test_camera_unplugged_mid_run_reconnects_and_the_run_goes_on(tmp_path):
    cam = FakeCamera()
    stop = StopRequest()
    seen = []

    def on_record(rec):
        seen.append(rec.frame)
        if rec.frame == 5:
            cam.unplug(0.4)

    with open_log(tmp_path / "log.jsonl") as flog:
        summary = run_capture(runtime_of(fake_model(), SlowClassifier(0.005)), camera_source(cam), flog,
                              CaptureConfig(max_frames=30, reconnect=FAST_RECONNECT), stop=stop, observers=[OnDecision(on_record)])
    recs = list(read_log(tmp_path / "log.jsonl"))
    events = [(i, r["event"]) for i, r in enumerate(recs) if r["type"] == "camera"]
    names = [e for _, e in events]
    assert names[0] == "opened" and "lost" in names and "reconnected" in names
    lost_i = next(i for i, e in events if e == "lost")
    rec_i = next(i for i, e in events if e == "reconnected")
    reconnected = recs[rec_i]
    assert reconnected["down_s"] >= 0.3 and reconnected["attempts"] >= 2      # back-off retried while unplugged
    assert any(r["type"] == "decision" for r in recs[rec_i:])                  # classification resumed
    assert lost_i < rec_i and summary.frames == 30 and summary.stop_reason == "max frames"
    assert summary.camera_lost == 1 and summary.reconnected == 1 and cam.opens == 2
    assert recs[-1]["type"] == "summary" and recs[-1]["camera_lost"] == 1


class ListLog:
    """A field log that keeps its records in memory."""

    failures = 0

    def __init__(self) -> None:
        self.recs: list[dict] = []

    def write(self, r: dict) -> None:
        self.recs.append(r)

    def camera_events(self) -> list[dict]:
        return [r for r in self.recs if r["type"] == "camera"]


def test_stale_frames_are_dropped_and_counted():
    """A 500 fps camera and a 50 fps classifier: the loop always gets the newest frame."""
    cam = FakeCamera(period=0.002)
    flog = ListLog()
    summary = run_capture(runtime_of(fake_model(), SlowClassifier(0.02)), camera_source(cam), flog,
                          CaptureConfig(max_frames=15, reconnect=FAST_RECONNECT))
    seqs = [r["source_frame"] for r in flog.recs if r["type"] == "decision"]
    assert summary.dropped > 15 and summary.dropped == flog.recs[-1]["dropped"]
    assert all(b - a > 1 for a, b in zip(seqs[1:], seqs[2:]))                  # gaps: stale frames skipped
    assert all(r["frame_age_ms"] < 50 for r in flog.recs if r["type"] == "decision")


def hang_at_frame(cam, frame, seconds):
    """An observer that makes ``cam`` block one read for ``seconds`` after ``frame``."""
    def on_record(rec):
        if rec.frame == frame:
            cam.hang(seconds)

    return OnDecision(on_record)


def test_a_stalled_stream_is_logged_with_its_duration():
    cam = FakeCamera(period=0.005)
    flog = ListLog()
    on_record = hang_at_frame(cam, 3, 0.5)
    patient = ReconnectPolicy(initial_s=0.02, max_s=0.1, factor=2.0, stall_s=0.15, lost_after_stalls=20)
    summary = run_capture(runtime_of(fake_model(), SlowClassifier(0.0)), camera_source(cam), flog,
                          CaptureConfig(max_frames=8, poll_s=0.05, reconnect=patient), observers=[on_record])
    ev = {r["event"]: r for r in flog.camera_events()}
    assert "stalled" in ev and "stall_ended" in ev and "lost" not in ev
    assert 0.3 <= ev["stall_ended"]["duration_s"] <= 2.0
    assert summary.stalls == 1 and summary.frames == 8 and cam.opens == 1


def test_a_read_blocked_for_several_stall_times_is_a_loss_and_reconnects():
    """stall_s 0.15 x 3: a read that hung 0.8 s is treated as a lost camera once it returns: the
    source is closed and reopened, the run goes on."""
    cam = FakeCamera(period=0.005)
    flog = ListLog()
    on_record = hang_at_frame(cam, 3, 0.8)
    summary = run_capture(runtime_of(fake_model(), SlowClassifier(0.0)), camera_source(cam), flog,
                          CaptureConfig(max_frames=10, poll_s=0.05, reconnect=FAST_RECONNECT), observers=[on_record])
    events = flog.camera_events()
    names = [r["event"] for r in events]
    assert names == ["opened", "stalled", "lost", "reconnected"]
    assert events[2]["blocked_s"] >= 0.45
    assert summary.stalls == 1 and summary.camera_lost == 1 and summary.reconnected == 1
    assert cam.opens == 2 and summary.frames == 10


def test_stream_and_camera_captures_get_opencv_timeouts(monkeypatch):
    import cv2

    made = []

    class FakeVideoCapture:
        def __init__(self, *args):
            self.args, self.props = args, {}
            made.append(self)

        def isOpened(self):
            return True

        def set(self, prop, value):
            self.props[prop] = value
            return True

    monkeypatch.setattr(cv2, "VideoCapture", FakeVideoCapture)
    make_source(parse_source("rtsp://10.0.0.5/cam", timeout_s=4.5)).capture()
    assert made[-1].args == ("rtsp://10.0.0.5/cam", cv2.CAP_ANY,
                             [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 4500, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 4500])
    make_source(parse_source("/dev/video1", timeout_s=2)).capture()
    assert made[-1].props[cv2.CAP_PROP_READ_TIMEOUT_MSEC] == 2000


def test_a_camera_that_never_opens_is_an_error_after_the_timeout():
    cam = FakeCamera()
    cam.unplug(60)
    flog = ListLog()
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="did not open within 0.3 s"):
        run_capture(runtime_of(fake_model(), SlowClassifier(0)), camera_source(cam), flog,
                    CaptureConfig(open_timeout_s=0.3, poll_s=0.05, reconnect=FAST_RECONNECT))
    assert time.monotonic() - t0 < 5
    assert flog.recs[-1]["type"] == "summary"
    assert any(r.get("event") == "open_failed" for r in flog.camera_events())


def test_grabber_keeps_only_the_latest_frame():
    cam = FakeCamera(period=0.001)
    g = LatestFrameGrabber(camera_source(cam), FAST_RECONNECT).start()
    try:
        first = g.get(2.0)
        time.sleep(0.1)
        latest = g.get(1.0)
        assert first is not None and latest is not None and latest.seq - first.seq > 10
        assert g.dropped >= latest.seq - first.seq - 2
        assert g.get(0.0) is None or g.get(0.0).seq > latest.seq   # never the same frame twice
    finally:
        g.stop()


@pytest.mark.parametrize("text,kind,uri", [
    ("0", "camera", "0"), ("/dev/video2", "v4l2", "/dev/video2"), ("csi://1", "csi", "1"),
    ("rtsp://10.0.0.5:8554/cam", "stream", "rtsp://10.0.0.5:8554/cam"), ("/tmp/x/*.jpg", "images", "/tmp/x/*.jpg"),
])
def test_source_strings(text, kind, uri):
    cfg = parse_source(text)
    assert (cfg.kind, cfg.uri, cfg.live) == (kind, uri, kind in ("camera", "v4l2", "csi", "stream"))


def test_csi_pipeline_carries_resolution_and_frame_rate():
    p = csi_pipeline(1, 1920, 1080, 29.97)
    assert "nvarguscamerasrc sensor-id=1" in p and "width=(int)1920" in p and "height=(int)1080" in p
    assert "framerate=(fraction)29970/1000" in p and p.endswith("appsink drop=true max-buffers=1 sync=false")


def test_a_slow_first_frame_after_opening_is_not_a_loss():
    """Sensor start-up or an RTSP keyframe wait can take longer than the loss threshold: the first
    read after (re)connecting is allowed to, or the source would reconnect forever."""
    cam = FakeCamera(period=0.005)
    cam.hang(0.8)          # > 3 x stall_s (0.45 s), on the very first read
    flog = ListLog()
    summary = run_capture(runtime_of(fake_model(), SlowClassifier(0.0)), camera_source(cam), flog,
                          CaptureConfig(max_frames=5, poll_s=0.05, reconnect=FAST_RECONNECT))
    assert summary.frames == 5 and cam.opens == 1
    assert "lost" not in [r["event"] for r in flog.camera_events()]
