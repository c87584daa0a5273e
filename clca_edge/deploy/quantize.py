"""INT8 (explicit Q/DQ) and FP16 variants of the fp32 ONNX.

INT8 flavours are rows of one table (``FLAVOURS``, ``Int8Flavour`` records) that drive one
function, ``quantize_int8``: ``onnxruntime.quantization.quantize_static`` in QDQ format at the
bundle's opset, calibrated on the same images, then the flavour's graph rules. The table's columns:
activation/weight types, symmetry, per-channel weights, 7-bit weights (``reduce_range``), which op
types get Q/DQ, whether their outputs are quantised, whether attention's activation x activation
MatMuls stay float, and whether Q/DQ copies that leak into other ops are rewired back to float.

- ``tensorrt-qdq`` (``--target jetson-orin``): symmetric int8 activations and weights, only the
  *inputs* of MatMul/Gemm/Conv quantised, so LayerNorm, Softmax and GELU stay in float (what
  TensorRT's explicit-quantisation path and ViT accuracy both want). TensorRT 10 dropped implicit
  calibrators, so Q/DQ in the graph is the one path that works on 8.5 through 10. ONNX Runtime CPU
  runs this graph *slower* than fp32: it only picks its integer kernels when a MatMul's output is
  quantised too.
- ``ort-cpu-u8s8-w7`` (``--target cpu``, and the CPU fallback INT8 of a jetson-orin bundle):
  uint8 activations, symmetric per-channel int8 weights of 7 bits, the weight MatMul/Gemm inputs
  *and* outputs quantised so ONNX Runtime fuses DQ -> MatMul -> Q into QLinearMatMul. The 7 bits
  are what ONNX Runtime documents for U8S8 on x86 without VNNI: its AVX2/AVX-512 kernel adds pairs
  of u8 x s8 products in saturating 16-bit lanes (``VPMADDUBSW``), which 8-bit weights overflow
  (255 * 127 * 2 > 32767) and 7-bit ones cannot (255 * 64 * 2 = 32640). One file then computes the
  same on x86 with or without VNNI and on ARM (see ``deploy/saturation.py`` and BENCHMARKS.md).
- ``ort-cpu-u8s8`` (8-bit weights; ``--target cpu`` before 0.2), ``ort-cpu-u8u8`` and
  ``ort-cpu-s8s8``: the candidates measured against it, kept in the table for the benchmark and
  the saturation test; deploy does not write them.

FP16: TensorRT only needs a builder flag on the fp32 ONNX; the fp16 ONNX here is for ONNX Runtime
GPU providers, converted with ONNX Runtime's own float16 converter, inputs/outputs kept float32.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.errors import ExportError
from .graph_check import check_graph

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Int8Flavour:
    """One INT8 recipe: everything ``quantize_int8`` does differently per flavour."""

    name: str
    purpose: str
    activations: str            # "int8" | "uint8"
    weights: str                # "int8" | "uint8"
    activation_symmetric: bool
    weight_symmetric: bool
    per_channel: bool           # one weight scale per output column
    reduce_range: bool          # 7-bit weights ([-64, 64])
    op_types: tuple[str, ...]   # ops whose inputs get Q/DQ
    outputs_quantized: bool     # their outputs too (ONNX Runtime fuses to QLinearMatMul)
    float_attention_matmuls: bool  # q @ k^T and attn @ v stay float
    rewire_to_float: bool       # every other op reads the float tensor, not a Q/DQ copy
    quantize_bias: bool
    dedicated_qdq_pair: bool
    shipped: bool = False       # written by deploy (the others are measured candidates)

    @property
    def weight_bits(self) -> int:
        return 7 if self.reduce_range else 8

    @property
    def x86_saturates(self) -> bool:
        """Whether ONNX Runtime's x86 non-VNNI kernel can clamp its 16-bit pair sums on this graph:
        u8 x s8 (int8 activations are shifted to uint8 first) with full 8-bit weights."""
        return self.weights == "int8" and not self.reduce_range

    def manifest_info(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("name", "purpose", "shipped"):
            d.pop(k)
        d["op_types"] = list(self.op_types)
        d.update(format="QDQ", weight_bits=self.weight_bits, x86_non_vnni_saturation=self.x86_saturates)
        return d


_GEMMS = ("MatMul", "Gemm")
_CPU = dict(op_types=_GEMMS, outputs_quantized=True, float_attention_matmuls=True, rewire_to_float=False,
            quantize_bias=True, dedicated_qdq_pair=False, weight_symmetric=True, per_channel=True)
TENSORRT_QDQ = "tensorrt-qdq"
ORT_CPU_SAFE = "ort-cpu-u8s8-w7"
FLAVOURS: dict[str, Int8Flavour] = {f.name: f for f in (
    Int8Flavour(TENSORRT_QDQ, "TensorRT explicit quantisation (jetson-orin engines)", activations="int8",
                weights="int8", activation_symmetric=True, weight_symmetric=True, per_channel=True,
                reduce_range=False, op_types=("MatMul", "Gemm", "Conv"), outputs_quantized=False,
                float_attention_matmuls=False, rewire_to_float=True,
                # TensorRT's parser takes int8 Q/DQ only: an int32 DequantizeLinear on a bias fails there.
                quantize_bias=False, dedicated_qdq_pair=True, shipped=True),
    Int8Flavour(ORT_CPU_SAFE, "ONNX Runtime CPU: x86 with or without VNNI, ARM", activations="uint8",
                weights="int8", activation_symmetric=False, reduce_range=True, shipped=True, **_CPU),
    Int8Flavour("ort-cpu-u8s8", "ONNX Runtime CPU, 8-bit weights: VNNI and ARM only (saturates on AVX2)",
                activations="uint8", weights="int8", activation_symmetric=False, reduce_range=False, **_CPU),
    Int8Flavour("ort-cpu-u8u8", "ONNX Runtime CPU, uint8 weights: the non-saturating widening kernel",
                activations="uint8", weights="uint8", activation_symmetric=False, reduce_range=False, **_CPU),
    Int8Flavour("ort-cpu-s8s8", "ONNX Runtime's default QDQ types (x86 shifts activations to uint8)",
                activations="int8", weights="int8", activation_symmetric=False, reduce_range=False, **_CPU),
)}
# What deploy writes: the TensorRT file, and the CPU file (``--target cpu``, and a jetson-orin
# bundle's ONNX Runtime CPU fallback).
TARGET_FLAVOUR = {"jetson-orin": TENSORRT_QDQ, "cpu": ORT_CPU_SAFE}
CPU_FLAVOUR = ORT_CPU_SAFE


def get_flavour(name: str) -> Int8Flavour:
    try:
        return FLAVOURS[name]
    except KeyError:
        raise ExportError(f"INT8 flavour {name!r} is unknown; choose one of {', '.join(FLAVOURS)}") from None


def _check_opset(path: Path, max_opset: int) -> None:
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    problems = [str(v) for v in check_graph(model, max_opset=max_opset)]
    for imp in model.opset_import:
        if imp.domain not in ("", "ai.onnx"):
            problems.append(f"opset domain {imp.domain!r} (not loadable by TensorRT)")
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{node.op_type} node {node.name!r} in domain {node.domain!r}")
    if problems:
        raise ExportError(f"{path}: quantised graph is not TensorRT-ready: " + "; ".join(problems[:5]))


def _consumers(model) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n.op_type)
    return out


def _quantised_consumers(model) -> list[str]:
    consumers = _consumers(model)
    return sorted({t for n in model.graph.node if n.op_type == "DequantizeLinear"
                   for t in consumers.get(n.output[0], []) if t != "QuantizeLinear"})


def _keep_float_paths(model, op_types) -> int:
    """Feed every op that is not in ``op_types`` the float tensor instead of its Q/DQ copy.

    ORT shares one Q/DQ pair among all consumers of a tensor and propagates it through data
    movement ops (Gather, Concat): then the CLS-attention scores that rank tokens, and the
    residual stream, would be int8-rounded. Only the GEMM inputs should be. Returns the number of
    rewired inputs; Q/DQ nodes left without consumers are removed.
    """
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    rewired = 0
    for node in graph.node:
        if node.op_type in op_types or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for k, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[k] = q.input[0]
                rewired += 1
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return rewired


def _quantised_outputs(model, op_types) -> int:
    """How many ``op_types`` nodes feed a QuantizeLinear (the pattern ORT fuses to QLinear*)."""
    consumers = _consumers(model)
    return sum(1 for n in model.graph.node if n.op_type in op_types
               and "QuantizeLinear" in consumers.get(n.output[0], []))


def _activation_matmuls(fp32_path) -> list[str]:
    """MatMuls without a weight initializer input: attention's q @ k^T and attn @ v."""
    import onnx

    fp32 = onnx.load(str(fp32_path))
    weights = {i.name for i in fp32.graph.initializer}
    return [n.name for n in fp32.graph.node if n.op_type == "MatMul" and not weights.intersection(n.input)]


def _calib_methods():
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}


class _NoPreprocessAdvice(logging.Filter):
    """quantize_static advises ORT's quantization pre-processing (shape inference and graph
    optimisation) on the root logger, every call. The flavours here and their checks were measured
    on the exported graph as it is (optimising it first changes which nodes get Q/DQ), so the
    advice is not taken and not shown to every deploy."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _quantize_static(fp32_path, out_path, data_reader, **kwargs) -> None:
    """onnxruntime's quantize_static, its plain exceptions turned into ExportError."""
    from onnxruntime.quantization import quantize_static

    advice = _NoPreprocessAdvice()
    logging.getLogger().addFilter(advice)
    try:
        quantize_static(str(fp32_path), str(out_path), data_reader, **kwargs)
    except ExportError:
        raise
    except Exception as e:  # ORT raises plain exceptions with useful text
        raise ExportError(f"INT8 quantisation of {fp32_path} failed ({type(e).__name__}: {e})") from e
    finally:
        logging.getLogger().removeFilter(advice)


def quantize_int8(fp32_path, out_path, data_reader, method: str = "minmax", max_opset: int = 17,
                  flavour: str = TENSORRT_QDQ) -> dict:
    """Write the Q/DQ INT8 model of ``flavour`` (a ``FLAVOURS`` name); returns a summary (the
    flavour's table row, Q/DQ counts, quantised ops) for the manifest."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType

    f = get_flavour(flavour)
    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    out_path = Path(out_path)
    extra: dict[str, Any] = {
        "ActivationSymmetric": f.activation_symmetric,
        "WeightSymmetric": f.weight_symmetric,
        # MatMul weights are (in, out): one scale per output column, as TensorRT and MLAS expect.
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
    }
    if not f.outputs_quantized:
        # Their outputs feed Softmax/LayerNorm/GELU, which must see float values, not int8-rounded ones.
        extra["OpTypesToExcludeOutputQuantization"] = list(f.op_types)
    if f.dedicated_qdq_pair:
        extra["DedicatedQDQPair"] = True
    if not f.quantize_bias:
        extra["QuantizeBias"] = False
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    # Quantising attention's activation x activation MatMuls puts Q/DQ around Softmax, which ORT
    # fuses to a uint8 QLinearSoftmax: the CLS attention that ranks tokens would be uint8-rounded.
    exclude = _activation_matmuls(fp32_path) if f.float_attention_matmuls else []
    _quantize_static(
        fp32_path, out_path, data_reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=list(f.op_types),
        nodes_to_exclude=exclude, per_channel=f.per_channel, reduce_range=f.reduce_range,
        activation_type=qtype[f.activations], weight_type=qtype[f.weights],
        calibrate_method=_calib_methods()[method], extra_options=extra,
    )
    model = onnx.load(str(out_path))
    rewired = 0
    if f.rewire_to_float:
        rewired = _keep_float_paths(model, f.op_types)
        onnx.save(model, str(out_path))
    _check_opset(out_path, max_opset)
    ops = [n.op_type for n in model.graph.node]
    quantised = _quantised_consumers(model)
    if f.rewire_to_float:
        leaked = [t for t in quantised if t not in f.op_types]
        if leaked:
            raise ExportError(f"{out_path}: {', '.join(leaked)} got quantised inputs; only "
                              f"{', '.join(f.op_types)} may")
    fused = _quantised_outputs(model, f.op_types)
    if f.outputs_quantized and not fused:
        raise ExportError(f"{out_path}: no {'/'.join(f.op_types)} output is quantised, so ONNX Runtime would "
                          "not use its integer kernels; report this with the onnxruntime version")
    summary = {**f.manifest_info(), "flavour": f.name, "rewired_to_float": rewired,
               "quantize_linear": ops.count("QuantizeLinear"), "dequantize_linear": ops.count("DequantizeLinear"),
               "quantized_op_types": quantised, "quantized_outputs": fused, "calib_method": method}
    log.info("INT8 Q/DQ model %s (%s): %s", out_path, f.name, summary)
    return summary


def _toposort(graph) -> None:
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            raise ExportError("fp16 graph has a cycle or an undefined input; cannot order it")
        for n in ready:
            known.update(n.output)
            ordered.append(n)
        done = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in done]
    del graph.node[:]
    graph.node.extend(ordered)


def convert_fp16(fp32_path, out_path, max_opset: int = 17) -> Path:
    """fp16 weights and compute, float32 inputs/outputs (so callers feed the same tensors)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32_path))
    try:
        half = convert_float_to_float16(model, keep_io_types=True)
    except Exception as e:
        raise ExportError(f"fp16 conversion of {fp32_path} failed ({type(e).__name__}: {e})") from e
    _toposort(half.graph)  # the converter appends its input casts at the end of the node list
    onnx.save(half, str(out_path))
    _check_opset(Path(out_path), max_opset)
    return Path(out_path)
