"""Top-k: keep the k tokens the CLS token attends to most (mean over heads)."""

from __future__ import annotations

from ..base import ReduceInput, ReduceOutput, TokenReducer, gather_optional
from ..functional import cls_attention_scores, gather_tokens, keep_count, topk_indices
from ..registry import register_reducer


@register_reducer("topk")
class TopKReducer(TokenReducer):
    label = "Top-k"

    placement = "mid"
    needs_attention = True

    def num_out(self, n: int) -> int:
        return keep_count(n, self.keep_rate)

    def select(self, inp: ReduceInput):
        scores = cls_attention_scores(inp.cls_attn)
        idx = topk_indices(scores, keep_count(inp.x.shape[1], self.keep_rate))
        return scores, idx

    def reduce(self, inp: ReduceInput) -> ReduceOutput:
        _, idx = self.select(inp)
        return ReduceOutput(
            x=gather_tokens(inp.x, idx),
            size=gather_optional(inp.size, idx),
            bias=gather_optional(inp.bias, idx),
        )
