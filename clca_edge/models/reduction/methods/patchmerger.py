"""PatchMerger: k learned queries attend over the LayerNorm-ed tokens (softmax over tokens); each
output token is that weighted sum of the tokens (before block loc).

Two choices differ from the reference (arkel23/CLCA ``PatchMerger``: N(0, 1) queries, scale 1,
output = weights @ LN(x)); both can be switched back through ``method_kwargs``:
- ``scaled`` (default True): logits are divided by sqrt(D). With N(0, 1) queries and unit-variance
  LN(x), unscaled logits have a std of about sqrt(D) (28 for ViT-B): a saturated softmax that
  passes almost no gradient to the queries. Scaled, they start with std about 1.
- ``merge_normalized`` (default False): merge the raw residual tokens x, as SiT does, so the next
  (pretrained) block gets residual-stream tokens of the scale it expects, not LayerNorm-space ones.
"""

from __future__ import annotations

import torch
from torch import nn

from ..base import ReduceInput, ReduceOutput
from ..functional import soft_merge
from ..registry import register_reducer
from ._bound import BoundReducer


@register_reducer("patchmerger")
class PatchMergerReducer(BoundReducer):
    label = "PatchMerger"

    def __init__(self, keep_rate: float, dim: int, num_heads: int, scaled: bool = True,
                 merge_normalized: bool = False, **kwargs) -> None:
        super().__init__(keep_rate, dim, num_heads, **kwargs)
        self.logit_scale = dim ** -0.5 if scaled else 1.0
        self.merge_normalized = bool(merge_normalized)

    def build(self, k: int) -> None:
        self.norm = nn.LayerNorm(self.dim)
        self.queries = nn.Parameter(torch.randn(k, self.dim))

    def reduce(self, inp: ReduceInput) -> ReduceOutput:
        self.check_input(inp.x.shape[1])
        xn = self.norm(inp.x)
        logits = (self.queries @ xn.transpose(1, 2)) * self.logit_scale  # (B, k, n)
        return ReduceOutput(x=soft_merge(logits, xn if self.merge_normalized else inp.x))
