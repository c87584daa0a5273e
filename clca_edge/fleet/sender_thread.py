"""The one shape of the device's senders (the field log's uploader, the rollout agent's events): a
daemon thread that, while the link is up, makes passes over an outbox (``_pass``: True while there
is more to send), is woken early by ``notify()``, says when a pass found nothing left (``_idle``),
applies the centre's resend requests between two passes, and whose ``stop`` leaves what is not
acknowledged pending in the outbox."""

from __future__ import annotations

import logging
import threading
from typing import Hashable, Optional

log = logging.getLogger(__name__)

POLL_S = 0.5          # how often an idle sender looks at its outbox again (notify() wakes it sooner)
MAX_BACKOFF_S = 30.0  # longest wait after repeated failed passes


class SenderThread:
    THREAD_NAME = "fleet-sender"
    LINGER_S = 0.0    # once woken from idle, let more gather this long before the next pass

    def __init__(self) -> None:
        self.link = None                   # the MqttLink (set by the subclass)
        self.rewinds = 0
        self.failures = 0                  # passes that raised (logged, backed off, retried)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._idle = threading.Event()     # set when a pass found nothing left to send
        self._thread: Optional[threading.Thread] = None
        self._rewind_lock = threading.Lock()
        self._rewind_to: Optional[int] = None
        self._rewound: set = set()         # requests applied in this run (a retained one comes on every connect)

    def notify(self) -> None:
        """Something new is in the outbox: look sooner than the next poll."""
        self._idle.clear()
        self._wake.set()

    # -- the centre's resend requests (noted on any thread, applied on the sender's) --------------
    def _request_rewind(self, seq: int) -> None:
        with self._rewind_lock:
            self._rewind_to = seq if self._rewind_to is None else min(self._rewind_to, seq)
        self.notify()

    def _take_rewind(self, scope: Hashable) -> Optional[int]:
        """The seq to send again from, once per (scope, seq) in a run (None: nothing asked)."""
        with self._rewind_lock:
            seq, self._rewind_to = self._rewind_to, None
        if seq is None or (scope, seq) in self._rewound:
            return None
        self._rewound.add((scope, seq))
        return seq

    def _apply_rewind(self) -> None:
        """Subclasses move their outbox's cursor back here."""

    # -- the thread -------------------------------------------------------------------------------
    def _pass(self) -> bool:
        raise NotImplementedError

    def _failed(self, error: Exception, failures: int) -> None:
        """Log a failed pass: in full (with its traceback) the first time, a line each later time."""
        self.failures += 1
        if failures == 1:
            log.warning("%s: %s: %s; backing off and retrying", self.THREAD_NAME, type(error).__name__, error,
                        exc_info=not isinstance(error, OSError))
        else:
            log.debug("%s: still failing (%d): %s", self.THREAD_NAME, failures, error)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if not self.link.connected.wait(POLL_S):
                continue
            try:
                self._apply_rewind()
                busy = self._pass()
            except Exception as e:   # noqa: BLE001 - the thread must outlive anything one pass meets
                # An outbox that cannot be read right now, a broken SQLite row, a full disk writing
                # the cursor: back off and try again; the thread never dies silently.
                failures += 1
                self._failed(e, failures)
                busy = False
                self._stop.wait(min(POLL_S * 2 ** min(failures, 6), MAX_BACKOFF_S))
            else:
                failures = 0
            if not busy:
                self._idle.set()
                woken = self._wake.wait(POLL_S)
                self._wake.clear()
                if woken and self.LINGER_S:
                    self._stop.wait(self.LINGER_S)

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.THREAD_NAME, daemon=True)
        self._thread.start()

    def _stop_thread(self, timeout_s: float) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None


__all__ = ["MAX_BACKOFF_S", "POLL_S", "SenderThread"]
