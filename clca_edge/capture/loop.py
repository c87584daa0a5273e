"""``run_capture``: one capture run in one call (the quick start's and the ``capture`` command's
entry point). The run itself is ``capture/run.py:CaptureRun``; use it directly for a bundle switch."""

from __future__ import annotations

from typing import Optional, Sequence

from ..runtime.backends import Classifier, Fallback, Selection
from ..runtime.model import RuntimeModel
from .config import CaptureConfig
from .fieldlog import FieldLog
from .frames import FrameSaver
from .bundle_runtime import BundleRuntime
from .hooks import BundleSwitch, FrameObserver
from .records import Summary
from .run import CaptureRun
from .stop import StopRequest
from .sources import FrameSource


def run_capture(model: RuntimeModel, classifier: Classifier, source: FrameSource, flog: FieldLog,
                config: CaptureConfig = CaptureConfig(), saver: Optional[FrameSaver] = None,
                fallbacks: Sequence[Fallback] = (), stop: Optional[StopRequest] = None,
                observers: Sequence[FrameObserver] = (), checks: Sequence = (),
                switch: Optional[BundleSwitch] = None) -> Summary:
    """Run until the source ends, a limit is reached or ``stop`` is set; returns the summary.
    ``fallbacks`` and ``checks`` (``Selection``): how the classifier was chosen, logged at the start.
    The caller closes ``classifier``; runtimes a ``switch`` gives go back to it (``retired``)."""
    runtime = BundleRuntime.create(model, Selection(classifier, list(fallbacks), list(checks)), config.quality)
    return CaptureRun(runtime, source, flog, config, saver=saver, stop=stop, observers=observers,
                      switch=switch).run()
