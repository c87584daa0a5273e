"""Inference backends behind one ``Classifier`` interface, chosen in the order of DESIGN.md:
TensorRT engine -> ONNX Runtime with a GPU provider -> ONNX Runtime on the CPU.

Every step down is a ``Fallback``: logged once per process at WARNING and returned to the caller,
which records it in the field log. ``backend=`` forces one backend; if it cannot open, that is a
``BackendError`` (no silent substitute). Never imports torch.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..core.errors import BackendError, ConfigError
from ..bundle import PRECISIONS

log = logging.getLogger(__name__)

BACKENDS = ("tensorrt", "ort-gpu", "ort-cpu")
ORT_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")

_announced: set[tuple[str, str]] = set()


class BackendUnavailable(Exception):
    """A backend cannot run here; the message says why (becomes a Fallback)."""


@dataclass(frozen=True)
class Fallback:
    backend: str
    reason: str

    def to_dict(self) -> dict:
        return {"backend": self.backend, "reason": self.reason}


class Classifier(ABC):
    """One preprocessed image (3, H, W) float32 in, class logits (C,) out."""

    backend: str
    precision: str
    detail: str = ""

    @abstractmethod
    def logits(self, chw: np.ndarray) -> np.ndarray: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def describe(self) -> str:
        return f"{self.backend} ({self.precision}{', ' + self.detail if self.detail else ''})"


@dataclass(frozen=True)
class ModelFiles:
    """What the backends need: ONNX files per precision (usable variants only), the input size,
    and, for TensorRT, an opener that returns a Classifier for a precision (or raises)."""

    onnx: dict[str, Path]
    img_size: int
    default_precision: str = "fp32"
    engine_opener: Optional[Callable[[str], "Classifier"]] = None
    engine_precisions: tuple[str, ...] = field(default=())
    # What ``--precision auto`` runs on ort-cpu: the bundle's default_variant when deploy measured
    # it fastest on ONNX Runtime CPU and it passed the gate, else fp32 (see runtime.model).
    cpu_precision: str = "fp32"

    def __post_init__(self) -> None:
        if "fp32" not in self.onnx:
            raise ConfigError(f"model has no fp32 ONNX (variants: {sorted(self.onnx)}); re-run deploy")


class OrtClassifier(Classifier):
    """ONNX Runtime session over one ONNX file; ``gpu`` asks for a CUDA/TensorRT provider."""

    def __init__(self, onnx_path, *, precision: str = "fp32", gpu: bool = False, threads: int = 0,
                 img_size: Optional[int] = None):
        import onnxruntime as ort

        available = ort.get_available_providers()
        if gpu:
            wanted = [p for p in ORT_GPU_PROVIDERS if p in available]
            if not wanted:
                raise BackendUnavailable(
                    f"onnxruntime {ort.__version__} has no GPU provider (available: {', '.join(available)}); "
                    "install the onnxruntime-gpu wheel for this JetPack")
            providers = wanted + ["CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        # Idle ORT workers spin by default; in the capture process they would take the CPU the
        # frame reader/grabber and fsync threads need between inferences (2-6 core devices).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._sess = ort.InferenceSession(str(onnx_path), opts, providers=providers)
        except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            if gpu:
                raise BackendUnavailable(f"onnxruntime GPU session failed: {e}") from e
            raise BackendError(f"{onnx_path}: onnxruntime cannot load it ({e}); re-run deploy") from e
        used = self._sess.get_providers()
        if gpu and used[0] not in ORT_GPU_PROVIDERS:
            # ORT quietly drops a provider whose CUDA libraries fail to load.
            raise BackendUnavailable(f"onnxruntime GPU provider did not initialise (session uses {used[0]})")
        inp = self._sess.get_inputs()[0]
        self._input = inp.name
        self._output = self._sess.get_outputs()[0].name
        self.input_shape = tuple(inp.shape)
        if img_size is not None and tuple(self.input_shape[-2:]) != (img_size, img_size):
            raise ConfigError(f"{onnx_path}: input {self.input_shape} does not match the preprocessing "
                              f"size {img_size}; the bundle is inconsistent, re-run deploy")
        self._dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.backend = "ort-gpu" if gpu else "ort-cpu"
        self.precision = precision
        self.detail = used[0]

    def logits(self, chw: np.ndarray) -> np.ndarray:
        x = chw[None] if chw.ndim == 3 else chw
        out = self._sess.run([self._output], {self._input: x.astype(self._dtype, copy=False)})[0]
        return np.asarray(out[0], dtype=np.float32)

    def close(self) -> None:
        self._sess = None


def _announce(fb: Fallback) -> None:
    key = (fb.backend, fb.reason)
    if key in _announced:
        return
    _announced.add(key)
    log.warning("FALLBACK: %s unavailable: %s", fb.backend, fb.reason)


def _pick_precision(files: ModelFiles, backend: str, precision: str) -> str:
    if backend == "tensorrt":
        # The engine opener knows which engines match this device; it says what is missing.
        if precision != "auto":
            return precision
        have = files.engine_precisions
        return files.default_precision if files.default_precision in have or not have else have[0]
    have = set(files.onnx)
    if precision != "auto":
        if precision not in have:
            raise BackendUnavailable(f"no usable {precision} variant for {backend} (have: {', '.join(sorted(have)) or 'none'})")
        return precision
    # fp16 ONNX only pays off on a GPU. On the CPU, fp32 unless deploy measured another variant
    # faster there (an ort-cpu-qdq INT8 is; a TensorRT-style Q/DQ INT8 is slower than fp32).
    if backend == "ort-gpu" and "fp16" in have:
        return "fp16"
    if backend == "ort-cpu" and files.cpu_precision in have:
        return files.cpu_precision
    return "fp32"


def open_backend(files: ModelFiles, backend: str, precision: str = "auto", threads: int = 0) -> Classifier:
    """Open one backend or raise BackendUnavailable saying why."""
    prec = _pick_precision(files, backend, precision)
    if backend == "tensorrt":
        if files.engine_opener is None:
            raise BackendUnavailable("no TensorRT engine support for this bundle")
        return files.engine_opener(prec)
    if backend in ("ort-gpu", "ort-cpu"):
        return OrtClassifier(files.onnx[prec], precision=prec, gpu=backend == "ort-gpu", threads=threads,
                             img_size=files.img_size)
    raise ConfigError(f"backend {backend!r} is unknown; choose one of auto, {', '.join(BACKENDS)}")


@dataclass
class Selection:
    classifier: Classifier
    fallbacks: list[Fallback]


def select_classifier(files: ModelFiles, backend: str = "auto", precision: str = "auto", threads: int = 0,
                      order: Sequence[str] = BACKENDS) -> Selection:
    """The first backend of ``order`` that opens (``backend='auto'``), or exactly ``backend``."""
    if precision != "auto" and precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is unknown; choose auto, {', '.join(PRECISIONS)}")
    if backend != "auto":
        try:
            return Selection(open_backend(files, backend, precision, threads), [])
        except BackendUnavailable as e:
            raise BackendError(f"--backend {backend} cannot run here: {e}") from e
    fallbacks: list[Fallback] = []
    for name in order:
        try:
            clf = open_backend(files, name, precision, threads)
        except BackendUnavailable as e:
            fb = Fallback(name, str(e))
            _announce(fb)
            fallbacks.append(fb)
            continue
        return Selection(clf, fallbacks)
    raise BackendError("no backend could run: " + "; ".join(f"{f.backend}: {f.reason}" for f in fallbacks))
