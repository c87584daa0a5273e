"""Exceptions raised by the library; the CLI turns them into one-line messages and exit codes."""


class ClcaEdgeError(Exception):
    """Base class of every error the CLI reports without a traceback."""

    exit_code = 1


class ConfigError(ClcaEdgeError, ValueError):
    """A configuration value is invalid; the message names the value and the allowed range."""

    exit_code = 2


class PretrainedWeightsError(ClcaEdgeError):
    """Pretrained weights could not be obtained (offline hub, missing or unreadable file)."""

    exit_code = 3


class ExportError(ClcaEdgeError):
    """An exported graph is invalid or does not match PyTorch."""

    exit_code = 4
