"""Measuring one model on one backend: latency at batch 1, throughput at batch N, peak memory.

Runs in a fresh subprocess per model (``SweepConfig.isolate``) so the peak RSS is that model's.
"""

from __future__ import annotations

import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np


@dataclass
class Timing:
    p50_ms: float
    p90_ms: float
    throughput: float  # images/s at the sweep's batch size
    peak_mb: float


def _time(fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(1000 * (time.perf_counter() - t0))
    return sorted(out)


def _summarise(lat: list[float], thr_ms: list[float], batch: int, peak_mb: float) -> Timing:
    return Timing(
        p50_ms=round(statistics.median(lat), 2),
        p90_ms=round(lat[int(0.9 * (len(lat) - 1))], 2),
        throughput=round(1000 * batch / statistics.median(thr_ms), 1),
        peak_mb=round(peak_mb, 1),
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_torch(model, img_size: int, batch: int, warmup: int, repeats: int, device: str = "cpu") -> Timing:
    import torch

    model = model.eval().to(device)
    one = torch.randn(1, 3, img_size, img_size, device=device)
    many = torch.randn(batch, 3, img_size, img_size, device=device)
    cuda = device.startswith("cuda")

    def run(x):
        def f():
            with torch.inference_mode():
                model(x)
            if cuda:
                torch.cuda.synchronize()
        return f

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    lat = _time(run(one), warmup, repeats)
    thr = _time(run(many), max(1, warmup // 2), max(3, repeats // 4))
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mb()
    return _summarise(lat, thr, batch, peak)


def _ort_sessions(model, img_size: int, batch: int, int8: bool, threads: int, workdir: Path):
    from ..deploy.onnx_export import OnnxExportConfig, export_onnx
    from ..runtime.sessions import open_session

    paths = {}
    for b in sorted({1, batch}):
        p = export_onnx(model, workdir / f"b{b}.onnx", OnnxExportConfig(batch_size=b))
        if int8:
            p = quantize_for_benchmark(p, img_size, b)
        paths[b] = p
    return {b: open_session(p, threads=threads) for b, p in paths.items()}


def quantize_for_benchmark(path: Path, img_size: int, batch: int) -> Path:
    """The INT8 Q/DQ flavour ``deploy --target cpu`` ships (the one ONNX Runtime CPU runs fast),
    calibrated on random inputs: latency only (accuracy is not measured here)."""
    from ..deploy.onnx_export import INPUT_NAME
    from ..deploy.quantize import CPU_FLAVOUR, quantize_int8

    class Random:
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.items = iter([{INPUT_NAME: rng.standard_normal((batch, 3, img_size, img_size)).astype(np.float32)}
                               for _ in range(4)])

        def get_next(self):
            return next(self.items, None)

    out = path.with_name(path.stem + ".int8.onnx")
    quantize_int8(path, out, Random(), method="minmax", flavour=CPU_FLAVOUR)
    return out


def measure_ort(model, img_size: int, batch: int, warmup: int, repeats: int, int8: bool = False,
                threads: int = 0) -> Timing:
    """peak_mb is the measuring process's: with ``isolate`` that includes building and exporting
    the model in torch, so it bounds, not measures, ONNX Runtime's own footprint."""
    from ..deploy.onnx_export import INPUT_NAME

    with tempfile.TemporaryDirectory() as tmp:
        sessions = _ort_sessions(model, img_size, batch, int8, threads, Path(tmp))
        del model
        rng = np.random.default_rng(0)
        one = rng.standard_normal((1, 3, img_size, img_size)).astype(np.float32)
        many = rng.standard_normal((batch, 3, img_size, img_size)).astype(np.float32)
        lat = _time(lambda: sessions[1].run(None, {INPUT_NAME: one}), warmup, repeats)
        thr = _time(lambda: sessions[batch].run(None, {INPUT_NAME: many}), max(1, warmup // 2), max(3, repeats // 4))
        return _summarise(lat, thr, batch, peak_rss_mb())


def measure(model, backend: str, img_size: int, batch: int, warmup: int, repeats: int, device: str = "cpu",
            threads: int = 0) -> Optional[Timing]:
    if backend == "torch":
        return measure_torch(model, img_size, batch, warmup, repeats, device)
    if backend in ("ort", "ort-int8"):
        return measure_ort(model, img_size, batch, warmup, repeats, int8=backend == "ort-int8", threads=threads)
    raise ValueError(backend)
