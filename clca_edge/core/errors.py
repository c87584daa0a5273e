"""Exceptions raised by the library and the ONE table of exit codes the CLI turns them into.

Library code raises; ``cli._common.reports_errors`` prints the message on one line and exits with
the error's ``exit_code``. The README's exit-code table is generated from ``EXIT_CODES`` (and a
test holds the two equal), so there is exactly one place that says what a code means.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    WEIGHTS = 3
    EXPORT = 4
    BACKEND = 5
    SOURCE = 6
    NO_INPUT = 7
    BUNDLE = 8
    ENGINE = 9
    DATA = 10
    OUTPUT = 11
    CHECKPOINT = 12
    TRAINING = 13
    SELF_CHECK = 14
    TRUST = 15
    GATE = 16


# What each code means, for the README table and ``clca-edge --help`` readers.
EXIT_CODES: dict[ExitCode, str] = {
    ExitCode.OK: "done (end of source, limit reached, or stopped by SIGINT/SIGTERM for capture)",
    ExitCode.FAILED: "a failure the message describes (`doctor`: something blocks `capture`)",
    ExitCode.BAD_INPUT: "bad arguments or values (click's message, or a one-line `Error:`)",
    ExitCode.WEIGHTS: "pretrained weights cannot be had (offline hub, missing or unreadable file)",
    ExitCode.EXPORT: "the exported ONNX graph is invalid or does not match PyTorch",
    ExitCode.BACKEND: "no inference backend can run, or the one forced with `--backend` cannot",
    ExitCode.SOURCE: "the source cannot be opened: missing file, bad URI, or a camera not open within `--open-timeout`",
    ExitCode.NO_INPUT: "nothing to classify (no match, or every image unreadable)",
    ExitCode.BUNDLE: "bundle missing, incomplete, of an unknown format or tampered with (hash mismatch)",
    ExitCode.ENGINE: "TensorRT is missing, or an engine cannot be built or run",
    ExitCode.DATA: "a data set is missing, unreadable, or would train or gate a meaningless model",
    ExitCode.OUTPUT: "an output path cannot be written or is not ours to replace",
    ExitCode.CHECKPOINT: "a checkpoint is missing, unreadable or does not match",
    ExitCode.TRAINING: "training failed (the loss diverged)",
    ExitCode.SELF_CHECK: ("a requested backend/precision (with `auto`: every one) failed the device self-check on "
                          "the bundle's reference samples (`doctor --bundle`: none passes)"),
    ExitCode.TRUST: ("a bundle's signature is missing or does not verify against the trusted keys, or a key file "
                     "is unreadable or not an Ed25519 key"),
    ExitCode.GATE: "`deploy`: the field gate (`--max-field-drop`) rejected the fp32 variant, so the bundle has nothing "
                   "the device may run (it is written, for inspection)",
}


README_BEGIN = "<!-- exit-codes: generated from clca_edge.core.errors.EXIT_CODES by scripts/exit_codes.py -->"
README_END = "<!-- /exit-codes -->"


def exit_code_table() -> str:
    """The README's exit-code table (Markdown), generated from ``EXIT_CODES``: every command uses it."""
    missing = [c.name for c in ExitCode if c not in EXIT_CODES]
    if missing:
        raise AssertionError(f"EXIT_CODES does not describe {missing}")
    rows = ["| code | name | meaning |", "|---|---|---|"]
    rows += [f"| {int(c)} | `{c.name}` | {EXIT_CODES[c]} |" for c in sorted(ExitCode)]
    return "\n".join(rows) + "\n"


class ClcaEdgeError(Exception):
    """Base class of every error the CLI reports without a traceback."""

    exit_code: int = ExitCode.FAILED


class ConfigError(ClcaEdgeError, ValueError):
    """A configuration value is invalid; the message names the value and the allowed range."""

    exit_code = ExitCode.BAD_INPUT


class PretrainedWeightsError(ClcaEdgeError):
    """Pretrained weights could not be obtained (offline hub, missing or unreadable file)."""

    exit_code = ExitCode.WEIGHTS


class ExportError(ClcaEdgeError):
    """An exported graph is invalid or does not match PyTorch."""

    exit_code = ExitCode.EXPORT


class BackendError(ClcaEdgeError):
    """No inference backend could be opened (or the one forced with --backend is unavailable)."""

    exit_code = ExitCode.BACKEND


class SourceError(ClcaEdgeError):
    """A frame source could not be opened at start (missing file, no such camera, bad URI)."""

    exit_code = ExitCode.SOURCE


class NoInputError(ClcaEdgeError):
    """Nothing to classify: no path matched, or every image was unreadable."""

    exit_code = ExitCode.NO_INPUT


class BundleError(ClcaEdgeError):
    """The bundle cannot be used: missing, unreadable, incomplete, of an unknown format or tampered with."""

    exit_code = ExitCode.BUNDLE


class EngineError(ClcaEdgeError):
    """TensorRT is missing, the ONNX does not parse, or the engine cannot be built or run."""

    exit_code = ExitCode.ENGINE


class DataError(ClcaEdgeError):
    """Training, calibration or evaluation images are missing, too few, or would make a meaningless model."""

    exit_code = ExitCode.DATA


class OutputError(ClcaEdgeError):
    """An output path cannot be written, or exists and is not something clca-edge may replace."""

    exit_code = ExitCode.OUTPUT


class CheckpointError(ClcaEdgeError):
    """A checkpoint is missing, unreadable, or does not match what is asked of it."""

    exit_code = ExitCode.CHECKPOINT


class TrainingError(ClcaEdgeError):
    """Training cannot go on (e.g. the loss diverged)."""

    exit_code = ExitCode.TRAINING


class SelfCheckError(ClcaEdgeError):
    """A requested backend/precision (or every candidate) failed the device self-check: on this
    device it does not reproduce the fp32 logits deploy stored for the bundle's reference samples."""

    exit_code = ExitCode.SELF_CHECK


class TrustError(ClcaEdgeError):
    """A bundle is unsigned, signed by an untrusted key, or changed after signing, while the device
    requires signatures (--trusted-keys); or a signing/trusted key file cannot be used."""

    exit_code = ExitCode.TRUST


class GateError(ClcaEdgeError):
    """A deploy gate rejected every variant the device could run (the bundle is kept for inspection)."""

    exit_code = ExitCode.GATE


__all__ = ["FleetLinkError", "GateError", "README_BEGIN", "README_END", "exit_code_table", "BackendError", "BundleError", "CheckpointError", "ClcaEdgeError", "ConfigError", "DataError",
           "EXIT_CODES", "EngineError", "ExitCode", "ExportError", "NoInputError", "OutputError",
           "PretrainedWeightsError", "SelfCheckError", "SourceError", "TrainingError", "TrustError"]


class FleetLinkError(ClcaEdgeError):
    """The fleet link could not do what was asked in time (records still pending, a broker never reached)."""

    exit_code = ExitCode.FAILED
