"""What the device runtime classifies with: a verified bundle seen as ONNX variants, the
preprocessing spec, class names and an identity (the manifest's sha256) for the field log."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..preprocess import PreprocessSpec
from .backends import BackendUnavailable, Classifier, ModelFiles

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeModel:
    files: ModelFiles
    spec: PreprocessSpec
    class_names: tuple[str, ...]
    sha: str
    path: Path

    @classmethod
    def from_onnx(cls, onnx_path, spec: PreprocessSpec, class_names: Sequence[str]) -> "RuntimeModel":
        """A bare fp32 ONNX file (tests, benchmarks): identity is the file's sha256."""
        onnx_path = Path(onnx_path)
        sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
        return cls(ModelFiles({"fp32": onnx_path}, spec.img_size), spec, tuple(class_names), sha, onnx_path)


def _engine_opener(bundle) -> Optional[callable]:
    """A TensorRT opener over the deploy module, or None when tensorrt/the module is missing."""

    def open_engine(precision: str) -> Classifier:
        try:
            from .trt_classifier import TensorRTClassifier
        except ImportError as e:  # tensorrt / CUDA bindings not installed: ORT takes over
            raise BackendUnavailable(f"TensorRT is not importable ({e})") from None
        return TensorRTClassifier.from_bundle(bundle, precision)

    return open_engine


def load_model(path) -> RuntimeModel:
    """Open and verify a bundle folder or .tar (every sha256 checked) for the runtime."""
    from .bundle import MANIFEST_NAME, load_bundle, sha256_file

    bundle = load_bundle(path)
    onnx: dict[str, Path] = {}
    engine_precisions: list[str] = []
    for v in bundle.variants.values():
        if v.status == "rejected":
            log.info("variant %s rejected by the accuracy gate; not used", v.name)
            continue
        if v.path is not None and v.path.suffix == ".onnx":
            onnx.setdefault(v.precision, v.path)
        # Engines are built on the device from the fp32 ONNX (+ Q/DQ for int8) at any non-rejected precision.
        if v.precision not in engine_precisions and v.precision in ("fp16", "int8", "fp32"):
            engine_precisions.append(v.precision)
    default = bundle.default_variant
    default_precision = bundle.variants[default].precision if default in bundle.variants else "fp32"
    files = ModelFiles(onnx, bundle.preprocess.img_size, default_precision, _engine_opener(bundle),
                       tuple(engine_precisions))
    return RuntimeModel(files, bundle.preprocess, tuple(bundle.labels), sha256_file(bundle.root / MANIFEST_NAME),
                        Path(path))
