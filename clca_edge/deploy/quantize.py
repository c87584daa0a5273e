"""INT8 (explicit Q/DQ) and FP16 variants of the fp32 ONNX.

INT8 comes in two flavours, both ``onnxruntime.quantization.quantize_static`` in QDQ format at
the bundle's opset, calibrated on the same images:

- ``tensorrt-qdq`` (``--target jetson-orin``): symmetric int8 activations and weights, per-channel
  weights, only the *inputs* of MatMul/Gemm/Conv quantised so LayerNorm, Softmax and GELU stay in
  float (what TensorRT's explicit-quantisation path and ViT accuracy both want). TensorRT 10
  dropped implicit calibrators, so Q/DQ in the graph is the one path that works on 8.5 through 10.
  ONNX Runtime CPU runs this graph *slower* than fp32: it only picks its integer kernels when a
  MatMul's output is quantised too.
- ``ort-cpu-qdq`` (``--target cpu``): uint8 activations, symmetric per-channel int8 weights,
  MatMul/Gemm inputs *and* outputs quantised, so ONNX Runtime fuses DQ -> MatMul -> Q into
  QLinearMatMul. LayerNorm, Softmax and GELU are not quantised ops (they compute in float).

FP16: TensorRT only needs a builder flag on the fp32 ONNX; the fp16 ONNX here is for ONNX Runtime
GPU providers, converted with ONNX Runtime's own float16 converter, inputs/outputs kept float32.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..core.errors import ExportError
from .graph_check import check_graph

log = logging.getLogger(__name__)

QUANT_OP_TYPES = ("MatMul", "Gemm", "Conv")
CPU_QUANT_OP_TYPES = ("MatMul", "Gemm")
TENSORRT_QDQ = "tensorrt-qdq"
ORT_CPU_QDQ = "ort-cpu-qdq"
FLAVOURS = (TENSORRT_QDQ, ORT_CPU_QDQ)



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


def _quantised_consumers(model) -> list[str]:
    consumers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    return sorted({t for n in model.graph.node if n.op_type == "DequantizeLinear"
                   for t in consumers.get(n.output[0], []) if t != "QuantizeLinear"})


def _keep_float_paths(model) -> int:
    """Feed every op that is not MatMul/Gemm/Conv the float tensor instead of its Q/DQ copy.

    ORT shares one Q/DQ pair among all consumers of a tensor and propagates it through data
    movement ops (Gather, Concat): then the CLS-attention scores that rank tokens, and the
    residual stream, would be int8-rounded. Only the GEMM inputs should be. Returns the number of
    rewired inputs; Q/DQ nodes left without consumers are removed.
    """
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    rewired = 0
    for node in graph.node:
        if node.op_type in QUANT_OP_TYPES or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
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
    consumers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    return sum(1 for n in model.graph.node if n.op_type in op_types
               and "QuantizeLinear" in consumers.get(n.output[0], []))


def _calib_methods():
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}


def quantize_int8(fp32_path, out_path, data_reader, method: str = "minmax", max_opset: int = 17,
                  flavour: str = TENSORRT_QDQ) -> dict:
    """Write the Q/DQ INT8 model of ``flavour``; returns a summary (Q/DQ counts, quantised ops)."""
    if flavour == ORT_CPU_QDQ:
        return _quantize_int8_ort_cpu(fp32_path, out_path, data_reader, method, max_opset)
    if flavour != TENSORRT_QDQ:
        raise ExportError(f"INT8 flavour {flavour!r} is unknown; choose one of {', '.join(FLAVOURS)}")
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType

    methods = _calib_methods()
    out_path = Path(out_path)
    extra = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        # MatMul weights are (in, out): quantise per output column, as TensorRT expects.
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
        # Quantise only the inputs of MatMul/Gemm/Conv; their outputs feed Softmax/LayerNorm/GELU,
        # which must see float values, not int8-rounded ones.
        "OpTypesToExcludeOutputQuantization": list(QUANT_OP_TYPES),
        "DedicatedQDQPair": True,
        # TensorRT's parser takes int8 Q/DQ only: an int32 DequantizeLinear on a bias fails there.
        "QuantizeBias": False,
    }
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    _quantize_static(
        fp32_path, out_path, data_reader, quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(QUANT_OP_TYPES), per_channel=True, reduce_range=False,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        calibrate_method=methods[method], extra_options=extra,
    )
    model = onnx.load(str(out_path))
    rewired = _keep_float_paths(model)
    onnx.save(model, str(out_path))
    _check_opset(out_path, max_opset)
    ops = [n.op_type for n in model.graph.node]
    quantised = _quantised_consumers(model)
    leaked = [t for t in quantised if t not in QUANT_OP_TYPES]
    if leaked:
        raise ExportError(f"{out_path}: {', '.join(leaked)} got quantised inputs; only {', '.join(QUANT_OP_TYPES)} may")
    summary = {"flavour": TENSORRT_QDQ, "rewired_to_float": rewired, "quantize_linear": ops.count("QuantizeLinear"),
               "dequantize_linear": ops.count("DequantizeLinear"), "quantized_op_types": quantised,
               "calib_method": method}
    log.info("INT8 Q/DQ model %s: %s", out_path, summary)
    return summary


def _quantize_static(fp32_path, out_path, data_reader, **kwargs) -> None:
    """onnxruntime's quantize_static, its plain exceptions turned into ExportError."""
    from onnxruntime.quantization import quantize_static

    try:
        quantize_static(str(fp32_path), str(out_path), data_reader, **kwargs)
    except ExportError:
        raise
    except Exception as e:  # ORT raises plain exceptions with useful text
        raise ExportError(f"INT8 quantisation of {fp32_path} failed ({type(e).__name__}: {e})") from e


def _quantize_int8_ort_cpu(fp32_path, out_path, data_reader, method: str, max_opset: int) -> dict:
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType

    out_path = Path(out_path)
    fp32 = onnx.load(str(fp32_path))
    weights = {i.name for i in fp32.graph.initializer}
    # Attention's activation x activation MatMuls (q @ k^T, attn @ v) stay float: quantising them
    # puts Q/DQ around Softmax, which ORT then fuses to a uint8 QLinearSoftmax, and the CLS
    # attention that ranks tokens for top-k would be uint8-rounded.
    act_matmuls = [n.name for n in fp32.graph.node if n.op_type == "MatMul" and not weights.intersection(n.input)]
    del fp32
    extra = {
        "WeightSymmetric": True,
        # MatMul weights are (in, out): one scale per output column.
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
    }
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    _quantize_static(
        fp32_path, out_path, data_reader, quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(CPU_QUANT_OP_TYPES), nodes_to_exclude=act_matmuls, per_channel=True,
        reduce_range=False, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=_calib_methods()[method], extra_options=extra,
    )
    model = onnx.load(str(out_path))
    _check_opset(out_path, max_opset)
    ops = [n.op_type for n in model.graph.node]
    fused = _quantised_outputs(model, CPU_QUANT_OP_TYPES)
    if not fused:
        raise ExportError(f"{out_path}: no MatMul/Gemm output is quantised, so ONNX Runtime would not use "
                          "its integer kernels; report this with the onnxruntime version")
    summary = {"flavour": ORT_CPU_QDQ, "rewired_to_float": 0, "quantize_linear": ops.count("QuantizeLinear"),
               "dequantize_linear": ops.count("DequantizeLinear"), "quantized_op_types": _quantised_consumers(model),
               "quantized_outputs": fused, "calib_method": method}
    log.info("INT8 Q/DQ model (ONNX Runtime CPU) %s: %s", out_path, summary)
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
