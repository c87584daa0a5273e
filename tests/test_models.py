"""Generated over the registry: every method x CLCA on/off x tiny backbones of each family."""

from __future__ import annotations

import math

import pytest
import torch

from clca_edge.models.reduction.functional import keep_count
from clca_edge.models.reduction import list_methods

from conftest import TINY_BACKBONES, TINY_IMG, tiny_model

METHODS = list_methods()
REDUCING = [m for m in METHODS if m != "none"]
NUM_PATCHES = (TINY_IMG // 16) ** 2


def _sequences_entering_blocks(model, images):
    """The token sequence entering each block, from one eval forward pass."""
    entering = []
    hooks = [b.norm1.register_forward_pre_hook(lambda m, a: entering.append(a[0].detach())) for b in model.backbone.blocks]
    with torch.no_grad():
        model(images)
    for h in hooks:
        h.remove()
    return entering


def _record_tokens(model):
    """Hooks recording how many tokens enter each block's attention and MLP."""
    seen = {"attn": [], "mlp": []}
    handles = []
    for blk in model.backbone.blocks:
        handles.append(blk.attn.qkv.register_forward_pre_hook(lambda m, a: seen["attn"].append(a[0].shape[1])))
        handles.append(blk.mlp.register_forward_pre_hook(lambda m, a: seen["mlp"].append(a[0].shape[1])))
    return seen, handles


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
@pytest.mark.parametrize("clca", [True, False], ids=["clca", "plain"])
@pytest.mark.parametrize("method", METHODS)
def test_forward_shapes_and_token_plan(method, clca, backbone, images):
    model = tiny_model(method, keep_rate=0.25, clca=clca, backbone=backbone).eval()
    seen, handles = _record_tokens(model)
    with torch.no_grad():
        logits = model(images)
    for h in handles:
        h.remove()
    assert logits.shape == (4, 5)
    assert torch.isfinite(logits).all()
    assert seen["attn"] == [b.attention for b in model.token_plan]
    assert seen["mlp"] == [b.mlp for b in model.token_plan]
    if method != "none":
        assert seen["attn"][-1] < seen["attn"][0], "reduction must shrink the sequence"


@pytest.mark.parametrize("clca", [True, False], ids=["clca", "plain"])
@pytest.mark.parametrize("method", METHODS)
def test_backward_reaches_every_trainable_part(method, clca, images):
    model = tiny_model(method, keep_rate=0.25, clca=clca).train()
    logits, aux = model.forward_with_aux(images)
    (logits.logsumexp(-1).mean() + aux).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    # timm's own classifier is unused when the CLA head replaces it.
    missing = [n for n in missing if not (clca and n.startswith(("backbone.head.", "backbone.norm.")))]
    assert missing == []
    assert model.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["topk", "evit"])
@pytest.mark.parametrize("rate", [0.1, 0.25, 0.5, 0.7, 1.0])
def test_token_counts_follow_the_keep_rate_formula(method, rate):
    """Without CLCA: after location j, ceil(r * n) patch tokens remain (+1 fused token for EViT)."""
    model = tiny_model(method, keep_rate=rate, clca=False, depth=6, img_size=128)
    n, prefix, expected = (128 // 16) ** 2, 1, []
    for i in range(6):
        expected.append(prefix + n)  # attention sees the tokens before this block's reduction
        if i in model.plan.locations:
            k = max(1, math.ceil(rate * n - 1e-9))
            if k < n:
                n = k + (1 if method == "evit" else 0)
    assert model.tokens_per_block == expected
    assert keep_count(790, 0.1) == 79 and keep_count(10, 0.7) == 7 and keep_count(3, 0.01) == 1


def test_per_location_keep_rates_compound():
    model = tiny_model("topk", keep_rate=(0.5, 0.5), locations=(0, 2), clca=False, depth=4, img_size=128)
    # 64 patches -> 32 after block 0 -> 16 after block 2 (+ CLS)
    assert [b.output for b in model.token_plan] == [33, 33, 17, 17]


def test_recovery_appends_cached_gap_and_clr_tokens(images):
    """CLC: at a recovery layer the sequence grows by exactly the cached carriers, and those are
    the GAP of the earlier blocks' non-prefix tokens and their CLR tokens."""
    model = tiny_model("topk", keep_rate=0.5, clca=True, locations=(1, 2)).eval()
    assert model.plan.recovery == (1, 2)
    entering = _sequences_entering_blocks(model, images)
    P = model.num_prefix
    assert P == 2  # CLS + one CLR
    x1, x2 = entering[1], entering[2]  # output of block 0, output of block 1 (after recovery)
    # block 1 keeps ceil(0.5 * 16) = 8 patch tokens, then recovers block 0's GAP + CLR.
    assert x1.shape[1] == P + NUM_PATCHES
    assert x2.shape[1] == P + 8 + 2
    torch.testing.assert_close(x2[:, -2], x1[:, P:].mean(dim=1))
    torch.testing.assert_close(x2[:, -1], x1[:, 1])
    plan = {b.index: b for b in model.token_plan}
    assert plan[1].recovered == 2 and plan[2].recovered == 2 and plan[0].recovered == 0


def test_clr_tokens_start_as_the_cls_token():
    model = tiny_model("evit", clca=True)
    torch.testing.assert_close(model.clr_token, model.backbone.cls_token)
    assert model.num_prefix == 2


def test_cla_head_sees_one_cls_per_location_plus_last():
    model = tiny_model("evit", clca=True, depth=6, locations=(1, 3))
    assert model.cla_head.groups == 3
    assert model.cla_head.aggregate.weight.shape == (2 * 64, 1, 3)


def test_clca_switches_are_independent(images):
    from clca_edge.models import ClcaConfig, create_model
    from conftest import TINY

    head_only = create_model("vit_tiny_patch16_224", method="topk", keep_rate=0.5, img_size=TINY_IMG, num_classes=3,
                             clca=ClcaConfig(cla_head=True, clc_cache=False), **TINY)
    assert head_only.num_clr == 0 and head_only.plan.recovery == ()
    cache_only = create_model("vit_tiny_patch16_224", method="topk", keep_rate=0.5, img_size=TINY_IMG, num_classes=3,
                              clca=ClcaConfig(cla_head=False, num_clr=2, gap_carriers=False), **TINY)
    assert cache_only.cla_head is None and cache_only.num_clr == 2
    for m in (head_only, cache_only):
        assert m.eval()(images).shape == (4, 3)


def test_eval_is_deterministic_and_batch_independent(images):
    model = tiny_model("evit", clca=True).eval()
    with torch.no_grad():
        full = model(images)
        single = torch.cat([model(images[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(full, single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", REDUCING)
def test_fused_and_explicit_attention_agree(method, images):
    """The fused kernel (+ the CLS row recomputed alone) and the explicit attention map give the
    same model: same reductions, same logits."""
    model = tiny_model(method, keep_rate=0.25, clca=True).eval()
    with torch.no_grad():
        fused = model(images)
        for blk in model.backbone.blocks:
            blk.attn.fused_attn = False
        explicit = model(images)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


def test_cached_average_excludes_the_tokens_recovered_at_the_same_block(images):
    """At a recovery block the carrier GAP is taken over the block's own tokens, before the
    cache is appended (the spec's 'current patch tokens')."""
    model = tiny_model("topk", keep_rate=0.5, clca=True, locations=(1, 2)).eval()
    entering = _sequences_entering_blocks(model, images)
    P = model.num_prefix
    x2, x3 = entering[2], entering[3]  # after block 1 (recovery), after block 2 (recovery)
    # x2 = [prefix, 8 kept, block-0 carriers (2)]; block 2 keeps 5 of those 10 and appends
    # block 1's carriers, whose GAP must be over x2's 8 kept tokens only.
    assert x2.shape[1] == P + 8 + 2 and x3.shape[1] == P + 5 + 2
    torch.testing.assert_close(x3[:, -2], x2[:, P:P + 8].mean(dim=1))
    torch.testing.assert_close(x3[:, -1], x2[:, 1])


def test_head_follows_the_backbones_average_pooling(images):
    """Without the CLA head, a global_pool='avg' backbone classifies from the mean of its patch
    tokens (CLR excluded), as its own head was trained to; with method none it equals timm."""
    plain = tiny_model("none", clca=False, global_pool="avg").eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(images), plain.backbone(images), atol=1e-5, rtol=1e-5)


def test_avg_pool_head_ignores_ats_placeholders(images, monkeypatch):
    """ATS keeps repeated picks as masked placeholders; the avg-pool head must not count them."""
    import clca_edge.models.vit as vit_mod

    seen = {}
    real = vit_mod.token_mean

    def spy(x, num_prefix, weight=None):
        seen.update(x=x, num_prefix=num_prefix, weight=weight)
        return real(x, num_prefix, weight)

    monkeypatch.setattr(vit_mod, "token_mean", spy)
    torch.manual_seed(0)
    model = tiny_model("ats", keep_rate=0.9, clca=False, global_pool="avg").eval()
    with torch.no_grad():
        logits = model(images)
        w = seen["weight"][:, seen["num_prefix"]:]
        assert (w == 0).any(), "expected ATS placeholders in this configuration"
        tokens = seen["x"][:, seen["num_prefix"]:]
        weighted = (tokens * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True)
        bb = model.backbone
        torch.testing.assert_close(logits, bb.head(bb.fc_norm(weighted)))
        assert not torch.allclose(logits, bb.head(bb.fc_norm(tokens.mean(1))), atol=1e-4)
