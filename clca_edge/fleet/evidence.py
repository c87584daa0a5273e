"""Capture's field log read as it grows, for the probation: only what was appended since the last
look (JSON lines from a byte offset; a SQLite log from a row count). A partial last line (capture
is writing it) waits for the next look. Torch-free."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List

from ..capture.fieldlog import detect_format, read_log

log = logging.getLogger(__name__)


class LogTail:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0    # bytes of a JSON-lines log read so far
        self.rows = 0      # records of a SQLite log read so far

    def read_new(self) -> List[Dict[str, Any]]:
        fmt = detect_format(self.path)
        if fmt is None:
            return []
        if fmt == "sqlite":
            records = list(read_log(self.path, "sqlite"))
            new, self.rows = records[self.rows:], len(records)
            return new
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
        out = []
        for line in data[:end].splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out


__all__ = ["LogTail"]
