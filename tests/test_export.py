"""ONNX export of every method, with and without CLCA: opset 17, rule-abiding graph, parity."""

from __future__ import annotations

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from clca_edge.deploy.graph_check import check_graph
from clca_edge.deploy.onnx_export import OnnxExportConfig, export_onnx, onnx_parity
from clca_edge.models.reduction import list_methods

from conftest import tiny_model

METHODS = list_methods()


@pytest.mark.parametrize("clca", [True, False], ids=["clca", "plain"])
@pytest.mark.parametrize("method", METHODS)
def test_export_parity_and_graph(method, clca, images, tmp_path):
    model = tiny_model(method, keep_rate=0.25, clca=clca).eval()
    path = export_onnx(model, tmp_path / "m.onnx", OnnxExportConfig(batch_size=2))
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [i.version for i in proto.opset_import if i.domain in ("", "ai.onnx")] == [17]
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 64, 64]  # fixed shape, no symbolic dims
    assert check_graph(proto) == []
    # The graph attends over exactly the token plan's counts (Softmax of each (B, heads, N, N) score
    # matrix): the reduction is in the exported graph, not traced away; reducing methods shrink N.
    assert _attention_token_counts(proto) == set(model.tokens_per_block)
    if method != "none":
        assert min(model.tokens_per_block) < model.tokens_per_block[0]
    assert onnx_parity(model, path, images) <= 1e-4


def _attention_token_counts(proto) -> set[int]:
    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in inferred.graph.value_info}
    out = set()
    for node in inferred.graph.node:
        shape = shapes.get(node.output[0]) if node.op_type == "Softmax" else None
        if shape and len(shape) == 4 and shape[2] == shape[3]:
            out.add(shape[2])
    return out


def _model_with(nodes, inputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_graph_check_catches_forbidden_ops():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    k = helper.make_tensor_value_info("k", TensorProto.INT64, [1])
    idx = helper.make_tensor_value_info("i", TensorProto.INT64, [4])
    nodes = [
        helper.make_node("NonZero", ["x"], ["nz"], name="nz"),
        helper.make_node("Unique", ["x"], ["u"], name="uq"),
        helper.make_node("TopK", ["x", "k"], ["v", "ix"], name="dyn_topk"),
        helper.make_node("ScatterElements", ["x", "i", "x"], ["s"], name="scat", reduction="add"),
        helper.make_node("ScatterElements", ["x", "i", "x"], ["s2"], name="scat_ok"),
        helper.make_node("TopK", ["x", "kc"], ["v2", "ix2"], name="const_topk"),
    ]
    kc = helper.make_tensor("kc", TensorProto.INT64, [1], [2])
    bad = {(v.node, v.op_type) for v in check_graph(_model_with(nodes, [x, k, idx], [kc]))}
    assert bad == {("nz", "NonZero"), ("uq", "Unique"), ("dyn_topk", "TopK"), ("scat", "ScatterElements")}


def test_graph_check_catches_opset_above_target():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    model = _model_with([helper.make_node("Relu", ["x"], ["y"])], [x])
    model.opset_import[0].version = 18
    assert [v.op_type for v in check_graph(model)] == ["opset"]
    assert check_graph(model, max_opset=18) == []


def test_export_and_parity_leave_the_model_mode_alone(images, tmp_path):
    from clca_edge.core.errors import ExportError

    model = tiny_model("evit").train()
    path = export_onnx(model, tmp_path / "m.onnx", OnnxExportConfig(batch_size=2))
    assert model.training
    assert onnx_parity(model, path, images) <= 1e-4 and model.training
    with pytest.raises(ExportError, match="at least 2 images"):
        onnx_parity(model, path, images[:1])


def test_export_rejects_a_rule_breaking_model(tmp_path):
    from clca_edge.core.errors import ExportError

    class Sorts(torch.nn.Module):
        config = type("C", (), {"img_size": 16})()

        def forward(self, x):
            return torch.sort(x.flatten(1), dim=1).values[:, :3]

    with pytest.raises(ExportError, match="graph breaks export rules"):
        export_onnx(Sorts(), tmp_path / "bad.onnx")
