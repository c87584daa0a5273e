"""The capture run: frame -> preprocess (and the quality guard) -> infer -> decide -> log, until the
source ends, a limit is reached or a stop is requested (SIGINT/SIGTERM, an observer). Camera
trouble never ends the run: the grabber reconnects and the run logs what happened.

``CaptureRun`` holds the run's state; each step of a frame is a method. Extension points
(``capture/hooks.py``): observers see every frame after it is logged, a bundle switch may replace
the runtime between two frames."""

from __future__ import annotations

import logging
import time
from typing import Optional, Sequence, Tuple, Union

from ..core.errors import SourceError
from ..core.logonce import LogOnce
from ..runtime.decision import Smoother, softmax
from .config import CaptureConfig
from .fieldlog import FieldLog
from .frames import FrameSaver
from .grabber import LatestFrameGrabber, ReadAhead
from .bundle_runtime import BundleRuntime, checks_dicts
from .hooks import BundleSwitch, FrameObserver
from .records import FrameInfo, Latency, RecordBuilder, Summary, ms
from .sources import Frame, FrameSource
from .stop import StopRequest

log = logging.getLogger(__name__)


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


_END = object()   # the recorded source has no more frames


class CaptureRun:
    """One capture run over ``source`` with ``runtime``, logging to ``flog``.

    ``run()`` returns the summary (also logged as the last record). The quality guard measures each
    due frame's model-size crop on the thread that prepares it (the read-ahead thread for recorded
    sources, the loop for live ones); a refused frame is logged as a ``refused`` record with its
    reason and measures, never classified. The runtime's self-checks and fallbacks are logged after
    the start record (a failed check says why a variant was passed over)."""

    def __init__(self, runtime: BundleRuntime, source: FrameSource, flog: FieldLog,
                 config: CaptureConfig = CaptureConfig(), *, saver: Optional[FrameSaver] = None,
                 stop: Optional[StopRequest] = None, observers: Sequence[FrameObserver] = (),
                 switch: Optional[BundleSwitch] = None):
        self.runtime = runtime
        self._initial = runtime   # the caller's; a runtime a switch gave is handed back to it when done
        self.source, self.flog, self.config, self.saver = source, flog, config, saver
        self.stop = stop or StopRequest()
        self.observers = list(observers)
        self.switch = switch
        self.summary = Summary(backend=runtime.classifier.backend, precision=runtime.classifier.precision,
                               bundle_sha=runtime.sha, fallbacks=[f.to_dict() for f in runtime.fallbacks],
                               self_checks=checks_dicts(runtime.checks))
        self._trigger = Trigger(config.every, config.interval_s)
        self._smoother = Smoother(runtime.model.class_names, config.smooth, config.min_conf)
        self._records = RecordBuilder(runtime, source.description, config.top_k)
        self._grabber: Optional[LatestFrameGrabber] = None
        self._reader: Optional[ReadAhead] = None
        self._t_start = time.monotonic()
        self._said = LogOnce(log)

    def add_observer(self, observer: FrameObserver) -> None:
        self.observers.append(observer)

    # ------------------------------------------------------------------ the run
    def run(self) -> Summary:
        try:
            self._start()
            while self._step():
                pass
        finally:
            self._finish()
        return self.summary

    def _start(self) -> None:
        rt = self.runtime
        if rt.guard is None:
            log.info("quality guard off: every frame is classified")
        else:
            for note in rt.guard.notes:
                log.log(logging.WARNING if note in rt.guard.warnings else logging.INFO, "quality guard: %s", note)
        warm_ms = rt.warm_up()   # before the clock starts: the first frame is not the session's first run
        self.flog.write({**self._records.start(self.config.log_dict()), "warm_up_ms": round(warm_ms, 3)})
        for fb in rt.fallbacks:
            self.flog.write({"type": "fallback", **fb.to_dict(), "used": rt.classifier.backend})
        for check in rt.checks:
            self.flog.write({**check.to_record(), "used": f"{rt.classifier.backend} {rt.classifier.precision}"})
        self._t_start = time.monotonic()
        self._notify("on_start", self)
        if self.source.live:
            self._grabber = LatestFrameGrabber(self.source, self.config.reconnect).start()
        else:
            self.source.open()
            self._reader = ReadAhead(self.source, prepare=self._read_ahead).start()
        self.summary.stop_reason = "end of source"

    def _step(self) -> bool:
        """One pass of the loop: False when the run ends."""
        reason = self._limit_reached()
        if reason is not None:
            self.summary.stop_reason = reason
            return False
        self._maybe_switch()
        self._drain_events()
        t0 = time.monotonic()
        got = self._next_frame(t0)
        if got is _END:
            return False
        if got is None:
            return True
        frame, grab_ms = got
        if not (frame.due if self._reader is not None else self._trigger.due(frame)):
            self.summary.not_triggered += 1
            return True
        t1 = time.monotonic()
        if frame.prepared_for is not self.runtime:   # live frames; frames read ahead before a switch
            self._prepare(frame)
        if frame.quality is not None and not frame.quality.ok:
            self._refuse(frame, grab_ms, t0, t1)
        else:
            self._classify(frame, grab_ms, t0, t1)
        return True

    def _limit_reached(self) -> Optional[str]:
        cfg = self.config
        if self.stop.is_set():
            return self.stop.reason or "stop requested"
        if cfg.max_frames is not None and self.summary.frames >= cfg.max_frames:
            return "max frames"
        if cfg.duration_s is not None and time.monotonic() - self._t_start >= cfg.duration_s:
            return "duration"
        return None

    def _next_frame(self, t0: float) -> Union[None, object, Tuple[Frame, float]]:
        """(frame, grab ms), None when a live source gave none yet, or _END."""
        if self._grabber is None:
            frame = self._reader.get()
            # Decode time, spent on the reader thread.
            return _END if frame is None else (frame, round(frame.grab_ms, 3))
        frame = self._grabber.get(self.config.poll_s)
        if frame is None:
            if not self._grabber.ever_connected.is_set() and t0 - self._t_start >= self.config.open_timeout_s:
                raise SourceError(f"{self.source.description} did not open within {self.config.open_timeout_s:g} s; "
                                  "check the camera connection and --source")
            return None
        return frame, ms(t0, time.monotonic())

    # ------------------------------------------------------------------ one frame
    def _read_ahead(self, frame: Frame) -> Frame:
        """Trigger and preparation on the read-ahead thread (recorded sources: nothing is dropped,
        so the trigger sees the same frames in the same order as it would in the loop)."""
        frame.due = self._trigger.due(frame)
        if frame.due:
            self._prepare(frame)
        return frame

    def _prepare(self, frame: Frame) -> None:
        rt = self.runtime   # read once: a switch may happen meanwhile, the frame says whose input it has
        t = time.monotonic()
        frame.x, frame.quality = rt.prepare(frame.bgr)
        frame.prepared_for = rt
        frame.prep_ms = ms(t, time.monotonic())

    def _frame_info(self, frame: Frame, t1: float, saved: Optional[str]) -> FrameInfo:
        age = ms(frame.t, t1) if self._grabber is not None else None
        return FrameInfo(frame.seq, frame.name, age, saved)

    def _classify(self, frame: Frame, grab_ms: float, t0: float, t1: float) -> None:
        rt = self.runtime
        t2 = time.monotonic()
        logits = rt.classifier.logits(frame.x)
        t3 = time.monotonic()
        probs = softmax(logits, rt.model.temperature)
        decision = self._smoother.update(probs)
        index = self.summary.frames
        saved = self._save(frame, f"{index:08d}_{decision.label}", decision.uncertain)
        latency = Latency(grab_ms, frame.prep_ms, ms(t0, time.monotonic()), ms(t2, t3))
        record = self._records.decision(index, self._frame_info(frame, t1, saved), probs, decision, latency,
                                        frame.quality)
        self.flog.write(record.to_dict())
        s = self.summary
        s.frames += 1
        s.class_counts[decision.label] += 1
        s.uncertain += decision.uncertain
        self._notify("on_decision", frame, record)

    def _refuse(self, frame: Frame, grab_ms: float, t0: float, t1: float) -> None:
        """Log a frame the quality guard refused (never a class), count it, save it if frames are kept
        (``--save-frames uncertain|all``: a person should see what was refused)."""
        # A frame the guard cannot judge breaks the --smooth average: the view went dark, blurred or
        # strange, so what was seen before it must not decide what comes after.
        self._smoother.reset()
        verdict = frame.quality
        saved = self._save(frame, f"refused_{frame.seq:08d}_{verdict.reason}", True)
        latency = Latency(grab_ms, frame.prep_ms, ms(t0, time.monotonic()))
        record = self._records.refusal(self._frame_info(frame, t1, saved), verdict, latency)
        self.flog.write(record.to_dict())
        self.summary.refused += 1
        self.summary.refused_reasons[verdict.reason] += 1
        self._notify("on_refusal", frame, record)

    def _save(self, frame: Frame, name: str, uncertain: bool) -> Optional[str]:
        """Keep the frame if ``--save-frames`` wants it; the first time there is no room, saving stops
        for the run and a ``frames_stopped`` record says why."""
        saver = self.saver
        if saver is None or not saver.wants(uncertain):
            return None
        saved = saver.save(frame.bgr, name)
        if saved is None and self.summary.frames_stopped is None:
            self.summary.frames_stopped = saver.stopped_reason
            self.flog.write({"type": "frames_stopped", "reason": saver.stopped_reason, "frame": self.summary.frames})
        return None if saved is None else str(saved)

    # ------------------------------------------------------------------ between frames
    def _drain_events(self) -> None:
        grabber = self._grabber
        while grabber is not None and not grabber.events.empty():
            ev = grabber.events.get()
            self.flog.write({"type": "camera", "event": ev.event, "source": self.source.description, **ev.info})
            if ev.event == "lost":
                self.summary.camera_lost += 1
                self._smoother.reset()  # what the camera sees after a gap is a new scene
            elif ev.event == "reconnected":
                self.summary.reconnected += 1
            elif ev.event == "stalled":
                self.summary.stalls += 1

    def _maybe_switch(self) -> None:
        if self.switch is None:
            return
        try:
            new = self.switch.maybe_switch()
        except Exception:  # a switch that fails leaves the run on the bundle it has
            self._said.log(logging.ERROR, "switch", "bundle switch failed; capture goes on with bundle %s",
                           self.runtime.sha[:12], exc_info=True)
            return
        if new is not None and new is not self.runtime:
            self.switch_to(new)

    def switch_to(self, new: BundleRuntime) -> None:
        """Classify from the next frame on with ``new`` (call between frames, on the loop's thread)."""
        old, self.runtime = self.runtime, new
        self._smoother = Smoother(new.model.class_names, self.config.smooth, self.config.min_conf)
        self._records = RecordBuilder(new, self.source.description, self.config.top_k)
        s = self.summary
        s.switches += 1
        s.backend, s.precision, s.bundle_sha = new.classifier.backend, new.classifier.precision, new.sha
        self.flog.write(self._records.switch(old, s.frames))
        log.info("bundle switch after %d frames: %s -> %s (%s)", s.frames, old.sha[:12], new.sha[:12],
                 new.classifier.describe())
        self._notify("on_switch", old, new)
        if self.switch is not None:
            self.switch.retired(old)

    def _notify(self, hook: str, *args) -> None:
        for observer in self.observers:
            try:
                getattr(observer, hook)(*args)
            except Exception:  # an observer never ends the run
                self._said.log(logging.ERROR, (id(observer), hook), "capture observer %s.%s failed; the run goes on",
                               type(observer).__name__, hook, exc_info=True)

    def _finish(self) -> None:
        s = self.summary
        if self._grabber is not None:
            self._grabber.stop()
            self._drain_events()
            s.dropped = self._grabber.dropped
        elif self._reader is not None:
            self._reader.stop()   # the reader thread closes the source once no read() is in progress
        s.unreadable = self.source.skipped
        s.duration_s = time.monotonic() - self._t_start
        if self.saver is not None:
            s.frames_saved = self.saver.saved
        self._notify("on_stop", s)
        s.log_failures = self.flog.failures
        self.flog.write({"type": "summary", **self._records.tag, **s.to_dict()})
        if self.switch is not None and self.runtime is not self._initial:
            self.switch.retired(self.runtime)
