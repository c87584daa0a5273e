"""Frame sources: cameras (index, /dev/videoN, CSI through GStreamer), network streams, video
files, image folders and globs. Every source yields BGR uint8 frames (OpenCV's order).

Live sources (cameras, streams) go through a grabber thread that keeps only the latest frame;
recorded sources (video files, images) are read in order, every frame, nothing dropped.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..core.image_files import IMAGE_EXTENSIONS, glob_images, has_image_suffix, list_images
from ..core.errors import ConfigError, SourceError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = IMAGE_EXTENSIONS  # the one list, in data.files
LIVE_KINDS = ("camera", "v4l2", "csi", "stream")


@dataclass(frozen=True)
class SourceConfig:
    """Where frames come from. ``kind``: camera | v4l2 | csi | stream | video | images."""

    kind: str
    uri: str
    width: Optional[int] = None
    height: Optional[int] = None
    fps: Optional[float] = None
    # Open/read timeout for live sources whose OpenCV backend supports one (FFmpeg streams, some
    # camera backends): a hung read then returns "no frame" and the grabber reconnects.
    timeout_s: float = 15.0

    @property
    def live(self) -> bool:
        return self.kind in LIVE_KINDS

    def __post_init__(self) -> None:
        for name in ("width", "height", "fps"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ConfigError(f"--{name} {v} must be > 0")
        if self.timeout_s <= 0:
            raise ConfigError(f"source timeout {self.timeout_s} s must be > 0")


def parse_source(text: str, width: Optional[int] = None, height: Optional[int] = None,
                 fps: Optional[float] = None, timeout_s: float = 15.0) -> SourceConfig:
    """Classify a --source/--camera value: '0', '/dev/video0', 'csi://0', 'rtsp://...', a video
    file, an image folder or a glob."""
    text = str(text).strip()
    kw = dict(width=width, height=height, fps=fps, timeout_s=timeout_s)
    if re.fullmatch(r"\d+", text):
        return SourceConfig("camera", text, **kw)
    if re.fullmatch(r"/dev/video\d+", text):
        return SourceConfig("v4l2", text, **kw)
    m = re.fullmatch(r"csi://(\d+)", text)
    if m:
        return SourceConfig("csi", m.group(1), **kw)
    if text.startswith("csi://"):
        raise ConfigError(f"--source {text!r}: a CSI camera is csi://N with N the sensor id (csi://0)")
    if re.match(r"(rtsp|rtsps|rtmp|http|https|udp|tcp)://", text):
        return SourceConfig("stream", text, **kw)
    if any(c in text for c in "*?["):
        return SourceConfig("images", text, **kw)
    p = Path(text)
    if p.is_dir():
        return SourceConfig("images", text, **kw)
    if p.is_file():
        kind = "images" if p.suffix.lower() in IMAGE_SUFFIXES else "video"
        return SourceConfig(kind, text, **kw)
    raise SourceError(f"--source {text!r} is neither a camera (0, /dev/videoN, csi://N), a stream URL, "
                      "an existing video file, an image folder nor a glob")


def csi_pipeline(sensor_id: int, width: int = 1280, height: int = 720, fps: float = 30) -> str:
    """GStreamer pipeline for a Jetson CSI camera: the ISP (nvarguscamerasrc) gives NV12 in NVMM
    memory; nvvidconv copies it to system memory as BGRx and videoconvert drops the x for
    OpenCV. ``drop=true max-buffers=1`` on the appsink keeps latency at one frame."""
    num = int(round(fps * 1000))
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! "
            f"video/x-raw(memory:NVMM), width=(int){width}, height=(int){height}, "
            f"format=(string)NV12, framerate=(fraction){num}/1000 ! "
            "nvvidconv ! video/x-raw, format=(string)BGRx ! videoconvert ! "
            "video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1 sync=false")


@dataclass
class Frame:
    bgr: np.ndarray
    seq: int                 # index of the frame in the source (every frame the source produced)
    t: float                 # time.monotonic() when it was read
    pos_s: float             # position in the source in seconds (media time for files, wall time for live)
    grab_ms: float           # time spent reading/decoding it
    name: str = ""           # file name for image sources
    x: Optional[np.ndarray] = None  # model input, when the reader thread already preprocessed it
    prep_ms: float = 0.0     # time that preprocessing took (on whichever thread did it)
    due: bool = True         # False: the trigger skipped it (decided on the reader thread)
    quality: Optional[Any] = None   # capture.quality.Verdict once the quality guard measured it


class FrameSource:
    """open() -> read() ... -> close(). read() returns None at the end of a recorded source or
    when a live source has lost its camera."""

    live: bool = False
    description: str = ""

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> Optional[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    skipped: int = 0         # unreadable items passed over (image sources)


def _timeout_params(cv2, timeout_s: float) -> list[int]:
    """[prop, value, ...] for the open and read timeouts this OpenCV build knows (4.5.2+)."""
    ms = int(round(timeout_s * 1000))
    return [v for name in ("CAP_PROP_OPEN_TIMEOUT_MSEC", "CAP_PROP_READ_TIMEOUT_MSEC")
            if hasattr(cv2, name) for v in (getattr(cv2, name), ms)]


def _cv2_capture(cfg: SourceConfig):
    import cv2

    params = _timeout_params(cv2, cfg.timeout_s) if cfg.live else []
    if cfg.kind == "camera":
        cap = cv2.VideoCapture(int(cfg.uri))
    elif cfg.kind == "v4l2":
        cap = cv2.VideoCapture(cfg.uri, cv2.CAP_V4L2)
    elif cfg.kind == "csi":
        cap = cv2.VideoCapture(csi_pipeline(int(cfg.uri), cfg.width or 1280, cfg.height or 720, cfg.fps or 30),
                               cv2.CAP_GSTREAMER)
    elif cfg.kind == "stream" and params:
        # FFmpeg reads its timeouts only when opening. OpenCV skips a backend that cannot use
        # a parameter; if none could, open without them rather than not at all.
        cap = cv2.VideoCapture(cfg.uri, cv2.CAP_ANY, params)
        if not cap.isOpened():
            cap = cv2.VideoCapture(cfg.uri)
    else:
        cap = cv2.VideoCapture(cfg.uri)
    if cfg.live and cfg.kind != "stream":
        # Cameras: backends that support a read timeout take it now; the others ignore it (set()
        # returns False) and a hung read is caught by the grabber's stall-then-loss rule.
        for prop, value in zip(params[::2], params[1::2]):
            cap.set(prop, value)
    if cfg.kind in ("camera", "v4l2"):
        if cfg.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
        if cfg.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
        if cfg.fps:
            cap.set(cv2.CAP_PROP_FPS, cfg.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # fewer stale frames queued inside the driver
    return cap


class VideoCaptureSource(FrameSource):
    """Anything cv2.VideoCapture opens. ``opener`` is injectable so tests can fake a camera."""

    def __init__(self, cfg: SourceConfig, opener: Callable[[SourceConfig], object] = _cv2_capture):
        self.cfg = cfg
        self.live = cfg.live
        self.description = f"{cfg.kind}:{cfg.uri}"
        self._opener = opener
        self._cap = None
        self._seq = 0
        self._fps = 0.0
        self._t0 = time.monotonic()

    def open(self) -> None:
        if self.cfg.kind == "video" and not Path(self.cfg.uri).is_file():
            raise SourceError(f"video file {self.cfg.uri} does not exist")
        try:
            cap = self._opener(self.cfg)
        except Exception as e:  # cv2 / GStreamer errors for a missing device
            raise SourceError(f"cannot open {self.description}: {e}") from None
        if cap is None or not cap.isOpened():
            raise SourceError(f"cannot open {self.description}: "
                              + ("is the file a video OpenCV can decode?" if self.cfg.kind == "video"
                                 else "is the camera connected and not in use by another process?"))
        self._cap = cap
        try:
            import cv2

            self._fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        except Exception:  # fake captures in tests need not implement get()
            self._fps = 0.0

    def read(self) -> Optional[Frame]:
        if self._cap is None:
            return None
        t0 = time.monotonic()
        try:
            ok, img = self._cap.read()
        except Exception as e:  # some backends raise instead of returning False when a device vanishes
            log.debug("read failed on %s: %s", self.description, e)
            ok, img = False, None
        t1 = time.monotonic()
        if not ok or img is None:
            return None
        seq = self._seq
        self._seq += 1
        pos = seq / self._fps if (not self.live and self._fps > 0) else t1 - self._t0
        if img.ndim == 2:
            import cv2

            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        return Frame(img, seq, t1, pos, (t1 - t0) * 1000.0)

    def close(self) -> None:
        if self._cap is not None:
            try:
                self._cap.release()
            finally:
                self._cap = None


def expand_images(pattern: str) -> list[Path]:
    """Image files of a folder (recursively, hidden ones skipped, sorted) or matched by a glob
    (sorted); the ``data.files`` rules, as for training and deploy."""
    p = Path(pattern)
    if p.is_dir():
        return list_images(p)
    if p.is_file():
        return [p] if has_image_suffix(p) else []
    return glob_images(pattern)


class ImageSource(FrameSource):
    """Images of a folder or glob, in sorted order; unreadable files are skipped and counted."""

    def __init__(self, cfg: SourceConfig):
        self.cfg = cfg
        self.description = f"images:{cfg.uri}"
        self._files: list[Path] = []
        self._i = 0

    def open(self) -> None:
        self._files = expand_images(self.cfg.uri)
        if not self._files:
            raise SourceError(f"--source {self.cfg.uri!r} matches no image files ({', '.join(IMAGE_SUFFIXES)})")

    def read(self) -> Optional[Frame]:
        from ..core.preprocess import load_bgr

        while self._i < len(self._files):
            path = self._files[self._i]
            seq = self._i
            self._i += 1
            t0 = time.monotonic()
            bgr = load_bgr(path)   # frames are BGR: decoded as is, no RGB round trip
            t1 = time.monotonic()
            if bgr is None:
                self.skipped += 1
                log.warning("skipping unreadable image %s", path)
                continue
            return Frame(bgr, seq, t1, float(seq), (t1 - t0) * 1000.0, str(path))
        return None


def make_source(cfg: SourceConfig) -> FrameSource:
    return ImageSource(cfg) if cfg.kind == "images" else VideoCaptureSource(cfg)
