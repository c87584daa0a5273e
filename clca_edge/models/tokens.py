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
from .reduction.functional import MASKED_BIAS


@dataclass
class TokenState:
    """Tokens between blocks: ``x`` (B, N, C) with the prefix first, plus optional side data.

    ``size`` (B, N, 1): original tokens each token stands for (tracked only by merging methods
    that need it). ``bias`` (B, N): additive attention-logit bias on keys. ``policy`` (B, N):
    multiplicative keep mask on keys in [0, 1] (DynamicViT in training, where tokens are masked
    instead of dropped so that the mask stays differentiable); ``None`` means all kept.
    """

    x: Tensor
    size: Optional[Tensor] = None
    bias: Optional[Tensor] = None
    policy: Optional[Tensor] = None

    def split(self, num_prefix: int) -> tuple["TokenState", "TokenState"]:
        def cut(t: Optional[Tensor], sl: slice) -> Optional[Tensor]:
            return None if t is None else t[:, sl]

        head, tail = slice(0, num_prefix), slice(num_prefix, None)
        return (
            TokenState(self.x[:, head], cut(self.size, head), cut(self.bias, head), cut(self.policy, head)),
            TokenState(self.x[:, tail], cut(self.size, tail), cut(self.bias, tail), cut(self.policy, tail)),
        )

    def append(self, other: "TokenState") -> "TokenState":
        """Concatenate ``other`` after these tokens; side data that only one side tracks is filled
        in for the other (size 1, bias 0, policy 1)."""

        def cat(a: Optional[Tensor], b: Optional[Tensor], fill: float) -> Optional[Tensor]:
            if a is None and b is None:
                return None
            if a is None:
                a = b.new_full((self.x.shape[0], self.x.shape[1], *b.shape[2:]), fill)
            if b is None:
                b = a.new_full((other.x.shape[0], other.x.shape[1], *a.shape[2:]), fill)
            return torch.cat([a, b], dim=1)

        return TokenState(
            x=torch.cat([self.x, other.x], dim=1),
            size=cat(self.size, other.size, 1.0),
            bias=cat(self.bias, other.bias, 0.0),
            policy=cat(self.policy, other.policy, 1.0),
        )

    def presence(self, masked_by_bias: bool) -> Optional[Tensor]:
        """(B, N) weight of each token in pooled summaries: the keep policy, or (for methods that
        mask tokens with a large negative key bias) 0 where the bias masks a token; ``None`` when
        every token counts."""
        if self.policy is not None:
            return self.policy
        if masked_by_bias and self.bias is not None:
            return (self.bias > MASKED_BIAS / 2).to(self.x.dtype)
        return None

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
        recovered = 0
        if i in plan.recovery:
            recovered, n, cached = cached, n + cached, 0
        if i < plan.cache_until:
            cached += clca.carriers_per_block
        out.append(BlockTokens(i, num_prefix + attn_n, num_prefix + mlp_n, num_prefix + n, active, recovered))
    return out
