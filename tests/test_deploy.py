"""`clca-edge deploy`: a real tiny model trained on synthetic class folders goes through fp32 /
INT8 (Q/DQ) / fp16 export, the accuracy gate and the bundle, checked on real outputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from clca_edge.core.errors import ClcaEdgeError, ExitCode
from clca_edge.cli import main
from clca_edge.bundle import BundleIntegrityError, load_bundle, sha256_file

from support.workspace import TREE_CLASSES as CLASSES, load_tensors


@pytest.fixture(scope="module")
def ws(tmp_path_factory, trained_workspace):
    """The shared workspace with its eval images copied and one corrupt image added (skipped and
    counted, never fatal); bundles go to ``out`` beside them."""
    root = tmp_path_factory.mktemp("deploy")
    shutil.copytree(trained_workspace["eval"], root / "eval")
    (root / "eval" / "ash" / "broken.png").write_bytes(b"\x89PNG not really")
    return {**trained_workspace, "eval": root / "eval", "out": root}


def _deploy(ws, out, *extra):
    args = ["deploy", "--checkpoint", str(ws["ckpt"]), "--out", str(out), "--calib-data", str(ws["calib"]),
            "--eval-data", str(ws["eval"]), "--calib-images", "12", *extra]
    return CliRunner().invoke(main, args)


@pytest.fixture(scope="module")
def bundle(ws):
    out = ws["out"] / "bundle"
    res = _deploy(ws, out, "--tar")
    assert res.exit_code == 0, res.output
    return out, res


def test_manifest_records_everything(bundle, ws):
    out, res = bundle
    m = json.loads((out / "manifest.json").read_text())
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p != out / "manifest.json"}
    assert set(m["files"]) == on_disk and "calibration/manifest.json" in on_disk
    assert all(sha256_file(out / f) == h for f, h in m["files"].items())
    assert m["input"]["shape"] == [1, 3, 64, 64] and m["opset"] == 17
    assert m["class_names"] == CLASSES and (out / "labels.txt").read_text().split() == CLASSES
    # Each thing once (format 3): the preprocessing in its file, the model config in "model".
    spec = json.loads((out / m["preprocess_file"]).read_text())
    assert spec["img_size"] == 64 and spec["resize_size"] == 73
    assert len(spec["mean"]) == 3 and len(spec["std"]) == 3
    assert m["format"] == 3 and not {"preprocess", "backbone", "method", "clca"} & set(m)
    assert m["model"]["backbone"] == "vit_tiny_patch16_224" and m["model"]["clca"]["cla_head"] is True
    # Resolved for the 4-block tiny backbone (default locations scale with depth).
    assert m["model"]["method"] == "evit" and m["keep_rate"] == [0.25, 0.25, 0.25] and m["locations"] == [1, 2, 3]
    assert len(m["tokens_per_block"]) == 4 and m["tokens_per_block"][0] == 1 + 1 + 16
    import clca_edge
    assert m["version"] == clca_edge.__version__
    v = m["variants"]
    assert v["fp32"]["parity"]["torch_vs_onnx_max_abs"] <= 1e-4
    assert v["fp32"]["accuracy"]["top1"] >= 80.0  # trained: far above the 33% of chance
    assert m["gate"]["eval_images"] == 18 and m["gate"]["eval_skipped"] == 1
    # The statistical gate: 5 lost images (0.5**5 <= 0.05) of 18 is the smallest drop 18 images show.
    g = m["gate"]
    assert g["alpha"] == 0.05 and g["min_agreement"] == 90.0 and "max_drop" not in g
    assert g["detectable_drop"] == pytest.approx(100 * 5 / 18, abs=1e-3)
    assert "smallest drop these 18 eval images can detect is 27.78 points" in res.output
    for name in ("int8", "fp16"):
        p = v[name]["paired"]
        assert p["images"] == 18 and 0 <= p["lost"] + p["gained"] <= 18 and 0 < p["p_value"] <= 1
        assert v[name]["drop"] == pytest.approx(100 * (p["lost"] - p["gained"]) / 18, abs=1e-3)
        passes = not (p["lost"] > p["gained"] and p["p_value"] <= 0.05) and p["agreement"] >= 90.0
        assert v[name]["status"] == ("passed" if passes else "rejected")
        assert set(v[name]["accuracy"]["per_class"]) == set(CLASSES)
    assert v["trt-fp16"]["status"] == v["trt-int8"]["status"] == "to verify on device"
    # The fastest passing variant on ONNX Runtime CPU; never TensorRT's Q/DQ file (int8-cpu runs there).
    assert m["default_variant"] in ("fp32", "int8-cpu")
    script = (out / "trtexec.sh").read_text()
    assert '--onnx="$B/model.onnx" --fp16' in script and '--onnx="$B/model.int8.onnx" --int8 --fp16' in script
    assert '--saveEngine="$OUT/fp16.plan"' in script and "engines/" not in script   # never into the bundle
    assert "REJECTED" not in res.output


def test_jetson_bundle_carries_a_cpu_int8_for_the_cpu_fallback(bundle):
    """TensorRT's Q/DQ INT8 runs slowly on ONNX Runtime CPU; the device's CPU fallback gets the
    CPU flavour (7-bit weights, safe on x86 without VNNI and on ARM) instead of fp32 only."""
    from clca_edge.bundle import read_manifest
    from clca_edge.bundle.int8 import int8_isa
    from clca_edge.runtime.backends import open_backend
    from clca_edge.runtime.model import load_model

    out, _ = bundle
    m = read_manifest(out)
    cpu, trt = m.variants["int8-cpu"], m.variants["int8"]
    assert (cpu.file, cpu.flavour, cpu.precision, cpu.runtime) == ("model.int8-cpu.onnx", "ort-cpu-u8s8-w7", "int8",
                                                                    "onnxruntime")
    assert trt.flavour == "tensorrt-qdq" and "model.int8-cpu.onnx" in m.files
    assert cpu.status in ("passed", "rejected") and cpu.accuracy is not None  # gated like any variant
    assert (m.int8.cpu_variant, m.int8.tensorrt_variant, m.int8.cpu_flavour) == ("int8-cpu", "int8", "ort-cpu-u8s8-w7")
    assert m.int8.x86_non_vnni_safe and m.int8.deploy_cpu.isa == int8_isa()
    assert m.default_variant != "int8"  # TensorRT's Q/DQ file is never the CPU default
    assert m.variants["trt-int8"].source == "int8"  # engines are still built from TensorRT's file
    files = load_model(out).files
    assert files.onnx["int8"].name == "model.int8.onnx"
    if cpu.status == "passed":
        assert files.files_for("ort-cpu")["int8"].name == "model.int8-cpu.onnx"
        assert open_backend(files, "ort-cpu", "int8").source_file.name == "model.int8-cpu.onnx"


def test_int8_is_explicit_symmetric_per_channel_qdq_at_opset_17(bundle):
    out, _ = bundle
    model = onnx.load(str(out / "model.int8.onnx"))
    assert [i.version for i in model.opset_import if i.domain in ("", "ai.onnx")] == [17]
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert dq and any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    fed = {t for n in dq for t in consumers[n.output[0]]}
    assert fed <= {"MatMul", "Gemm", "Conv"}  # LayerNorm / Softmax / GELU stay float
    weight_dq = [n for n in dq if n.input[0] in inits]
    assert weight_dq and all(inits[n.input[1]].size > 1 for n in weight_dq)  # per-channel scales
    zero_points = [inits[n.input[2]] for n in dq if len(n.input) > 2 and n.input[2] in inits]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)  # symmetric


def test_int8_accuracy_is_computed_on_real_ort_outputs(bundle, ws):
    import onnxruntime as ort
    from clca_edge.core.preprocess import PreprocessSpec

    out, _ = bundle
    m = json.loads((out / "manifest.json").read_text())
    x, y = load_tensors(ws["eval"], PreprocessSpec.from_dict(json.loads((out / "preprocess.json").read_text())))
    sess = ort.InferenceSession(str(out / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    pred = np.array([sess.run(None, {"images": x[i:i + 1]})[0].argmax() for i in range(len(x))])
    assert m["variants"]["int8"]["accuracy"]["top1"] == pytest.approx(100.0 * (pred == y).mean(), abs=1e-3)


def test_calibration_manifest_is_balanced_and_disjoint_from_eval(bundle, ws):
    out, _ = bundle
    cal = json.loads((out / "calibration" / "manifest.json").read_text())
    assert cal["count"] == 12 and cal["per_class"] == {c: 4 for c in CLASSES}
    eval_hashes = {sha256_file(p) for p in ws["eval"].rglob("*.png")}
    for f in cal["files"]:
        assert sha256_file(ws["calib"] / f["path"]) == f["sha256"]
        assert f["sha256"] not in eval_hashes


def test_tar_round_trip_and_one_flipped_byte_is_refused(bundle, tmp_path):
    out, _ = bundle
    tar = out.with_name(out.name + ".tar")
    b = load_bundle(tar, extract_to=tmp_path / "x")
    assert b.labels == CLASSES and b.variant("int8").path.is_file()
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    target = copy / "model.int8.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match="model.int8.onnx"):
        load_bundle(copy)
    res = CliRunner().invoke(main, ["build-engine", "--bundle", str(copy)])
    assert res.exit_code == ExitCode.BUNDLE and "sha256 of model.int8.onnx does not match" in res.output


@pytest.fixture
def broken_int8(monkeypatch):
    """INT8 quantisation that then replaces its weights with random ones: a variant far worse than fp32."""
    import clca_edge.deploy.quantize as q

    real = q.quantize_int8

    def quantize_then_break(fp32, out, reader, method="minmax", max_opset=17, flavour="tensorrt-qdq"):
        summary = real(fp32, out, reader, method, max_opset, flavour)
        model = onnx.load(str(out))
        rng = np.random.default_rng(0)
        for init in model.graph.initializer:
            if init.data_type == onnx.TensorProto.INT8 and len(init.dims) >= 2:
                w = onnx.numpy_helper.to_array(init)
                init.CopyFrom(onnx.numpy_helper.from_array(rng.integers(-127, 128, w.shape).astype(np.int8), init.name))
        onnx.save(model, str(out))
        return summary

    monkeypatch.setattr(q, "quantize_int8", quantize_then_break)


def test_gate_rejects_a_variant_made_worse_on_purpose(ws, tmp_path, broken_int8):
    out = tmp_path / "bad"
    res = _deploy(ws, out, "--precision", "int8,fp32")
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["variants"]["int8"]["status"] == "rejected" and m["variants"]["int8"]["drop"] > 1.0
    assert m["variants"]["trt-int8"]["status"] == "rejected"
    assert m["default_variant"] == "fp32"
    worst = [w["class"] for w in m["variants"]["int8"]["worst_classes"]]
    assert worst and f"REJECTED: int8 drops" in res.output and worst[0] in res.output
    p = m["variants"]["int8"]["paired"]
    assert m["variants"]["int8"]["rejected_by"] == "significant drop" and p["lost"] >= 5 and p["p_value"] <= 0.05


def test_each_gate_rule_rejects_on_its_own_and_max_drop_keeps_its_meaning(ws, tmp_path, broken_int8):
    """With a significance level 18 images cannot reach, the paired test rejects nothing (and the
    command says no drop is detectable); the agreement bound and a set --max-drop still reject."""
    def gate(*options):
        out = tmp_path / f"b{len(list(tmp_path.iterdir()))}"
        res = _deploy(ws, out, "--precision", "int8,fp32", "--target", "cpu", "--field-suite", "off",
                      "--gate-alpha", "1e-9", *options)
        assert res.exit_code == 0, res.output
        return json.loads((out / "manifest.json").read_text()), res.output

    m, output = gate("--min-agreement", "0")
    int8 = m["variants"]["int8"]
    assert int8["status"] == "passed" and int8["drop"] > 1.0 and "rejected_by" not in int8
    assert "detectable_drop" not in m["gate"] and "18 eval images are too few to detect any drop" in output
    m, output = gate("--min-agreement", "0", "--max-drop", "1")
    int8 = m["variants"]["int8"]
    assert int8["status"] == "rejected" and int8["rejected_by"] == "max drop" and m["gate"]["max_drop"] == 1.0
    assert f"REJECTED: int8 drops {int8['drop']:.2f} points (> --max-drop 1)" in output
    m, output = gate("--min-agreement", "99")
    int8 = m["variants"]["int8"]
    assert int8["status"] == "rejected" and int8["rejected_by"] == "agreement"
    assert int8["paired"]["agreement"] < 99 and f"agrees with fp32 on {int8['paired']['agreement']:.1f}%" in output
    assert m["variants"]["fp32"]["status"] == "passed" and m["default_variant"] == "fp32"


def test_existing_bundle_needs_force_and_nothing_half_written(bundle, ws):
    out, _ = bundle
    res = _deploy(ws, out)
    assert res.exit_code == ExitCode.OUTPUT and "already exists; pass --force" in res.output
    res = _deploy(ws, out, "--calib-images", "100", "--force")  # fails late: too few calibration images
    assert res.exit_code == 10 and "has 24 usable images" in res.output and "minimum 3" in res.output
    assert load_bundle(out).labels == CLASSES  # the old bundle is intact
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".bundle.")]


@pytest.mark.parametrize("case,code,needle", [
    ("missing_ckpt", ExitCode.CHECKPOINT, "does not exist"),
    ("corrupt_ckpt", ExitCode.CHECKPOINT, "not a readable safetensors checkpoint"),
    ("eval_extra_class", 10, "unknown dogwood"),
    ("unwritable_out", ExitCode.OUTPUT, "choose a writable --out"),
    ("tiny_calib", 10, "minimum is 3"),
])
def test_bad_input_is_one_line_error(ws, tmp_path, case, code, needle):
    ckpt, ev, out, calib_n = ws["ckpt"], ws["eval"], tmp_path / "b", "12"
    if case == "missing_ckpt":
        ckpt = tmp_path / "nope.safetensors"
    elif case == "corrupt_ckpt":
        ckpt = tmp_path / "bad.safetensors"
        ckpt.write_bytes(b"garbage" * 10)
    elif case == "eval_extra_class":
        ev = tmp_path / "ev"
        shutil.copytree(ws["eval"], ev)
        shutil.copytree(ev / "ash", ev / "dogwood")
    elif case == "unwritable_out":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "bundle"
    elif case == "tiny_calib":
        calib_n = "2"
    res = CliRunner().invoke(main, ["deploy", "--checkpoint", str(ckpt), "--out", str(out), "--calib-data",
                                    str(ws["calib"]), "--eval-data", str(ev), "--calib-images", calib_n])
    assert res.exit_code == code, res.output
    assert needle in res.output and "Traceback" not in res.output
    assert not out.exists()


def _consumers(model):
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    return consumers


def _matmuls_with_quantised_output(model):
    consumers = _consumers(model)
    return [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm")
            and "QuantizeLinear" in consumers.get(n.output[0], [])]


@pytest.fixture(scope="module")
def cpu_bundle(ws):
    out = ws["out"] / "cpu_bundle"
    res = _deploy(ws, out, "--target", "cpu", "--precision", "int8,fp32")
    assert res.exit_code == 0, res.output
    return out


def test_jetson_int8_is_tensorrt_qdq_with_float_matmul_outputs(bundle):
    out, _ = bundle
    m = json.loads((out / "manifest.json").read_text())
    assert m["variants"]["int8"]["flavour"] == "tensorrt-qdq"
    assert m["variants"]["int8"]["quantization"]["outputs_quantized"] is False
    assert _matmuls_with_quantised_output(onnx.load(str(out / "model.int8.onnx"))) == []


def test_cpu_int8_quantises_matmul_outputs_so_ort_fuses_qlinearmatmul(cpu_bundle, tmp_path):
    import onnxruntime as ort

    m = json.loads((cpu_bundle / "manifest.json").read_text())
    v = m["variants"]["int8"]
    assert m["target"] == "cpu" and v["flavour"] == "ort-cpu-u8s8-w7" and v["measured_on"] == "ort-cpu"
    model = onnx.load(str(cpu_bundle / "model.int8.onnx"))
    # 7-bit weights (reduce_range), so x86 CPUs without VNNI cannot saturate (deploy/saturation.py).
    weights = [onnx.numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert weights and all(w.min() >= -64 and w.max() <= 64 for w in weights)
    assert v["quantization"]["weight_bits"] == 7 and v["quantization"]["x86_non_vnni_saturation"] is False
    assert [i.version for i in model.opset_import if i.domain in ("", "ai.onnx")] == [17]
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    fused = _matmuls_with_quantised_output(model)
    assert fused and len(fused) == v["quantization"]["quantized_outputs"]
    # Softmax / LayerNorm / GELU are never fed dequantised values, so ORT keeps them float.
    consumers = _consumers(model)
    fed = {t for n in model.graph.node if n.op_type == "DequantizeLinear" for t in consumers[n.output[0]]}
    assert fed <= {"MatMul", "Gemm", "Add", "QuantizeLinear"}, fed
    # ORT really fuses the pattern into its integer kernel.
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(cpu_bundle / "model.int8.onnx"), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert ops.count("QLinearMatMul") == len(fused) and "QLinearSoftmax" not in ops
    # Through the gate on the trained tiny model, like any variant.
    assert v["status"] == "passed" and v["drop"] <= 1.0, v["drop"]
    print(f"cpu int8 drop {v['drop']} points, top-1 {v['accuracy']['top1']} vs fp32 {m['variants']['fp32']['accuracy']['top1']}")
    assert json.loads((cpu_bundle / "calibration" / "manifest.json").read_text())["count"] == 12
    assert m["calibration"]["images"] == 12


def _with_default(tmp_path, src, name, default, drop_measured=False):
    from clca_edge.bundle import read_manifest, write_manifest

    b = tmp_path / name
    shutil.copytree(src, b)
    manifest = read_manifest(b)
    manifest.default_variant = default
    if drop_measured:  # a bundle from before deploy recorded where it timed the variants
        for v in manifest.variants.values():
            v.measured_on = None
    write_manifest(b, manifest)
    return b


def test_precision_auto_on_ort_cpu_is_measured_on_the_device(cpu_bundle, bundle, ws, tmp_path):
    """Not deploy's default_variant (timed on the deploy machine) but this device's own timing of
    fp32 vs INT8 decides; a jetson-orin bundle offers its int8-cpu file, never TensorRT's Q/DQ one."""
    import dataclasses

    from clca_edge.runtime.backends import select_classifier
    from clca_edge.runtime.model import load_model

    class Fixed:
        def __init__(self, fp32, int8):
            self.ms = {"fp32": fp32, "int8": int8}

        def measure(self, clf, threads=0):
            return self.ms[clf.precision], False

    def auto_cpu(b, fp32=2.0, int8=1.0):
        files = dataclasses.replace(load_model(b).files, latency=Fixed(fp32, int8))
        clf = select_classifier(files, "ort-cpu", "auto").classifier
        try:
            return clf.precision, clf.source_file.name
        finally:
            clf.close()

    for default in ("fp32", "int8"):
        b = _with_default(tmp_path, cpu_bundle, f"cpu_{default}", default)
        assert auto_cpu(b) == ("int8", "model.int8.onnx")
        assert auto_cpu(b, fp32=1.0, int8=3.0) == ("fp32", "model.onnx")
    jetson, _ = bundle
    if read_status(jetson, "int8-cpu") == "passed":
        assert auto_cpu(_with_default(tmp_path, jetson, "orin", "fp32")) == ("int8", "model.int8-cpu.onnx")
    # Really measured through the CLI: the choice and both figures are said on stderr.
    res = CliRunner().invoke(main, ["predict", "--bundle", str(tmp_path / "cpu_fp32"), "--backend", "ort-cpu",
                                    "--json", str(ws["eval"] / "ash")])
    assert res.exit_code == 0, res.output
    out, _ = json.JSONDecoder().raw_decode(res.output[res.output.index("{"):])
    assert out["precision"] in ("fp32", "int8") and out["backend"] == "ort-cpu" and len(out["predictions"]) == 6
    assert "ms vs fp32" in res.output and "ms per image on this CPU" in res.output
    # An explicit --precision still wins.
    fast = tmp_path / "cpu_int8"
    assert select_classifier(load_model(fast).files, "ort-cpu", "fp32").classifier.precision == "fp32"


def read_status(b, variant):
    m = json.loads((b / "manifest.json").read_text())
    return m["variants"].get(variant, {}).get("status")


def _unloadable(path):
    """Make ``path`` an ONNX file ONNX Runtime refuses to load: one more node, of an op in a domain
    no runtime implements (the graph's outputs are unchanged)."""
    model = onnx.load(str(path))
    out = model.graph.output[0].name
    model.graph.node.append(onnx.helper.make_node("NoSuchOp", [out], [out + "_unused"], domain="org.example.none"))
    model.opset_import.append(onnx.helper.make_opsetid("org.example.none", 1))
    onnx.save(model, str(path))


def test_a_variant_onnx_runtime_cannot_load_is_failed_and_never_used(ws, tmp_path, monkeypatch):
    import clca_edge.deploy.quantize as q
    from clca_edge.runtime.backends import select_classifier
    from clca_edge.runtime.model import load_model

    real = q.quantize_int8

    def quantize_then_break(*args, **kwargs):
        summary = real(*args, **kwargs)
        _unloadable(args[1])
        return summary

    monkeypatch.setattr(q, "quantize_int8", quantize_then_break)
    out = tmp_path / "b"
    res = _deploy(ws, out, "--precision", "int8,fp32")
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    v = m["variants"]["int8"]
    assert v["status"] == "failed to run" and "ONNX Runtime cannot load it" in v["note"] and "accuracy" not in v
    assert m["variants"]["trt-int8"]["status"] == "failed to run"  # build-engine skips it
    assert m["default_variant"] == "fp32" and any(n.startswith("int8: ONNX Runtime cannot load it") for n in m["notes"])
    assert "FAILED TO RUN: int8" in res.output and "Traceback" not in res.output
    model = load_model(out)
    assert set(model.files.onnx) == {"fp32"}
    with pytest.raises(ClcaEdgeError, match="no usable int8 variant"):
        select_classifier(model.files, "ort-cpu", "int8")


def test_an_fp32_onnx_runtime_cannot_load_is_an_export_error(ws, tmp_path, monkeypatch):
    import clca_edge.deploy.onnx_export as ox

    real = ox.export_onnx

    def export_then_break(model, path, *args, **kwargs):
        result = real(model, path, *args, **kwargs)
        _unloadable(path)
        return result

    monkeypatch.setattr(ox, "export_onnx", export_then_break)
    out = tmp_path / "b"
    res = _deploy(ws, out, "--precision", "fp32")
    assert res.exit_code == ExitCode.EXPORT, res.output
    assert "ONNX Runtime cannot load the exported fp32 ONNX" in res.output and "Traceback" not in res.output
    said = [ln for ln in res.stderr.splitlines() if not ln.startswith("[")]   # besides the progress stages
    assert len(said) == 1 and said[0].startswith("Error: ") and not out.exists()
