"""Errors of the device runtime; each carries the exit code documented in the README."""

from ..errors import ClcaEdgeError


class BackendError(ClcaEdgeError):
    """No inference backend could be opened (or the one forced with --backend is unavailable)."""

    exit_code = 5


class SourceError(ClcaEdgeError):
    """A frame source could not be opened at start (missing file, no such camera, bad URI)."""

    exit_code = 6


class NoInputError(ClcaEdgeError):
    """Nothing to classify: no path matched, or every image was unreadable."""

    exit_code = 7
