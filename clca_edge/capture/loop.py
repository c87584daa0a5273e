"""``run_capture``: one capture run in one call (the quick start's and the ``capture`` command's
entry point). The run itself is ``capture/run.py:CaptureRun``; use it directly to keep the run
object (``run.runtime`` after a bundle switch, ``add_observer``)."""

from __future__ import annotations

from typing import Optional, Sequence

from .config import CaptureConfig
from .fieldlog import FieldLog
from .frames import FrameSaver
from .bundle_runtime import BundleRuntime
from .hooks import BundleSwitch, FrameObserver
from .records import Summary
from .run import CaptureRun
from .stop import StopRequest
from .sources import FrameSource


def run_capture(runtime: BundleRuntime, source: FrameSource, flog: FieldLog, config: CaptureConfig = CaptureConfig(),
                saver: Optional[FrameSaver] = None, stop: Optional[StopRequest] = None,
                observers: Sequence[FrameObserver] = (), switch: Optional[BundleSwitch] = None) -> Summary:
    """Run until the source ends, a limit is reached or ``stop`` is set; returns the summary.
    The caller closes ``runtime``; runtimes a ``switch`` gives go back to it (``retired``)."""
    return CaptureRun(runtime, source, flog, config, saver=saver, stop=stop, observers=observers,
                      switch=switch).run()
