"""Static checks of an ONNX graph against what TensorRT 8.5+ and the export rules accept.

Fails on: NonZero, Unique, sort-like ops, ScatterElements/ScatterND with a reduction, any TopK
whose K is not a constant, and opsets above the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

FORBIDDEN_OPS = {
    "NonZero": "data-dependent output shape",
    "Unique": "data-dependent output shape",
    "Compress": "data-dependent output shape",
    "Sort": "sort is not a TensorRT op; use TopK",
    "ArgSort": "sort is not a TensorRT op; use TopK",
    "Loop": "control flow breaks static shapes",
    "If": "control flow breaks static shapes",
}


@dataclass(frozen=True)
class GraphViolation:
    node: str
    op_type: str
    reason: str

    def __str__(self) -> str:
        return f"{self.op_type} node {self.node!r}: {self.reason}"


def _constant_names(graph) -> set[str]:
    names = {init.name for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            names.update(node.output)
    return names


def check_graph(model: Union[str, Path, "onnx.ModelProto"], max_opset: int = 17) -> list[GraphViolation]:
    """Every rule violation in ``model`` (an empty list means the graph is acceptable)."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    out: list[GraphViolation] = []
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > max_opset:
            out.append(GraphViolation("<model>", "opset", f"opset {imp.version} > {max_opset}"))
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        consts = _constant_names(graph)
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    graphs.append(attr.g)
            if node.op_type in FORBIDDEN_OPS:
                out.append(GraphViolation(node.name, node.op_type, FORBIDDEN_OPS[node.op_type]))
            elif node.op_type in ("ScatterElements", "ScatterND"):
                reduction = next((a.s.decode() for a in node.attribute if a.name == "reduction"), "none")
                if reduction != "none":
                    out.append(GraphViolation(node.name, node.op_type, f"reduction={reduction!r}"))
            elif node.op_type == "TopK" and (len(node.input) < 2 or node.input[1] not in consts):
                out.append(GraphViolation(node.name, node.op_type, "K is not a constant"))
    return out
