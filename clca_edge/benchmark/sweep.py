"""Run a sweep: every (method, keep rate, CLCA) model on every backend, plus the plain ViT baseline."""

from __future__ import annotations

import logging
import multiprocessing as mp
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Optional

from ..models.config import ClcaConfig, ModelConfig
from .config import SweepConfig

log = logging.getLogger(__name__)


@dataclass
class BenchRow:
    method: str
    keep_rate: float
    clca: bool
    backend: str
    gflops: float
    params_m: float
    p50_ms: Optional[float] = None
    p90_ms: Optional[float] = None
    throughput: Optional[float] = None
    peak_mb: Optional[float] = None
    top1: Optional[float] = None
    speedup: Optional[float] = None
    error: str = ""

    @property
    def label(self) -> str:
        if self.method == "none" and not self.clca:
            return "ViT (baseline)"
        return f"{self.method}{'+CLCA' if self.clca else ''}"

    def to_dict(self) -> dict:
        return asdict(self)


def model_configs(cfg: SweepConfig) -> Iterator[ModelConfig]:
    """The baseline first, then each distinct model of the sweep (at r = 1 the method is moot)."""
    def make(method: str, rate: float, clca: bool) -> ModelConfig:
        return ModelConfig(backbone=cfg.backbone, method=method, keep_rate=rate,
                           clca=ClcaConfig() if clca else ClcaConfig.off(), num_classes=cfg.num_classes,
                           img_size=cfg.img_size, backbone_kwargs=dict(cfg.backbone_kwargs))

    seen = set()
    for mc in [make("none", 1.0, False)] + [make(m, r, c) for m in cfg.methods for c in cfg.clca
                                             for r in cfg.keep_rates]:
        if mc.keep_rate == (1.0,):
            mc = mc.replace(method="none")
        key = (mc.method, mc.keep_rate, mc.clca.enabled)
        if key not in seen:
            seen.add(key)
            yield mc


def _measure_one(model_cfg: dict, backend: str, sweep: dict) -> dict:
    """Build the model and time it; runs in a child process when isolating."""
    import torch

    from ..models.factory import build_model
    from .measure import measure

    torch.manual_seed(0)
    if sweep["threads"]:
        torch.set_num_threads(sweep["threads"])
    model = build_model(ModelConfig.from_dict(model_cfg), pretrained=None)
    t = measure(model, backend, sweep["img_size"], sweep["batch_size"], sweep["warmup"], sweep["repeats"],
                device=sweep["device"], threads=sweep["threads"])
    return asdict(t)


def run_sweep(cfg: SweepConfig, progress: Optional[Callable[[str], None]] = None,
              accuracy: Optional[Callable[[ModelConfig], float]] = None) -> list[BenchRow]:
    from ..models.flops import cost_report

    sweep = asdict(cfg)
    ctx = mp.get_context("spawn")
    rows: list[BenchRow] = []
    for mc in model_configs(cfg):
        cost = cost_report(mc)
        top1 = accuracy(mc) if accuracy is not None else None
        for backend in cfg.backends:
            row = BenchRow(mc.method, mc.keep_rate[0], mc.clca.enabled, backend, round(cost.gflops, 3),
                           round(cost.params_m, 3), top1=top1)
            if progress:
                progress(f"{row.label} r={row.keep_rate:g} on {backend}")
            try:
                if cfg.isolate:
                    with ctx.Pool(1) as pool:
                        t = pool.apply(_measure_one, (mc.to_dict(), backend, sweep))
                else:
                    t = _measure_one(mc.to_dict(), backend, sweep)
                for k, v in t.items():
                    setattr(row, k, v)
            except Exception as e:  # one failing backend must not lose the rest of the sweep
                log.warning("%s on %s failed: %s", row.label, backend, e)
                row.error = f"{type(e).__name__}: {e}"[:200]
            rows.append(row)
    for backend in cfg.backends:
        base = next((r for r in rows if r.backend == backend and r.method == "none" and not r.clca), None)
        for r in rows:
            if r.backend == backend and base and base.p50_ms and r.p50_ms:
                r.speedup = round(base.p50_ms / r.p50_ms, 2)
    return rows
