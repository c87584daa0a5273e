"""``deploy``: checkpoint -> verified bundle of fp32 / INT8 (Q/DQ) / fp16 ONNX variants, each
checked against the accuracy gate, plus what the device needs to build its TensorRT engines.

Everything is written to a temporary folder next to ``--out`` and renamed into place at the end,
so a failure never leaves a half-written bundle.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..bundle import Manifest, Status, VariantRecord, load_bundle
from ..core.output_paths import replace_dir
from . import build_steps, gate_steps, quality_step, write_steps
from .config import DeployConfig
from .run_state import DeployRun

log = logging.getLogger(__name__)

# Where the bundle goes and what --force may replace: deploy/output.py (re-exported for callers).
from .output import BundleExistsError, check_out, pack_tar, tar_path, temp_bundle_dir  # noqa: E402,F401

# Deploy, step by step: each is ``step(run: DeployRun) -> None`` and sets its results on ``run``
# (the variants' manifest records first of all). A new step goes in the module of its stage
# (build_steps, gate_steps, quality_step, write_steps) and here at its place.
STEPS: tuple[Callable[[DeployRun], None], ...] = (
    build_steps.check_preprocessing,
    build_steps.export_fp32,
    build_steps.sample_calibration_images,
    build_steps.quantise_int8,
    build_steps.convert_fp16,
    build_steps.open_runners,  # parity with torch is measured by the gate's pass
    gate_steps.evaluate_variants,
    quality_step.measure_quality_reference,
    gate_steps.gate_accuracy,
    gate_steps.field_suite,
    write_steps.plan_engines,
    write_steps.choose_default,
    write_steps.store_reference,
    write_steps.write_files,
    write_steps.write_bundle_manifest,
)


@dataclass(frozen=True)
class VariantView:
    """One variant as the report shows it: a read-only view of its manifest record (no state of its own)."""

    name: str
    record: VariantRecord

    @property
    def status(self) -> Status:
        return self.record.status

    @property
    def top1(self) -> Optional[float]:
        return self.record.accuracy.top1 if self.record.accuracy is not None else None

    @property
    def drop(self) -> Optional[float]:
        return self.record.drop

    @property
    def worst(self) -> list[tuple[str, float]]:
        return [(w.class_name, w.drop) for w in self.record.worst_classes or []]

    @property
    def note(self) -> str:
        return self.record.note or ""

    @property
    def robustness(self):
        """bundle.robustness.FieldRobustness on the gate's images (None: suite off, or not run here)."""
        return self.record.field_robustness

    @property
    def field_rejected(self) -> bool:
        return self.record.rejected_by == "field gate"


@dataclass
class DeployReport:
    bundle: Path
    tar: Optional[Path]
    run: DeployRun
    engines: Any = None
    signed_by: Optional[str] = None  # key id of --sign-key

    @property
    def manifest(self) -> Manifest:
        """The bundle's manifest as written (the same records the steps set)."""
        return self.run.manifest

    @property
    def variants(self) -> list[VariantView]:
        return [VariantView(n, v) for n, v in self.manifest.variants.items()]

    @property
    def default_variant(self) -> Optional[str]:
        return self.manifest.default_variant

    @property
    def parity(self) -> dict[str, float]:
        return self.run.evaluation.result.parity

    @property
    def eval_images(self) -> int:
        return self.run.evaluation.result.accuracy["fp32"].count

    @property
    def eval_skipped(self) -> int:
        return len(self.run.evaluation.result.skipped)

    @property
    def calib_images(self) -> int:
        return self.manifest.calibration.images if self.manifest.calibration else 0

    @property
    def calib_excluded(self) -> int:
        return self.manifest.calibration.excluded_also_in_eval if self.manifest.calibration else 0

    @property
    def detectable_drop(self) -> Optional[float]:
        """The smallest top-1 drop (points) the eval images can show as significant (None: none can)."""
        from ..core.gate_stats import detectable_drop

        return detectable_drop(self.eval_images, self.run.config.gate.alpha)

    @property
    def confidence(self):
        """core.confidence.ConfidenceCalibration (temperature, ECE before/after)."""
        return self.manifest.confidence

    @property
    def quality_reference(self):
        """core.image_stats.QualityReference of the training images."""
        return self.manifest.quality_reference

    @property
    def reference(self):
        """bundle.selfcheck_samples.SelfCheckSamples: the device self-check's samples."""
        return self.manifest.reference

    @property
    def rejected(self) -> list[VariantView]:
        return [v for v in self.variants if v.status == Status.REJECTED]

    @property
    def failed(self) -> list[VariantView]:
        """Variants ONNX Runtime could not load here: recorded as failed to run, never used."""
        return [v for v in self.variants if v.status == Status.FAILED_TO_RUN]


def _tensorrt_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


def run_deploy(config: DeployConfig, progress: Optional[Callable[[str], None]] = None) -> DeployReport:
    """Build, gate and write the bundle. ``progress(message)`` hears each stage; if it also has
    ``expect(n)``/``advance()`` (cli.progress.StageProgress), it hears the images of the calibration
    and gate stages too."""
    say = progress or (lambda msg: log.info(msg))
    _check_before_work(config)
    report = _build_in_place(config, say)
    _verify_and_pack(config, report)
    report.engines = _engines_here(config, report.bundle, say)
    return report


def _check_before_work(config: DeployConfig) -> None:
    """A refused --out or a bad --sign-key is one line now, not after minutes of work (and nothing
    at --out is touched)."""
    check_out(Path(config.out), config.force, config.tar, Path(config.checkpoint), config.calib_data,
              config.eval_data)
    if config.sign_key is not None:
        from ..bundle.signature import load_private_key

        load_private_key(config.sign_key)


def _build_in_place(config: DeployConfig, say) -> DeployReport:
    """Every step into a temporary folder beside --out, signed, then renamed into place: a failure
    never leaves a half-written bundle."""
    from ..data.cache import checkpoint_cache
    from ..training.checkpoint import find_checkpoint, load_checkpoint

    ckpt = find_checkpoint(config.checkpoint)
    say(f"loading {ckpt}")
    model, meta = load_checkpoint(ckpt)
    data = _eval_set(config.eval_data, list(meta.class_names))
    # The gate reads images the training run decoded (its disk cache) rather than decoding them again.
    data.images = checkpoint_cache(ckpt, meta)
    tmp = temp_bundle_dir(Path(config.out))
    try:
        run = DeployRun(config=config, root=tmp, model=model, meta=meta, checkpoint=ckpt, data=data, say=say)
        for step in STEPS:
            step(run)
        report = DeployReport(bundle=Path(config.out), tar=None, run=run)
        if config.sign_key is not None:
            from ..bundle.signature import sign_bundle

            report.signed_by = sign_bundle(tmp, config.sign_key).key_id
        replace_dir(tmp, Path(config.out))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _verify_and_pack(config: DeployConfig, report: DeployReport) -> None:
    """Read back what was written (every hash, and the signature), and the archive once packed."""
    load_bundle(report.bundle, trusted_keys=_own_key(config))
    if config.tar:
        report.tar = pack_tar(report.bundle, tar_path(Path(config.out)))
        with tempfile.TemporaryDirectory(prefix="clca-verify-") as d:
            load_bundle(report.tar, extract_to=d, trusted_keys=_own_key(config))


def _engines_here(config: DeployConfig, bundle: Path, say):
    """On a machine with TensorRT (jetson-orin target), build-engine right away (engines.report's
    BuildEngineReport); None when not asked or not possible here."""
    want = config.build_engines
    if want is None:
        want = config.target == "jetson-orin" and _tensorrt_available()
    if not want:
        return None
    precision = engine_precision(config.precisions)
    if precision is None:
        say("TensorRT found, but no fp16/int8 variant requested: no engine to build")
        return None
    from ..engines.build import BuildEngineConfig, build_engines

    say("TensorRT found: building engines on this machine")
    # The bundle's own engines: recorded in the bundle just written (after its signature and .tar,
    # under the manifest's unsigned engine keys), where the device finds them; build-engine on a device
    # writes its own into that device's cache instead.
    return build_engines(BuildEngineConfig(bundle=bundle, precision=precision, workspace_mb=config.workspace_mb,
                                           eval_data=config.eval_data, max_drop=config.gate.max_drop,
                                           into_bundle=True))


def _eval_set(path: Path, classes: list[str]):
    """--eval-data: a folder of class folders, or a split file (a --val-split run's RUN/split/val.csv,
    so a run can be deployed against its own hold-out)."""
    from ..runtime.scoring import EvalSet, eval_set

    if not Path(path).is_file():
        return eval_set(path, classes)
    from ..data.sources import split_file_samples

    samples, root = split_file_samples(path, classes)
    return EvalSet(root=root, class_names=list(classes), items=[(Path(p), label) for p, label in samples])


def engine_precision(precisions: tuple[str, ...]) -> Optional[str]:
    """The build-engine ``--precision`` covering exactly the requested engine precisions (TensorRT
    plans exist for fp16 and int8; an fp32-only deploy builds none)."""
    wanted = [p for p in ("fp16", "int8") if p in precisions]
    if not wanted:
        return None
    return "auto" if len(wanted) == 2 else wanted[0]


def _own_key(config: DeployConfig):
    """The public half of --sign-key as the one trusted key: deploy checks its own signature."""
    if config.sign_key is None:
        return None
    from ..bundle.signature import TrustedKeys, key_id, load_private_key

    pub = load_private_key(config.sign_key).public_key()
    return TrustedKeys(Path(config.sign_key), {key_id(pub): pub})
