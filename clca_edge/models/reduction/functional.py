"""Token reduction math as small pure functions, all export-safe.

Export rules (``deploy.graph_check`` enforces them on every exported graph): every TopK has a constant k, no sort/argsort, no scatter with a
reduction, no index_add_, no NonZero/unique, no in-place indexed writes.

Reducers mix tokens only through the primitives here (gather_tokens, concat_tokens, fuse_dropped,
merge_by_assignment, weighted_group_mean, soft_merge, bipartite_merge). Each hands the matrix it
applied to an active provenance trace (``models.provenance``); with none active (always, unless
``record_provenance`` is on) that is one ``ContextVar.get`` and nothing else, so the computed and
exported graph is unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..provenance import Role, active_trace

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


def _gather(x: Tensor, idx: Tensor) -> Tensor:
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def gather_tokens(x: Tensor, idx: Tensor) -> Tensor:
    """x (B, n, C), idx (B, k) -> (B, k, C)."""
    out = _gather(x, idx)
    trace = active_trace()
    if trace is not None:
        trace.selected(x, out, idx)
    return out


def concat_tokens(parts: list[Tensor]) -> Tensor:
    """Token sequences (B, n_i, C) one after the other (B, sum n_i, C)."""
    out = torch.cat(parts, dim=1)
    trace = active_trace()
    if trace is not None:
        trace.concatenated(parts, out)
    return out


def fuse_dropped(x: Tensor, weights: Tensor, idx: Tensor) -> Tensor:
    """EViT's extra token: sum of the tokens *not* in ``idx``, weighted by ``weights`` (B, n).

    Computed as (sum over all) - (sum over kept), which needs no complement index (and so no sort).
    """
    total = weights.unsqueeze(1) @ x
    kept = torch.gather(weights, 1, idx).unsqueeze(1) @ _gather(x, idx)
    out = total - kept
    trace = active_trace()
    if trace is not None:
        dropped = 1.0 - one_hot_assign(idx, x.shape[1], weights.dtype).sum(dim=-1)  # (B, n) 0 where kept
        trace.mixed(x, out, (weights * dropped).unsqueeze(1), role=Role.FUSED, merged=False)
    return out


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
    out = weighted / new_size.clamp(min=1e-6)
    trace = active_trace()
    if trace is not None:
        trace.mixed(x, out, onehot * size.transpose(1, 2) / new_size.clamp(min=1e-6))
    return out, new_size


# -- soft merging (SiT, PatchMerger) and density-peak clustering (DPC-KNN) ------------------------


def soft_merge(logits: Tensor, x: Tensor) -> Tensor:
    """Logits (B, k, n) of k output tokens over n input tokens -> k convex combinations (B, k, C)
    of ``x`` (B, n, C): a softmax over the input tokens, then one matmul."""
    weights = logits.softmax(dim=-1)
    out = weights @ x
    trace = active_trace()
    if trace is not None:
        trace.mixed(x, out, weights)
    return out


def pairwise_sq_dists(x: Tensor) -> Tensor:
    """Squared Euclidean distances (B, n, n) as |a|^2 + |b|^2 - 2ab: one matmul, no cdist (which
    exports badly), clamped at 0 against rounding."""
    sq = (x * x).sum(-1)
    return (sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2.0 * (x @ x.transpose(-2, -1))).clamp(min=0.0)


def knn_density(sq_dists: Tensor, k: int) -> Tensor:
    """DPC-KNN density (B, n): exp(-mean of the k smallest squared distances of each token, itself
    included); ``k`` is a Python int."""
    nearest = torch.topk(sq_dists, k, dim=-1, largest=False, sorted=False).values
    return torch.exp(-nearest.mean(dim=-1))


def distance_to_denser(dists: Tensor, density: Tensor) -> Tensor:
    """Distance (B, n) of each token to its nearest denser token; the densest gets the largest
    distance in the sample, so it always ranks as a centre.

    Ties in density are broken by position (the earlier token counts as denser), which makes
    "denser" a strict total order without the reference's random noise: deterministic, and two
    identical tokens can no longer both claim the maximum distance.
    """
    n = density.shape[-1]
    pos = torch.arange(n, device=density.device)
    earlier = pos.view(1, 1, n) < pos.view(1, n, 1)  # [i, j]: j comes before i
    rho_i, rho_j = density.unsqueeze(-1), density.unsqueeze(-2)
    denser = (rho_j > rho_i) | ((rho_j == rho_i) & earlier)
    largest = dists.flatten(1).amax(dim=-1).view(-1, 1, 1)
    return torch.where(denser, dists, largest).amin(dim=-1)


def nearest_centre(dists: Tensor, centres: Tensor) -> Tensor:
    """Cluster id (B, n) in 0..k-1 of the nearest of the ``centres`` (B, k) token indices; every
    centre is assigned to its own cluster even when another centre is equally close."""
    B, n, _ = dists.shape
    k = centres.shape[-1]
    to_centres = torch.gather(dists, 2, centres.unsqueeze(1).expand(B, n, k))
    is_centre = centres.unsqueeze(1) == torch.arange(n, device=dists.device).view(1, n, 1)
    return torch.where(is_centre, torch.full_like(to_centres, -1.0), to_centres).argmin(dim=-1)


def weighted_group_mean(x: Tensor, onehot: Tensor, scores: Tensor) -> Tensor:
    """Mean of each group's tokens weighted by exp(score): x (B, n, C), onehot (B, g, n), scores
    (B, n) -> (B, g, C). A softmax over each group's members (non-members masked), so large scores
    cannot overflow exp(); every group must have at least one member."""
    masked = torch.where(onehot > 0, scores.unsqueeze(1), torch.full_like(onehot, torch.finfo(onehot.dtype).min))
    weights = masked.softmax(dim=-1)
    out = weights @ x
    trace = active_trace()
    if trace is not None:
        trace.mixed(x, out, weights)
    return out


# -- masking, sampling and merging (DynamicViT, ATS, ToMe) ------------------------------------

# Key bias that masks a token out of attention: exp(-1e4) is 0 in float32, and -1e4 (unlike
# -inf or finfo.min) stays finite in float16, so masked rows never turn into NaN.
MASKED_BIAS = -1e4


def gumbel_keep_mask(log_probs: Tensor, tau: float = 1.0) -> Tensor:
    """(B, n, 2) log-probabilities (channel 0 = keep) -> (B, n) hard 0/1 keep decisions whose
    gradient is that of the Gumbel-softmax sample (straight-through)."""
    return torch.nn.functional.gumbel_softmax(log_probs, tau=tau, hard=True, dim=-1)[..., 0]


def ats_significance(cls_attn: Tensor, values: Tensor, present: Tensor | None = None) -> Tensor:
    """ATS token significance: CLS attention times the norm of the value vector, per head, then
    averaged over heads and normalised to sum to one. cls_attn (B, H, n), values (B, H, n, d);
    ``present`` (B, n) zeroes the significance of masked placeholder tokens."""
    sig = (cls_attn * values.norm(dim=-1)).mean(dim=1)
    if present is not None:
        sig = sig * present
    return sig / sig.sum(dim=-1, keepdim=True).clamp(min=1e-12)


def inverse_transform_picks(probs: Tensor, k: int) -> Tensor:
    """Deterministic inverse-transform sampling: token indices (B, k) at the quantiles
    u_i = (i + 1/2) / k of the distribution ``probs`` (B, n), in ascending order.

    Token j is picked for u when it is the first with cdf_j >= u, i.e. j = #{cdf < u}: a count of
    comparisons (no searchsorted, no sort). Tokens of zero probability are never picked.
    """
    n = int(probs.shape[-1])
    cdf = probs.cumsum(dim=-1)
    u = (torch.arange(k, device=probs.device, dtype=probs.dtype) + 0.5) / k
    idx = (cdf.unsqueeze(1) < u.view(1, k, 1)).sum(dim=-1)
    # Float error can leave cdf[-1] a hair below the last quantile.
    return idx.clamp(max=n - 1)


def repeated_picks(idx: Tensor) -> Tensor:
    """(B, k) ascending indices -> (B, k) bool, True where a pick repeats the one before it."""
    first = torch.zeros_like(idx[:, :1], dtype=torch.bool)
    return torch.cat([first, idx[:, 1:] == idx[:, :-1]], dim=1)


def unselected_in_order(selected: Tensor, count: int) -> Tensor:
    """Indices (B, count) of the positions where ``selected`` (B, n) is 0, in ascending order.

    A top-k over (not selected) * n - position: every unselected position outranks every selected
    one and positions never tie, so this is exact without a sort or a complement index.
    """
    n = int(selected.shape[-1])  # a constant in traced graphs, like every count here
    pos = torch.arange(n, device=selected.device, dtype=torch.float32)
    rank = (1.0 - selected.float()) * (2 * n) - pos
    return topk_indices(rank, count)


def bipartite_merge(x: Tensor, size: Tensor, metric: Tensor, r: int) -> tuple[Tensor, Tensor, Tensor]:
    """One round of ToMe bipartite soft matching: merge ``r`` (<= n // 2) tokens away.

    Set A = odd positions, B = even positions; each A token finds its most similar B token (cosine
    of ``metric``); the ``r`` A tokens with the best matches are averaged into their B tokens,
    weighted by size. Returns [unmerged A in order, B] as (x, size, metric), n - r tokens each;
    the metric is merged the same way so that a further round can match on it.
    x (B, n, C), size (B, n, 1), metric (B, n, c).
    """
    n = int(x.shape[1])
    if not 0 < r <= n // 2:
        raise ValueError(f"a bipartite round merges 1..{n // 2} of {n} tokens, not {r}")
    m = metric / metric.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    sim = m[:, 1::2] @ m[:, 0::2].transpose(-1, -2)  # (B, |A|, |B|)
    best, dst = sim.max(dim=-1)
    src = topk_indices(best, r)  # (B, r): the A tokens that merge
    num_a, num_b = n // 2, n - n // 2
    keep_a = None
    if r < num_a:  # static; a TopK with K = 0 would be legal ONNX but upsets TensorRT
        chosen = one_hot_assign(src, num_a, x.dtype).sum(dim=-1)  # (B, |A|) 0/1
        keep_a = unselected_in_order(chosen, num_a - r)
    # (B, |B|, r): which B token each merging A token joins.
    into_b = one_hot_assign(torch.gather(dst, 1, src), num_b, x.dtype)

    def merge(t: Tensor, s: Tensor) -> Tensor:
        a, b = t[:, 1::2], t[:, 0::2]
        return b * s[:, 0::2] + into_b @ (_gather(a, src) * _gather(s[:, 1::2], src))

    def with_unmerged(t: Tensor, merged_b: Tensor) -> Tensor:
        return merged_b if keep_a is None else torch.cat([_gather(t[:, 1::2], keep_a), merged_b], dim=1)

    new_size_b = size[:, 0::2] + into_b @ _gather(size[:, 1::2], src)
    denom = new_size_b.clamp(min=1e-6)
    new_x = with_unmerged(x, merge(x, size) / denom)
    new_metric = with_unmerged(metric, merge(metric, size) / denom)
    trace = active_trace()
    if trace is not None:
        # The round is linear in the tokens: applied to the identity it yields its own matrix.
        eye = torch.eye(n, dtype=x.dtype, device=x.device).expand(x.shape[0], -1, -1)
        trace.mixed(x, new_x, with_unmerged(eye, merge(eye, size) / denom))
    return new_x, with_unmerged(size, new_size_b), new_metric


def merge_rounds(n: int, k: int) -> list[int]:
    """Tokens merged by each bipartite round to go from ``n`` to ``k`` tokens (each <= n // 2)."""
    rounds = []
    while n > k:
        r = min(n - k, n // 2)
        rounds.append(r)
        n -= r
    return rounds
