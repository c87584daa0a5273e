"""The capture loop: frame -> preprocess -> infer -> decide -> log, until the source ends, a limit
is reached or a stop is requested (SIGINT/SIGTERM). Camera trouble never ends the run: the
grabber reconnects and the loop logs what happened."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

from ..core.errors import ConfigError, SourceError
from ..runtime.backends import Classifier, Fallback
from ..runtime.decision import Smoother, softmax, top_k
from ..runtime.model import RuntimeModel
from ..core.preprocess import frame_leaf, normalize, preprocess, resize_center_crop
from .fieldlog import FieldLog
from .frames import FrameSaver
from .grabber import LatestFrameGrabber, ReadAhead, ReconnectPolicy
from .quality import QualityConfig, QualityGuard
from .sources import Frame, FrameSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptureConfig:
    top_k: int = 3
    every: int = 1                      # classify every Nth frame of the source
    interval_s: float = 0.0             # ... and at most one frame per this many seconds
    max_frames: Optional[int] = None    # stop after this many classified frames
    duration_s: Optional[float] = None  # stop after this many seconds
    smooth: int = 1
    min_conf: float = 0.0
    open_timeout_s: float = 30.0        # a live source that never opens within this is an error
    poll_s: float = 0.25                # how often the loop wakes while waiting for a frame
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    quality: QualityConfig = field(default_factory=QualityConfig)   # the frame-quality guard

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"--top-k {self.top_k} must be >= 1")
        if self.every < 1:
            raise ConfigError(f"--every {self.every} must be >= 1")
        if self.interval_s < 0:
            raise ConfigError(f"--interval {self.interval_s} must be >= 0 seconds")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"--max-frames {self.max_frames} must be >= 1")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ConfigError(f"--duration {self.duration_s} must be > 0 seconds")
        if self.open_timeout_s <= 0 or self.poll_s <= 0:
            raise ConfigError("open timeout and poll interval must be > 0 seconds")


class Trigger:
    """Which frames get classified: every Nth source frame and/or one per interval of source time
    (media time for files, wall time for cameras)."""

    def __init__(self, every: int = 1, interval_s: float = 0.0):
        self.every, self.interval_s = every, interval_s
        self._last_seq: Optional[int] = None
        self._last_pos: Optional[float] = None

    def due(self, frame: Frame) -> bool:
        if self._last_seq is not None:
            if frame.seq - self._last_seq < self.every:
                return False
            if self.interval_s and frame.pos_s - self._last_pos < self.interval_s:
                return False
        self._last_seq, self._last_pos = frame.seq, frame.pos_s
        return True


@dataclass
class Summary:
    frames: int = 0
    class_counts: Counter = field(default_factory=Counter)
    uncertain: int = 0
    refused: int = 0                 # frames the quality guard would not let the model judge
    refused_reasons: Counter = field(default_factory=Counter)   # by first reason
    fallbacks: list[dict] = field(default_factory=list)
    self_checks: list[dict] = field(default_factory=list)   # device self-checks at start (runtime.selfcheck)
    dropped: int = 0                 # live frames replaced by a newer one before being looked at
    not_triggered: int = 0           # frames passed over by --every / --interval
    unreadable: int = 0              # image files that could not be decoded
    camera_lost: int = 0
    reconnected: int = 0
    stalls: int = 0
    frames_saved: int = 0
    frames_stopped: Optional[str] = None
    log_failures: int = 0
    duration_s: float = 0.0
    stop_reason: str = ""
    backend: str = ""
    precision: str = ""

    @property
    def fps(self) -> float:
        return self.frames / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["class_counts"] = dict(self.class_counts.most_common())
        d["refused_reasons"] = dict(self.refused_reasons.most_common())
        d["fps"] = round(self.fps, 3)
        d["duration_s"] = round(self.duration_s, 3)
        return d


class StopRequest:
    """Asks the capture loop to stop after its current frame, saying why (the summary's
    ``stop_reason``); the first reason given is kept."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: Optional[str] = None

    def set(self, reason: str = "stop requested") -> None:
        if self.reason is None:
            self.reason = reason
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


@contextlib.contextmanager
def stop_on_signals(stop: StopRequest) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` with the signal's name as the reason (the loop finishes its
    frame, logs and summarises) instead of killing the process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        stop.set(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _ms(a: float, b: float) -> float:
    return round((b - a) * 1000.0, 3)


def _refuse(frame: Frame, summary: Summary, flog: FieldLog, common: dict, saver: Optional[FrameSaver],
            grab_ms: float, t0: float, t1: float, live: bool) -> dict:
    """Log a frame the quality guard refused (never a class), count it, save it if frames are kept
    (``--save-frames uncertain|all``: a person should see what was refused)."""
    verdict = frame.quality
    record = {"type": "refused", "source_frame": frame.seq, **common, "reason": verdict.reason,
              "reasons": list(verdict.reasons), "measures": verdict.measures_dict(),
              "latency_ms": {"grab": grab_ms, "preprocess": frame.prep_ms, "total": _ms(t0, time.monotonic())}}
    if frame.name:
        record["file"] = frame.name
    if live:
        record["frame_age_ms"] = _ms(frame.t, t1)
    if saver is not None and saver.wants(True):
        saved = saver.save(frame.bgr, f"refused_{frame.seq:08d}_{verdict.reason}")
        if saved is not None:
            record["saved"] = str(saved)
        elif summary.frames_stopped is None:
            summary.frames_stopped = saver.stopped_reason
            flog.write({"type": "frames_stopped", "reason": saver.stopped_reason, "frame": summary.frames})
    flog.write(record)
    summary.refused += 1
    summary.refused_reasons[verdict.reason] += 1
    return record


def run_capture(model: RuntimeModel, classifier: Classifier, source: FrameSource, flog: FieldLog,
                config: CaptureConfig = CaptureConfig(), saver: Optional[FrameSaver] = None,
                fallbacks: tuple[Fallback, ...] = (), stop: Optional[StopRequest] = None,
                on_record: Optional[Callable[[dict, Summary, Any], bool]] = None,
                checks: Sequence[Any] = ()) -> Summary:
    """Run until the source ends, a limit is reached or ``stop`` is set; returns the summary (also
    logged as the last record). ``on_record(record, summary, bgr)`` sees every decision and every
    refused frame (live panel, overlay); returning False asks the loop to stop.

    The quality guard (``config.quality``) measures each due frame's model-size crop on the thread
    that preprocesses it (the reader thread for files); a frame it refuses is not classified: it is
    logged as a ``refused`` record with its reason and measures, and counted in the summary.

    ``checks`` (``Selection.checks``): the device self-checks run when the classifier was chosen,
    each logged as a ``selfcheck`` record after the start (a failed one says why a variant was
    passed over)."""
    stop = stop or StopRequest()
    summary = Summary(backend=classifier.backend, precision=classifier.precision,
                      fallbacks=[f.to_dict() for f in fallbacks],
                      self_checks=[{k: v for k, v in c.to_dict().items() if k != "key"} for c in checks])
    common = {"source": source.description, "backend": classifier.backend,
              "precision": classifier.precision, "bundle_sha": model.sha}
    guard = QualityGuard.for_bundle(model.quality_reference, config.quality)
    if guard is None:
        log.info("quality guard off: every frame is classified")
    else:
        for note in guard.notes:
            log.log(logging.WARNING if note in guard.warnings else logging.INFO, "quality guard: %s", note)
    flog.write({"type": "start", **common, "classes": len(model.class_names),
                "config": {k: v for k, v in asdict(config).items() if k not in ("reconnect", "quality")},
                "quality": guard.describe() if guard is not None else {"enabled": False},
                "temperature": model.temperature})
    for fb in fallbacks:
        flog.write({"type": "fallback", **fb.to_dict(), "used": classifier.backend})
    for check in checks:
        flog.write({**check.to_record(), "used": f"{classifier.backend} {classifier.precision}"})
    smoother = Smoother(model.class_names, config.smooth, config.min_conf)
    trigger = Trigger(config.every, config.interval_s)
    grabber: Optional[LatestFrameGrabber] = None
    reader: Optional[ReadAhead] = None
    t_start = time.monotonic()

    def drain_events() -> None:
        while grabber is not None and not grabber.events.empty():
            ev = grabber.events.get()
            flog.write({"type": "camera", "event": ev.event, "source": source.description, **ev.info})
            if ev.event == "lost":
                summary.camera_lost += 1
                smoother.reset()  # what the camera sees after a gap is a new scene
            elif ev.event == "reconnected":
                summary.reconnected += 1
            elif ev.event == "stalled":
                summary.stalls += 1

    def prepare_input(frame: Frame) -> None:
        """Quality check and model input of a due frame, on whichever thread runs it: the crop
        the model would see is measured, and normalised only if the guard lets it through."""
        t = time.monotonic()
        if guard is None:
            frame.x = preprocess(frame.bgr, model.spec, bgr=True)
        else:
            if frame.bgr.ndim != 3 or frame.bgr.shape[2] != 3:
                raise ValueError(f"expected a colour image (H, W, 3), got shape {frame.bgr.shape}")
            crop = resize_center_crop(frame.bgr, model.spec)
            frame.quality = guard.check(crop, bgr=True)
            if frame.quality.ok:
                frame.x = normalize(frame_leaf(crop, model.spec), model.spec, bgr=True)
        frame.prep_ms = _ms(t, time.monotonic())

    def prepare(frame: Frame) -> Frame:
        """Trigger, quality check and preprocessing on the reader thread (recorded sources:
        nothing is dropped, so the trigger sees the same frames in the same order as it would in
        the loop)."""
        frame.due = trigger.due(frame)
        if frame.due:
            prepare_input(frame)
        return frame

    if source.live:
        grabber = LatestFrameGrabber(source, config.reconnect).start()
    else:
        source.open()
        reader = ReadAhead(source, prepare=prepare).start()
    summary.stop_reason = "end of source"
    try:
        while True:
            if stop.is_set():
                summary.stop_reason = stop.reason or "stop requested"
                break
            if config.max_frames is not None and summary.frames >= config.max_frames:
                summary.stop_reason = "max frames"
                break
            if config.duration_s is not None and time.monotonic() - t_start >= config.duration_s:
                summary.stop_reason = "duration"
                break
            drain_events()
            t0 = time.monotonic()
            if grabber is not None:
                frame = grabber.get(config.poll_s)
                if frame is None:
                    if not grabber.ever_connected.is_set() and t0 - t_start >= config.open_timeout_s:
                        raise SourceError(f"{source.description} did not open within {config.open_timeout_s:g} s; "
                                          "check the camera connection and --source")
                    continue
                grab_ms = _ms(t0, time.monotonic())
            else:
                frame = reader.get()
                if frame is None:
                    break
                grab_ms = round(frame.grab_ms, 3)   # decode time, spent on the reader thread
            if not (frame.due if reader is not None else trigger.due(frame)):
                summary.not_triggered += 1
                continue
            t1 = time.monotonic()
            if frame.x is None and frame.quality is None:   # live frames: prepared here
                prepare_input(frame)
            if frame.quality is not None and not frame.quality.ok:
                # A frame the guard cannot judge breaks the run --smooth averages: the view went dark,
                # blurred or strange, so what was seen before it must not decide what comes after.
                smoother.reset()
                record = _refuse(frame, summary, flog, common, saver, grab_ms, t0, t1, live=grabber is not None)
                if on_record is not None and on_record(record, summary, frame.bgr) is False:
                    stop.set("stop requested by the display")
                continue
            x = frame.x
            t2 = time.monotonic()
            logits = classifier.logits(x)
            t3 = time.monotonic()
            probs = softmax(logits, model.temperature)
            decision = smoother.update(probs)
            index = summary.frames
            saved = None
            if saver is not None and saver.wants(decision.uncertain):
                saved = saver.save(frame.bgr, f"{index:08d}_{decision.label}")
                if saved is None and summary.frames_stopped is None:
                    summary.frames_stopped = saver.stopped_reason
                    flog.write({"type": "frames_stopped", "reason": saver.stopped_reason, "frame": index})
            record = {
                "type": "decision", "frame": index, "source_frame": frame.seq, **common,
                "topk": [{"class": c, "conf": round(p, 6)} for c, p in top_k(probs, model.class_names, config.top_k)],
                "class": decision.label, "confidence": round(decision.confidence, 6),
                "raw_class": decision.raw_label,
                "latency_ms": {"grab": grab_ms, "preprocess": frame.prep_ms, "infer": _ms(t2, t3),
                               "total": _ms(t0, time.monotonic())},
            }
            if frame.name:
                record["file"] = frame.name
            if grabber is not None:
                record["frame_age_ms"] = _ms(frame.t, t1)
            if saved is not None:
                record["saved"] = str(saved)
            if frame.quality is not None:
                record["quality"] = frame.quality.measures_dict()
            flog.write(record)
            summary.frames += 1
            summary.class_counts[decision.label] += 1
            summary.uncertain += decision.uncertain
            if on_record is not None and on_record(record, summary, frame.bgr) is False:
                stop.set("stop requested by the display")
    finally:
        if grabber is not None:
            grabber.stop()
            drain_events()
            summary.dropped = grabber.dropped
        else:
            reader.stop()   # the reader thread closes the source once no read() is in progress
        summary.unreadable = source.skipped
        summary.duration_s = time.monotonic() - t_start
        if saver is not None:
            summary.frames_saved = saver.saved
        summary.log_failures = flog.failures
        flog.write({"type": "summary", **common, **summary.to_dict()})
    return summary
