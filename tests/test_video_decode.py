"""MJPG video files are decoded frame by frame by libjpeg-turbo (cv2.imdecode of each compressed
packet), as OpenCV's V4L2 backend decodes an MJPG camera and as training and deploy decode JPEG
files; other codecs, and MJPG packets that do not decode to the file's frame size, go through
FFmpeg as before (capture/sources.py: VideoFileSource)."""

import cv2
import numpy as np

from clca_edge.capture.sources import make_source, parse_source
from clca_edge.core.preprocess import load_bgr
from support.runtime_bundle import leaf_images, write_video


def frames_of(path):
    source = make_source(parse_source(str(path)))
    source.open()
    out = []
    while (frame := source.read()) is not None:
        out.append(frame)
    source.close()
    return source, out


def packets(path):
    cap = cv2.VideoCapture(str(path))
    assert cap.set(cv2.CAP_PROP_FORMAT, -1)
    out = []
    while True:
        ok, packet = cap.read()
        if not ok:
            return out
        out.append(packet.reshape(-1))


def test_an_mjpg_frame_is_the_jpeg_file_that_packet_is(tmp_path):
    video = write_video(tmp_path / "v.avi", leaf_images(5, seed=4, size=(120, 160)), fps=10.0)
    source, frames = frames_of(video)
    assert source._jpeg and [f.seq for f in frames] == list(range(5))
    assert [f.pos_s for f in frames] == [i / 10.0 for i in range(5)]
    for i, (frame, packet) in enumerate(zip(frames, packets(video))):
        jpg = tmp_path / f"{i}.jpg"
        jpg.write_bytes(packet.tobytes())
        assert np.array_equal(frame.bgr, load_bgr(jpg))     # training's decode of the same JPEG
    # FFmpeg's decoder, the path before: within a few grey levels on average, not bit-equal
    cap = cv2.VideoCapture(str(video))
    ok, ffmpeg = cap.read()
    assert ok and ffmpeg.shape == frames[0].bgr.shape
    assert np.abs(ffmpeg.astype(int) - frames[0].bgr).mean() < 8


def test_other_codecs_are_decoded_by_ffmpeg(tmp_path):
    path = tmp_path / "v.mp4"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    assert vw.isOpened()
    for i in range(4):
        vw.write(np.full((48, 64, 3), 40 * i, np.uint8))
    vw.release()
    source, frames = frames_of(path)
    assert not source._jpeg and len(frames) == 4 and frames[0].bgr.shape == (48, 64, 3)


def test_a_first_packet_of_the_wrong_size_falls_back_to_ffmpeg(tmp_path, monkeypatch):
    video = write_video(tmp_path / "v.avi", leaf_images(3, seed=2), fps=10.0)
    import clca_edge.capture.sources as sources

    monkeypatch.setattr(sources, "_decode_jpeg", lambda packet: np.zeros((1, 1, 3), np.uint8))
    source, frames = frames_of(video)
    assert not source._jpeg and len(frames) == 3   # reopened: the first frame is not lost
    ref = cv2.VideoCapture(str(video))
    assert np.array_equal(ref.read()[1], frames[0].bgr)


def test_a_corrupt_packet_is_skipped_and_counted(tmp_path, monkeypatch):
    video = write_video(tmp_path / "v.avi", leaf_images(4, seed=3), fps=10.0)
    import clca_edge.capture.sources as sources

    real, calls = sources._decode_jpeg, []

    def third_is_corrupt(packet):
        calls.append(1)
        return None if len(calls) == 3 else real(packet)

    monkeypatch.setattr(sources, "_decode_jpeg", third_is_corrupt)
    source, frames = frames_of(video)
    assert source._jpeg and [f.seq for f in frames] == [0, 1, 3] and source.skipped == 1


def test_a_failing_first_compressed_read_falls_back_to_whole_ffmpeg_frames(tmp_path, monkeypatch):
    """Once the capture is switched to compressed packets, any failure of the first read reopens it
    decoded: packets are never passed on as frames."""
    video = write_video(tmp_path / "v.avi", leaf_images(3, seed=5, size=(120, 160)), fps=10.0)
    import clca_edge.capture.sources as sources

    real_capture = sources.VideoFileSource.capture

    class RawReadFails:
        def __init__(self, cap):
            self.cap, self.raw = cap, False

        def __getattr__(self, name):
            return getattr(self.cap, name)

        def set(self, prop, value):
            self.raw = self.raw or (prop == cv2.CAP_PROP_FORMAT and value == -1)
            return self.cap.set(prop, value)

        def read(self):
            if self.raw:
                raise cv2.error("compressed read failed")
            return self.cap.read()

    monkeypatch.setattr(sources.VideoFileSource, "capture", lambda self: RawReadFails(real_capture(self)))
    source, frames = frames_of(video)
    assert not source._jpeg and len(frames) == 3
    assert all(f.bgr.shape == (120, 160, 3) for f in frames)
    assert np.array_equal(cv2.VideoCapture(str(video)).read()[1], frames[0].bgr)
