"""The two CLCA pieces that are not token bookkeeping: the CLA head and the cache carriers."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn


class CrossLayerAggregationHead(nn.Module):
    """Classify from the CLS tokens of ``groups`` depths: (B, D, g) -> (B, num_classes).

    BN -> depthwise Conv1d (kernel g, two outputs per channel) -> BN -> GELU -> pointwise Conv1d.
    """

    def __init__(self, dim: int, groups: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.groups = groups
        self.norm_in = nn.BatchNorm1d(dim)
        self.aggregate = nn.Conv1d(dim, 2 * dim, kernel_size=groups, groups=dim)
        self.norm_mid = nn.BatchNorm1d(2 * dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop_rate)
        self.classify = nn.Conv1d(2 * dim, num_classes, kernel_size=1)

    def forward(self, cls_tokens: list[Tensor]) -> Tensor:
        x = torch.stack(cls_tokens, dim=-1)
        x = self.act(self.norm_mid(self.aggregate(self.norm_in(x))))
        return self.classify(self.drop(x)).flatten(1)


def token_mean(x: Tensor, num_prefix: int, weight: Optional[Tensor] = None) -> Tensor:
    """(B, C) mean of the non-prefix tokens of ``x`` (B, N, C); ``weight`` (B, N) makes it a
    weighted mean, so that masked tokens (DynamicViT training masks, ATS duplicate placeholders)
    do not count."""
    tokens = x[:, num_prefix:]
    if weight is None:
        return tokens.mean(dim=1)
    w = weight[:, num_prefix:].unsqueeze(-1).to(tokens.dtype)
    return (tokens * w).sum(dim=1) / w.sum(dim=1).clamp(min=1e-6)


def cache_carriers(
    x: Tensor, num_prefix: int, clr: slice | None, gap: bool, weight: Optional[Tensor] = None
) -> Tensor:
    """Tokens a block leaves in the cross-layer cache: the mean of its non-prefix tokens, its CLRs.

    ``weight`` (B, N): per-token weight of the mean, so that masked tokens (DynamicViT training
    masks, ATS duplicate placeholders) do not count; ``None`` for a plain mean.
    """
    parts = []
    if gap:
        parts.append(token_mean(x, num_prefix, weight).unsqueeze(1))
    if clr is not None:
        parts.append(x[:, clr])
    return torch.cat(parts, dim=1)
