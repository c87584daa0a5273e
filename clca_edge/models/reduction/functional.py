"""Token reduction math as small pure functions, all export-safe.

Export rules (CLCA_SPEC.md): every TopK has a constant k, no sort/argsort, no scatter with a
reduction, no index_add_, no NonZero/unique, no in-place indexed writes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Guards ceil() against float error: 0.7 * 10 is 7.000000000000001 in binary floating point.
_EPS = 1e-9


def keep_count(n: int, keep_rate: float) -> int:
    """Tokens kept out of ``n`` at ``keep_rate``: ceil(r * n), at least 1, at most n."""
    return max(1, min(n, math.ceil(keep_rate * n - _EPS)))


def cls_attention_scores(cls_attn: Tensor) -> Tensor:
    """(B, H, n) attention of CLS per head -> (B, n), the mean over heads."""
    return cls_attn.mean(dim=1)


def topk_indices(scores: Tensor, k: int) -> Tensor:
    """Indices (B, k) of the k highest scores, highest first; k is a Python int (a constant)."""
    return torch.topk(scores, k, dim=-1, largest=True, sorted=True).indices


def gather_tokens(x: Tensor, idx: Tensor) -> Tensor:
    """x (B, n, C), idx (B, k) -> (B, k, C)."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def fuse_dropped(x: Tensor, weights: Tensor, idx: Tensor) -> Tensor:
    """EViT's extra token: sum of the tokens *not* in ``idx``, weighted by ``weights`` (B, n).

    Computed as (sum over all) - (sum over kept), which needs no complement index (and so no sort).
    """
    total = weights.unsqueeze(1) @ x
    kept = torch.gather(weights, 1, idx).unsqueeze(1) @ gather_tokens(x, idx)
    return total - kept


def one_hot_assign(assign: Tensor, num_groups: int, dtype: torch.dtype) -> Tensor:
    """Group ids (B, n) -> one-hot matrix (B, num_groups, n), built by comparison (no scatter)."""
    groups = torch.arange(num_groups, device=assign.device).view(1, num_groups, 1)
    return (assign.unsqueeze(1) == groups).to(dtype)


def merge_by_assignment(x: Tensor, onehot: Tensor, size: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Size-weighted mean of the tokens in each group, by matmul with a one-hot matrix.

    x (B, n, C), onehot (B, g, n), size (B, n, 1) or None -> merged (B, g, C), new size (B, g, 1).
    """
    if size is None:
        size = torch.ones_like(x[..., :1])
    weighted = onehot @ (x * size)
    new_size = onehot @ size
    return weighted / new_size.clamp(min=1e-6), new_size
