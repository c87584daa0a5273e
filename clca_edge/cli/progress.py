"""Progress a person can follow, on stderr (stdout stays for results and --json): one line per
stage of a long command (calibrating, exporting, gating...) and, where a stage knows its count
(images), a bar. On a terminal it is a live rich display; off a terminal (a log file, CI) each
stage is one plain line with the seconds since the start, so the log shows where the time went.

Library code reports through a plain ``say(message)`` callable; ``StageProgress`` is one, and
also offers ``expect(n)`` / ``advance()`` for the stage's items, which a library may use when
present (``getattr(say, "advance", None)``).
"""

from __future__ import annotations

import time
from typing import Any, Optional


class StageProgress:
    def __init__(self, console: Any) -> None:
        self.console = console
        self._t0 = time.monotonic()
        self._progress = None
        self._task: Optional[int] = None
        if console.is_terminal:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                       TimeElapsedColumn)

            self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(), console=console)

    def __enter__(self) -> "StageProgress":
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._finish_task()
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, message: str) -> None:
        """A new stage begins (the previous one is done)."""
        self._finish_task()
        if self._progress is not None:
            self._task = self._progress.add_task(message, total=None)
        else:
            self.console.print(f"[{time.monotonic() - self._t0:6.1f} s] {message}", highlight=False, markup=False)

    def expect(self, total: int) -> None:
        """The current stage has ``total`` items (images): a bar on a terminal."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=total)

    def advance(self, n: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)

    def _finish_task(self) -> None:
        if self._progress is None or self._task is None:
            return
        task = next(t for t in self._progress.tasks if t.id == self._task)
        total = task.total if task.total is not None else max(task.completed, 1)
        self._progress.update(self._task, total=total, completed=total)
        self._task = None


__all__ = ["StageProgress"]
