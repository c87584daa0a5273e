"""The one shape of the device's senders (the field log's uploader, the rollout agent's events): a
daemon thread that sends what an outbox holds, woken early by ``notify()``, that says when it found
nothing left (``_idle``), and whose ``stop`` leaves what is not acknowledged pending in the outbox."""

from __future__ import annotations

import threading
from typing import Optional


class SenderThread:
    THREAD_NAME = "fleet-sender"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._idle = threading.Event()     # set when a pass found nothing left to send
        self._thread: Optional[threading.Thread] = None

    def notify(self) -> None:
        """Something new is in the outbox: look sooner than the next poll."""
        self._idle.clear()
        self._wake.set()

    def _run(self) -> None:
        raise NotImplementedError

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.THREAD_NAME, daemon=True)
        self._thread.start()

    def _stop_thread(self, timeout_s: float) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None


__all__ = ["SenderThread"]
