"""SiT token slimming: a small MLP scores every token for each of k output tokens; each output
token is the softmax-over-tokens weighted sum of the input tokens (soft merging, before block loc).

Module as in the reference (arkel23/CLCA ``TokenSlimmingModule``): LayerNorm -> Linear(D, D/2) ->
GELU -> Linear(D/2, k), times a learned scalar temperature (1 at init). The Linears start like
timm's ViT init (trunc-normal std .02, bias 0), so at step 0 the merge weights are near uniform.
"""

from __future__ import annotations

import torch
from torch import nn

from ..base import ReduceInput, ReduceOutput
from ..functional import soft_merge
from ..registry import register_reducer
from ._bound import BoundReducer


def init_linear(layer: nn.Linear) -> nn.Linear:
    nn.init.trunc_normal_(layer.weight, std=0.02)
    nn.init.zeros_(layer.bias)
    return layer


@register_reducer("sit")
class SiTReducer(BoundReducer):
    label = "SiT"

    def __init__(self, keep_rate: float, dim: int, num_heads: int, hidden_ratio: float = 0.5, **kwargs) -> None:
        super().__init__(keep_rate, dim, num_heads, **kwargs)
        self.hidden = max(1, int(dim * hidden_ratio))

    def build(self, k: int) -> None:
        self.score = nn.Sequential(
            nn.LayerNorm(self.dim),
            init_linear(nn.Linear(self.dim, self.hidden)),
            nn.GELU(),
            init_linear(nn.Linear(self.hidden, k)),
        )
        self.scale = nn.Parameter(torch.ones(()))

    def reduce(self, inp: ReduceInput) -> ReduceOutput:
        self.check_input(inp.x.shape[1])
        logits = self.score(inp.x) * self.scale  # (B, n, k)
        return ReduceOutput(x=soft_merge(logits.transpose(1, 2), inp.x))
