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


@dataclass(frozen=True)
class SourceConfig:
    """Where frames come from: ``kind``, a registered source (``source_kinds()``: camera | v4l2 |
    csi | stream | images | video and any registered later), and its ``uri``."""

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
        return source_class(self.kind).live

    def __post_init__(self) -> None:
        source_class(self.kind)
        for name in ("width", "height", "fps"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ConfigError(f"--{name} {v} must be > 0")
        if self.timeout_s <= 0:
            raise ConfigError(f"source timeout {self.timeout_s} s must be > 0")


# kind -> FrameSource class, in the order parse_source tries them (register_source appends).
_SOURCES: "dict[str, type]" = {}


def register_source(cls):
    """Class decorator: ``cls.kind`` becomes a --source kind, recognised by ``cls.matches``."""
    if not cls.kind or cls.kind in _SOURCES:
        raise ValueError(f"frame source kind {cls.kind!r} is empty or already registered")
    _SOURCES[cls.kind] = cls
    return cls


def source_kinds() -> "tuple[str, ...]":
    return tuple(_SOURCES)


def source_class(kind: str):
    try:
        return _SOURCES[kind]
    except KeyError:
        raise ConfigError(f"source kind {kind!r} is unknown; choose one of {', '.join(_SOURCES)}") from None


def parse_source(text: str, width: Optional[int] = None, height: Optional[int] = None,
                 fps: Optional[float] = None, timeout_s: float = 15.0) -> SourceConfig:
    """Classify a --source/--camera value: the first registered source that recognises it ('0',
    '/dev/video0', 'csi://0', 'rtsp://...', an image folder, a glob or image file, a video file)."""
    text = str(text).strip()
    for kind, cls in _SOURCES.items():
        uri = cls.matches(text)
        if uri is not None:
            return SourceConfig(kind, uri, width=width, height=height, fps=fps, timeout_s=timeout_s)
    raise SourceError(f"--source {text!r} is neither a camera (0, /dev/videoN, csi://N), a stream URL, "
                      "an existing video file, an image folder nor a glob")


def make_source(cfg: SourceConfig) -> "FrameSource":
    return source_class(cfg.kind)(cfg)


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
    prepared_for: Optional[Any] = None   # the capture.hooks.BundleRuntime that made ``x`` and ``quality``


class FrameSource:
    """open() -> read() ... -> close(). read() returns None at the end of a recorded source or
    when a live source has lost its camera.

    A new kind of source is one class decorated with ``@register_source``: its ``kind``, whether it
    is ``live`` (read through the grabber thread, latest frame only) and ``matches(text)``, which
    recognises a --source value; ``parse_source``, ``make_source`` and the CLI then know it."""

    kind: str = ""
    live: bool = False
    description: str = ""
    skipped: int = 0         # unreadable items passed over (image sources)

    def __init__(self, cfg: SourceConfig):
        self.cfg = cfg
        self.description = f"{cfg.kind}:{cfg.uri}"

    @classmethod
    def matches(cls, text: str) -> Optional[str]:
        """The source's uri if ``text`` names one of this kind, else None (ConfigError: it is one,
        but malformed)."""
        return None

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> Optional[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _timeout_params(cv2, timeout_s: float) -> list[int]:
    """[prop, value, ...] for the open and read timeouts this OpenCV build knows (4.5.2+)."""
    ms = int(round(timeout_s * 1000))
    return [v for name in ("CAP_PROP_OPEN_TIMEOUT_MSEC", "CAP_PROP_READ_TIMEOUT_MSEC")
            if hasattr(cv2, name) for v in (getattr(cv2, name), ms)]


class VideoCaptureSource(FrameSource):
    """Anything cv2.VideoCapture opens; subclasses say how (``capture``). ``opener`` is injectable
    so tests can fake a camera."""

    def __init__(self, cfg: SourceConfig, opener: Optional[Callable[[SourceConfig], object]] = None):
        super().__init__(cfg)
        self._opener = opener or (lambda _cfg: self.capture())
        self._cap = None
        self._seq = 0
        self._fps = 0.0
        self._t0 = time.monotonic()

    def capture(self):
        """The cv2.VideoCapture of this source, configured."""
        import cv2

        return cv2.VideoCapture(self.cfg.uri)

    def open(self) -> None:
        try:
            cap = self._opener(self.cfg)
        except Exception as e:  # cv2 / GStreamer errors for a missing device
            raise SourceError(f"cannot open {self.description}: {e}") from None
        if cap is None or not cap.isOpened():
            raise SourceError(f"cannot open {self.description}: "
                              + ("is the file a video OpenCV can decode?" if not self.live
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
            ok, img = self._grab()
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

    def _grab(self) -> "tuple[bool, Optional[np.ndarray]]":
        """The next decoded frame, as ``cv2.VideoCapture.read`` gives it."""
        return self._cap.read()

    def close(self) -> None:
        if self._cap is not None:
            try:
                self._cap.release()
            finally:
                self._cap = None


class _CameraSource(VideoCaptureSource):
    """A local camera: timeouts where the backend takes them, the requested size and rate, and a
    one-frame driver buffer (fewer stale frames queued inside the driver)."""

    live = True

    def _open_cv2(self, cv2):
        return cv2.VideoCapture(self.cfg.uri)

    def capture(self):
        import cv2

        cfg = self.cfg
        cap = self._open_cv2(cv2)
        # Backends that support a read timeout take it now; the others ignore it (set() returns
        # False) and a hung read is caught by the grabber's stall-then-loss rule.
        params = _timeout_params(cv2, cfg.timeout_s)
        for prop, value in zip(params[::2], params[1::2]):
            cap.set(prop, value)
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, cfg.width), (cv2.CAP_PROP_FRAME_HEIGHT, cfg.height),
                            (cv2.CAP_PROP_FPS, cfg.fps)):
            if value:
                cap.set(prop, value)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap


@register_source
class CameraSource(_CameraSource):
    """A camera by index (``--camera N``, ``--source N``)."""

    kind = "camera"

    @classmethod
    def matches(cls, text: str) -> Optional[str]:
        return text if re.fullmatch(r"\d+", text) else None

    def _open_cv2(self, cv2):
        return cv2.VideoCapture(int(self.cfg.uri))


@register_source
class V4l2Source(_CameraSource):
    kind = "v4l2"

    @classmethod
    def matches(cls, text: str) -> Optional[str]:
        return text if re.fullmatch(r"/dev/video\d+", text) else None

    def _open_cv2(self, cv2):
        return cv2.VideoCapture(self.cfg.uri, cv2.CAP_V4L2)


@register_source
class CsiSource(VideoCaptureSource):
    """A Jetson CSI camera through GStreamer (``csi://N``, N the sensor id)."""

    kind = "csi"
    live = True

    @classmethod
    def matches(cls, text: str) -> Optional[str]:
        m = re.fullmatch(r"csi://(\d+)", text)
        if m:
            return m.group(1)
        if text.startswith("csi://"):
            raise ConfigError(f"--source {text!r}: a CSI camera is csi://N with N the sensor id (csi://0)")
        return None

    def capture(self):
        import cv2

        cfg = self.cfg
        cap = cv2.VideoCapture(csi_pipeline(int(cfg.uri), cfg.width or 1280, cfg.height or 720, cfg.fps or 30),
                               cv2.CAP_GSTREAMER)
        params = _timeout_params(cv2, cfg.timeout_s)
        for prop, value in zip(params[::2], params[1::2]):
            cap.set(prop, value)
        return cap


@register_source
class StreamSource(VideoCaptureSource):
    """A network stream (rtsp, rtmp, http, udp, tcp)."""

    kind = "stream"
    live = True

    @classmethod
    def matches(cls, text: str) -> Optional[str]:
        return text if re.match(r"(rtsp|rtsps|rtmp|http|https|udp|tcp)://", text) else None

    def capture(self):
        import cv2

        params = _timeout_params(cv2, self.cfg.timeout_s)
        if not params:
            return cv2.VideoCapture(self.cfg.uri)
        # FFmpeg reads its timeouts only when opening. OpenCV skips a backend that cannot use
        # a parameter; if none could, open without them rather than not at all.
        cap = cv2.VideoCapture(self.cfg.uri, cv2.CAP_ANY, params)
        return cap if cap.isOpened() else cv2.VideoCapture(self.cfg.uri)


def expand_images(pattern: str) -> list[Path]:
    """Image files of a folder (recursively, hidden ones skipped, sorted) or matched by a glob
    (sorted); the ``data.files`` rules, as for training and deploy."""
    p = Path(pattern)
    if p.is_dir():
        return list_images(p)
    if p.is_file():
        return [p] if has_image_suffix(p) else []
    return glob_images(pattern)


@register_source
class ImageSource(FrameSource):
    """Images of a folder or glob (or one image file), in sorted order; unreadable files are
    skipped and counted."""

    kind = "images"

    def __init__(self, cfg: SourceConfig):
        super().__init__(cfg)
        self._files: list[Path] = []
        self._i = 0

    @classmethod
    def matches(cls, text: str) -> Optional[str]:
        if any(c in text for c in "*?[") or Path(text).is_dir():
            return text
        return text if Path(text).is_file() and Path(text).suffix.lower() in IMAGE_SUFFIXES else None

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


@register_source
class VideoFileSource(VideoCaptureSource):
    """A video file, every frame in order (media time from its frame rate)."""

    kind = "video"
    _jpeg = False    # frames are compressed packets, decoded here (``_jpeg_packets``)
    _pending: Optional[np.ndarray] = None   # the first frame, decoded while probing

    @classmethod
    def matches(cls, text: str) -> Optional[str]:
        return text if Path(text).is_file() else None

    def capture(self):
        import cv2

        # One decoder thread: the read-ahead thread already overlaps decoding with inference, and
        # FFmpeg's own threads would only take cores from it (benchmarks/capture_fps.py).
        prop = getattr(cv2, "CAP_PROP_N_THREADS", None)
        if prop is None:
            return cv2.VideoCapture(self.cfg.uri)
        cap = cv2.VideoCapture(self.cfg.uri, cv2.CAP_ANY, [prop, 1])
        return cap if cap.isOpened() else cv2.VideoCapture(self.cfg.uri)

    def open(self) -> None:
        if not Path(self.cfg.uri).is_file():
            raise SourceError(f"video file {self.cfg.uri} does not exist")
        super().open()
        self._pending = None
        self._jpeg = self._jpeg_packets()

    def _jpeg_packets(self) -> bool:
        """Switch an MJPG file to its compressed frames, each decoded by libjpeg-turbo
        (``cv2.imdecode``) as OpenCV's V4L2 backend decodes an MJPG camera's frames and as
        training and deploy decode JPEG files: the same pixels as the camera would give, 0.5 ms
        less per 640x480 frame than FFmpeg's decoder, whose colour conversion differs by about a
        grey level (BENCHMARKS.md, issue 21). False (FFmpeg decodes, as before) for other codecs,
        for a backend without raw packets, and when the first packet does not decode to the
        file's frame size (an interlaced MJPG holds two fields per packet)."""
        import cv2

        cap = self._cap
        try:
            fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("latin-1").upper()
            size = (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)))
            if fourcc not in MJPEG_FOURCCS or not cap.set(cv2.CAP_PROP_FORMAT, -1):
                return False
        except Exception as e:  # fake captures in tests, backends without the properties
            log.debug("%s: no compressed frames (%s); FFmpeg decodes", self.description, e)
            return False
        try:  # the capture is in raw mode from here: any failure reopens it decoded
            ok, packet = cap.read()
        except Exception as e:
            log.debug("%s: reading a compressed frame failed (%s)", self.description, e)
            ok, packet = False, None
        first = _decode_jpeg(packet) if ok else None
        if first is not None and first.shape[:2] == size:
            self._pending = first
            return True
        log.info("%s: the first MJPG packet does not decode to %dx%d; FFmpeg decodes", self.description, *size[::-1])
        self.close()
        super().open()   # back to the first frame, decoded by FFmpeg
        return False

    def _grab(self) -> "tuple[bool, Optional[np.ndarray]]":
        if not self._jpeg:
            return super()._grab()
        if self._pending is not None:
            img, self._pending = self._pending, None
            return True, img
        while True:
            ok, packet = self._cap.read()
            if not ok:
                return False, None
            img = _decode_jpeg(packet)
            if img is not None:
                return True, img
            self.skipped += 1   # a corrupt packet: passed over and counted, as an unreadable image
            self._seq += 1
            log.warning("%s: frame %d does not decode; skipped", self.description, self._seq - 1)


# AVI/QuickTime four-character codes of Motion JPEG (upper case): each packet is one JPEG image.
MJPEG_FOURCCS = ("MJPG", "JPEG")


def _decode_jpeg(packet: Optional[np.ndarray]) -> Optional[np.ndarray]:
    import cv2

    if packet is None or packet.size < 4:
        return None
    try:
        return cv2.imdecode(packet.reshape(-1), cv2.IMREAD_COLOR)
    except cv2.error:
        return None
