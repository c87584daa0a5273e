"""Token provenance (``models.provenance``) and ``clca-edge explain``: counts that match the token
plan for every method, provenance that follows forced choices and the reducers' own bookkeeping,
an unchanged prediction and ONNX graph, the CLA split, and the command's pictures and JSON."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from clca_edge.cli import main
from clca_edge.core.errors import ConfigError, ExitCode
from clca_edge.models.provenance import Role, record_provenance
from clca_edge.models.reduction import get_reducer_class, list_methods

from conftest import TINY_IMG, tiny_model

# Every built-in method of the registry ("none" included: it has no location to report).
METHODS = [m for m in list_methods()
           if m == "none" or get_reducer_class(m).__module__.startswith("clca_edge.models.reduction.methods")]
PATCH8 = dict(patch_size=8)  # 64 px -> 8 x 8 = 64 patches: enough to tell choices apart
N8 = (TINY_IMG // 8) ** 2


def _images(n=2, seed=0):
    return torch.randn(n, 3, TINY_IMG, TINY_IMG, generator=torch.Generator().manual_seed(seed))


def _recorded(model, x):
    with torch.no_grad(), record_provenance(model) as trace:
        logits = model(x)
    return logits, trace


@pytest.mark.parametrize("clca", [False, True], ids=["plain", "clca"])
@pytest.mark.parametrize("method", METHODS)
def test_provenance_counts_match_the_token_plan_and_leave_the_prediction_alone(method, clca):
    torch.manual_seed(0)
    model = tiny_model(method=method, keep_rate=0.5, clca=clca, **PATCH8).eval()
    x = _images()
    with torch.no_grad():
        plain = model(x)
    logits, trace = _recorded(model, x)
    assert torch.equal(plain, logits)
    with torch.no_grad():  # recording left nothing behind
        assert torch.equal(model(x), plain)
    assert [loc.block for loc in trace.locations] == [b.index for b in model.token_plan if b.reduced]
    if method == "none":
        assert trace.locations == []
        return
    assert trace.locations and (trace.cls_tokens is not None) == clca
    for loc in trace.locations:
        planned = model.token_plan[loc.block]
        assert loc.num_tokens == planned.mlp - model.num_prefix  # tokens after this location's reduction
        for i in range(x.shape[0]):
            roles = [loc.count(i, r) for r in Role]
            assert sum(roles) == loc.num_tokens
            patch_rows = loc.assign[i][loc.roles[i] == Role.PATCH]
            kept = loc.kept(i)
            assert kept == sorted(set(kept)) and all(0 <= p < N8 for p in kept)
            if not loc.merged:
                # Selection: each patch token is exactly one original patch, no two the same.
                assert len(kept) == loc.count(i, Role.PATCH)
                assert torch.all((patch_rows == 1).sum(-1) == 1) and torch.all((patch_rows > 0).sum(-1) == 1)
                if not clca:
                    assert loc.count(i, Role.CACHE) == 0
            else:
                # Merging never drops a patch: every patch is in exactly one group.
                groups = loc.groups(i)
                assert kept == list(range(N8))
                assert sorted(p for g in groups for p in g) == list(range(N8))
                assert 1 <= len(groups) <= loc.count(i, Role.PATCH)
                if not clca:  # shares of a token sum to 1 (recovered cache tokens have no patch share)
                    torch.testing.assert_close(patch_rows.sum(-1), torch.ones(len(patch_rows)), atol=1e-4, rtol=0)
                if method in ("dpcknn", "tome"):  # hard merges: one token per group
                    assert len(groups) == loc.count(i, Role.PATCH)
                    assert torch.all((patch_rows > 0).sum(0) == 1)
            if method == "evit":
                assert loc.count(i, Role.FUSED) >= 1
                assert sorted(kept + loc.fused(i)) == list(range(N8))  # dropped = blended into the fused token
            if method == "ats":
                assert len(kept) + loc.count(i, Role.PLACEHOLDER) + loc.count(i, Role.CACHE) == loc.num_tokens


def _force_scores(monkeypatch, preference):
    """CLS-attention scores replaced: at the first location (n = all patches) ``preference``, later
    the token order (earlier tokens first), so location j keeps the top k_j patches of
    ``preference`` (top-k keeps tokens sorted by score, patch tokens before fused/cache ones)."""
    from clca_edge.models.reduction.methods import topk

    n_all = preference.shape[0]

    def forced(cls_attn):
        b, _, n = cls_attn.shape
        scores = preference if n == n_all else -torch.arange(n, dtype=torch.float32)
        return scores.expand(b, n).clone()

    monkeypatch.setattr(topk, "cls_attention_scores", forced)


@pytest.mark.parametrize("clca", [False, True], ids=["plain", "clca"])
@pytest.mark.parametrize("method", ["topk", "evit"])
def test_forced_scores_are_reported_as_exactly_those_patches(method, clca, monkeypatch):
    from clca_edge.models.reduction.functional import keep_count

    preference = torch.randperm(N8, generator=torch.Generator().manual_seed(3)).float()
    ranked = torch.argsort(preference, descending=True).tolist()
    _force_scores(monkeypatch, preference)
    model = tiny_model(method=method, keep_rate=0.5, clca=clca, **PATCH8).eval()
    _, trace = _recorded(model, _images())
    assert len(trace.locations) == 3
    for loc in trace.locations:
        entering = model._entering(model.token_plan, loc.block)
        k = keep_count(entering, 0.5)
        for i in range(2):
            assert loc.kept(i) == sorted(ranked[:k]), (loc.block, k)
            assert loc.count(i, Role.PATCH) == k


def test_tome_groups_have_the_sizes_tome_tracks():
    """ToMe counts the original tokens each token stands for (its proportional-attention size):
    the provenance groups must be exactly that big, and each member weighs 1/size."""
    torch.manual_seed(1)
    model = tiny_model(method="tome", keep_rate=0.25, clca=False, **PATCH8).eval()
    seen = {}
    hooks = [red.register_forward_hook(lambda m, a, out, b=int(k): seen.__setitem__(b, out.size))
             for k, red in model.reducers.items()]
    _, trace = _recorded(model, _images())
    for h in hooks:
        h.remove()
    for loc in trace.locations:
        size = seen[loc.block].squeeze(-1)  # (B, n)
        for i in range(2):
            members = (loc.assign[i] > 0).sum(-1)
            assert torch.equal(members, size[i].round().long())
            nz = loc.assign[i][loc.assign[i] > 0]
            torch.testing.assert_close(nz, (1.0 / size[i]).repeat_interleave(members), rtol=1e-5, atol=1e-6)


def test_dpcknn_groups_are_its_clusters():
    torch.manual_seed(2)
    model = tiny_model(method="dpcknn", keep_rate=0.25, clca=False, **PATCH8).eval()
    first = model.reducers[str(model.plan.locations[0])]
    got = {}

    def keep_input(_module, args):
        got.setdefault("x", args[0].x)

    hook = first.register_forward_pre_hook(keep_input)
    _, trace = _recorded(model, _images())
    hook.remove()
    clusters = first.cluster(got["x"])  # (B, n): the reducer's own assignment of the 64 patches
    for i in range(2):
        want = sorted(sorted(torch.nonzero(clusters[i] == c).flatten().tolist()) for c in clusters[i].unique().tolist())
        assert sorted(trace.locations[0].groups(i)) == want


def test_a_method_mixing_tokens_outside_the_primitives_is_refused(monkeypatch):
    from clca_edge.models.reduction import registry
    from clca_edge.models.reduction.base import ReduceOutput, TokenReducer
    from clca_edge.models.reduction.functional import gather_tokens, keep_count

    monkeypatch.setattr(registry, "_REDUCERS", dict(registry._REDUCERS))

    @registry.register_reducer("slice_first_test")
    class SliceFirst(TokenReducer):
        placement = "pre"

        def num_out(self, n):
            return keep_count(n, self.keep_rate)

        def reduce(self, inp):
            return ReduceOutput(x=inp.x[:, : self.num_out(inp.x.shape[1])])

    @registry.register_reducer("gather_first_test")
    class GatherFirst(SliceFirst):
        def reduce(self, inp):
            k = self.num_out(inp.x.shape[1])
            idx = torch.arange(k).expand(inp.x.shape[0], k)
            return ReduceOutput(x=gather_tokens(inp.x, idx))

    with pytest.raises(ConfigError, match="slice_first_test.*cannot report which patches"):
        _recorded(tiny_model(method="slice_first_test", clca=False).eval(), _images())
    model = tiny_model(method="gather_first_test", keep_rate=0.5, clca=False).eval()
    _, trace = _recorded(model, _images())
    assert [loc.kept(0) for loc in trace.locations] == [list(range(8)), list(range(4)), list(range(2))]


@pytest.mark.parametrize("method", ["evit", "tome", "dpcknn"])  # gather + fuse + concat; bipartite; group mean
def test_the_exported_graph_is_the_same_with_and_without_recording(method, tmp_path):
    import onnx

    from clca_edge.deploy.onnx_export import OnnxExportConfig, export_onnx

    def graph(path):
        g = onnx.load(str(path)).graph
        return ([(n.op_type, list(n.input), list(n.output), str(n.attribute)) for n in g.node],
                sorted((t.name, t.raw_data) for t in g.initializer))

    model = tiny_model(method=method, keep_rate=0.5, clca=True).eval()
    cfg = OnnxExportConfig(check=False)
    plain = graph(export_onnx(model, tmp_path / "plain.onnx", cfg))
    with record_provenance(model) as trace:  # the recorder active while the exporter traces
        recorded = graph(export_onnx(model, tmp_path / "recorded.onnx", cfg))
    assert len(trace.locations) == 3  # it did record
    assert plain[0] and plain == recorded


def test_cla_contributions_add_up_to_the_logit():
    from clca_edge.explain.attribution import cla_contributions

    torch.manual_seed(0)
    model = tiny_model(method="evit", keep_rate=0.5).eval()
    head = model.cla_head
    with torch.no_grad():  # trained-looking statistics, so that the reference is not trivial
        for bn in (head.norm_in, head.norm_mid):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.normal_()
            bn.bias.normal_()
    logits, trace = _recorded(model, _images(3))
    target = logits.argmax(-1)
    contrib, reference = cla_contributions(head, trace.cls_tokens, target)
    assert contrib.shape == (3, len(trace.cls_tokens))
    torch.testing.assert_close(reference + contrib.sum(-1), logits.gather(1, target[:, None]).squeeze(1),
                               rtol=1e-5, atol=1e-5)
    # Each term is what its CLS token alone adds: with only token j moved to the training mean the
    # logit falls by about contribution[j] (exactly, if the head were linear).
    assert not torch.allclose(contrib, torch.zeros_like(contrib))


# -- the command ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def explain_inputs(tmp_path_factory):
    """A tiny ToMe+CLCA checkpoint (untrained: the command is under test, not the model) and two
    class folders of synthetic leaves plus one corrupt file."""
    from clca_edge.core.preprocess import PreprocessSpec
    from clca_edge.data.synth import SynthConfig, write_synthetic_dataset
    from clca_edge.training.checkpoint import CheckpointMeta, save_checkpoint

    root = tmp_path_factory.mktemp("explain")
    write_synthetic_dataset(root / "leaves", SynthConfig(classes=2, per_class=4, size=TINY_IMG, seed=0))
    val = root / "leaves" / "val"
    (val / "cultivar_00" / "broken.png").write_bytes(b"not a png")
    ckpts = {}
    for method in ("tome", "evit"):
        torch.manual_seed(0)
        model = tiny_model(method=method, keep_rate=0.25, num_classes=2, **PATCH8).eval()
        meta = CheckpointMeta(model=model.config, class_names=["cultivar_00", "cultivar_01"],
                              preprocess=PreprocessSpec(img_size=TINY_IMG))
        ckpts[method] = save_checkpoint(root / f"{method}.safetensors", model, meta)
    return ckpts, val


@pytest.mark.parametrize("method", ["tome", "evit"])
def test_explain_writes_a_picture_per_image_and_the_json(explain_inputs, tmp_path, method):
    import cv2

    ckpts, val = explain_inputs
    out = tmp_path / "pictures"
    res = CliRunner().invoke(main, ["explain", "--checkpoint", str(ckpts[method]), str(val),
                                                    "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output + res.stderr
    doc = json.loads(res.stdout)
    images = doc["images"]
    expected = sorted(p for p in val.rglob("*.png") if p.name != "broken.png")
    assert [im["path"] for im in images] == [str(p) for p in expected]
    assert doc["skipped"] == [str(val / "cultivar_00" / "broken.png")] and "broken.png" in res.stderr
    assert doc["method"] == method and doc["grid"] == [8, 8]
    model_plan = [1, 2, 3]  # depth 4: locations at [1, 2, 3]
    for im in images:
        assert set(im) >= {"path", "png", "predicted", "confidence", "true", "locations", "cla"}
        assert im["true"] == expected[images.index(im)].parent.name
        assert im["predicted"] in ("cultivar_00", "cultivar_01") and 0.5 <= im["confidence"] <= 1.0
        png = cv2.imread(im["png"])
        assert png is not None and png.shape[0] > 300 and png.shape[1] > 1000
        assert [loc["block"] for loc in im["locations"]] == model_plan
        for loc in im["locations"]:
            assert all(isinstance(p, int) and 0 <= p < 64 for p in loc["kept"])
            if method == "tome":
                assert sorted(p for g in loc["groups"] for p in g) == list(range(64))
            else:
                assert "groups" not in loc and loc["fused_tokens"] >= 1
                assert len(loc["kept"]) + loc["fused_tokens"] + loc["cache_tokens"] == loc["tokens"]
        assert im["cla"]["blocks"] == model_plan and len(im["cla"]["contributions"]) == 3
    assert sorted(p.name for p in out.iterdir()) == sorted(p.stem + ".explain.png" for p in expected)


def test_explain_refuses_a_bundle_and_reports_no_images(explain_inputs, tmp_path):
    ckpts, val = explain_inputs
    res = CliRunner().invoke(main, ["explain", "--bundle", str(tmp_path), str(val), "--out", str(tmp_path / "o")])
    assert res.exit_code == ExitCode.BAD_INPUT and "explain needs the checkpoint" in res.output
    assert "Traceback" not in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(main, ["explain", "--checkpoint", str(ckpts["evit"]), str(empty), "--out",
                                    str(tmp_path / "o")])
    assert res.exit_code == ExitCode.NO_INPUT and "no image files" in res.output
    res = CliRunner().invoke(main, ["explain", "--checkpoint", str(ckpts["evit"]), str(val / "cultivar_00"),
                                    "--out", str(ckpts["evit"])])
    # an --out that is a file: the output-path error (exit 11), one line, before the model is loaded
    assert res.exit_code == ExitCode.OUTPUT and "exists and is a file, not a folder" in res.output, res.output
    assert "Traceback" not in res.output


def test_method_labels_come_from_the_registry():
    """The picture names a method by its reducer's own ``label``; a method registered without one
    (or subclassing a labelled one) is shown by its registry name."""
    from clca_edge.models.reduction import get_reducer_class, list_methods, method_label, register_reducer
    from clca_edge.models.reduction.registry import _REDUCERS

    assert method_label("none") == "plain ViT" and method_label("evit") == "EViT" and method_label("tome") == "ToMe"
    for name in list_methods()[1:]:
        assert method_label(name) == (get_reducer_class(name).__dict__.get("label") or name)
    evit = get_reducer_class("evit")
    try:
        register_reducer("evit_variant")(type("EViTVariant", (evit,), {}))
        assert method_label("evit_variant") == "evit_variant"
    finally:
        _REDUCERS.pop("evit_variant", None)
    assert method_label("not-registered") == "not-registered"
