"""Stopping a capture run cleanly: a request any thread (a signal handler, an observer) may set;
the run finishes its frame, logs and summarises."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator, Optional


class StopRequest:
    """Asks the capture run to stop after its current frame, saying why (the summary's
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
    """SIGINT/SIGTERM set ``stop`` with the signal's name as the reason (the run finishes its
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
