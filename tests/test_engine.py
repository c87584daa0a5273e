"""build-engine through the TensorRT Python API, against fake tensorrt modules of each major
version: network flags, precision flags, workspace API, serialisation, cache keys, rebuilds; engines
go to this device's cache (runtime/engine_cache.py), the bundle is only read."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from clca_edge.core.gate_stats import GateRule, mcnemar_p
from clca_edge.cli import main
from clca_edge.engines.build import BuildEngineConfig, build_engines
from clca_edge.engines import tensorrt as te
from clca_edge.bundle import AccuracyRecord, Status, load_bundle, read_manifest, sha256_file, write_manifest
from clca_edge.engines.tensorrt import GpuInfo, HostMemory
from clca_edge.runtime.engine_cache import ENGINE_CACHE_FILE, DeviceEngines

from fake_tensorrt import make_module
from support.unchanged import tree_digest
from support.workspace import TREE_CLASSES as CLASSES

ORIN = GpuInfo("Orin (nvgpu)", "8.7", "test")
VERSIONS = {"trt8": "8.5.2.2", "trt10": "10.3.0.30"}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, trained_workspace):
    from clca_edge.deploy.calibration import CalibrationConfig
    from clca_edge.deploy.pipeline import DeployConfig, run_deploy

    ws = trained_workspace
    out = tmp_path_factory.mktemp("engine") / "bundle"
    run_deploy(DeployConfig(checkpoint=ws["ckpt"], out=out, calib_data=ws["calib"], eval_data=ws["eval"],
                            precisions=("int8", "fp32"), calibration=CalibrationConfig(num_images=12),
                            build_engines=False))
    return ws, out


@pytest.fixture
def bundle(deployed, tmp_path, monkeypatch):
    """A copy of the deployed bundle, with a device cache of its own (tests' copies share one content)."""
    monkeypatch.setattr("clca_edge.engines.build.gpu_info", lambda: ORIN)
    monkeypatch.setenv("CLCA_EDGE_CACHE_DIR", str(tmp_path / "device-cache"))
    dst = tmp_path / "bundle"
    shutil.copytree(deployed[1], dst)
    return dst


def _cached(bundle) -> DeviceEngines:
    """This device's engine cache for ``bundle`` (the test's CLCA_EDGE_CACHE_DIR)."""
    return DeviceEngines.open(sha256_file(bundle / "manifest.json"))


def _cache_json(bundle) -> dict:
    return json.loads((_cached(bundle).folder / ENGINE_CACHE_FILE).read_text())


def _build(bundle, trt, **kw):
    cfg = BuildEngineConfig(bundle=bundle, timing_iters=3, **kw)
    return build_engines(cfg, trt=trt, memory=HostMemory())


@pytest.mark.parametrize("flavour", sorted(VERSIONS))
def test_auto_builds_both_gates_times_and_picks_default(bundle, deployed, flavour):
    trt = make_module(VERSIONS[flavour])
    rep = _build(bundle, trt, precision="auto", eval_data=deployed[0]["eval"])
    calls = trt.calls
    flags = [c[1] for c in calls if c[0] == "create_network"]
    assert flags == ([1, 1] if flavour == "trt8" else [0, 0])  # EXPLICIT_BATCH on 8.x only
    assert [c for c in calls if c[0] == "set_memory_pool_limit"] == [("set_memory_pool_limit", "WORKSPACE", 1024 << 20)] * 2
    assert not [c for c in calls if c[0] == "max_workspace_size"]
    assert [c[1] for c in calls if c[0] == "build_serialized_network"] == [["FP16"], ["FP16", "INT8"]]

    m = json.loads((bundle / "manifest.json").read_text())
    assert m["engines"] == {} and m.get("default_engine") is None  # the bundle is only read
    c = _cache_json(bundle)
    assert len(c["engines"]) == 2 and rep.where == "cache" and rep.engine_dir == _cached(bundle).folder
    for o in rep.outcomes:
        rec = c["engines"][o.file]
        assert o.path == rep.engine_dir / rec["file"] and c["files"][rec["file"]] == sha256_file(o.path)
        src = "model.onnx" if o.precision == "fp16" else "model.int8.onnx"
        assert rec["key"] == {"trt_version": VERSIONS[flavour], "gpu_name": ORIN.name, "compute_capability": "8.7",
                              "precision": o.precision, "onnx_sha256": sha256_file(bundle / src)}
        assert o.file.startswith(f"{o.precision}_trt{VERSIONS[flavour]}_orin-nvgpu_sm87_")
        # The fake engine runs the ONNX it was built from: accuracy is that of the source variant.
        src_acc = m["variants"]["fp32" if o.precision == "fp16" else "int8"]["accuracy"]["top1"]
        assert rec["accuracy"]["top1"] == pytest.approx(src_acc)
        # Same eval images as deploy here, so the fresh fp32 ONNX reference equals deploy's figure.
        fp32_top1 = rec["reference"]["accuracy"]["top1"]
        assert fp32_top1 == pytest.approx(m["variants"]["fp32"]["accuracy"]["top1"])
        assert rec["drop"] == pytest.approx(fp32_top1 - src_acc)
        # The deploy's statistical gate (core/gate_stats.py), on the device's pass.
        p = rec["paired"]
        assert p["p_value"] == pytest.approx(mcnemar_p(p["lost"], p["gained"]), abs=1e-6)
        assert rec["drop"] == pytest.approx(100 * (p["lost"] - p["gained"]) / p["images"], abs=1e-3)
        rejected = (p["lost"] > p["gained"] and p["p_value"] <= 0.05) or p["agreement"] < 90
        assert rec["status"] == ("rejected" if rejected else "passed")
    passing = [o for o in rep.outcomes if o.status == "passed"]
    fastest = min(passing, key=lambda o: o.record.timing.p50_ms)
    assert c["default_engine"] == rep.default_engine == fastest.file and c["default_engine_verified"]
    assert set(_cached(bundle).cache.engines) == {o.file for o in rep.outcomes}


def test_cached_engine_is_reused_and_foreign_ones_rebuilt(bundle, monkeypatch):
    trt = make_module("8.5.2.2")
    first = _build(bundle, trt, precision="fp16")
    trt.calls.clear()
    again = _build(bundle, trt, precision="fp16")
    assert again.outcomes[0].reused and again.outcomes[0].file == first.outcomes[0].file
    assert not [c for c in trt.calls if c[0] == "build_serialized_network"]

    # Another GPU: the cached plan is never loaded; a new one is built and both stay keyed.
    monkeypatch.setattr("clca_edge.engines.build.gpu_info", lambda: GpuInfo("NVIDIA H100", "9.0", "test"))
    trt.calls.clear()
    other = _build(bundle, trt, precision="fp16")
    assert not other.outcomes[0].reused and other.outcomes[0].file != first.outcomes[0].file
    assert [c[0] for c in trt.calls].count("deserialize_cuda_engine") == 1

    # Another TensorRT (JetPack upgrade 5 -> 6): rebuilt; the 8.5 plan would not even deserialise.
    trt10 = make_module("10.3.0.30")
    upgraded = _build(bundle, trt10, precision="fp16")
    assert not upgraded.outcomes[0].reused and "trt10.3.0.30" in upgraded.outcomes[0].file
    assert upgraded.outcomes[0].status != "failed to run"
    assert len(_cached(bundle).cache.engines) == 3 and load_bundle(bundle).engines == {}


def test_changed_onnx_means_a_new_key(bundle):
    trt = make_module("10.3.0.30")
    first = _build(bundle, trt, precision="int8")
    m = json.loads((bundle / "manifest.json").read_text())
    key = first.outcomes[0].record.key
    assert key.onnx_sha256 == m["files"]["model.int8.onnx"]
    k2 = te.EngineKey.from_dict({**key.to_dict(), "onnx_sha256": "0" * 64})
    assert k2.file_name() != first.outcomes[0].file


def test_old_tensorrt_uses_max_workspace_size(bundle):
    trt = make_module("8.2.3.0")
    _build(bundle, trt, precision="fp16", workspace_mb=256)
    assert ("max_workspace_size", 256 << 20) in trt.calls


@pytest.mark.parametrize("status,why", [(Status.REJECTED, "rejected by the accuracy gate"),
                                        (Status.FAILED_TO_RUN, "is failed to run at deploy")])
def test_rejected_or_failed_int8_onnx_is_not_built(bundle, deployed, status, why):
    m = read_manifest(bundle)
    m.variants["int8"].status = status
    write_manifest(bundle, m, hash_files=False)
    trt = make_module("10.3.0.30")
    rep = _build(bundle, trt, precision="auto", eval_data=deployed[0]["eval"])
    by = {o.precision: o for o in rep.outcomes}
    assert by["int8"].status == "skipped" and why in by["int8"].note
    assert [c[1] for c in trt.calls if c[0] == "build_serialized_network"] == [["FP16"]]
    assert rep.default_engine == by["fp16"].file


def test_unparseable_onnx_is_a_clear_error(bundle):
    trt = make_module("8.5.2.2")
    cfg = te.EngineBuildConfig("fp16", 64)
    bad = bundle / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(te.EngineError, match="cannot parse .*bad.onnx"):
        te.build_serialized_engine(trt, bad, cfg)


def test_cli_without_tensorrt_says_how_to_get_it(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    res = CliRunner().invoke(main, ["build-engine", "--bundle", str(bundle)])
    assert res.exit_code == 9 and "deploy/jetson/setup.sh" in res.output and "Traceback" not in res.output


def test_cli_builds_with_injected_tensorrt(bundle, deployed, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", make_module("10.3.0.30"))
    monkeypatch.setattr(te, "_CudaRt", HostMemory)
    res = CliRunner().invoke(main, ["build-engine", "--bundle", str(bundle), "--precision", "int8",
                                    "--eval-data", str(deployed[0]["eval"])])
    assert res.exit_code == 0, res.output
    assert "default engine: int8_trt10.3.0.30" in res.output


def _tensorrt_machine(monkeypatch):
    """This process as an Orin with TensorRT 8.5 (the fake module), for deploy and build-engine."""
    trt = make_module("8.5.2.2")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr("clca_edge.deploy.pipeline._tensorrt_available", lambda: True)
    monkeypatch.setattr("clca_edge.engines.build.gpu_info", lambda: ORIN)
    monkeypatch.setattr(te, "_CudaRt", HostMemory)
    return trt


@pytest.mark.parametrize("precisions,built", [(("int8", "fp32"), ["int8"]), (("fp32",), [])])
def test_deploy_on_a_tensorrt_machine_builds_right_away_only_what_was_asked(deployed, tmp_path, monkeypatch,
                                                                             precisions, built):
    from clca_edge.deploy.calibration import CalibrationConfig
    from clca_edge.deploy.pipeline import DeployConfig, run_deploy

    ws = deployed[0]
    trt = _tensorrt_machine(monkeypatch)
    rep = run_deploy(DeployConfig(checkpoint=ws["ckpt"], out=tmp_path / "b", calib_data=ws["calib"], eval_data=ws["eval"],
                                  precisions=precisions, calibration=CalibrationConfig(num_images=6)))
    if built:  # the bundle's own engines: recorded in the bundle deploy has just written
        assert rep.engines is not None and [o.precision for o in rep.engines.outcomes] == built
        assert rep.engines.where == "bundle" and rep.engines.engine_dir == tmp_path / "b"
        assert list(load_bundle(tmp_path / "b").engines) == [rep.engines.outcomes[0].file]
    else:  # an fp32-only deploy asked for no fp16/int8 engine: none is built
        assert rep.engines is None and load_bundle(tmp_path / "b").engines == {}
        assert not [c for c in trt.calls if c[0] == "build_serialized_network"]


def test_deploy_engine_precision_is_exactly_the_requested_ones():
    from clca_edge.deploy.pipeline import engine_precision

    assert engine_precision(("int8", "fp16", "fp32")) == "auto"
    assert engine_precision(("fp16", "fp32")) == "fp16"
    assert engine_precision(("int8", "fp32")) == "int8"
    assert engine_precision(("fp32",)) is None


def test_torch_tensorrt_builder_boundary(bundle, deployed, monkeypatch):
    res = CliRunner().invoke(main, ["build-engine", "--bundle", str(bundle), "--builder", "torch-tensorrt",
                                    "--precision", "fp16"])
    assert res.exit_code == 9 and "pass --checkpoint" in res.output
    res = CliRunner().invoke(main, ["build-engine", "--bundle", str(bundle), "--builder", "torch-tensorrt",
                                    "--precision", "int8", "--checkpoint", str(deployed[0]["ckpt"])])
    assert res.exit_code == 9 and "supports --precision fp16 or fp32" in res.output
    monkeypatch.setitem(sys.modules, "torch_tensorrt", None)
    res = CliRunner().invoke(main, ["build-engine", "--bundle", str(bundle), "--builder", "torch-tensorrt",
                                    "--precision", "fp16", "--checkpoint", str(deployed[0]["ckpt"])])
    assert res.exit_code == 9 and "needs torch and torch_tensorrt" in res.output


def test_gpu_info_degrades_to_nvidia_smi_then_unknown(tmp_path, monkeypatch):
    for probe in ("_cuda_python_info", "_pycuda_info", "_tegra_info"):
        monkeypatch.setattr(te, probe, lambda: None)
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 9.0'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert te.gpu_info() == GpuInfo("NVIDIA H100 80GB HBM3", "9.0", "nvidia-smi")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert te.gpu_info() == GpuInfo("unknown", "unknown", "none")


def test_trtexec_command_per_precision():
    assert te.trtexec_command("model.onnx", "fp16", 512, "engines/fp16.plan") == (
        "trtexec --onnx=model.onnx --fp16 --memPoolSize=workspace:512M --saveEngine=engines/fp16.plan")
    assert "--int8 --fp16" in te.trtexec_command("model.int8.onnx", "int8", 512, "e.plan")


def _ort_logits(onnx_path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"images": x[i:i + 1]})[0] for i in range(len(x))])


def test_gate_scores_fp32_onnx_on_the_device_images_in_the_same_pass(bundle, tmp_path):
    from support.workspace import load_tensors, write_class_tree

    # Deploy's fp32 figure came from other images; make it absurd so using it would show.
    m = read_manifest(bundle)
    m.variants["fp32"].accuracy = AccuracyRecord(top1=0.0, per_class={c: 0.0 for c in CLASSES}, images=99)
    write_manifest(bundle, m, hash_files=False)
    device_eval = write_class_tree(tmp_path / "device_eval", 4, seed=7)
    rep = _build(bundle, make_module("10.3.0.30"), precision="auto", eval_data=device_eval)

    x, y = load_tensors(device_eval, load_bundle(bundle).preprocess)
    fp32 = _ort_logits(bundle / "model.onnx", x)
    int8 = _ort_logits(bundle / "model.int8.onnx", x)
    top1 = {"fp16": 100.0 * (fp32.argmax(1) == y).mean(), "int8": 100.0 * (int8.argmax(1) == y).mean()}
    ref_top1 = top1["fp16"]  # the fake fp16 engine runs the fp32 ONNX
    by = {o.precision: o.record for o in rep.outcomes}
    for p, rec in by.items():
        assert rec.reference.accuracy.top1 == pytest.approx(ref_top1, abs=1e-3)
        assert rec.reference.eval_data == str(device_eval) and rec.accuracy.images == len(y)
        assert rec.drop == pytest.approx(ref_top1 - top1[p], abs=1e-3)
        mine = (fp32 if p == "fp16" else int8).argmax(1)
        lost, gained = int(((fp32.argmax(1) == y) & (mine != y)).sum()), int(((fp32.argmax(1) != y) & (mine == y)).sum())
        assert (rec.paired.lost, rec.paired.gained, rec.paired.images) == (lost, gained, len(y))
        assert rec.paired.agreement == pytest.approx(100.0 * (mine == fp32.argmax(1)).mean(), abs=1e-3)
    assert by["fp16"].drop == 0.0 and by["fp16"].agreement.top1_agreement == 100.0
    assert by["fp16"].agreement.max_abs_logit_diff == pytest.approx(0.0, abs=1e-5)
    assert by["int8"].agreement.max_abs_logit_diff == pytest.approx(float(np.abs(int8 - fp32).max()), rel=1e-4)
    assert by["int8"].agreement.top1_agreement == pytest.approx(100.0 * (int8.argmax(1) == fp32.argmax(1)).mean())


def test_failed_int8_build_keeps_the_fp16_engine(bundle, deployed):
    broken = make_module("10.3.0.30", fail_flags=("INT8",))
    rep = _build(bundle, broken, precision="auto", eval_data=deployed[0]["eval"])
    by = {o.precision: o for o in rep.outcomes}
    assert by["int8"].status == "build failed" and by["int8"].file is None
    assert "failed to build a int8 engine" in by["int8"].note
    assert by["fp16"].file and by["fp16"].status in ("passed", "rejected")
    c = _cache_json(bundle)
    assert list(c["engines"]) == [by["fp16"].file] and (_cached(bundle).folder / c["engines"][by["fp16"].file]["file"]).is_file()
    (fail_name, fail), = c["engine_build_failures"].items()
    assert fail["status"] == "build failed" and fail["key"]["precision"] == "int8" and "int8" in fail["note"]
    assert set(_cached(bundle).cache.engines) == {by["fp16"].file}  # the cache record is written and readable

    # Next start with a working builder: fp16 is reused as is, int8 built, the failure cleared.
    fixed = make_module("10.3.0.30")
    again = _build(bundle, fixed, precision="auto")
    by2 = {o.precision: o for o in again.outcomes}
    assert by2["fp16"].reused and by2["fp16"].file == by["fp16"].file
    assert [c[1] for c in fixed.calls if c[0] == "build_serialized_network"] == [["FP16", "INT8"]]
    assert by2["int8"].file == fail_name
    assert _cache_json(bundle)["engine_build_failures"] == {}


def test_cli_reports_a_failed_build_without_traceback(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", make_module("10.3.0.30", fail_flags=("FP16",)))
    monkeypatch.setattr(te, "_CudaRt", HostMemory)
    res = CliRunner().invoke(main, ["build-engine", "--bundle", str(bundle), "--precision", "fp16"])
    assert res.exit_code == 9 and "BUILD FAILED: fp16 engine" in res.output and "Traceback" not in res.output


def test_build_reuses_verified_hashes(bundle, monkeypatch):
    import clca_edge.bundle.store as bmod

    hashed = []
    real = bmod.sha256_file
    monkeypatch.setattr(bmod, "sha256_file", lambda p, *a: hashed.append(Path(p).name) or real(p, *a))
    n_files = len(json.loads((bundle / "manifest.json").read_text())["files"])
    rep = _build(bundle, make_module("10.3.0.30"), precision="auto")
    assert hashed.count("model.onnx") == 1 and len(hashed) == n_files  # load_bundle's verification only
    files = _cached(bundle).cache.files  # the plans' sha256, from the bytes written
    assert sorted(files) == sorted(f"engines/{o.file}" for o in rep.outcomes)
    assert all(files[f"engines/{o.file}"] == real(o.path) for o in rep.outcomes)


class RecordingMemory(HostMemory):
    def __init__(self):
        super().__init__()
        self.sent = []

    def htod(self, ptr, arr):
        self.sent.append(arr)
        super().htod(ptr, arr)


def test_runner_copies_contiguous_input_directly_and_frees_on_close(bundle):
    trt = make_module("10.3.0.30")
    plan = te.build_serialized_engine(trt, bundle / "model.onnx", te.EngineBuildConfig("fp16", 64))
    mem = RecordingMemory()
    runner = te.TrtRunner(trt, plan, memory=mem)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    expected = _ort_logits(bundle / "model.onnx", x)
    out = runner(x)
    assert mem.sent[-1] is x and np.allclose(out, expected, atol=1e-5)
    out = runner(x[0].astype(np.float64))  # other dtype: staged through the host buffer
    assert mem.sent[-1] is runner.inputs[0][1] and np.allclose(out, expected, atol=1e-5)
    fortran = np.asfortranarray(x[0])
    assert np.allclose(runner(fortran), expected, atol=1e-5) and mem.sent[-1] is not fortran
    assert len(mem._bufs) == 2
    runner.close()
    runner.close()  # idempotent
    assert mem._bufs == {}
    with pytest.raises(te.EngineError, match="closed"):
        runner(x)


def test_build_engine_and_engine_lookup_on_a_tar(bundle, monkeypatch, tmp_path):
    from clca_edge.deploy.pipeline import pack_tar
    from clca_edge.runtime.tensorrt_backend import find_engine

    tar = pack_tar(bundle, tmp_path / "field.tar")
    trt = make_module("10.3.0.30")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(te, "_CudaRt", HostMemory)
    res = CliRunner().invoke(main, ["build-engine", "--bundle", str(tar), "--precision", "fp16"])
    assert res.exit_code == 0, res.output
    root = tmp_path / "field.tar.d" / "bundle"
    extracted = tree_digest(tmp_path / "field.tar.d")
    assert not (root / "engines").exists()  # the extraction is not the engine cache
    (plan,) = (_cached(root).folder / "engines").iterdir()
    trt.calls.clear()
    res = CliRunner().invoke(main, ["build-engine", "--bundle", str(tar), "--precision", "fp16"])
    assert res.exit_code == 0 and "cached" in res.output
    assert not [c for c in trt.calls if c[0] == "build_serialized_network"]
    b = load_bundle(tar)  # what capture opens: the same extracted folder, as extracted
    assert b.root == root and b.source == tar and tree_digest(tmp_path / "field.tar.d") == extracted
    found = find_engine(b, "fp16", trt, ORIN, _cached(root))
    assert found.path == plan and found.cached


def test_torch_tensorrt_module_is_recorded_apart_and_never_picked_by_the_runtime(bundle, deployed, monkeypatch):
    """What --builder torch-tensorrt writes needs torch to run: it is hashed and recorded under
    torch_tensorrt, never among the engines predict/capture choose from."""
    import types

    import torch

    import clca_edge.engines.torch_trt as tt
    from clca_edge.runtime.backends import BackendUnavailable
    from clca_edge.runtime.model import load_model
    from clca_edge.runtime.tensorrt_backend import find_engine

    fake = types.ModuleType("torch_tensorrt")
    fake.__version__ = "2.4.0"
    fake.save = lambda module, path, inputs: Path(path).write_bytes(b"exported program")
    monkeypatch.setitem(sys.modules, "torch_tensorrt", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(tt, "_compile", lambda *a: (object(), None))  # the CUDA-only step
    monkeypatch.setattr(tt, "gpu_info", lambda: ORIN)
    res = CliRunner().invoke(main, ["build-engine", "--bundle", str(bundle), "--builder", "torch-tensorrt",
                                    "--precision", "fp16", "--checkpoint", str(deployed[0]["ckpt"])])
    assert res.exit_code == 0, res.output
    b = load_bundle(bundle)  # the bundle is only read: the .ep is in this device's cache, hashed there
    assert b.manifest.torch_tensorrt == {} and b.engines == {}
    cached = _cached(bundle)
    (name, module), = cached.cache.torch_tensorrt.items()
    assert name.endswith(".ep") and module.precision == "fp16" and module.torch_tensorrt_version == "2.4.0"
    ep = cached.path(module.file)
    assert module.status == Status.UNVERIFIED and cached.cache.files[module.file] == sha256_file(ep)
    assert ep.read_bytes() == b"exported program" and cached.cache.engines == {} and cached.cache.default_engine is None
    assert load_model(bundle).files.engine_precisions == ()
    with pytest.raises(BackendUnavailable, match="no fp16 engine built"):
        find_engine(b, "fp16", make_module("10.3.0.30"), ORIN, cached)


def test_the_engines_gate_is_the_one_deploy_used():
    from clca_edge.bundle import GateRecord
    from clca_edge.engines.build import gate_rule

    # A bundle from before the statistical gate keeps its fixed rule (--max-drop replaces its bound).
    assert gate_rule(GateRecord(max_drop=1.0), None) == GateRule(min_agreement=0.0, max_drop=1.0)
    assert gate_rule(GateRecord(max_drop=1.0), 3.0) == GateRule(min_agreement=0.0, max_drop=3.0)
    assert gate_rule(None, None) == GateRule(min_agreement=0.0, max_drop=1.0)
    stat = GateRecord(alpha=0.01, min_agreement=95.0)
    assert gate_rule(stat, None) == GateRule(alpha=0.01, min_agreement=95.0)
    assert gate_rule(stat, 0.5) == GateRule(alpha=0.01, min_agreement=95.0, max_drop=0.5)


def test_an_engine_failing_mid_gate_fails_to_run_and_the_other_keeps_its_paired_verdict(bundle, tmp_path):
    """The int8 engine raises on one device eval image (after its self-check and timing passed):
    it is recorded as failed to run, and the fp16 engine is scored again alone, with its paired test."""
    from clca_edge.core.preprocess import load_rgb, preprocess
    from support.workspace import write_class_tree

    device_eval = write_class_tree(tmp_path / "device_eval", 4, seed=7)
    poison = preprocess(load_rgb(sorted((device_eval / "birch").iterdir())[1]), load_bundle(bundle).preprocess)[None]
    made = []

    class BreaksOnOneImage:
        def __init__(self, runner, breaks: bool):
            self.runner, self.breaks = runner, breaks

        def __getattr__(self, name):
            return getattr(self.runner, name)

        def __call__(self, x):
            if self.breaks and np.array_equal(x, poison):
                raise te.EngineError("CUDA error: an illegal memory access was encountered")
            return self.runner(x)

    def factory(trt, plan):
        made.append(plan)  # auto builds fp16, then int8
        return BreaksOnOneImage(te.TrtRunner(trt, plan, memory=HostMemory()), breaks=len(made) == 2)

    rep = build_engines(BuildEngineConfig(bundle=bundle, timing_iters=3, precision="auto", eval_data=device_eval),
                        trt=make_module("10.3.0.30"), memory=HostMemory(), runner_factory=factory)
    by = {o.precision: o.record for o in rep.outcomes}
    assert by["int8"].status == Status.FAILED_TO_RUN and "illegal memory access" in by["int8"].note
    fp16 = by["fp16"]
    assert fp16.accuracy.images == fp16.paired.images == 12 and fp16.paired.agreement == 100.0
    assert (fp16.paired.lost, fp16.paired.gained, fp16.paired.p_value) == (0, 0, 1.0) and fp16.status == Status.PASSED
    assert rep.default_engine == next(o.file for o in rep.outcomes if o.precision == "fp16")


@pytest.fixture
def read_only_bundle(bundle):
    """The bundle copy made read-only (as the session fixtures and read-only media are)."""
    modes = {p: p.stat().st_mode for p in [bundle, *bundle.rglob("*")]}
    for p in modes:
        p.chmod(modes[p] & ~0o222)
    yield bundle
    for p, mode in modes.items():
        p.chmod(mode)


def test_build_engine_leaves_the_bundle_byte_identical_and_the_runtime_finds_its_engines(read_only_bundle, deployed,
                                                                                          monkeypatch):
    from clca_edge.runtime.backends import select_classifier
    from clca_edge.runtime.model import load_model

    bundle = read_only_bundle
    before = tree_digest(bundle)
    trt = make_module("10.3.0.30")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(te, "_CudaRt", HostMemory)
    monkeypatch.setattr(te, "gpu_info", lambda: ORIN)  # what the runtime asks
    res = CliRunner().invoke(main, ["build-engine", "--bundle", str(bundle), "--precision", "auto", "--json",
                                    "--eval-data", str(deployed[0]["eval"])])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert tree_digest(bundle) == before  # every file, byte for byte; nothing added
    cached = _cached(bundle)
    assert report["where"] == "cache" and report["engine_dir"] == str(cached.folder)
    paths = {e["precision"]: Path(e["path"]) for e in report["engines"]}
    assert set(paths) == {"fp16", "int8"} and all(p.parent == cached.folder / "engines" and p.is_file()
                                                   for p in paths.values())
    default = cached.cache.engines[report["default_engine"]]

    # The next open finds them in the cache and runs the default engine (the fake plan runs its ONNX).
    model = load_model(bundle)
    assert set(model.files.engine_precisions) == {"fp16", "int8"}
    sel = select_classifier(model.files, backend="tensorrt")
    assert sel.classifier.source_file == cached.path(default.file) and sel.classifier.precision == default.key.precision
    assert sel.checks[-1].status == Status.PASSED and "this device's cache" in sel.classifier.detail
    sel.classifier.close()
    assert tree_digest(bundle) == before


def test_another_bundle_or_workspace_never_reuses_an_engine(bundle, tmp_path):
    trt = make_module("10.3.0.30")
    first = _build(bundle, trt, precision="fp16").outcomes[0]
    assert first.file.endswith("_ws1024.plan")

    # Another workspace: another engine (the builder may pick other kernels), kept apart.
    trt.calls.clear()
    small = _build(bundle, trt, precision="fp16", workspace_mb=512).outcomes[0]
    assert not small.reused and small.file.endswith("_ws512.plan") and small.file != first.file
    assert [c[0] for c in trt.calls].count("build_serialized_network") == 1
    assert set(_cached(bundle).cache.engines) == {first.file, small.file}

    # Another bundle with the same ONNX (its manifest differs): its own cache folder, built afresh.
    other = tmp_path / "other"
    shutil.copytree(bundle, other)
    m = read_manifest(other)
    m.default_variant = "fp32" if m.default_variant != "fp32" else "int8"
    write_manifest(other, m, hash_files=False)
    trt.calls.clear()
    again = _build(other, trt, precision="fp16").outcomes[0]
    assert not again.reused and [c[0] for c in trt.calls].count("build_serialized_network") == 1
    assert _cached(other).folder != _cached(bundle).folder and again.path.parent.parent == _cached(other).folder

    # A cache record copied to another bundle's folder names its bundle: ignored there.
    shutil.rmtree(_cached(other).folder)
    shutil.copytree(_cached(bundle).folder, _cached(other).folder)
    assert _cached(other).cache.engines == {}
    trt.calls.clear()
    assert not _build(other, trt, precision="fp16").outcomes[0].reused


def test_build_engine_reuses_the_bundles_own_engine_without_writing_the_bundle(deployed, tmp_path, monkeypatch):
    """Deploy on a Jetson records the bundle's own engine in the bundle; build-engine on that device
    then reuses it (copied into the cache, gated and timed there) instead of building it again."""
    from clca_edge.deploy.calibration import CalibrationConfig
    from clca_edge.deploy.pipeline import DeployConfig, run_deploy

    ws = deployed[0]
    trt = _tensorrt_machine(monkeypatch)
    monkeypatch.setenv("CLCA_EDGE_CACHE_DIR", str(tmp_path / "device-cache"))
    b = tmp_path / "b"
    run_deploy(DeployConfig(checkpoint=ws["ckpt"], out=b, calib_data=ws["calib"], eval_data=ws["eval"],
                            precisions=("fp16", "fp32"), calibration=CalibrationConfig(num_images=6)))
    (own,) = load_bundle(b).engines
    before = tree_digest(b)
    trt.calls.clear()
    rep = _build(b, trt, precision="fp16")
    o = rep.outcomes[0]
    assert o.reused and not [c for c in trt.calls if c[0] == "build_serialized_network"]
    assert o.path.read_bytes() == (b / "engines" / own).read_bytes() and o.path.parent.parent == _cached(b).folder
    assert tree_digest(b) == before and rep.default_engine == o.file


def test_an_unwritable_cache_folder_is_one_line_naming_it(bundle, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", make_module("10.3.0.30"))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    res = CliRunner().invoke(main, ["build-engine", "--bundle", str(bundle), "--cache-dir", str(blocker)])
    assert res.exit_code == 9 and "cannot write this device's cache folder" in res.output
    assert "--cache-dir" in res.output and "Traceback" not in res.output


def test_a_cache_folder_whose_build_lock_cannot_open_is_the_same_one_line(bundle, tmp_path, monkeypatch):
    """The bundle's cache folder exists but its lock cannot be opened (here: a folder in its place,
    as root cannot be refused a write): the same exit-9 line, before anything is built."""
    from clca_edge.runtime.device_cache import bundle_cache_dir
    from clca_edge.runtime.engine_cache import LOCK_FILE

    trt = make_module("10.3.0.30")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    folder = bundle_cache_dir(sha256_file(bundle / "manifest.json"), tmp_path / "cache")
    (folder / LOCK_FILE).mkdir(parents=True)
    res = CliRunner().invoke(main, ["build-engine", "--bundle", str(bundle), "--cache-dir", str(tmp_path / "cache")])
    assert res.exit_code == 9 and "cannot write this device's cache folder" in res.output
    assert not [c for c in trt.calls if c[0] == "build_serialized_network"]


def test_an_unreadable_engine_cache_is_an_empty_one_not_an_error(bundle, monkeypatch):
    """Every open of a bundle reads this device's engine cache: one this user may not read (made
    by root, umask 077) leaves the runtime without cached engines, not without a model."""
    from pathlib import Path

    real = Path.read_bytes

    def refused(self):
        if self.name == ENGINE_CACHE_FILE:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    _build(bundle, make_module("10.3.0.30"), precision="fp16")
    assert _cached(bundle).cache.engines                   # built and cached
    monkeypatch.setattr(Path, "read_bytes", refused)
    assert _cached(bundle).cache.engines == {}             # unreadable: empty, said once


def test_each_plan_is_kept_in_the_cache_as_soon_as_it_is_built(bundle, monkeypatch):
    """A unit stopped between two builds (systemd's start timeout) keeps the plans it built."""
    trt = make_module("10.3.0.30")
    saved = []
    real_save = DeviceEngines.save

    def counting(self):
        saved.append(sorted(self.cache.engines))
        real_save(self)

    monkeypatch.setattr(DeviceEngines, "save", counting)
    _build(bundle, trt, precision="auto")
    assert len(saved[0]) == 1 and len(saved[1]) == 2      # one plan, then both, before the run's end


def test_build_engines_self_check_verdict_is_kept_where_the_runtime_looks(bundle, monkeypatch):
    """The verdict of build-engine's self-check of a cached plan is stored under the plan's sha256
    in this device's cache, so capture's start finds it instead of checking again."""
    from clca_edge.runtime.device_cache import SELFCHECK_FILE

    rep = _build(bundle, make_module("10.3.0.30"), precision="fp16")
    record = rep.outcomes[0].record
    assert record.self_check["status"] == "passed"
    plan_sha = _cached(bundle).cache.files[record.file]
    kept = (_cached(bundle).folder / SELFCHECK_FILE).read_text()
    assert plan_sha in kept and '"tensorrt"' in kept


def test_an_os_error_while_tensorrt_starts_is_a_fallback_not_a_crash(bundle, monkeypatch):
    from clca_edge.runtime.backends import BackendUnavailable
    from clca_edge.runtime.tensorrt_backend import TensorRTClassifier

    def broken():
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(te, "import_tensorrt", broken)
    with pytest.raises(BackendUnavailable, match="TensorRT cannot start"):
        TensorRTClassifier.from_bundle(load_bundle(bundle), "fp16")
