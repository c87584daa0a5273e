"""Saying a message once: each owner (a backend selection, a self-checker, a capture run) holds its
own ``LogOnce``, so what it has said lives and dies with it (no module-level set that a second
run, or a test, would have to reset)."""

from __future__ import annotations

import logging
from typing import Any, Hashable


class LogOnce:
    """``log(level, key, msg, *args)`` logs the first time ``key`` is seen by this owner, and says
    whether it did."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self._seen: set = set()

    def first(self, key: Hashable) -> bool:
        """True the first time ``key`` is seen (and records it)."""
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    def log(self, level: int, key: Hashable, msg: str, *args: Any, exc_info: bool = False) -> bool:
        if not self.first(key):
            return False
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(self, key: Hashable, msg: str, *args: Any) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def info(self, key: Hashable, msg: str, *args: Any) -> bool:
        return self.log(logging.INFO, key, msg, *args)
