"""EViT: top-k by CLS attention plus one token fusing the dropped ones, weighted by that attention."""

from __future__ import annotations

import torch

from ..base import ReduceInput, ReduceOutput, gather_optional
from ..functional import concat_tokens, fuse_dropped, gather_tokens, keep_count
from ..registry import register_reducer
from .topk import TopKReducer


@register_reducer("evit")
class EViTReducer(TopKReducer):
    label = "EViT"

    def num_out(self, n: int) -> int:
        k = keep_count(n, self.keep_rate)
        return k + 1 if k < n else n

    def reduce(self, inp: ReduceInput) -> ReduceOutput:
        scores, idx = self.select(inp)
        kept = gather_tokens(inp.x, idx)
        fused = fuse_dropped(inp.x, scores, idx)
        x = concat_tokens([kept, fused])
        size = gather_optional(inp.size, idx)
        if size is not None:
            # The fused token stands for every dropped token.
            size = torch.cat([size, inp.size.sum(1, keepdim=True) - size.sum(1, keepdim=True)], dim=1)
        bias = gather_optional(inp.bias, idx)
        if bias is not None:
            bias = torch.cat([bias, torch.zeros_like(bias[:, :1])], dim=1)
        return ReduceOutput(x=x, size=size, bias=bias)
