"""Token bookkeeping: the state that flows between blocks, and the static token plan.

``token_plan`` is computed from the configuration alone, mirroring the forward pass, so the
number of tokens in every block is known before any image is seen (static shapes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Optional

import torch
from torch import Tensor

from .config import ClcaConfig, ResolvedPlan


@dataclass
class TokenState:
    """Tokens between blocks: ``x`` (B, N, C) with the prefix first, plus optional side data.

    ``size`` (B, N, 1): original tokens each token stands for (tracked only by merging methods
    that need it). ``bias`` (B, N): additive attention-logit bias on keys.
    """

    x: Tensor
    size: Optional[Tensor] = None
    bias: Optional[Tensor] = None

    def split(self, num_prefix: int) -> tuple["TokenState", "TokenState"]:
        def cut(t: Optional[Tensor], sl: slice) -> Optional[Tensor]:
            return None if t is None else t[:, sl]

        head, tail = slice(0, num_prefix), slice(num_prefix, None)
        return (
            TokenState(self.x[:, head], cut(self.size, head), cut(self.bias, head)),
            TokenState(self.x[:, tail], cut(self.size, tail), cut(self.bias, tail)),
        )

    def append(self, other: "TokenState") -> "TokenState":
        """Concatenate ``other`` after these tokens; side data tracked here is filled in for it
        (size 1, bias 0) when ``other`` has none."""

        def cat(a: Optional[Tensor], b: Optional[Tensor], fill: float) -> Optional[Tensor]:
            if a is None:
                return None
            if b is None:
                b = a.new_full((other.x.shape[0], other.x.shape[1], *a.shape[2:]), fill)
            return torch.cat([a, b], dim=1)

        return TokenState(
            x=torch.cat([self.x, other.x], dim=1),
            size=cat(self.size, other.size, 1.0),
            bias=cat(self.bias, other.bias, 0.0),
        )

    def with_x(self, x: Tensor) -> "TokenState":
        return replace(self, x=x)


@dataclass(frozen=True)
class BlockTokens:
    """Token counts of one block, prefix included."""

    index: int
    attention: int
    mlp: int
    output: int
    reduced: bool
    recovered: int


def token_plan(
    num_patches: int, num_prefix: int, plan: ResolvedPlan, clca: ClcaConfig, reducers: Mapping[int, object]
) -> list[BlockTokens]:
    """Tokens per block for a configuration; ``reducers`` maps block index -> reducer (``num_out``)."""
    n, cached, out = num_patches, 0, []
    for i in range(plan.depth):
        red = reducers.get(i)
        active = red is not None and red.active(n)
        if active and red.placement == "pre":
            n = red.num_out(n)
        attn_n = n
        if active and red.placement == "mid":
            n = red.num_out(n)
        mlp_n = n
        if active and red.placement == "post":
            n = red.num_out(n)
        recovered = 0
        if i in plan.recovery:
            recovered, n, cached = cached, n + cached, 0
        if i < plan.cache_until:
            cached += clca.carriers_per_block
        out.append(BlockTokens(i, num_prefix + attn_n, num_prefix + mlp_n, num_prefix + n, active, recovered))
    return out
