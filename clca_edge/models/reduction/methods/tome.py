"""ToMe (token merging) that reaches the requested count at one location.

Inside block ``loc`` after attention (with proportional attention) and its residual, before the
MLP. Bipartite soft matching on this block's keys (mean over heads, cosine similarity): odd
positions (set A) find their most similar even position (set B), and the r best-matched A tokens
are averaged into their B partners, weighted by token size; merging is a one-hot matmul (no
scatter). One round removes at most half of the tokens, so keep rates below 0.5 take several
rounds at the same location. Only the first round has fresh keys: later rounds match on the
keys merged along with the tokens (size-weighted means of the keys of each group), which is
what the merged tokens' keys summarise without running another attention.

Sizes are tracked from the first block and every attention adds log(size) to the key logits
(proportional attention), so a merged token weighs as much as the tokens it stands for.
No learned modules: training = inference.
"""

from __future__ import annotations

from ..base import ReduceInput, ReduceOutput, TokenReducer
from ..functional import bipartite_merge, keep_count, merge_rounds
from ..registry import register_reducer


@register_reducer("tome")
class ToMeReducer(TokenReducer):
    label = "ToMe"

    placement = "mid"
    needs_attention = True
    tracks_size = True

    def num_out(self, n: int) -> int:
        return keep_count(n, self.keep_rate)

    def reduce(self, inp: ReduceInput) -> ReduceOutput:
        x = inp.x
        size = inp.size if inp.size is not None else x.new_ones(x.shape[0], x.shape[1], 1)
        metric = inp.keys.mean(dim=1)
        n = int(x.shape[1])  # a constant in traced graphs: every round count is static
        for r in merge_rounds(n, self.num_out(n)):
            x, size, metric = bipartite_merge(x, size, metric, r)
        return ReduceOutput(x=x, size=size, bias=size.squeeze(-1).log())
