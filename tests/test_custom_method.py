"""A reduction method defined outside the package, with the public ``register_reducer``, works
like a built-in one: configs, ``create_model``, ONNX export with parity, the cost counter, the CLI."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from click.testing import CliRunner

from clca_edge.models import ModelConfig, TokenReducer, create_model, list_methods, register_reducer
from clca_edge.models.reduction import registry

from conftest import TINY, TINY_IMG

NAME = "keep_first_test"


def _define_reducer():
    from clca_edge.models import ReduceOutput
    from clca_edge.models.reduction.functional import keep_count

    @register_reducer(NAME)
    class KeepFirst(TokenReducer):
        """Keeps the first ceil(r * n) tokens, before the block: the simplest static reduction."""

        placement = "pre"

        def num_out(self, n: int) -> int:
            return keep_count(n, self.keep_rate)

        def reduce(self, inp):
            k = self.num_out(inp.x.shape[1])
            cut = (lambda t: None if t is None else t[:, :k])
            return ReduceOutput(x=inp.x[:, :k], size=cut(inp.size), bias=cut(inp.bias))

    return KeepFirst


@pytest.fixture
def keep_first(monkeypatch):
    """Registered for this test only: the registry is restored afterwards."""
    list_methods()  # built-in ones first, as in any process
    monkeypatch.setattr(registry, "_REDUCERS", dict(registry._REDUCERS))
    return _define_reducer()


def test_an_unregistered_method_is_refused_and_then_accepted(keep_first):
    assert list_methods()[-1] == NAME and list_methods()[:3] == ["none", "topk", "evit"]
    cfg = ModelConfig(backbone="vit_tiny_patch16_224", method=NAME, keep_rate=0.25, img_size=TINY_IMG,
                      backbone_kwargs=TINY)
    assert cfg.method == NAME


def test_the_registry_refuses_a_second_class_under_a_taken_name(keep_first):
    with pytest.raises(ValueError, match="registered twice"):
        register_reducer("topk")(type("Other", (TokenReducer,), {}))
    with pytest.raises(ValueError, match="not 'none'"):
        register_reducer("none")


def test_create_model_reduces_tokens_and_exports_with_parity(keep_first, tmp_path, images):
    from clca_edge.deploy.graph_check import check_graph
    from clca_edge.deploy.onnx_export import OnnxExportConfig, export_onnx, onnx_parity

    model = create_model("vit_tiny_patch16_224", method=NAME, keep_rate=0.25, clca=True, num_classes=5,
                         img_size=TINY_IMG, **TINY).eval()
    plain = create_model("vit_tiny_patch16_224", method="none", clca=True, num_classes=5, img_size=TINY_IMG, **TINY)
    assert isinstance(model.reducers["1"], keep_first)
    # 16 patches + CLS + CLR; block 1 keeps ceil(0.25 * 16) = 4 of them (+ the cache recovered there).
    assert model.tokens_per_block[0] == plain.tokens_per_block[0] == 18
    assert model.tokens_per_block[1] == 2 + 4 < plain.tokens_per_block[1]
    assert model(images).shape == (4, 5)
    path = export_onnx(model, tmp_path / "m.onnx", OnnxExportConfig(batch_size=2))
    assert check_graph(onnx.load(str(path))) == []
    assert onnx_parity(model, path, images) <= 1e-4


def test_the_cost_counter_and_the_flops_command_count_it(keep_first):
    from clca_edge.cli import main
    from clca_edge.models.flops import cost_report

    common = dict(backbone="vit_tiny_patch16_224", img_size=TINY_IMG, backbone_kwargs=TINY, num_classes=5)
    mine = cost_report(ModelConfig(method=NAME, keep_rate=0.25, **common))
    plain = cost_report(ModelConfig(method="none", keep_rate=1.0, **common))
    assert mine.gflops < 0.7 * plain.gflops and mine.tokens_per_block[1] == 6
    res = CliRunner().invoke(main, ["flops", "--model", "vit_tiny_patch16_224", "--model-kwargs",
                                    "depth=4,embed_dim=64,num_heads=2", "--img-size", str(TINY_IMG),
                                    "--num-classes", "5", "--method", NAME, "--keep-rate", "0.25", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["method"] == NAME and out["tokens_per_block"] == mine.tokens_per_block
    assert abs(out["gflops"] - mine.gflops) < 1e-3


def test_it_trains_a_step_like_a_builtin(keep_first):
    model = create_model("vit_tiny_patch16_224", method=NAME, keep_rate=0.5, num_classes=3, img_size=TINY_IMG, **TINY)
    logits, aux = model.forward_with_aux(torch.randn(2, 3, TINY_IMG, TINY_IMG))
    (logits.sum() + aux).backward()
    assert all(p.grad is not None for p in model.cla_head.parameters() if p.requires_grad)
