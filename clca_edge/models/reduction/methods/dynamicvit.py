"""DynamicViT: a small MLP predictor per location scores tokens from local and global features.

Before block ``loc``. Inference keeps the top-k scores (gather, k = keep_count(n, r): static).
Training drops nothing: a hard Gumbel-softmax sample (straight-through) marks kept tokens, the
mask multiplies the keys of every later attention (``TokenState.policy``, compounding across
locations), and a keep-ratio loss pulls the kept fraction towards what inference will keep.

The keep-ratio target of a location is (tokens inference keeps there) / (tokens the unreduced
training sequence has there): r, r^2, r^3 of the patches without CLCA, as in the paper, and the
matching fraction with CLCA, whose recovered cache tokens lengthen both sequences.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ....core.errors import ConfigError
from ..base import ReduceInput, ReduceOutput, TokenReducer, gather_optional
from ..functional import gather_tokens, gumbel_keep_mask, keep_count, topk_indices
from ..registry import register_reducer


def _linear(d_in: int, d_out: int) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    nn.init.trunc_normal_(layer.weight, std=0.02)
    nn.init.zeros_(layer.bias)
    return layer


class KeepPredictor(nn.Module):
    """DynamicViT's local-global predictor: (B, n, D) tokens -> (B, n, 2) log-probabilities
    (channel 0 = keep). Half of the hidden features stay per token, the other half is averaged over
    the tokens still kept (``policy``) and appended to every token."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.local_dim = dim // 2
        self.embed = nn.Sequential(nn.LayerNorm(dim), _linear(dim, dim), nn.GELU())
        hidden = max(1, dim // 2)
        self.classify = nn.Sequential(
            _linear(dim, hidden), nn.GELU(),
            _linear(hidden, max(1, dim // 4)), nn.GELU(),
            _linear(max(1, dim // 4), 2), nn.LogSoftmax(dim=-1),
        )

    def forward(self, x: Tensor, policy: Optional[Tensor] = None) -> Tensor:
        h = self.embed(x)
        local, glob = h[..., : self.local_dim], h[..., self.local_dim :]
        if policy is None:
            pooled = glob.mean(dim=1, keepdim=True)
        else:
            w = policy.unsqueeze(-1)
            pooled = (glob * w).sum(dim=1, keepdim=True) / w.sum(dim=1, keepdim=True).clamp(min=1e-6)
        return self.classify(torch.cat([local, pooled.expand_as(glob)], dim=-1))


@register_reducer("dynamicvit")
class DynamicViTReducer(TokenReducer):
    label = "DynamicViT"

    placement = "pre"

    def __init__(
        self, keep_rate: float, dim: int, num_heads: int, ratio_weight: float = 2.0, tau: float = 1.0, **kwargs
    ) -> None:
        super().__init__(keep_rate, dim, num_heads, **kwargs)
        if ratio_weight < 0:
            raise ConfigError(f"dynamicvit ratio_weight={ratio_weight} must be >= 0")
        if tau <= 0:
            raise ConfigError(f"dynamicvit tau={tau} must be > 0 (Gumbel-softmax temperature)")
        self.ratio_weight = float(ratio_weight)
        self.tau = float(tau)
        self.predictor = KeepPredictor(dim)
        self.target: Optional[float] = None
        self.loss_scale = 1.0
        self._n_in: Optional[int] = None

    def num_out(self, n: int) -> int:
        return keep_count(n, self.keep_rate)

    def bind(self, n: int) -> None:
        self._n_in = n

    def bind_unreduced(self, n_unreduced: int, num_locations: int) -> None:
        n_in = n_unreduced if self._n_in is None else self._n_in
        kept = self.num_out(n_in) if self.active(n_in) else n_in
        self.target = kept / n_unreduced
        # The paper averages the ratio loss over locations; the model sums the reducers' losses.
        self.loss_scale = 1.0 / max(1, num_locations)

    def reduce(self, inp: ReduceInput) -> ReduceOutput:
        if self.training:
            return self._mask(inp)
        log_probs = self.predictor(inp.x)
        idx = topk_indices(log_probs[..., 0], self.num_out(inp.x.shape[1]))
        return ReduceOutput(
            x=gather_tokens(inp.x, idx),
            size=gather_optional(inp.size, idx),
            bias=gather_optional(inp.bias, idx),
        )

    def _mask(self, inp: ReduceInput) -> ReduceOutput:
        prev = inp.policy if inp.policy is not None else inp.x.new_ones(inp.x.shape[:2])
        log_probs = self.predictor(inp.x, prev)
        keep = gumbel_keep_mask(log_probs, self.tau) * prev
        n = inp.x.shape[1]
        target = self.target if self.target is not None else self.num_out(n) / n
        loss = ((keep.mean(dim=1) - target) ** 2).mean() * (self.ratio_weight * self.loss_scale)
        return ReduceOutput(x=inp.x, size=inp.size, bias=inp.bias, policy=keep, aux_loss=loss)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, target={self.target}, ratio_weight={self.ratio_weight}"
