"""The fleet link as a capture run's observer (``capture/hooks.py``): every decision and refusal,
with its frame, goes to the ``FleetAgent``; the hooks only count, ask the sampling policy and hand
over, so the capture loop never waits on the network or on a JPEG."""

from __future__ import annotations

from ..capture.bundle_runtime import BundleRuntime
from ..capture.hooks import FrameObserver, RunView
from ..capture.records import DecisionRecord, RefusalRecord
from ..capture.sources import Frame
from .agent import FleetAgent


class FleetObserver(FrameObserver):
    def __init__(self, agent: FleetAgent):
        self.agent = agent

    def _bundle(self, runtime: BundleRuntime) -> None:
        clf = runtime.classifier
        used = [c for c in runtime.checks if (c.backend, c.precision) == (clf.backend, clf.precision)]
        status = used[-1].status if used else None
        self.agent.stats.set_bundle(runtime.sha, runtime.label or None, clf.backend, clf.precision,
                                    None if status is None else str(getattr(status, "value", status)))

    def on_start(self, run: RunView) -> None:
        self._bundle(run.runtime)

    def on_decision(self, frame: Frame, record: DecisionRecord) -> None:
        self.agent.on_record(record.to_dict(), frame.bgr, margin=record.margin)

    def on_refusal(self, frame: Frame, record: RefusalRecord) -> None:
        self.agent.on_record(record.to_dict(), frame.bgr)

    def on_switch(self, old: BundleRuntime, new: BundleRuntime) -> None:
        self._bundle(new)
