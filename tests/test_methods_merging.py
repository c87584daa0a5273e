"""SiT, PatchMerger and DPC-KNN: the merging math, k-sized parameters bound to the token plan,
clustering behaviour, gradients and cost. (Shapes, backward and ONNX parity over the whole
registry are in test_models.py / test_export.py.)"""

from __future__ import annotations

import math

import pytest
import torch

from clca_edge.core.errors import ConfigError
from clca_edge.models import ClcaConfig, ModelConfig
from clca_edge.models.reduction.base import ReduceInput
from clca_edge.models.reduction.functional import (
    distance_to_denser,
    keep_count,
    nearest_centre,
    one_hot_assign,
    weighted_group_mean,
)
from clca_edge.models.reduction import get_reducer_class

from conftest import TINY_IMG, tiny_model

MERGERS = ["sit", "patchmerger", "dpcknn"]
D = 16


def bound(method, n, keep_rate=0.25, **kw):
    red = get_reducer_class(method)(keep_rate=keep_rate, dim=D, num_heads=2, **kw)
    red.bind(n)
    return red


def tokens(b=2, n=12, seed=0):
    return torch.randn(b, n, D, generator=torch.Generator().manual_seed(seed))


def reduce(red, x):
    return red(ReduceInput(x=x, prefix=x[:, :1])).x


# -- the math ------------------------------------------------------------------------------------


def test_sit_output_is_token_softmax_weighted_sum():
    red = bound("sit", 12)
    torch.nn.init.normal_(red.score[3].weight)  # away from the near-uniform init
    with torch.no_grad():
        red.scale.fill_(2.0)
    x = tokens()
    out = reduce(red, x)
    assert out.shape == (2, keep_count(12, 0.25), D) == (2, 3, D)
    w = (red.score(x) * 2.0).softmax(dim=1)  # over the 12 tokens, per output token
    torch.testing.assert_close(out, w.transpose(1, 2) @ x)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(2, 3))


def test_sit_starts_near_uniform_average():
    x = tokens()
    out = reduce(bound("sit", 12), x)
    mean = x.mean(dim=1, keepdim=True).expand_as(out)
    assert (out - mean).abs().max() < 0.05


@pytest.mark.parametrize("scaled,merge_normalized", [(True, False), (False, True)])
def test_patchmerger_queries_attend_over_normalized_tokens(scaled, merge_normalized):
    red = bound("patchmerger", 12, scaled=scaled, merge_normalized=merge_normalized)
    x = tokens() * 5 + 3
    out = reduce(red, x)
    xn = torch.nn.functional.layer_norm(x, (D,))
    scale = D ** -0.5 if scaled else 1.0
    w = (red.queries @ xn.transpose(1, 2) * scale).softmax(dim=-1)
    torch.testing.assert_close(out, w @ (xn if merge_normalized else x))
    assert red.queries.shape == (3, D)


def test_patchmerger_query_can_select_a_token():
    red = bound("patchmerger", 12)
    x = tokens()
    xn = torch.nn.functional.layer_norm(x, (D,))
    with torch.no_grad():  # query 0 aligned (sharply) with token 7 of sample 0
        red.queries[0] = xn[0, 7] * 50
    torch.testing.assert_close(reduce(red, x)[0, 0], x[0, 7], atol=1e-3, rtol=0)


def test_dpcknn_recovers_separated_clusters_and_averages_them():
    g = torch.Generator().manual_seed(1)
    centres = torch.eye(D)[:3] * 40
    members = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    x = (centres[members] + 0.1 * torch.randn(12, D, generator=g)).unsqueeze(0)
    red = bound("dpcknn", 12, equal_weight=True)
    ids = red.cluster(x)[0]
    # same cluster <=> same blob, whatever the cluster numbering
    assert torch.equal(ids.unsqueeze(0) == ids.unsqueeze(1), members.unsqueeze(0) == members.unsqueeze(1))
    out = reduce(red, x)[0]
    expect = torch.stack([x[0, members == members[(ids == c).nonzero()[0, 0]]].mean(0) for c in range(3)])
    torch.testing.assert_close(out, expect)
    assert not any(p.requires_grad for p in red.parameters())


def test_dpcknn_score_weights_the_members():
    red = bound("dpcknn", 12)
    x = tokens()
    with torch.no_grad():
        red.score.weight.normal_()
    onehot = one_hot_assign(red.cluster(x), 3, x.dtype)
    w = torch.exp(red.score(x).squeeze(-1)).unsqueeze(1) * onehot  # (B, 3, 12)
    torch.testing.assert_close(reduce(red, x), (w / w.sum(-1, keepdim=True)) @ x)


def test_dpcknn_is_deterministic_with_tied_tokens():
    x = torch.ones(1, 10, D)
    x[:, 5:] = -1  # two groups of identical tokens: every density ties
    red = bound("dpcknn", 10, keep_rate=0.2)
    ids = red.cluster(x)
    assert torch.equal(ids, red.cluster(x.clone()))
    out = reduce(red, x)[0]
    assert torch.isfinite(out).all()
    # ties go to the earliest token: token 0 is the densest; token 5 heads the other group
    torch.testing.assert_close(out.sort(dim=0).values, torch.stack([-torch.ones(D), torch.ones(D)]))


def test_distance_to_denser_and_centre_assignment_by_hand():
    pos = torch.tensor([[0.0, 1.0, 3.0, 7.0]])
    dists = (pos.unsqueeze(-1) - pos.unsqueeze(-2)).abs()
    density = torch.tensor([[0.5, 0.9, 0.5, 0.1]])
    # token 1 is densest -> largest distance (7); token 0 ties token 2 and comes first -> nearest
    # denser of 0 is 1 (1.0); of 2: tokens 0 and 1 -> 2.0; of 3: nearest of all -> 4.0
    torch.testing.assert_close(distance_to_denser(dists, density), torch.tensor([[1.0, 7.0, 2.0, 4.0]]))
    # centres 3 and 2 (in that order); token 2 is a centre, tokens 0 and 1 are nearer to it than 3
    assert nearest_centre(dists, torch.tensor([[3, 2]])).tolist() == [[1, 1, 1, 0]]
    # a centre keeps its own cluster even at distance 0 from an earlier centre
    same = torch.zeros(1, 3, 3)
    assert nearest_centre(same, torch.tensor([[0, 2]])).tolist() == [[0, 0, 1]]


def test_weighted_group_mean_survives_large_scores():
    x = tokens(1, 4)
    onehot = one_hot_assign(torch.tensor([[0, 0, 1, 1]]), 2, x.dtype)
    out = weighted_group_mean(x, onehot, torch.tensor([[1000.0, 0.0, -1000.0, -999.0]]))
    torch.testing.assert_close(out[0, 0], x[0, 0])
    w = torch.tensor([1.0, math.e]) / (1 + math.e)
    torch.testing.assert_close(out[0, 1], w @ x[0, 2:])


# -- binding k-sized parameters to the token plan -----------------------------------------------


def k_sized(model):
    """Per location: the learned output count of the reducer (SiT last Linear / PatchMerger queries)."""
    out = {}
    for loc, red in model.reducers.items():
        if red.num_tokens is None:
            out[int(loc)] = None
        elif red.method_name == "sit":
            out[int(loc)] = red.score[3].out_features
        else:
            out[int(loc)] = red.queries.shape[0]
    return out


@pytest.mark.parametrize("clca", [True, False], ids=["clca", "plain"])
@pytest.mark.parametrize("method", ["sit", "patchmerger"])
def test_learned_k_follows_the_planned_input_count(method, clca):
    model = tiny_model(method, keep_rate=0.5, clca=clca, depth=6, img_size=128)
    plan = {b.index: b for b in model.token_plan}
    P = model.num_prefix
    for loc, k in k_sized(model).items():
        n_in = plan[loc - 1].output - P  # placement 'pre': the tokens leaving the previous block
        assert plan[loc].attention - P == keep_count(n_in, 0.5) == k


@pytest.mark.parametrize("method", MERGERS)
def test_state_dict_is_fixed_by_the_config_and_reloads_strictly(method, tmp_path, images):
    from clca_edge.core.preprocess import PreprocessSpec
    from clca_edge.training.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint

    a, b = (tiny_model(method, keep_rate=0.25, clca=True) for _ in range(2))
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(a) == shapes(b)
    assert any(k.startswith("reducers.") for k in shapes(a))
    b.load_state_dict(a.state_dict(), strict=True)
    meta = CheckpointMeta(model=a.config, class_names=[str(i) for i in range(5)], preprocess=PreprocessSpec(img_size=TINY_IMG))
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "m.safetensors", a, meta))
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), a.eval()(images))


@pytest.mark.parametrize("method", MERGERS)
def test_keep_rate_one_adds_nothing(method):
    model = tiny_model(method, keep_rate=1.0, clca=False)
    assert list(model.reducers.parameters()) == []
    assert len(set(model.tokens_per_block)) == 1


@pytest.mark.parametrize("method", ["sit", "patchmerger"])
def test_unbound_reducer_refuses_to_run(method):
    red = get_reducer_class(method)(keep_rate=0.5, dim=D, num_heads=2)
    with pytest.raises(ConfigError, match="ClcaVisionTransformer"):
        reduce(red, tokens())
    red.bind(12)
    with pytest.raises(ConfigError, match="already bound"):
        red.bind(13)


def test_dpcknn_rejects_bad_k_nn():
    with pytest.raises(ConfigError, match="k_nn"):
        get_reducer_class("dpcknn")(keep_rate=0.5, dim=D, num_heads=2, k_nn=0)


def test_method_kwargs_reach_the_reducers():
    model = tiny_model("dpcknn", method_kwargs={"k_nn": 3, "equal_weight": True})
    assert all(r.k_nn == 3 and r.score is None for r in model.reducers.values())
    assert list(model.reducers.parameters()) == []


# -- training ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", MERGERS)
def test_learned_parts_get_nonzero_gradients(method, images):
    model = tiny_model(method, keep_rate=0.5, clca=True).train()
    model(images).logsumexp(-1).mean().backward()
    params = dict(model.reducers.named_parameters())
    assert params
    for name, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# -- cost ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("clca", [False, True], ids=["plain", "clca"])
@pytest.mark.parametrize("method,rate", [("sit", 0.25), ("patchmerger", 0.7), ("dpcknn", 0.1)])
def test_cost_in_the_reference_convention(method, rate, clca):
    """The reference's counter (torchprofile) missed the fused attention products and cdist of
    these methods; ours counts them. Without those terms we land within 3% of its table."""
    from clca_edge.models.flops import cost_report
    from clca_edge.models.zoo import REFERENCE_GFLOPS

    cfg = ModelConfig(backbone="vit_base_patch16_224", method=method, keep_rate=rate, num_classes=200, img_size=448,
                      clca=ClcaConfig() if clca else ClcaConfig.off())
    rep = cost_report(cfg)
    dim = 768
    attention = sum(2 * n * n * dim for n in rep.tokens_per_block)
    distances = 0
    if method == "dpcknn":  # the x @ x^T of the pairwise distances over each location's input
        # (blocks 2, 5, 8 neither reduce nor recover: what enters them is what leaves them)
        distances = sum((rep.tokens_per_block[loc - 1] - (1 + clca)) ** 2 * dim for loc in (3, 6, 9))
    ref = REFERENCE_GFLOPS[method][rate][int(clca)]
    assert rep.gflops > ref * 1.08  # attention products are real work
    assert (rep.gflops - (attention + distances) / 1e9) == pytest.approx(ref, rel=0.03)
