"""Capture's field log read as it grows, for the probation: only what was appended since the last
look (JSON lines from a byte offset; a SQLite log after the last row id read). A partial last line (capture
is writing it) waits for the next look. Torch-free."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any, Dict, Iterable, List

from ..capture.fieldlog import detect_format, json_object

log = logging.getLogger(__name__)


class LogTail:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0    # bytes of a JSON-lines log read so far
        self.rows = 0      # the last row id of a SQLite log read so far
        self._file = (0, 0)   # (st_dev, st_ino) of the SQLite log read

    def read_new(self) -> List[Dict[str, Any]]:
        fmt = detect_format(self.path)
        if fmt is None:
            return []
        if fmt == "sqlite":
            return self._read_sqlite()
        try:
            size = self.path.stat().st_size
            if size < self.offset:   # replaced by a new log: start over
                self.offset = 0
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError as e:
            log.warning("cannot read the field log %s (%s); probation waits", self.path, e.strerror)
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        return _records(data[:end].splitlines())

    def _read_sqlite(self) -> List[Dict[str, Any]]:
        """The rows after the last one read (by row id: the log is read once, not at every look)."""
        try:
            st = self.path.stat()
            if (st.st_dev, st.st_ino) != self._file:
                self._file, self.rows = (st.st_dev, st.st_ino), 0   # a new log (or the first look): from its start
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                if self.rows and not db.execute("SELECT 1 FROM records WHERE id = ?", (self.rows,)).fetchone():
                    self.rows = 0     # rewritten in place: start over
                rows = db.execute("SELECT id, record FROM records WHERE id > ? ORDER BY id", (self.rows,)).fetchall()
            finally:
                db.close()
        except (sqlite3.Error, OSError) as e:
            log.warning("cannot read the field log %s (%s); probation waits", self.path, e)
            return []
        if rows:
            self.rows = rows[-1][0]
        return _records(text for _, text in rows)


def _records(texts: Iterable) -> List[Dict[str, Any]]:
    """The JSON objects among ``texts`` (a line torn or mangled is no record: skipped)."""
    return [rec for rec in map(json_object, texts) if rec is not None]


__all__ = ["LogTail"]
