"""Would this INT8 graph saturate on an x86 CPU without VNNI? A numpy emulation of the kernel.

ONNX Runtime's x86 U8S8 GEMM on AVX2/AVX-512 without VNNI multiplies with ``VPMADDUBSW``: it
takes uint8 activations and int8 weights, multiplies byte by byte and adds each *adjacent pair*
of products into a signed 16-bit lane with saturation, before widening to int32. A pair sum
outside [-32768, 32767] is clamped, silently. With 8-bit weights that happens (255 * 127 * 2 =
64770); with 7-bit weights (``reduce_range``: |w| <= 64) it cannot (255 * 64 * 2 = 32640). VNNI
(``VPDPBUSD``) and ARM (``SDOT``/``UDOT``, widening multiplies) accumulate in 32 bits and never
saturate. Int8 activations are shifted to uint8 (+128) by ONNX Runtime on x86 before this kernel
(its QDQ S8->U8 transformer), so S8S8 reaches the same instruction. U8U8 runs a widening kernel.

``inspect`` runs the Q/DQ model un-optimised, reads the exact uint8 tensors the Q nodes feed the
weight MatMul/Gemm nodes (calibrated scales and zero points, real images) and counts saturated
pair sums against that node's quantised weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1


def vpmaddubsw_saturations(a_u8: np.ndarray, w_s8: np.ndarray, chunk: int = 16) -> tuple[int, int, int]:
    """Emulate ``VPMADDUBSW`` over ``a_u8 (T, K) @ w_s8 (K, N)``.

    Returns (saturated pair sums, all pair sums, largest |pair sum| before clamping). K is padded
    with a zero column when odd (MLAS pads packed panels with zeros too).
    """
    a = np.asarray(a_u8, dtype=np.int32)
    w = np.asarray(w_s8, dtype=np.int32)
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[0]:
        raise ValueError(f"shapes {a.shape} @ {w.shape} do not multiply")
    if a.shape[1] % 2:
        a = np.pad(a, ((0, 0), (0, 1)))
        w = np.pad(w, ((0, 1), (0, 0)))
    pairs_a = a.reshape(a.shape[0], -1, 2)          # (T, K/2, 2)
    pairs_w = w.reshape(-1, 2, w.shape[1])          # (K/2, 2, N)
    saturated, largest = 0, 0
    for p0 in range(0, pairs_a.shape[1], chunk):
        # (T, P, N): both products of each pair, summed as the instruction does before clamping.
        s = np.einsum("tpi,pin->tpn", pairs_a[:, p0:p0 + chunk], pairs_w[p0:p0 + chunk])
        saturated += int(np.count_nonzero((s > INT16_MAX) | (s < INT16_MIN)))
        largest = max(largest, int(np.abs(s).max(initial=0)))
    return saturated, a.shape[0] * pairs_a.shape[1] * w.shape[1], largest


@dataclass
class NodeSaturation:
    node: str
    weight_range: tuple[int, int]
    saturated: int = 0
    pairs: int = 0
    largest_pair_sum: int = 0


@dataclass
class SaturationReport:
    """Counts over the inspected images; ``kernel`` says which x86 kernel the types select."""

    kernel: str
    images: int
    nodes: list[NodeSaturation] = field(default_factory=list)

    @property
    def saturated(self) -> int:
        return sum(n.saturated for n in self.nodes)

    @property
    def pairs(self) -> int:
        return sum(n.pairs for n in self.nodes)

    @property
    def largest_pair_sum(self) -> int:
        return max((n.largest_pair_sum for n in self.nodes), default=0)

    def to_dict(self) -> dict:
        return {"kernel": self.kernel, "images": self.images, "matmuls": len(self.nodes),
                "saturated_pair_sums": self.saturated, "pair_sums": self.pairs,
                "largest_pair_sum": self.largest_pair_sum, "int16_max": INT16_MAX}


def _weight_matmuls(model):
    """(node name, activation Q output, int8/uint8 weight as (K, N)) of every MatMul/Gemm fed by
    DQ(Q(x)) and DQ(weight initializer)."""
    from onnx import numpy_helper

    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    inits = {i.name: i for i in g.initializer}
    found = []
    for n in g.node:
        if n.op_type not in ("MatMul", "Gemm") or len(n.input) < 2:
            continue
        dq_a, dq_b = producer.get(n.input[0]), producer.get(n.input[1])
        if dq_a is None or dq_b is None or dq_a.op_type != "DequantizeLinear" or dq_b.op_type != "DequantizeLinear":
            continue
        q_a = producer.get(dq_a.input[0])
        if q_a is None or q_a.op_type != "QuantizeLinear" or dq_b.input[0] not in inits:
            continue
        w = numpy_helper.to_array(inits[dq_b.input[0]])
        attrs = {a.name: a.i for a in n.attribute}
        if n.op_type == "Gemm" and attrs.get("transB", 0):
            w = w.T
        found.append((n.name, q_a.output[0], w))
    return found


def inspect(qdq_path, batches: Iterable[np.ndarray], input_name: str = "images",
            max_images: Optional[int] = None) -> SaturationReport:
    """Count ``VPMADDUBSW`` saturations of the Q/DQ model at ``qdq_path`` on ``batches``."""
    import onnx

    from ..runtime.sessions import open_session

    model = onnx.load(str(qdq_path))
    nodes = _weight_matmuls(model)
    if not nodes:
        raise ValueError(f"{qdq_path}: no MatMul/Gemm with Q/DQ activations and a quantised weight initializer")
    weight_types = {w.dtype for _, _, w in nodes}
    kernel = "u8s8-vpmaddubsw" if weight_types == {np.dtype(np.int8)} else "u8u8-widening"
    names = list(dict.fromkeys(q for _, q, _ in nodes))
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(q) for q in names)
    # Un-optimised, so each Q node runs as itself and its output is the exact kernel input.
    sess = open_session(model.SerializeToString(), optimize=False)
    report = SaturationReport(kernel=kernel, images=0,
                              nodes=[NodeSaturation(n, (int(w.min()), int(w.max()))) for n, _, w in nodes])
    for x in batches:
        if max_images is not None and report.images >= max_images:
            break
        outs = dict(zip(names, sess.run(names, {input_name: x})))
        report.images += int(x.shape[0])
        if kernel != "u8s8-vpmaddubsw":
            continue  # U8U8 widens to 16 bits before multiplying: nothing to clamp
        for rec, (_, q, w) in zip(report.nodes, nodes):
            a = outs[q]
            if a.dtype == np.int8:  # ORT's x86 S8->U8 shift before the U8S8 kernel
                a = a.astype(np.int16) + 128
            sat, pairs, largest = vpmaddubsw_saturations(a.reshape(-1, a.shape[-1]), w)
            rec.saturated += sat
            rec.pairs += pairs
            rec.largest_pair_sum = max(rec.largest_pair_sum, largest)
    return report



def x86_non_vnni_runner(qdq_path, input_name: str = "images", saturate: bool = True):
    """A runner (batch -> logits) computing the Q/DQ model as ONNX Runtime's x86 non-VNNI U8S8
    kernel would: every weight MatMul/Gemm's integer accumulation is taken pair by pair through the
    saturating 16-bit add (``saturate=False``: exactly, to check the emulation itself). The rest of
    the graph runs in ``onnx.reference`` (numpy), so this is for small models and few images."""
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    model = onnx.load(str(qdq_path))
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    inits = {i.name: i for i in g.initializer}
    replaced = 0
    for idx, n in enumerate(list(g.node)):
        if n.op_type != "MatMul" or len(n.input) != 2:
            continue
        dq_a, dq_w = producer.get(n.input[0]), producer.get(n.input[1])
        if (dq_a is None or dq_w is None or dq_a.op_type != "DequantizeLinear" or dq_w.op_type != "DequantizeLinear"
                or dq_w.input[0] not in inits or inits[dq_w.input[0]].data_type != onnx.TensorProto.INT8):
            continue
        # SatMatMul(a_q, a_scale, a_zp, w_q, w_scale, w_zp) -> float, replacing DQ(a) @ DQ(w).
        new = helper.make_node("SatMatMul", [dq_a.input[0], *dq_a.input[1:3], *dq_w.input[:3]], list(n.output),
                               domain="clca.emulation", name=n.name, saturate=int(saturate))
        g.node.remove(n)
        g.node.insert(idx, new)
        replaced += 1
    if not replaced:
        raise ValueError(f"{qdq_path}: no MatMul with Q/DQ activations and int8 weights to emulate")
    model.opset_import.append(helper.make_opsetid("clca.emulation", 1))
    for imp in model.opset_import:
        # onnx.reference implements (De)QuantizeLinear from opset 19 on; 17 -> 19 changes none
        # of the semantics this graph uses (19 added float8 types and Q/DQ "saturate").
        if imp.domain in ("", "ai.onnx") and imp.version < 19:
            imp.version = 19

    class SatMatMul(OpRun):
        op_domain = "clca.emulation"

        def _run(self, a_q, a_scale, a_zp, w_q, w_scale, w_zp, saturate=1):
            a = a_q.astype(np.int32)
            if a_q.dtype == np.int8:  # ORT's x86 S8->U8 shift
                a, a_zp = a + 128, np.asarray(a_zp, np.int32) + 128
            w = w_q.astype(np.int32)
            lead, k = a.shape[:-1], a.shape[-1]
            a2 = a.reshape(-1, k)
            if k % 2:
                a2, w = np.pad(a2, ((0, 0), (0, 1))), np.pad(w, ((0, 1), (0, 0)))
            pair = np.einsum("tpi,pin->tpn", a2.reshape(a2.shape[0], -1, 2), w.reshape(-1, 2, w.shape[1]))
            if saturate:
                pair = np.clip(pair, INT16_MIN, INT16_MAX)
            acc = pair.sum(axis=1, dtype=np.int64)
            # Zero points: sum_k (a - za) (w - zw) = sum a w - za sum w - zw sum a + K za zw.
            za = np.int64(np.asarray(a_zp).reshape(()))
            zw = np.asarray(w_zp, np.int64).reshape(-1)
            acc = (acc - za * w.sum(axis=0, dtype=np.int64) - np.outer(a2.sum(axis=1, dtype=np.int64), zw)
                   + k * za * zw)
            out = acc.astype(np.float64) * float(np.asarray(a_scale).reshape(())) * np.asarray(w_scale, np.float64)
            return (out.astype(np.float32).reshape(*lead, -1),)

    ref = ReferenceEvaluator(model, new_ops=[SatMatMul])
    out_name = g.output[0].name
    return lambda x: ref.run([out_name], {input_name: x})[0]
