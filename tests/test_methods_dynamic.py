"""Method-specific behaviour of DynamicViT, ATS and ToMe (shapes, backward and ONNX parity of
every method are covered over the registry by test_models.py and test_export.py)."""

from __future__ import annotations

import pytest
import torch

from clca_edge.models import ClcaConfig, ModelConfig
from clca_edge.models.attention import attention_forward
from clca_edge.models.clca import cache_carriers
from clca_edge.models.flops import cost_report
from clca_edge.models.reduction.base import ReduceInput
from clca_edge.models.reduction.functional import (
    MASKED_BIAS,
    bipartite_merge,
    inverse_transform_picks,
    keep_count,
    merge_rounds,
    repeated_picks,
)
from clca_edge.models.tokens import TokenState
from clca_edge.models.zoo import REFERENCE_GFLOPS

from conftest import tiny_model

N = 16  # patches of a tiny model (64 px, patch 16)


def _force_keep(model, keep: bool) -> None:
    """Make every predictor certain (keep or drop), so that Gumbel noise cannot flip a decision."""
    for red in model.reducers.values():
        last = red.predictor.classify[-2]
        torch.nn.init.zeros_(last.weight)
        last.bias.data = torch.tensor([1e3, -1e3] if keep else [-1e3, 1e3])


def _reducer_outputs(model):
    outs, handles = [], []
    for red in model.reducers.values():
        handles.append(red.register_forward_hook(lambda m, a, o: outs.append((a[0], o))))
    return outs, handles


# -- DynamicViT -------------------------------------------------------------------------------


def test_dynamicvit_keep_ratio_loss_targets_the_inference_plan(images):
    model = tiny_model("dynamicvit", keep_rate=0.5, clca=False).train()
    # Inference keeps 8, 4, 2 of the 16 patches; a training pass keeps all 16 in the sequence.
    assert [model.reducers[str(i)].target for i in (1, 2, 3)] == [8 / 16, 4 / 16, 2 / 16]
    _force_keep(model, keep=True)
    _, aux = model.forward_with_aux(images)
    expected = 2.0 / 3 * sum((1 - t) ** 2 for t in (0.5, 0.25, 0.125))
    assert aux.item() == pytest.approx(expected, rel=1e-5)
    _force_keep(model, keep=False)
    _, aux = model.forward_with_aux(images)
    assert aux.item() == pytest.approx(2.0 / 3 * sum(t**2 for t in (0.5, 0.25, 0.125)), rel=1e-5)
    model.eval()
    with torch.no_grad():
        assert model.forward_with_aux(images)[1].item() == 0.0


def test_dynamicvit_masks_in_training_and_gathers_top_k_in_eval(images):
    model = tiny_model("dynamicvit", keep_rate=0.5, clca=True).train()
    seen = []
    hooks = [b.attn.qkv.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1])) for b in model.backbone.blocks]
    outs, handles = _reducer_outputs(model)
    torch.manual_seed(0)
    model.forward_with_aux(images)
    # Training: nothing dropped (CLS + CLR + 16 patches, + GAP and CLR of blocks 0, 1 after 1, 2).
    assert seen == [18, 18, 20, 22]
    # while inference drops before blocks 1-3: 16 -> 8 (+2 recovered) -> 5 (+2) -> 4 patches.
    assert [b.attention for b in model.token_plan] == [18, 2 + 8, 2 + 5, 2 + 4]
    policies = [o.policy for _, o in outs]
    for p in policies:
        assert set(p.unique().tolist()) <= {0.0, 1.0}
    # Masks compound: a token dropped at one location stays dropped at the next.
    assert (policies[1][:, : policies[0].shape[1]] <= policies[0]).all()
    assert (policies[2][:, : policies[1].shape[1]] <= policies[1]).all()

    model.eval()
    outs.clear()
    with torch.no_grad():
        model(images)
    inp, out = outs[0]
    assert out.policy is None
    scores = model.reducers["1"].predictor(inp.x)[..., 0]
    k = keep_count(inp.x.shape[1], 0.5)
    top = scores.topk(k, dim=-1).indices
    torch.testing.assert_close(out.x, torch.gather(inp.x, 1, top[..., None].expand(-1, -1, inp.x.shape[-1])))
    for h in hooks + handles:
        h.remove()


def test_dynamicvit_predictor_learns_from_the_task_loss(images):
    """The straight-through masks carry the classification gradient into the predictor."""
    model = tiny_model("dynamicvit", keep_rate=0.5, clca=False).train()
    torch.manual_seed(1)
    logits, _ = model.forward_with_aux(images)
    logits.logsumexp(-1).mean().backward()  # no aux loss
    grads = [p.grad for p in model.reducers["1"].predictor.parameters()]
    assert all(g is not None for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_policy_masked_tokens_do_not_affect_kept_ones():
    torch.manual_seed(0)
    attn = tiny_model("none", clca=False).backbone.blocks[0].attn.eval()
    x = torch.randn(2, 6, 64)
    policy = torch.tensor([[1, 1, 0, 1, 0, 1], [1, 0, 1, 1, 1, 0]], dtype=torch.float32)
    out, _ = attention_forward(attn, x, policy=policy)
    x2 = torch.where(policy[..., None] > 0, x, torch.randn_like(x) * 5)
    out2, _ = attention_forward(attn, x2, policy=policy)
    kept = policy > 0
    torch.testing.assert_close(out[kept], out2[kept], atol=1e-5, rtol=1e-5)
    # A kept token attends exactly as if the masked tokens were gone (up to the 1e-6 smoothing).
    sub, _ = attention_forward(attn, x[0:1, kept[0]])
    torch.testing.assert_close(out[0:1, kept[0]], sub, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("clca", [False, True])
@pytest.mark.parametrize("rate", [0.1, 0.25, 0.5, 0.7])
def test_dynamicvit_gflops_within_3_percent_of_reference(rate, clca):
    cfg = ModelConfig(backbone="vit_base_patch16_224", method="dynamicvit", keep_rate=rate, img_size=448,
                      num_classes=200, clca=ClcaConfig() if clca else ClcaConfig.off())
    ref = REFERENCE_GFLOPS["dynamicvit"][rate][int(clca)]
    assert cost_report(cfg).gflops == pytest.approx(ref, rel=0.03)


# -- ATS --------------------------------------------------------------------------------------


def test_inverse_transform_picks_follow_the_cdf():
    probs = torch.tensor([[0.5, 0.0, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0], [0.25, 0.25, 0.25, 0.25]])
    idx = inverse_transform_picks(probs, 4)
    # quantiles 1/8, 3/8, 5/8, 7/8; zero-probability tokens are never picked
    assert idx.tolist() == [[0, 0, 2, 2], [3, 3, 3, 3], [0, 1, 2, 3]]
    assert repeated_picks(idx).tolist() == [[False, True, False, True], [False, True, True, True], [False] * 4]


def test_ats_keeps_k_tokens_and_masks_repeats():
    model = tiny_model("ats", keep_rate=0.5, clca=False)
    red = model.reducers["1"]
    B, H, n, d = 1, 2, 8, 4
    cls_attn = torch.zeros(B, H, n)
    cls_attn[..., 5] = 0.6  # significance 2/3 on token 5, 1/3 on token 2 (token 0 is masked)
    cls_attn[..., 0] = cls_attn[..., 2] = 0.3
    values = torch.ones(B, H, n, d)
    x = torch.randn(B, n, 64)
    bias = torch.zeros(B, n)
    bias[0, 0] = MASKED_BIAS  # a placeholder from an earlier location is never picked again
    out = red(ReduceInput(x=x, prefix=x[:, :1], cls_attn=cls_attn, values=values, bias=bias))
    assert out.x.shape == (1, 4, 64)  # exactly k = ceil(0.5 * 8), repeats included
    # cdf reaches 1/3 at token 2 and 1 at token 5: quantile 1/8 picks 2, the others pick 5.
    torch.testing.assert_close(out.x, x[:, [2, 5, 5, 5]])
    assert out.bias.tolist() == [[0.0, 0.0, MASKED_BIAS, MASKED_BIAS]]


def test_masked_placeholders_leave_attention_and_the_cache_average():
    torch.manual_seed(0)
    attn = tiny_model("none", clca=False).backbone.blocks[0].attn.eval()
    x = torch.randn(2, 5, 64)
    bias = torch.tensor([[0, 0, MASKED_BIAS, 0, MASKED_BIAS]] * 2)
    out, _ = attention_forward(attn, x, bias)
    x2 = x.clone()
    x2[:, [2, 4]] = torch.randn(2, 2, 64) * 10
    out2, _ = attention_forward(attn, x2, bias)
    torch.testing.assert_close(out[:, [0, 1, 3]], out2[:, [0, 1, 3]])
    state = TokenState(x, bias=bias)
    gap = cache_carriers(x, 1, None, True, state.presence(masked_by_bias=True))
    torch.testing.assert_close(gap[:, 0], x[:, [1, 3]].mean(dim=1))
    assert state.presence(masked_by_bias=False) is None


# -- ToMe -------------------------------------------------------------------------------------


def test_merge_rounds_reach_the_count_at_most_half_per_round():
    assert merge_rounds(784, 79) == [392, 196, 98, 19]
    assert merge_rounds(16, 12) == [4]
    assert merge_rounds(5, 5) == []
    n = 99
    for r in merge_rounds(99, 7):
        assert r <= n // 2
        n -= r
    assert n == 7


@pytest.mark.parametrize("n,r", [(16, 4), (9, 4), (7, 1), (2, 1)])
def test_bipartite_merge_conserves_size_and_mass(n, r):
    torch.manual_seed(n)
    x, metric = torch.randn(2, n, 8), torch.randn(2, n, 4)
    size = torch.randint(1, 4, (2, n, 1)).float()
    mx, ms, mm = bipartite_merge(x, size, metric, r)
    assert mx.shape == (2, n - r, 8) and ms.shape == (2, n - r, 1) and mm.shape == (2, n - r, 4)
    torch.testing.assert_close(ms.sum(1), size.sum(1))
    torch.testing.assert_close((mx * ms).sum(1), (x * size).sum(1), atol=1e-4, rtol=1e-5)
    # Unmerged A tokens come first, unchanged and in order.
    assert (ms[:, : n // 2 - r] >= 1).all()


def test_bipartite_merge_joins_the_most_similar_pair():
    x = torch.arange(6.0).view(1, 6, 1).repeat(1, 1, 3)
    metric = torch.tensor([[[1.0, 0], [0, 1], [0, 1], [1, 0], [1, 1], [1, -1]]])
    # A = positions 1, 3, 5; B = 0, 2, 4. Position 1 matches 2 exactly, 3 matches 0 exactly.
    mx, ms, _ = bipartite_merge(x, torch.ones(1, 6, 1), metric, 2)
    assert ms.flatten().tolist() == [1.0, 2.0, 2.0, 1.0]  # [A5 | B0+A3, B2+A1, B4]
    assert mx[0, :, 0].tolist() == [5.0, 1.5, 1.5, 4.0]


@pytest.mark.parametrize("rate", [0.25, 0.7])
def test_tome_sizes_sum_to_the_original_tokens(rate, images):
    model = tiny_model("tome", keep_rate=rate, clca=False).eval()
    outs, handles = _reducer_outputs(model)
    with torch.no_grad():
        model(images)
    for h in handles:
        h.remove()
    assert outs
    for inp, out in outs:
        assert out.x.shape[1] == keep_count(inp.x.shape[1], rate)
        torch.testing.assert_close(out.size.sum(1), torch.full((4, 1), float(N)))
        torch.testing.assert_close(out.bias, out.size.squeeze(-1).log())  # proportional attention


def test_tome_partial_round_exports_with_parity(images, tmp_path):
    """keep 0.7 merges fewer than half the tokens, the path with unmerged A tokens."""
    from clca_edge.deploy.onnx_export import OnnxExportConfig, export_onnx, onnx_parity

    model = tiny_model("tome", keep_rate=0.7, clca=True).eval()
    path = export_onnx(model, tmp_path / "tome.onnx", OnnxExportConfig(batch_size=4))
    assert onnx_parity(model, path, images) <= 1e-4
