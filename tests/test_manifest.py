"""The typed bundle manifest: one writer/reader, validation that names the field and the fix, formats 1
and 2 upgraded on read, unknown keys kept. Torch-free apart from the session bundle of
tests/support/runtime_bundle.py."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from clca_edge.bundle import (FORMAT_VERSION, BundleError, EngineKey, EngineRecord, Manifest, Status, TensorSpec,
                              TorchTrtModule, VariantRecord, load_bundle, read_manifest, write_manifest)
from clca_edge.core.errors import ExitCode

from support.runtime_bundle import BUNDLE_CLASSES as CLASSES, leaf_images

FORMAT1 = Path(__file__).parent / "data" / "bundle_format1"
FP16_PLAN = "fp16_trt10.3.0.30_orin-nvgpu_sm87_dc920908b45f.plan"
INT8_FAILED = "int8_trt10.3.0.30_orin-nvgpu_sm87_2e35ed9ff0ff.plan"


def _raw_format1() -> dict:
    return json.loads((FORMAT1 / "manifest.json").read_text())


def _write_raw(folder: Path, data) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(data))
    return folder


def test_real_format_1_manifest_reads_as_typed_records():
    m = read_manifest(FORMAT1)
    assert m.format == FORMAT_VERSION and m.version == "0.1.0" and m.target == "jetson-orin"
    assert m.class_names == ["ash", "birch", "cedar"] and m.input.shape == [1, 3, 64, 64]
    assert m.output == TensorSpec("logits", [1, 3], "float32")
    # Each thing once: the model config in ``model``, the preprocessing in preprocess.json only.
    assert m.model["backbone"] == "vit_tiny_patch16_224" and m.model["method"] == "evit"
    assert m.preprocess_file == "preprocess.json" and not hasattr(m, "preprocess")
    assert m.gate.max_drop == 1.0 and m.gate.eval_images == 18 and m.calibration.images == 6
    assert {n: v.status for n, v in m.variants.items()} == {
        "int8": Status.PASSED, "fp32": Status.PASSED, "fp16": Status.PASSED,
        "trt-fp16": Status.TO_VERIFY, "trt-int8": Status.TO_VERIFY}
    int8 = m.variants["int8"]
    assert int8.flavour == "tensorrt-qdq" and int8.accuracy.top1 == 100.0 and int8.accuracy.images == 18
    assert int8.quantization["outputs_quantized"] is False and int8.worst_classes == []
    assert m.variants["trt-int8"].file is None and m.variants["trt-int8"].source == "int8"
    assert m.default_variant == "int8" and m.default_engine == FP16_PLAN and m.default_engine_verified is True
    (name, engine), = m.engines.items()
    assert name == FP16_PLAN and engine.status == Status.PASSED and engine.timing.iters == 3
    assert engine.key == EngineKey("10.3.0.30", "Orin (nvgpu)", "8.7", "fp16", m.files["model.onnx"])
    assert engine.reference.accuracy.top1 == 100.0 and engine.agreement.top1_agreement == 100.0
    failure = m.engine_build_failures[INT8_FAILED]
    assert failure.status == Status.BUILD_FAILED and failure.key.precision == "int8" and "int8" in failure.note
    assert m.torch_tensorrt == {} and m.extra == {}


def test_format_1_round_trips_through_the_writer_as_format_3(tmp_path):
    m = read_manifest(FORMAT1)
    assert Manifest.from_dict(m.to_dict()) == m
    out = tmp_path / "b"
    out.mkdir()
    write_manifest(out, m, hash_files=False)
    written = json.loads((out / "manifest.json").read_text())
    raw = _raw_format1()
    assert written["format"] == 3 and list(written)[:4] == ["format", "package", "version", "created"]
    assert written.pop("torch_tensorrt") == {}
    dropped = ("format", "backbone", "method", "clca", "preprocess")  # format 3 stores each once
    assert {k: v for k, v in written.items() if k != "format"} == {k: v for k, v in raw.items() if k not in dropped}


def test_format_2_upgrade_keeps_one_copy_of_the_model_and_the_preprocessing():
    raw = _raw_format1()
    raw["format"] = 2
    m = Manifest.from_dict(raw)
    assert m.model == raw["model"] and m.extra == {} and "preprocess" not in m.to_dict()
    # A manifest without "model" (written by hand, or by a tool that only set the copies) keeps them there.
    del raw["model"]
    m = Manifest.from_dict(raw)
    assert m.model == {"backbone": "vit_tiny_patch16_224", "method": "evit"} and m.extra == {}
    assert not {"backbone", "method", "clca", "preprocess"} & set(m.to_dict())


def test_format_3_gate_records_the_paired_test_and_what_it_can_detect():
    from clca_edge.bundle import GateRecord, PairedTest

    raw = _raw_format1()
    raw["format"] = 3
    for k in ("backbone", "method", "clca", "preprocess"):
        del raw[k]
    raw["gate"] = {"alpha": 0.05, "min_agreement": 90.0, "detectable_drop": 27.7778, "eval_images": 18}
    raw["variants"]["int8"]["paired"] = {"images": 18, "agreement": 94.4444, "lost": 1, "gained": 0, "p_value": 0.5}
    raw["variants"]["fp16"].update(status="rejected", rejected_by="significant drop")
    m = Manifest.from_dict(raw)
    assert m.gate == GateRecord(alpha=0.05, min_agreement=90.0, detectable_drop=27.7778, eval_images=18)
    assert m.gate.max_drop is None and m.variants["fp16"].rejected_by == "significant drop"
    assert m.variants["int8"].paired == PairedTest(images=18, agreement=94.4444, lost=1, gained=0, p_value=0.5)
    assert Manifest.from_dict(m.to_dict()) == m
    raw["variants"]["fp16"]["rejected_by"] = "bad luck"
    with pytest.raises(BundleError, match="'variants.fp16.rejected_by' is 'bad luck', not one of"):
        Manifest.from_dict(raw)


def test_format_1_conversion_fixes_what_format_1_got_wrong():
    raw = _raw_format1()
    # What clca-edge 0.1 wrote for an fp16 ONNX that ONNX Runtime could not load at deploy ...
    raw["variants"]["fp16"] = {"file": "model.fp16.onnx", "precision": "fp16", "runtime": "onnxruntime-gpu",
                               "io_dtype": "float32", "status": "to verify on device",
                               "note": "cannot run in ONNX Runtime CPU here (Fail); verify with a GPU provider"}
    # ... and for a Torch-TensorRT module, among the engines the runtime picks from.
    ep = "torchtrt_fp16_torch2.4.0_trt2.4.0_sm87.ep"
    raw["engines"][ep] = {"file": f"engines/{ep}", "builder": "torch-tensorrt", "status": "built, not verified",
                          "key": {"trt_version": "torch-tensorrt 2.4.0", "gpu_name": "Orin (nvgpu)",
                                  "compute_capability": "8.7", "precision": "fp16",
                                  "onnx_sha256": "n/a (compiled from checkpoint)"},
                          "build_seconds": 81.5}
    m = Manifest.from_dict(raw)
    assert m.variants["fp16"].status == Status.FAILED_TO_RUN and not m.variants["fp16"].status.usable
    assert list(m.engines) == [FP16_PLAN]
    assert m.torch_tensorrt == {ep: TorchTrtModule(file=f"engines/{ep}", precision="fp16", torch_tensorrt_version="2.4.0",
                                                   gpu_name="Orin (nvgpu)", compute_capability="8.7",
                                                   status=Status.UNVERIFIED, build_seconds=81.5)}


def _set(path: str, value):
    def change(d):
        *parents, last = path.split("/")
        for p in parents:
            d = d[p]
        if value is KeyError:
            del d[last]
        else:
            d[last] = value
    return change


@pytest.mark.parametrize("change,needle", [
    (_set("class_names", KeyError), "field 'class_names' is missing; re-run clca-edge deploy"),
    (_set("files", KeyError), "field 'files' is missing"),
    (_set("variants/int8/status", "great"), "field 'variants.int8.status' is 'great', not one of 'passed'"),
    (_set("variants/fp32/precision", "fp64"), "field 'variants.fp32.precision' is 'fp64', not one of 'fp32'"),
    (_set("variants/fp32/precision", KeyError), "field 'variants.fp32.precision' is missing"),
    (_set("input/shape", "1x3x64x64"), "field 'input.shape' must be a list, not a string"),
    (_set("input/shape", [1, 3, "64", 64]), "field 'input.shape[2]' must be an integer, not a string '64'"),
    (_set("input/shape", [64, 64]), "field 'input.shape' is [64, 64], not [1, 3, H, W]"),
    (_set("gate/max_drop", "1.0"), "field 'gate.max_drop' must be a number, not a string"),
    (_set("model", "vit"), "field 'model' must be an object, not a string"),
    (_set("variants/int8/accuracy/top1", None), "field 'variants.int8.accuracy.top1' must be a number, not null"),
    (_set(f"engines/{FP16_PLAN}/key/onnx_sha256", KeyError), f"field 'engines.{FP16_PLAN}.key.onnx_sha256' is missing"),
    (_set("default_variant", "int4"), "field 'default_variant' is 'int4', not one of the variants"),
    (_set("preprocess_file", 7), "field 'preprocess_file' must be a string, not an integer"),
    (_set("format", 4), "field 'format' is 4; this clca-edge reads formats 1, 2, 3; upgrade clca-edge"),
    (_set("format", "2"), "field 'format' is '2'; this clca-edge reads formats 1, 2, 3; re-run clca-edge deploy"),
    (_set("format", True), "field 'format' is True"),
    (_set("format", KeyError), "not a clca-edge bundle manifest (no 'format' field)"),
])
@pytest.mark.parametrize("fmt", [1, 2, 3])
def test_a_bad_manifest_is_refused_in_one_line_naming_the_field(tmp_path, change, needle, fmt):
    raw = _raw_format1()
    raw["format"] = fmt
    change(raw)
    folder = _write_raw(tmp_path / "b", raw)
    with pytest.raises(BundleError) as e:
        read_manifest(folder)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg and msg.startswith(str(folder / "manifest.json"))
    assert e.value.exit_code == ExitCode.BUNDLE


def test_a_manifest_that_is_not_an_object_is_refused(tmp_path):
    with pytest.raises(BundleError, match=r"not a clca-edge bundle manifest \(a JSON a list"):
        read_manifest(_write_raw(tmp_path / "b", [1, 2]))


def test_cli_refuses_a_bad_manifest_with_exit_8_and_no_traceback(tmp_path):
    from click.testing import CliRunner

    from clca_edge.cli import main

    raw = _raw_format1()
    raw["variants"]["fp32"]["status"] = 1
    folder = _write_raw(tmp_path / "b", raw)
    for cmd in (["predict", "--bundle", str(folder), str(tmp_path)], ["build-engine", "--bundle", str(folder)]):
        res = CliRunner().invoke(main, cmd)
        assert res.exit_code == ExitCode.BUNDLE, res.output
        assert "field 'variants.fp32.status' is 1, not one of" in res.output and "Traceback" not in res.output


def test_unknown_keys_are_kept_through_read_modify_write(tmp_path):
    raw = _raw_format1()
    raw["format"] = 2
    raw["field_robustness_v9"] = {"suite": "x", "per_severity": [1, 2]}
    raw["variants"]["int8"]["robustness"] = {"blur": 91.0}
    raw["engines"][FP16_PLAN]["key"]["cuda"] = "12.6"
    folder = _write_raw(tmp_path / "b", raw)
    m = read_manifest(folder)
    assert m.extra == {"field_robustness_v9": {"suite": "x", "per_severity": [1, 2]}}
    assert m.variants["int8"].extra == {"robustness": {"blur": 91.0}}
    # An engine key with a dimension this version does not know never matches one computed here.
    known = EngineKey.from_dict({k: v for k, v in raw["engines"][FP16_PLAN]["key"].items() if k != "cuda"})
    assert m.engines[FP16_PLAN].key != known
    m.default_variant = "fp32"  # e.g. an edit by this version
    write_manifest(folder, m, hash_files=False)
    again = json.loads((folder / "manifest.json").read_text())
    assert again["field_robustness_v9"] == raw["field_robustness_v9"] and again["default_variant"] == "fp32"
    assert again["variants"]["int8"]["robustness"] == {"blur": 91.0}
    assert again["engines"][FP16_PLAN]["key"]["cuda"] == "12.6"


def test_the_writer_refuses_what_the_reader_would_refuse(tmp_path):
    m = Manifest(class_names=["a"], input=TensorSpec("images", [1, 3, 8, 8]), output=TensorSpec("logits"),
                 variants={"fp32": VariantRecord(precision="fp32", status="fine", file="model.onnx")})
    tmp_path.joinpath("model.onnx").write_bytes(b"x")
    with pytest.raises(BundleError, match=r"refusing to write .*'variants.fp32.status' is 'fine'"):
        write_manifest(tmp_path, m)
    assert not (tmp_path / "manifest.json").exists()
    with pytest.raises(TypeError, match="takes a bundle.Manifest"):
        write_manifest(tmp_path, {"format": 2})


def test_status_is_an_enum_written_and_printed_as_its_text():
    rec = VariantRecord(precision="int8", status=Status.FAILED_TO_RUN, file="m.onnx")
    assert rec.to_dict() == {"precision": "int8", "status": "failed to run", "file": "m.onnx"}
    assert json.dumps(Status.PASSED) == '"passed"' and f"{Status.PASSED}" == str(Status.PASSED) == "passed"
    assert Status.PASSED == "passed" and Status.PASSED in {"passed"} and {"passed": 1}[Status.PASSED] == 1
    assert [s for s in Status if not s.usable] == [Status.REJECTED, Status.FAILED_TO_RUN, Status.BUILD_FAILED,
                                                   Status.FAILED, Status.SKIPPED, Status.UNAVAILABLE]


@pytest.mark.parametrize("fmt", [1, 2])
def test_an_older_format_bundle_still_loads_and_runs(tmp_path, bundle_dir, fmt):  # noqa: F811
    from clca_edge.runtime.backends import select_classifier
    from clca_edge.runtime.model import load_model

    b = tmp_path / "old"
    shutil.copytree(bundle_dir, b)
    raw = json.loads((b / "manifest.json").read_text())
    # As formats 1 and 2 were written: the model config's and the preprocessing's copies beside them.
    spec = json.loads((b / "preprocess.json").read_text())
    raw.update(format=fmt, backbone="vit_tiny_patch16_224", method="evit", clca=True, preprocess=spec)
    (b / "manifest.json").write_text(json.dumps(raw))  # the manifest is not hashed: the files verify as before
    assert load_bundle(b).manifest.format == FORMAT_VERSION
    clf = select_classifier(load_model(b).files, "ort-cpu").classifier
    try:
        import numpy as np

        from clca_edge.core.preprocess import preprocess

        rgb = leaf_images(1)[0][:, :, ::-1]
        assert clf.logits(preprocess(rgb, load_bundle(b).preprocess)).shape == (len(CLASSES),)
        assert np.isfinite(clf.logits(preprocess(rgb, load_bundle(b).preprocess))).all()
    finally:
        clf.close()


def test_engine_records_of_a_format_2_bundle_are_typed(tmp_path, bundle_dir):  # noqa: F811
    b = tmp_path / "b"
    shutil.copytree(bundle_dir, b)
    m = read_manifest(b)
    key = EngineKey("10.3.0", "Orin", "8.7", "fp16", m.files["model.onnx"])
    (b / "engines").mkdir()
    (b / "engines" / key.file_name()).write_bytes(b"plan")
    m.engines[key.file_name()] = EngineRecord(file=f"engines/{key.file_name()}", key=key, status=Status.UNVERIFIED)
    write_manifest(b, m, new_files=[f"engines/{key.file_name()}"])
    rec = load_bundle(b).engines[key.file_name()]
    assert rec.key == key and rec.status is Status.UNVERIFIED and rec.timing is None
    bad = copy.deepcopy(json.loads((b / "manifest.json").read_text()))
    bad["engines"][key.file_name()]["status"] = "fast"
    (b / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(BundleError, match=rf"field 'engines.{key.file_name()}.status' is 'fast'"):
        load_bundle(b)
