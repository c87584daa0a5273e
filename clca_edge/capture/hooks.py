"""A capture run's extension points: who watches the frames (``FrameObserver``) and what may
replace the ``BundleRuntime`` (``capture/bundle_runtime.py``) between two frames (``BundleSwitch``).

- An observer (a display, an uploader that samples uncertain frames) subclasses ``FrameObserver``,
  overrides the hooks it needs and is given to ``CaptureRun(observers=[...])`` or
  ``CaptureRun.add_observer``. Hooks run on the capture loop's thread, after the frame's record is
  in the field log; the next frame waits for them, so one that does I/O queues the work for its
  own thread. An exception in a hook is logged (once per observer and hook) and the run goes on.
- A switch implements ``BundleSwitch.maybe_switch``, polled by the loop before each frame: it
  returns None (no change) or a ready ``BundleRuntime`` (opened and self-checked beforehand, on the
  switch's own thread), which classifies the next frame. The run logs a ``bundle_switch`` record,
  tells the observers (``on_switch``) and hands the old runtime to ``retired`` (default: closed;
  the runtime a switch gave is handed back the same way when the run ends).
  Frames already read ahead under the old runtime are prepared again for the new one: none is lost.
"""

from __future__ import annotations

from typing import Optional, Protocol

from .bundle_runtime import BundleRuntime
from .records import DecisionRecord, RefusalRecord, Summary
from .sources import Frame
from .stop import StopRequest


class RunView(Protocol):
    """What an observer may use of the run it watches (``capture/run.py:CaptureRun``)."""

    runtime: BundleRuntime   # classifying now (after any switch)
    summary: Summary         # the counts so far
    stop: StopRequest        # ``stop.set(reason)``: stop after the current frame


class FrameObserver:
    """Sees a capture run: override the hooks you need (each default does nothing)."""

    def on_start(self, run: RunView) -> None:
        """Before the first frame; ``run.stop.set(reason)`` asks the run to stop after its frame."""

    def on_decision(self, frame: Frame, record: DecisionRecord) -> None:
        """A classified frame: ``frame.bgr`` the image, ``record`` the logged decision (calibrated
        probabilities ``record.probs``, ``record.margin`` top-2 margin, ``record.decision``)."""

    def on_refusal(self, frame: Frame, record: RefusalRecord) -> None:
        """A frame the quality guard refused (``record.reason``, ``record.verdict``): never classified."""

    def on_switch(self, old: BundleRuntime, new: BundleRuntime) -> None:
        """The bundle changed between two frames (the ``bundle_switch`` record is logged)."""

    def on_stop(self, summary: Summary) -> None:
        """After the last frame, before the summary record is written."""


class BundleSwitch:
    """Polled by the capture loop before each frame."""

    def maybe_switch(self) -> Optional[BundleRuntime]:
        """None, or the runtime to classify the next frame with. Called on the loop's thread
        between frames: must be cheap (a flag or queue check), the new runtime ready (opened,
        self-checked and ``warm_up()``-ed on the switch's own thread)."""
        return None

    def retired(self, old: BundleRuntime) -> None:
        """A runtime the run no longer uses: the one a switch replaced, and at the end of the run
        the one it ends with if this switch gave it. Default: closed (closing twice is harmless; the
        caller still closes the runtime it started the run with)."""
        old.close()


