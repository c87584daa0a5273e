"""CLCA Vision Transformer: a timm VisionTransformer (its modules and weights, unforked) driven
block by block with token reduction, the cross-layer cache and the cross-layer aggregation head.

Forward contract: ``forward(images) -> logits`` in every mode. Training-only extra losses
(DynamicViT's keep-ratio loss) come from ``forward_with_aux(images) -> (logits, aux_loss)``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..core.errors import ConfigError
from .attention import check_attention_module
from .block import run_block
from .clca import CrossLayerAggregationHead, cache_carriers, token_mean
from .config import ModelConfig
from .provenance import active_trace
from .reduction import get_reducer_class
from .tokens import BlockTokens, TokenState, token_plan


def check_backbone(backbone: nn.Module, img_size: int) -> None:
    """Raise ConfigError unless ``backbone`` is a ViT this wrapper supports at ``img_size``."""
    from timm.models.vision_transformer import Block, VisionTransformer

    name = type(backbone).__name__
    if not isinstance(backbone, VisionTransformer):
        raise ConfigError(f"backbone {name} is not a timm VisionTransformer; use a vit_*/deit3_* model")
    if getattr(backbone, "cls_token", None) is None:
        raise ConfigError("the backbone has no class token; CLCA needs one (pick a ViT with class_token=True)")
    if getattr(backbone, "pos_embed", None) is None:
        raise ConfigError("the backbone has no absolute position embedding; CLCA needs one")
    if getattr(backbone, "dynamic_img_size", False):
        raise ConfigError("dynamic_img_size backbones are not supported: shapes must be static")
    patch = backbone.patch_embed.patch_size
    if img_size % patch[0] or img_size % patch[1]:
        raise ConfigError(f"img_size={img_size} is not divisible by the patch size {patch[0]}")
    if getattr(backbone, "global_pool", "token") not in ("token", "avg"):
        raise ConfigError(f"global_pool={backbone.global_pool!r} is not supported; use 'token' or 'avg'")
    for i, blk in enumerate(backbone.blocks):
        # run_block drives the pre-norm timm Block's parts one by one; other block types
        # (parallel, post-norm) compute something else.
        if not isinstance(blk, Block):
            raise ConfigError(f"block {i} is a {type(blk).__name__}; only timm's pre-norm Block is supported")
        check_attention_module(blk.attn)


class ClcaVisionTransformer(nn.Module):
    def __init__(self, backbone: nn.Module, config: ModelConfig) -> None:
        super().__init__()
        check_backbone(backbone, config.img_size)
        self.config = config
        self.backbone = backbone
        depth = len(backbone.blocks)
        self.plan = config.resolve(depth)
        dim = backbone.embed_dim
        heads = backbone.blocks[0].attn.num_heads
        clca = config.clca

        reducer_cls = get_reducer_class(config.method)
        self.reducers = nn.ModuleDict()
        if reducer_cls is not None:
            for loc, rate in zip(self.plan.locations, self.plan.keep_rates):
                self.reducers[str(loc)] = reducer_cls(keep_rate=rate, dim=dim, num_heads=heads, **config.method_kwargs)
        self._tracks_size = bool(reducer_cls is not None and reducer_cls.tracks_size)
        self._masks_with_bias = bool(reducer_cls is not None and reducer_cls.masks_with_bias)

        self.num_base_prefix = backbone.num_prefix_tokens
        self.num_clr = clca.active_clr
        self.num_prefix = self.num_base_prefix + self.num_clr
        if self.num_clr:
            # CLR tokens start as copies of the (possibly pretrained) CLS token.
            self.clr_token = nn.Parameter(backbone.cls_token.detach().clone().repeat(1, self.num_clr, 1))
            self.clr_pos_embed = nn.Parameter(torch.randn(1, self.num_clr, dim) * 0.02)
        self._clr_slice = slice(self.num_base_prefix, self.num_prefix) if self.num_clr else None

        # CLS after each location and after the last block (once, when a location is the last block).
        self._collect_at = frozenset(self.plan.locations) | {depth - 1}
        self.cla_head: Optional[CrossLayerAggregationHead] = None
        if clca.cla_head:
            self.cla_head = CrossLayerAggregationHead(
                dim, len(self._collect_at), config.num_classes, drop_rate=backbone.head_drop.p
            )
        self._recovery = frozenset(self.plan.recovery)

        num_patches = backbone.patch_embed.num_patches
        by_index = {int(k): v for k, v in self.reducers.items()}
        self.token_plan: list[BlockTokens] = token_plan(num_patches, self.num_prefix, self.plan, clca, by_index)
        # SiT/PatchMerger size their k-dependent parameters from the planned input count, here,
        # before any weights are loaded (strict checkpoint reloads need a config-fixed state_dict).
        for loc, red in by_index.items():
            red.bind(self._entering(self.token_plan, loc))
        if by_index:
            # DynamicViT's training pass masks instead of dropping: its targets need the full counts.
            unreduced = token_plan(num_patches, self.num_prefix, self.plan, clca, {})
            for loc, red in by_index.items():
                red.bind_unreduced(self._entering(unreduced, loc), len(by_index))
        # Static per-block lookups, so the forward pass does no string keys or set tests.
        self._block_reducers = [by_index.get(i) for i in range(depth)]

    # -- pieces ---------------------------------------------------------------------------

    def _entering(self, plan: list[BlockTokens], loc: int) -> int:
        """Reducible tokens entering block ``loc`` (before any reduction in it)."""
        return plan[loc - 1].output - self.num_prefix if loc else self.backbone.patch_embed.num_patches

    def embed(self, images: Tensor) -> Tensor:
        bb = self.backbone
        x = bb._pos_embed(bb.patch_embed(images))
        x = bb.patch_drop(x)
        if self.num_clr:
            clr = (self.clr_token + self.clr_pos_embed).expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, : self.num_base_prefix], clr, x[:, self.num_base_prefix :]], dim=1)
        return bb.norm_pre(x)

    def _initial_state(self, x: Tensor) -> TokenState:
        size = x.new_ones(x.shape[0], x.shape[1], 1) if self._tracks_size else None
        # No bias until a reducer makes one: an all-zero bias would only keep the blocks before
        # the first location off the fused attention kernel (TokenState.append fills it in later).
        return TokenState(x, size, None)

    def forward_with_aux(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and the sum of the reducers' auxiliary losses (zero when there are none)."""
        state = self._initial_state(self.embed(images))
        trace = active_trace()  # None unless provenance is being recorded (models.provenance)
        if trace is not None:
            trace.start(images.shape[0], self.backbone.patch_embed.num_patches, images.device)
        clca = self.config.clca
        cache: list[Tensor] = []
        cls_tokens: list[Tensor] = []
        aux_total = images.new_zeros(())
        for i, blk in enumerate(self.backbone.blocks):
            state, aux = run_block(blk, state, self.num_prefix, self._block_reducers[i])
            if aux is not None:
                aux_total = aux_total + aux
            carriers = None
            if i < self.plan.cache_until:
                # Taken before this block's recovery: the average is over the block's own tokens,
                # not over the cached ones about to be appended.
                weight = state.presence(self._masks_with_bias)
                carriers = cache_carriers(state.x, self.num_prefix, self._clr_slice, clca.gap_carriers, weight)
            if i in self._recovery and cache:
                recovered = torch.cat(cache, dim=1)
                state = state.append(TokenState(recovered))
                if trace is not None:
                    trace.recovered(recovered.shape[1])
                cache = []
            if carriers is not None:
                cache.append(carriers)
            if self.cla_head is not None and i in self._collect_at:
                cls_tokens.append(state.x[:, 0])
        return self._head(state, cls_tokens), aux_total

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_with_aux(images)[0]

    def _head(self, state: TokenState, cls_tokens: list[Tensor]) -> Tensor:
        if self.cla_head is not None:
            return self.cla_head(cls_tokens)
        bb = self.backbone
        x = bb.norm(state.x)
        if bb.global_pool == "avg":
            # The backbone's own pooling (its head was trained on it), over real tokens only:
            # not CLR, not ATS placeholders, not tokens a DynamicViT training policy dropped.
            x = token_mean(x, self.num_prefix, state.presence(self._masks_with_bias))
        else:
            x = x[:, 0]
        return bb.head(bb.head_drop(bb.fc_norm(x)))

    # -- introspection --------------------------------------------------------------------

    @property
    def cla_blocks(self) -> list[int]:
        """Blocks whose CLS token the CLA head reads, in the order it stacks them (empty without it)."""
        return sorted(self._collect_at) if self.cla_head is not None else []

    @property
    def tokens_per_block(self) -> list[int]:
        """Tokens entering each block's attention, prefix included."""
        return [b.attention for b in self.token_plan]

    def no_weight_decay(self) -> set[str]:
        names = {"backbone." + n for n in getattr(self.backbone, "no_weight_decay", lambda: set())()}
        if self.num_clr:
            names |= {"clr_token", "clr_pos_embed"}
        return names
