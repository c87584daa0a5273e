"""Waiting in tests for something another thread or process does, bounded in time."""

from __future__ import annotations

import time
from typing import Callable


def wait_for(pred: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Return once ``pred()`` holds; fail the test after ``timeout`` seconds, naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
