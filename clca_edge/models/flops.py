"""Cost accounting with ``torch.utils.flop_counter``: GMACs at batch 1, attention products included.

The flop counter reports FLOPs (2 per multiply-accumulate); the paper reports MACs, so we halve.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn


@lru_cache(maxsize=1)
def _register_cpu_sdpa() -> None:
    """The CPU flash-attention kernel behind F.scaled_dot_product_attention has no formula in
    flop_counter; count it with the same formula as the GPU kernels."""
    from torch.utils.flop_counter import register_flop_formula, sdpa_flop_count

    def cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        try:
            register_flop_formula(op)(cpu_sdpa_flop)
        except RuntimeError:  # already registered by a newer torch
            pass


@dataclass
class CostReport:
    gflops: float  # GMACs, batch 1
    params_m: float
    tokens_per_block: list[int]
    attention_gflops: float = 0.0  # the attention products alone (q.k and attn.v), part of gflops

    @property
    def gflops_without_attention(self) -> float:
        """The convention of counters that miss fused attention (the reference's figures for SiT,
        PatchMerger and DPC-KNN): comparable with those, not a cost."""
        return self.gflops - self.attention_gflops

    def to_dict(self) -> dict:
        return {
            "gflops": round(self.gflops, 4),
            "params_m": round(self.params_m, 4),
            "tokens_per_block": list(self.tokens_per_block),
            "attention_gflops": round(self.attention_gflops, 4),
        }


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, img_size: int, in_chans: int = 3) -> float:
    """Multiply-accumulates (in G) of one forward pass at batch 1, in eval mode."""
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_sdpa()
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        x = torch.zeros(1, in_chans, img_size, img_size, device=device)
        with FlopCounterMode(display=False) as counter:
            model(x)
        return counter.get_total_flops() / 2 / 1e9
    finally:
        model.train(was_training)


def cost_report(config) -> CostReport:
    """Cost of the model a ``ModelConfig`` describes, built on the meta device: shapes only, no
    memory and no weights, so ViT-B at 448 is counted in about a second."""
    from .factory import build_model

    with torch.device("meta"):
        model = build_model(config, pretrained=None)
        dim = model.backbone.embed_dim
        return CostReport(
            gflops=count_flops(model, config.img_size),
            params_m=count_params(model) / 1e6,
            tokens_per_block=list(model.tokens_per_block),
            attention_gflops=sum(2 * n * n * dim for n in model.tokens_per_block) / 1e9,
        )
