"""ATS (adaptive token sampling) with a static output count.

Inside block ``loc`` after attention and its residual (the reference samples attention rows,
which is the same up to where the output projection runs). Significance of a token = CLS
attention x norm of its value vector (mean over heads), normalised; k tokens are picked by
deterministic inverse-transform sampling at the quantiles (i + 1/2) / k of the cumulative
significance. Picks land in ascending position order, so a repeated pick is equal to the one
before it. The original drops repeats (a data-dependent length); here they stay as placeholders
whose key bias is MASKED_BIAS, so later attention ignores them, the CLC cache's average skips
them, and the output has exactly k tokens. No learned modules: training = inference.
"""

from __future__ import annotations

import torch

from ..base import ReduceInput, ReduceOutput, TokenReducer, gather_optional
from ..functional import (
    MASKED_BIAS,
    ats_significance,
    gather_tokens,
    inverse_transform_picks,
    keep_count,
    repeated_picks,
)
from ..registry import register_reducer


@register_reducer("ats")
class ATSReducer(TokenReducer):
    label = "ATS"

    placement = "mid"
    needs_attention = True
    masks_with_bias = True

    def num_out(self, n: int) -> int:
        return keep_count(n, self.keep_rate)

    def reduce(self, inp: ReduceInput) -> ReduceOutput:
        # Placeholders from an earlier location are never sampled again.
        present = None if inp.bias is None else (inp.bias > MASKED_BIAS / 2).to(inp.x.dtype)
        sig = ats_significance(inp.cls_attn, inp.values, present)
        idx = inverse_transform_picks(sig, self.num_out(inp.x.shape[1]))
        bias = gather_optional(inp.bias, idx)
        if bias is None:
            bias = inp.x.new_zeros(idx.shape)
        bias = torch.where(repeated_picks(idx), torch.full_like(bias, MASKED_BIAS), bias)
        return ReduceOutput(x=gather_tokens(inp.x, idx), size=gather_optional(inp.size, idx), bias=bias)
