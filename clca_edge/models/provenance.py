"""Token provenance: which original patches each token stands for, taken from the very forward
pass that classifies an image.

Reducers mix tokens only through the primitives of ``reduction.functional`` (gather, fuse, merge,
soft merge, bipartite merge, concatenate). While a trace is active (``record_provenance``), each
primitive also hands the trace the matrix it applied, W (B, k, n): output token i is
sum_j W[i, j] * input token j. The trace multiplies those matrices through every location:

    A_after = W_location @ A_before,  A (B, tokens, patches), A at the start = identity,

so A[b, t, p] is the share of original patch p in token t (rows of patch tokens sum to 1: selection
copies a row, merges and soft merges average rows). Recovered cache tokens (CLC) enter as rows of
zeros: they summarise earlier layers, not patches. Each token also carries a role (a patch token,
EViT's fused token, a recovered cache token, an ATS placeholder).

Nothing is recomputed and no second model runs: the matrices are the ones the reducers built for
their own output. With no trace active every hook is one ``ContextVar.get`` that returns ``None``,
and the model computes, and exports, exactly what it does without this module.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Iterator, Optional, Sequence

import torch
from torch import Tensor

from ..core.errors import ConfigError


class Role(IntEnum):
    """What a token is. When tokens are merged, the output takes the lowest role of its members,
    so a group holding at least one patch token is a patch token."""

    PATCH = 0  # stands for one or more original patches (selected, or merged with others)
    FUSED = 1  # EViT: the attention-weighted sum of the tokens dropped at a location
    CACHE = 2  # CLC: recovered from the cross-layer cache (a block's average token or a CLR token)
    PLACEHOLDER = 3  # ATS: a repeated pick, masked out of attention (kept for static shapes)


_ACTIVE: ContextVar[Optional["ProvenanceTrace"]] = ContextVar("clca_edge_provenance", default=None)


def active_trace() -> Optional["ProvenanceTrace"]:
    """The trace recording the current forward pass, or ``None`` (always, unless recording)."""
    return _ACTIVE.get()


@dataclass
class LocationTrace:
    """The tokens after one reduction location (before any cache tokens are recovered there)."""

    assign: Tensor  # (B, n, N) share of each original patch in each token
    roles: Tensor  # (B, n) Role values
    merged: bool  # the location merged tokens (groups are meaningful) rather than only selecting
    block: int = -1  # the block index (as in ``locations``); -1 if the trace was not told

    @property
    def num_tokens(self) -> int:
        return int(self.assign.shape[1])

    def count(self, image: int, role: Role) -> int:
        return int((self.roles[image] == role).sum())

    def _covered(self, image: int, role: Role) -> Tensor:
        """(N,) bool: original patches some token of ``role`` draws on."""
        return ((self.assign[image] > 0) & (self.roles[image] == role).unsqueeze(-1)).any(dim=0)

    def kept(self, image: int) -> list[int]:
        """Original patches some patch token still stands for, ascending."""
        return torch.nonzero(self._covered(image, Role.PATCH)).flatten().tolist()

    def fused(self, image: int) -> list[int]:
        """Original patches no patch token stands for but a fused token does (EViT)."""
        only = self._covered(image, Role.FUSED) & ~self._covered(image, Role.PATCH)
        return torch.nonzero(only).flatten().tolist()

    def owner(self, image: int) -> Tensor:
        """(N,) for each original patch, the index of the patch token that draws most on it, -1
        where no patch token does (dropped, or only inside a fused or cache token)."""
        a = torch.where((self.roles[image] == Role.PATCH).unsqueeze(-1), self.assign[image], 0.0)
        best, idx = a.max(dim=0)
        return torch.where(best > 0, idx, torch.full_like(idx, -1))

    def groups(self, image: int) -> list[list[int]]:
        """Patch tokens as groups of original patches (each patch in the token that draws most on
        it), in token order, empty groups left out."""
        by_token: dict[int, list[int]] = {}
        for p, t in enumerate(self.owner(image).tolist()):
            if t >= 0:
                by_token.setdefault(t, []).append(p)
        return [by_token[t] for t in sorted(by_token)]


@dataclass
class ProvenanceTrace:
    """Follows the reducible tokens (everything after CLS/CLR/registers) through one forward pass."""

    num_patches: int = 0
    locations: list[LocationTrace] = field(default_factory=list)
    cls_tokens: Optional[list[Tensor]] = None  # what the CLA head classified, when the model has one
    blocks: list[int] = field(default_factory=list)  # block of each reduction, in the order they run
    _assign: Optional[Tensor] = None
    _roles: Optional[Tensor] = None
    _input: Optional[Tensor] = None
    # id(tensor) -> (tensor, W from the reducer input or None for identity, roles, merged)
    _derived: dict = field(default_factory=dict)

    # -- model hooks -----------------------------------------------------------------------

    @torch.no_grad()
    def start(self, batch: int, num_patches: int, device: torch.device) -> None:
        """A forward pass begins: every reducible token is its own patch."""
        self.num_patches = num_patches
        self.locations = []
        self.cls_tokens = None
        self._assign = torch.eye(num_patches, device=device).expand(batch, -1, -1)
        self._roles = torch.full((batch, num_patches), int(Role.PATCH), dtype=torch.long, device=device)

    def begin(self, x: Tensor) -> None:
        """A reducer is about to run on the reducible tokens ``x`` (B, n, C)."""
        self._input = x
        self._derived = {}

    @torch.no_grad()
    def end(self, out: Tensor, presence: Optional[Tensor], method: str = "") -> None:
        """The reducer returned ``out``; ``presence`` (B, k) is 0 where it left a placeholder."""
        src = self._source(out)
        if src is None:
            raise ConfigError(
                f"method {method!r} cannot report which patches it keeps: its reducer builds its output "
                "without reduction.functional's primitives (gather_tokens, concat_tokens, fuse_dropped, "
                "merge_by_assignment, weighted_group_mean, soft_merge, bipartite_merge); use them to mix tokens")
        weights, roles, merged = src
        assign = self._assign if weights is None else weights @ self._assign
        if presence is not None:
            roles = torch.where(presence > 0, roles, torch.full_like(roles, int(Role.PLACEHOLDER)))
        self._assign, self._roles = assign, roles
        i = len(self.locations)
        self.locations.append(LocationTrace(assign, roles, merged, self.blocks[i] if i < len(self.blocks) else -1))
        self._input, self._derived = None, {}

    @torch.no_grad()
    def recovered(self, count: int) -> None:
        """``count`` cache tokens were appended after the current tokens."""
        b, _, n = self._assign.shape
        self._assign = torch.cat([self._assign, self._assign.new_zeros(b, count, n)], dim=1)
        self._roles = torch.cat([self._roles, self._roles.new_full((b, count), int(Role.CACHE))], dim=1)

    # -- primitive hooks (reduction.functional) -------------------------------------------

    @torch.no_grad()
    def mixed(self, src: Tensor, out: Tensor, weights: Tensor, role: Optional[Role] = None,
              merged: bool = True) -> None:
        """``out`` = ``weights`` (B, k, n) @ ``src`` tokens (B, n, C); ``role`` forces the role of
        every output token (else each takes the lowest role among its members)."""
        source = self._source(src)
        if source is None:
            return
        w_src, roles_src, merged_src = source
        weights = weights.detach().float()
        if role is None:
            members = torch.where(weights > 0, roles_src.unsqueeze(1), torch.full_like(roles_src.unsqueeze(1), 99))
            roles = members.amin(dim=-1)
        else:
            roles = roles_src.new_full(weights.shape[:2], int(role))
        total = weights if w_src is None else weights @ w_src
        self._derived[id(out)] = (out, total, roles, merged or merged_src)

    @torch.no_grad()
    def selected(self, src: Tensor, out: Tensor, idx: Tensor) -> None:
        """``out`` = the rows ``idx`` (B, k) of ``src`` (B, n, C)."""
        if self._source(src) is None:
            return
        onehot = (idx.unsqueeze(-1) == torch.arange(src.shape[1], device=idx.device)).float()
        self.mixed(src, out, onehot, merged=False)

    @torch.no_grad()
    def concatenated(self, parts: Sequence[Tensor], out: Tensor) -> None:
        sources = [self._source(p) for p in parts]
        if any(s is None for s in sources):
            return
        n_in = self._input.shape[1]
        ws = []
        for (w, _, _), part in zip(sources, parts):
            ws.append(torch.eye(n_in, device=part.device).expand(part.shape[0], -1, -1) if w is None else w)
        roles = torch.cat([s[1] for s in sources], dim=1)
        self._derived[id(out)] = (out, torch.cat(ws, dim=1), roles, any(s[2] for s in sources))

    def _source(self, t: Tensor):
        """(W from the reducer input to ``t`` or None for identity, roles of ``t``, merged), or
        None when ``t`` is not the reducer's tokens (side data such as sizes or biases)."""
        inp = self._input
        if inp is None:
            return None
        if t is inp:
            return None, self._roles, False
        entry = self._derived.get(id(t))
        if entry is not None and entry[0] is t:
            return entry[1], entry[2], entry[3]
        # A per-token transform of the input (PatchMerger merges LayerNorm-ed tokens) has the
        # input's shape; side data (sizes, biases, ToMe's keys) does not.
        if t.shape == inp.shape:
            return None, self._roles, False
        return None


@contextmanager
def record_provenance(model) -> Iterator[ProvenanceTrace]:
    """Record token provenance during the forward passes of ``model`` (a ClcaVisionTransformer)
    inside the block; the trace holds the last pass. The model itself is not changed."""
    # Reductions run in plan order and inactive locations not at all, so the plan names them.
    trace = ProvenanceTrace(blocks=[b.index for b in getattr(model, "token_plan", []) if b.reduced])
    hook = None
    head = getattr(model, "cla_head", None)
    if head is not None:
        def keep_cls(_module, args):
            trace.cls_tokens = [t.detach() for t in args[0]]

        hook = head.register_forward_pre_hook(keep_cls)
    token = _ACTIVE.set(trace)
    try:
        yield trace
    finally:
        _ACTIVE.reset(token)
        if hook is not None:
            hook.remove()


__all__ = ["LocationTrace", "ProvenanceTrace", "Role", "active_trace", "record_provenance"]
