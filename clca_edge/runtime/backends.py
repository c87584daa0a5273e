"""Inference backends behind one ``Classifier`` interface, chosen in the design's order:
TensorRT engine -> ONNX Runtime with a GPU provider -> ONNX Runtime on the CPU.

Every step down is a ``Fallback``: said once per opened bundle (at WARNING, or through the caller's
``on_fallback``) and returned to the caller, which records it in the field log. ``backend=`` forces one backend; if it cannot open, that is a
``BackendError`` (no silent substitute). Never imports torch.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..core.errors import BackendError, ConfigError
from ..core.logonce import LogOnce
from ..bundle import PRECISIONS, Status
from .sessions import CPU_PROVIDER, GPU_PROVIDERS, open_session

log = logging.getLogger(__name__)

BACKENDS = ("tensorrt", "ort-gpu", "ort-cpu")


class BackendUnavailable(Exception):
    """A backend cannot run here; the message says why (becomes a Fallback)."""


@dataclass(frozen=True)
class Fallback:
    backend: str
    reason: str
    # The bundle was not built for this backend (a cpu-target bundle has no TensorRT engine to
    # expect, nor a GPU): recorded, said only under -v, never as a warning.
    expected: bool = False

    def to_dict(self) -> dict:
        d = {"backend": self.backend, "reason": self.reason}
        if self.expected:
            d["expected"] = True
        return d


class Classifier(ABC):
    """One preprocessed image (3, H, W) float32 in, class logits (C,) out."""

    backend: str
    precision: str
    detail: str = ""
    # Why this precision was picked, when it was a measured choice (ort-cpu --precision auto).
    selection_note: str = ""
    # The file it runs (a bundle's ONNX or plan, or a plan in this device's engine cache): its
    # verified sha256 keys the device self-check cache.
    source_file: Optional[Path] = None
    # That sha256 when the file is not the bundle's (a cached engine's, recorded when it was built).
    source_sha256: Optional[str] = None

    @abstractmethod
    def logits(self, chw: np.ndarray) -> np.ndarray: ...

    def key_info(self) -> dict[str, str]:
        """What else its results depend on (provider, GPU, TensorRT version): part of the self-check key."""
        return {}

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
    # The device self-check (runtime.selfcheck.SelfChecker.check): every classifier opened by
    # select_classifier passes it before it classifies; None: no check (a hand-built ModelFiles).
    self_check: Optional[Callable[["Classifier"], Any]] = None
    # What ONNX Runtime CPU runs per precision when it differs from ``onnx``: a jetson-orin bundle's
    # int8-cpu file (CPU Q/DQ flavour) instead of TensorRT's Q/DQ INT8. None: ``onnx``.
    cpu_onnx: Optional[dict[str, Path]] = None
    # runtime.cpu_latency.LatencyProbe: ``--precision auto`` on ort-cpu runs the faster of fp32 and
    # INT8 as measured here (among those passing the self-check); None: ``cpu_precision``.
    latency: Optional[Any] = None
    # The CPU INT8 file is not known to be exact on x86 without VNNI (8-bit u8s8 weights, a bundle
    # from before the 7-bit CPU flavour) and this is such a CPU: auto uses it only once a real
    # self-check passed (not one skipped for lack of reference samples).
    cpu_int8_needs_proof: bool = False
    # What deploy built the bundle for (manifest ``target``): a "cpu" bundle expects no TensorRT/GPU.
    target: Optional[str] = None
    # What selections on this opened bundle have said (fallbacks, failed self-checks, the CPU choice):
    # each once, however often a classifier is selected on it.
    said: LogOnce = field(default_factory=lambda: LogOnce(log), compare=False, repr=False)

    def __post_init__(self) -> None:
        if "fp32" not in self.onnx:
            raise ConfigError(f"model has no fp32 ONNX (variants: {sorted(self.onnx)}); re-run deploy")

    def files_for(self, backend: str) -> dict[str, Path]:
        return self.cpu_onnx if backend == "ort-cpu" and self.cpu_onnx is not None else self.onnx


class OrtClassifier(Classifier):
    """ONNX Runtime session over one ONNX file; ``gpu`` asks for a CUDA/TensorRT provider."""

    def __init__(self, onnx_path, *, precision: str = "fp32", gpu: bool = False, threads: int = 0,
                 img_size: Optional[int] = None):
        import onnxruntime as ort

        available = ort.get_available_providers()
        if gpu:
            wanted = [p for p in GPU_PROVIDERS if p in available]
            if not wanted:
                raise BackendUnavailable(
                    f"onnxruntime {ort.__version__} has no GPU provider (available: {', '.join(available)}); "
                    "install the onnxruntime-gpu wheel for this JetPack")
            providers = wanted + [CPU_PROVIDER]
        else:
            providers = [CPU_PROVIDER]
        try:
            self._sess = open_session(onnx_path, providers, threads)
        except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            if gpu:
                raise BackendUnavailable(f"onnxruntime GPU session failed: {e}") from e
            raise BackendError(f"{onnx_path}: onnxruntime cannot load it ({e}); re-run deploy") from e
        used = self._sess.get_providers()
        if gpu and used[0] not in GPU_PROVIDERS:
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
        self.source_file = Path(onnx_path)
        self._ort_version = ort.__version__

    def key_info(self) -> dict[str, str]:
        info = {"provider": self.detail, "onnxruntime": self._ort_version}
        if self.backend == "ort-gpu":
            from ..engines.tensorrt import gpu_info

            gpu = gpu_info()
            info.update(gpu=gpu.name, compute_capability=gpu.compute_capability)
        return info

    def logits(self, chw: np.ndarray) -> np.ndarray:
        x = chw[None] if chw.ndim == 3 else chw
        out = self._sess.run([self._output], {self._input: x.astype(self._dtype, copy=False)})[0]
        return np.asarray(out[0], dtype=np.float32)

    def close(self) -> None:
        self._sess = None


def _announce(said: LogOnce, fb: Fallback) -> None:
    """Say a fallback once: a warning, or INFO (-v) for one the bundle's target implies."""
    said.log(logging.INFO if fb.expected else logging.WARNING, (fb.backend, fb.reason),
             "FALLBACK: %s unavailable: %s", fb.backend, fb.reason)


# Backends a bundle built for ``target`` is not meant for: their absence is no fallback worth a warning.
NOT_EXPECTED_ON = {"cpu": ("tensorrt", "ort-gpu")}


def _pick_precision(files: ModelFiles, backend: str, precision: str) -> str:
    if backend == "tensorrt":
        # The engine opener knows which engines match this device; it says what is missing.
        if precision != "auto":
            return precision
        have = files.engine_precisions
        return files.default_precision if files.default_precision in have or not have else have[0]
    have = set(files.files_for(backend))
    if precision != "auto":
        if precision not in have:
            raise BackendUnavailable(f"no usable {precision} variant for {backend} (have: {', '.join(sorted(have)) or 'none'})")
        return precision
    # fp16 ONNX only pays off on a GPU. On the CPU, fp32 unless deploy measured another variant
    # faster there (used when no latency probe is given; runtime.model gives one: see _fastest_on_cpu).
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
        return OrtClassifier(files.files_for(backend)[prec], precision=prec, gpu=backend == "ort-gpu", threads=threads,
                             img_size=files.img_size)
    raise ConfigError(f"backend {backend!r} is unknown; choose one of auto, {', '.join(BACKENDS)}")


@dataclass
class Selection:
    classifier: Classifier
    fallbacks: list[Fallback]
    # Every device self-check run (or found cached) on the way, in order: the failed ones say why
    # a candidate was passed over; the last one is the chosen classifier's.
    checks: list[Any] = field(default_factory=list)

    @property
    def rejected(self) -> list[Any]:
        """Self-checks that failed (a candidate not used, or a forced one used anyway)."""
        return failed_checks(self.checks)


def failed_checks(checks: Sequence[Any]) -> list[Any]:
    """The self-checks whose verdict is FAILED (outputs beyond the bounds; not 'could not run')."""
    return [c for c in checks if c.status == Status.FAILED]


def _candidates(files: ModelFiles, backend: str, precision: str) -> list[str]:
    """Precisions to try on ``backend``, in order: the picked one, then (``auto`` only) what to run
    if it fails its self-check: the other engines on TensorRT, fp32 on ONNX Runtime."""
    first = _pick_precision(files, backend, precision)
    if precision != "auto":
        return [first]
    rest = list(files.engine_precisions) if backend == "tensorrt" else ["fp32"]
    return [first] + [p for p in rest if p != first]


def _announce_check(said: LogOnce, res: Any) -> None:
    said.warning(("selfcheck", res.summary()), "SELF-CHECK FAILED: %s", res.summary())


def _open_checked(files: ModelFiles, backend: str, precision: str, threads: int, force: bool,
                  checks: list[Any], said: LogOnce) -> Classifier:
    """Open ``backend`` with the first candidate precision that passes the device self-check.

    The first candidate not opening is the backend being unavailable (BackendUnavailable, as
    before). A candidate that fails its check is closed and the next one tried; an explicitly
    requested precision that fails is a SelfCheckError (or, with ``force``, used with an error log).
    """
    from ..core.errors import SelfCheckError

    if (backend == "ort-cpu" and precision == "auto" and files.latency is not None
            and {"fp32", "int8"} <= set(files.files_for(backend))):
        return _fastest_on_cpu(files, threads, checks, said)
    cands = _candidates(files, backend, precision)
    passed_over: list[str] = []
    for i, prec in enumerate(cands):
        try:
            clf = open_backend(files, backend, prec, threads)
        except BackendUnavailable as e:
            if i == 0:
                raise
            passed_over.append(f"{prec}: {e}")
            continue
        if files.self_check is None:
            return clf
        res = files.self_check(clf)
        checks.append(res)
        if res.usable:
            return clf
        if res.status != Status.FAILED:  # could not run: the provider/engine fails at run time
            clf.close()
            if precision != "auto":
                raise BackendUnavailable(f"{prec} self-check could not run ({res.reason})")
            passed_over.append(f"{prec}: self-check could not run ({res.reason})")
            continue
        if precision != "auto":
            if force:
                res.forced = True
                log.error("FORCED: %s; used anyway because --force-variant was given: its outputs are not "
                          "what deploy measured", res.summary())
                return clf
            clf.close()
            raise SelfCheckError(f"{res.summary()}; on this device it does not compute what deploy measured. "
                                 "Choose another --precision/--backend, re-deploy, or pass --force-variant to use it anyway")
        clf.close()
        _announce_check(said, res)
        passed_over.append(f"{prec} failed the device self-check")
    raise BackendUnavailable("; ".join(passed_over))


def _fastest_on_cpu(files: ModelFiles, threads: int, checks: list[Any], said: LogOnce) -> Classifier:
    """``--precision auto`` on ort-cpu: fp32 and INT8 each opened and self-checked, then timed on
    this device (cached); the faster one runs, and the choice is said once. INT8 that fails its
    check, or cannot prove itself where it may saturate, is passed over with the reason."""
    from ..core.errors import SelfCheckError

    opened: dict[str, Classifier] = {}
    passed_over: list[str] = []
    for prec in ("fp32", "int8"):
        try:
            clf = _open_checked(files, "ort-cpu", prec, threads, False, checks, said)
        except SelfCheckError:
            _announce_check(said, checks[-1])
            passed_over.append(f"{prec} failed the device self-check")
            continue
        except (BackendUnavailable, BackendError) as e:
            passed_over.append(f"{prec}: {e}")
            continue
        proven = files.self_check is None or bool(checks and checks[-1].status == Status.PASSED)
        if prec == "int8" and files.cpu_int8_needs_proof and not proven:
            clf.close()
            passed_over.append("int8: this bundle's CPU INT8 has 8-bit u8s8 weights, which saturate on x86 without "
                               "VNNI, and no reference samples to prove it here (re-deploy: the cpu INT8 is now 7-bit)")
            continue
        opened[prec] = clf
    if not opened:
        raise BackendUnavailable("; ".join(passed_over))
    for note in passed_over:
        said.warning(("cpu-skip", note), "ort-cpu --precision auto: not using %s", note)
    if len(opened) == 1:
        return next(iter(opened.values()))
    ms = {p: files.latency.measure(c, threads) for p, c in opened.items()}
    best = "int8" if ms["int8"][0] < ms["fp32"][0] else "fp32"
    for p, c in opened.items():
        if p != best:
            c.close()
    from ..core.cpuinfo import cpu_info

    how = "cached" if all(cached for _, cached in ms.values()) else "measured now"
    figures = f"int8 {ms['int8'][0]:.3g} ms vs fp32 {ms['fp32'][0]:.3g} ms per image on this CPU ({cpu_info().model}; {how})"
    chosen = opened[best]
    chosen.selection_note = (f"{figures}: running int8" if best == "int8"
                             else f"INT8 is not faster than fp32 on this CPU ({figures}): running fp32")
    said.info(("cpu-choice", chosen.selection_note), "ort-cpu --precision auto: %s", chosen.selection_note)
    return chosen


def select_classifier(files: ModelFiles, backend: str = "auto", precision: str = "auto", threads: int = 0,
                      order: Sequence[str] = BACKENDS, force: bool = False,
                      on_fallback: Optional[Callable[[Fallback], None]] = None) -> Selection:
    """The first backend of ``order`` that opens and passes the device self-check
    (``backend='auto'``), or exactly ``backend``. ``force`` uses an explicitly requested
    precision even if it fails its self-check (loudly). Each fallback is said by ``on_fallback``
    (default: logged once per opened bundle, ``files.said``); a caller that prints them itself passes its own, so a
    fallback is said once, not twice."""
    from ..core.errors import SelfCheckError

    if precision != "auto" and precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is unknown; choose auto, {', '.join(PRECISIONS)}")
    if force and precision == "auto":
        raise ConfigError("--force-variant needs an explicit --precision (auto only uses variants that pass the self-check)")
    checks: list[Any] = []
    said = files.said
    if backend != "auto":
        try:
            return Selection(_open_checked(files, backend, precision, threads, force, checks, said), [], checks)
        except BackendUnavailable as e:
            failed = failed_checks(checks)
            if failed:
                raise SelfCheckError(f"--backend {backend}: no variant passes the device self-check: "
                                     + "; ".join(c.summary() for c in failed)) from e
            raise BackendError(f"--backend {backend} cannot run here: {e}") from e
    fallbacks: list[Fallback] = []
    for name in order:
        try:
            clf = _open_checked(files, name, precision, threads, force, checks, said)
        except BackendUnavailable as e:
            fb = Fallback(name, str(e), expected=name in NOT_EXPECTED_ON.get(files.target or "", ()))
            if on_fallback is not None:
                on_fallback(fb)
            else:
                _announce(said, fb)
            fallbacks.append(fb)
            continue
        return Selection(clf, fallbacks, checks)
    failed = failed_checks(checks)
    if failed:
        raise SelfCheckError("no backend/precision passes the device self-check: "
                             + "; ".join(c.summary() for c in failed))
    raise BackendError("no backend could run: " + "; ".join(f"{f.backend}: {f.reason}" for f in fallbacks))
