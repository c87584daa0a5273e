"""INT8 that computes the same on every CPU: the flavour table, and the proof by emulation that the
CPU flavour cannot saturate ONNX Runtime's x86 non-VNNI U8S8 kernel while 8-bit weights do."""

from __future__ import annotations

import numpy as np
import pytest

from clca_edge.deploy import quantize as q
from clca_edge.deploy.saturation import INT16_MAX, inspect, vpmaddubsw_saturations, x86_non_vnni_runner


def test_flavour_table_drives_the_shipped_choices():
    assert set(q.TARGET_FLAVOUR.values()) == {f.name for f in q.FLAVOURS.values() if f.shipped}
    cpu = q.FLAVOURS[q.CPU_FLAVOUR]
    assert (cpu.activations, cpu.weights, cpu.weight_bits, cpu.outputs_quantized) == ("uint8", "int8", 7, True)
    assert not cpu.x86_saturates
    # The counterexamples the benchmark measures: 8-bit weights reach the saturating kernel, U8U8 does not.
    assert q.FLAVOURS["ort-cpu-u8s8"].x86_saturates and q.FLAVOURS["ort-cpu-s8s8"].x86_saturates
    assert not q.FLAVOURS["ort-cpu-u8u8"].x86_saturates
    trt = q.FLAVOURS[q.TENSORRT_QDQ]
    assert "Conv" in trt.op_types and not trt.outputs_quantized and trt.rewire_to_float and not trt.quantize_bias
    info = cpu.manifest_info()
    assert info["reduce_range"] is True and info["op_types"] == ["MatMul", "Gemm"] and info["format"] == "QDQ"
    with pytest.raises(Exception, match="unknown"):
        q.get_flavour("ort-gpu-magic")


def test_vpmaddubsw_emulation_bounds():
    a = np.full((1, 4), 255, np.uint8)
    w8 = np.full((4, 3), 127, np.int8)
    sat, pairs, largest = vpmaddubsw_saturations(a, w8)
    assert (sat, pairs, largest) == (6, 6, 2 * 255 * 127)  # every pair sum overflows int16
    w7 = np.full((4, 3), 64, np.int8)  # reduce_range's largest magnitude
    sat, _, largest = vpmaddubsw_saturations(a, w7)
    assert sat == 0 and largest == 2 * 255 * 64 <= INT16_MAX
    # Odd K is padded: of 3 pairs per output, the 2 full ones clamp at -32768, the lone product fits.
    w_neg = np.full((5, 2), -128, np.int8)
    assert vpmaddubsw_saturations(np.full((2, 5), 255, np.uint8), w_neg)[:2] == (2 * 2 * 2, 2 * 2 * 3)


def _quantised(cpu_int8_bundle, tmp_path, flavour):
    from clca_edge.bundle import load_bundle
    from clca_edge.deploy.calibration import CalibrationConfig, make_data_reader, sample_calibration

    ws, bundle_dir = cpu_int8_bundle
    b = load_bundle(bundle_dir)
    sample = sample_calibration(ws["calib"], list(b.labels), CalibrationConfig(num_images=12))
    out = tmp_path / f"{flavour}.onnx"
    q.quantize_int8(bundle_dir / "model.onnx", out, make_data_reader(sample, b.preprocess, "images"), flavour=flavour)
    return out, sample, b.preprocess


def test_cpu_flavour_never_saturates_where_8bit_u8s8_does(cpu_int8_bundle, tmp_path):
    """On the tiny trained model's real quantised MatMul inputs (calibrated activation scales and
    zero points, quantised weights, the calibration images): 8-bit u8s8 weights overflow the 16-bit
    pair sums of x86 non-VNNI CPUs, the shipped 7-bit flavour never does."""
    from clca_edge.deploy.calibration import calibration_batches

    reports = {}
    for name in (q.CPU_FLAVOUR, "ort-cpu-u8s8", "ort-cpu-s8s8"):
        path, sample, spec = _quantised(cpu_int8_bundle, tmp_path, name)
        reports[name] = inspect(path, calibration_batches(sample, spec))
    safe, plain, s8 = reports[q.CPU_FLAVOUR], reports["ort-cpu-u8s8"], reports["ort-cpu-s8s8"]
    assert safe.images == plain.images == 12 and len(safe.nodes) == len(plain.nodes) >= 16
    assert safe.kernel == plain.kernel == "u8s8-vpmaddubsw"
    assert safe.saturated == 0 and safe.largest_pair_sum <= 2 * 255 * 64
    assert all(-64 <= n.weight_range[0] and n.weight_range[1] <= 64 for n in safe.nodes)
    assert plain.saturated > 0 and plain.largest_pair_sum > INT16_MAX, plain.to_dict()
    assert s8.saturated > 0  # S8S8 is shifted to U8S8 on x86: the same overflow
    print(f"u8s8 8-bit: {plain.saturated} of {plain.pairs} pair sums saturate (largest {plain.largest_pair_sum}); "
          f"7-bit: 0 (largest {safe.largest_pair_sum})")


def test_emulated_kernel_matches_onnxruntime_when_nothing_saturates(cpu_int8_bundle, tmp_path):
    """The emulation is the Q/DQ graph's integer arithmetic: without clamping it reproduces ONNX
    Runtime's un-optimised run; with clamping the 7-bit file is unchanged."""
    import onnxruntime as ort

    from clca_edge.deploy.calibration import calibration_batches

    path, sample, spec = _quantised(cpu_int8_bundle, tmp_path, q.CPU_FLAVOUR)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    exact, clamped = x86_non_vnni_runner(path, saturate=False), x86_non_vnni_runner(path)
    for x in list(calibration_batches(sample, spec))[:3]:
        want = sess.run(None, {"images": x})[0]
        assert np.abs(exact(x) - want).max() < 1e-4
        assert np.abs(clamped(x) - want).max() < 1e-4


def test_orts_preprocessing_advice_is_not_shown_but_other_warnings_are(monkeypatch, caplog, tmp_path):
    import logging

    import onnxruntime.quantization as q

    from clca_edge.deploy import quantize

    def fake_quantize_static(*args, **kwargs):
        logging.warning("Please consider to run pre-processing before quantization. Refer to example: ...")
        logging.warning("Please consider pre-processing before quantization. See ...")
        logging.warning("something else worth seeing")

    monkeypatch.setattr(q, "quantize_static", fake_quantize_static)
    with caplog.at_level(logging.WARNING):
        quantize._quantize_static(tmp_path / "a.onnx", tmp_path / "b.onnx", None)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["something else worth seeing"]
    assert not any(isinstance(f, quantize._NoPreprocessAdvice) for f in logging.getLogger().filters)
    logging.warning("Please consider pre-processing before quantization, outside deploy")
    assert caplog.records[-1].getMessage().endswith("outside deploy")  # the filter is gone again
