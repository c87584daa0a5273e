"""DPC-KNN (TCFormer's clustering, as used by arkel23/CLCA): density-peak clustering of the tokens
with k nearest neighbours, one merged token per cluster (before block loc).

- distances d_ij = |x_i - x_j| / sqrt(D) on the detached tokens (clustering passes no gradient);
- density rho_i = exp(-mean of the k_nn smallest d_ij^2, itself included); k_nn = 5 as in the
  reference, clamped to n;
- delta_i = distance to the nearest denser token (the densest gets the largest distance); density
  ties are broken by position instead of the reference's random noise, so results are repeatable;
- centres = top-K of rho * delta (K = keep_count(n, r)), output clusters in that order;
- every token joins its nearest centre (each centre its own cluster);
- merged token = mean of the members weighted by exp(score), score = Linear(D, 1)(x), the only
  learned part (trunc-normal std .02, no bias: about equal weights at step 0), computed as a
  softmax over each cluster's members (no overflow) and a matmul with the one-hot assignment.
  ``equal_weight=True`` gives the plain mean and no parameters.

Unlike the reference, the CLR and recovered cache tokens are not a protected suffix: the reducer
sees every non-prefix token (our spec: recovered tokens take part in later reductions), and the
CLR tokens are prefix tokens it never sees.
"""

from __future__ import annotations

from torch import nn

from ....core.errors import ConfigError
from ..base import ReduceInput, ReduceOutput
from ..functional import (
    distance_to_denser,
    knn_density,
    merge_by_assignment,
    nearest_centre,
    one_hot_assign,
    pairwise_sq_dists,
    topk_indices,
    weighted_group_mean,
)
from ..registry import register_reducer
from ._bound import BoundReducer


@register_reducer("dpcknn")
class DpcKnnReducer(BoundReducer):
    label = "DPC-KNN"

    def __init__(self, keep_rate: float, dim: int, num_heads: int, k_nn: int = 5, equal_weight: bool = False,
                 **kwargs) -> None:
        super().__init__(keep_rate, dim, num_heads, **kwargs)
        if isinstance(k_nn, bool) or not isinstance(k_nn, int) or k_nn < 1:
            raise ConfigError(f"dpcknn k_nn={k_nn!r} must be a positive integer (the reference uses 5)")
        self.k_nn = k_nn
        self.equal_weight = bool(equal_weight)
        self.score = None

    def build(self, k: int) -> None:
        # Only active locations get the score layer: an unused one would never see a gradient.
        if not self.equal_weight:
            # No bias: the weights are a softmax within each cluster, which a shared offset cannot
            # change, so a bias would never receive a gradient.
            self.score = nn.Linear(self.dim, 1, bias=False)
            nn.init.trunc_normal_(self.score.weight, std=0.02)

    def cluster(self, x):
        """Cluster ids (B, n) in 0..K-1 for the tokens x (B, n, D); no gradient flows through."""
        n = x.shape[1]
        sq = pairwise_sq_dists(x.detach()) / x.shape[-1]
        density = knn_density(sq, min(self.k_nn, n))
        dists = sq.sqrt()
        centres = topk_indices(density * distance_to_denser(dists, density), self.num_out(n))
        return nearest_centre(dists, centres)

    def reduce(self, inp: ReduceInput) -> ReduceOutput:
        x = inp.x
        self.check_input(x.shape[1])
        onehot = one_hot_assign(self.cluster(x), self.num_out(x.shape[1]), x.dtype)  # (B, K, n)
        if self.score is None:
            merged, _ = merge_by_assignment(x, onehot)
        else:
            merged = weighted_group_mean(x, onehot, self.score(x).squeeze(-1))
        return ReduceOutput(x=merged)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k_nn={self.k_nn}, learned_weights={self.score is not None}"
