"""The deployment commands' options as option groups (``cli/options.OptionGroup``). ``deploy``: the
accuracy gate's options build a ``GateRule``, the calibration options a ``CalibrationConfig``, and
those two with the rest one ``DeployConfig``, the only thing the command receives. ``build-engine``:
a ``BuildEngineConfig`` (and ``--json``). The options' names are the configs' fields where they mean
the same, so the builders hand them over unchanged and the configs' own checks are the validation.
Builders import lazily (no torch at ``--help``)."""

from __future__ import annotations

from pathlib import Path

import click

from ..bundle import PRECISIONS
from .options import OptionGroup, cache_dir_option
from .trust_cmds import load_trusted, trusted_keys_option


def _gate_rule(max_drop, gate_alpha, min_agreement):
    from ..core.gate_stats import GateRule

    return GateRule(alpha=gate_alpha, min_agreement=min_agreement, max_drop=max_drop)


gate_options = OptionGroup("gate", [
    click.option("--max-drop", default=None, type=click.FloatRange(min=0),
                 help="Also reject a variant whose top-1 drop against fp32 is above this many points, significant or "
                      "not [default: only the paired test and --min-agreement]."),
    click.option("--gate-alpha", default=0.05, show_default=True,
                 type=click.FloatRange(0, 1, min_open=True, max_open=True),
                 help="Reject a variant whose drop against fp32 is significant at this level (one-sided exact "
                      "McNemar test on the eval images only one of them gets right)."),
    click.option("--min-agreement", default=90.0, show_default=True, type=click.FloatRange(0, 100),
                 help="Reject a variant whose top-1 class is fp32's on fewer than this percent of the eval images."),
], _gate_rule)


def _calibration_config(calib_images, calib_method, seed):
    from ..deploy.calibration import DEFAULT_CALIB_IMAGES, CalibrationConfig

    # No --calib-images: the default is an upper bound (a smaller data set calibrates on all it has).
    return CalibrationConfig(num_images=calib_images or DEFAULT_CALIB_IMAGES, method=calib_method, seed=seed,
                             at_most=calib_images is None)


calibration_options = OptionGroup("calibration", [
    click.option("--calib-images", default=None, type=click.IntRange(min=1),
                 help="Calibration images [default: 256, or all usable ones when --calib-data has fewer]."),
    click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
                 show_default=True),
    click.option("--seed", default=0, show_default=True, type=int, help="Seed of the calibration sample."),
], _calibration_config)


def parse_precisions(precision: str) -> tuple[str, ...]:
    """``--precision int8,fp16``: the variants, in order, each once; fp32 (the reference) always."""
    precisions = tuple(dict.fromkeys(p.strip() for p in precision.split(",") if p.strip()))
    return precisions if "fp32" in precisions else precisions + ("fp32",)


def _deploy_config(precision, no_engines, **fields):
    """``fields``: the options named as DeployConfig's fields (the gate and calibration built above)."""
    from ..deploy.config import DeployConfig

    return DeployConfig(precisions=parse_precisions(precision), build_engines=False if no_engines else None, **fields)


deploy_options = OptionGroup("config", [
    click.option("--checkpoint", required=True, type=click.Path(path_type=Path), help="Checkpoint file or run folder."),
    click.option("--target", type=click.Choice(["jetson-orin", "cpu"]), default="jetson-orin", show_default=True),
    click.option("--out", required=True, type=click.Path(path_type=Path), help="Bundle folder to create."),
    click.option("--calib-data", required=True, type=click.Path(path_type=Path),
                 help="Calibration images, DIR/<class>/<image> or a split file such as RUN/split/train.csv "
                      "(training images, never the eval ones)."),
    click.option("--eval-data", required=True, type=click.Path(path_type=Path),
                 help="Held-out images for the accuracy gate: DIR/<class>/<image>, or a split file such as a "
                      "--val-split run's RUN/split/val.csv."),
    click.option("--precision", default="int8,fp16,fp32", show_default=True,
                 help="Comma-separated variants to build; fp32 is always built as the reference."),
    gate_options,
    calibration_options,
    click.option("--workspace-mb", default=1024, show_default=True, type=click.IntRange(min=1)),
    click.option("--tar", is_flag=True, help="Also pack the bundle as OUT.tar (verified after packing)."),
    click.option("--force", is_flag=True, help="Replace an existing bundle at --out."),
    click.option("--no-engines", is_flag=True, help="Do not build TensorRT engines even if TensorRT is here."),
    click.option("--sign-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="Sign the bundle with this Ed25519 private key (clca-edge keygen): devices with "
                      "--trusted-keys then refuse any other or changed bundle."),
    click.option("--field-suite", type=click.Choice(["full", "quick", "off"]), default="full", show_default=True,
                 help="Field robustness suite on --eval-data per variant, recorded in the manifest: full (11 "
                      "perturbations x 3 severities), quick (severity 2 only), off."),
    click.option("--max-field-drop", type=click.FloatRange(min=0), default=None,
                 help="Reject a variant whose worst field perturbation drops more top-1 points than this "
                      "(default: record only). Noise is seeded by --seed."),
], _deploy_config)


def _build_engine_config(trusted_keys, **fields):
    """``fields``: the options named as BuildEngineConfig's fields."""
    from ..engines.build import BuildEngineConfig

    return BuildEngineConfig(trusted_keys=load_trusted(trusted_keys), **fields)


build_engine_options = OptionGroup("config", [
    click.option("--bundle", required=True, type=click.Path(path_type=Path),
                 help="Bundle folder, or .tar (extracted once to NAME.tar.d/ next to it). It is only read: the "
                      "engines go to this device's cache folder (--cache-dir)."),
    click.option("--precision", type=click.Choice([*PRECISIONS, "auto"]), default="auto", show_default=True,
                 help="auto builds fp16 and int8, times both and records the faster passing one as default."),
    click.option("--workspace-mb", default=1024, show_default=True, type=click.IntRange(min=1)),
    click.option("--eval-data", type=click.Path(path_type=Path), default=None,
                 help="Held-out images to check the engines against the accuracy gate on the device."),
    click.option("--max-drop", type=click.FloatRange(min=0), default=None,
                 help="Also reject an engine whose top-1 drop against the fp32 ONNX is above this many points "
                      "[default: deploy's]; the paired test and agreement bound are deploy's."),
    click.option("--builder", type=click.Choice(["tensorrt", "torch-tensorrt"]), default="tensorrt",
                 show_default=True),
    click.option("--checkpoint", type=click.Path(path_type=Path), default=None, help="For --builder torch-tensorrt."),
    trusted_keys_option,
    cache_dir_option,
    click.option("--json", "as_json", is_flag=True,
                 help="Print one JSON object: where the engines went (engine_dir, each engine's path) and their "
                      "records."),
], _build_engine_config, passes=("as_json",))
