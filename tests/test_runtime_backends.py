"""Backend selection: order, fallbacks said once and returned, forced backends, bundle variants."""

import json
import logging
import shutil
import sys
import types

import numpy as np
import pytest
from click.testing import CliRunner

from clca_edge.cli import main
from clca_edge.runtime import backends
from clca_edge.runtime.backends import BackendUnavailable, Classifier, ModelFiles, select_classifier
from clca_edge.core.errors import BackendError
from clca_edge.runtime.model import load_model
from support.runtime_bundle import BUNDLE_CLASSES as CLASSES


@pytest.fixture(autouse=True)
def fresh_announcements(monkeypatch):
    # Make sure no real or leftover tensorrt is importable in these tests.
    monkeypatch.setitem(sys.modules, "tensorrt", None)


def test_cpu_backend_matches_a_plain_onnxruntime_session(bundle_dir):
    import onnxruntime as ort

    model = load_model(bundle_dir)
    sel = select_classifier(model.files, "ort-cpu")
    x = np.random.default_rng(0).standard_normal((3, 64, 64)).astype(np.float32)
    plain = ort.InferenceSession(str(bundle_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    ref = plain.run(None, {"images": x[None]})[0][0]
    got = sel.classifier.logits(x)
    assert got.shape == (len(CLASSES),)
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert sel.fallbacks == [] and sel.classifier.backend == "ort-cpu" and sel.classifier.precision == "fp32"


def test_auto_falls_back_in_order_and_warns_once(bundle_dir, caplog):
    model = load_model(bundle_dir)
    with caplog.at_level(logging.WARNING, logger="clca_edge.runtime.backends"):
        first = select_classifier(model.files)
        second = select_classifier(model.files)
    assert [f.backend for f in first.fallbacks] == ["tensorrt", "ort-gpu"]
    assert "TensorRT's Python module is not importable" in first.fallbacks[0].reason
    assert "no GPU provider" in first.fallbacks[1].reason
    assert first.classifier.backend == second.classifier.backend == "ort-cpu"
    # Both runs return their fallbacks (for their logs), but each is announced once per process.
    assert second.fallbacks == first.fallbacks
    warnings = [r.getMessage() for r in caplog.records if "FALLBACK" in r.getMessage()]
    assert len(warnings) == 2 and "tensorrt" in warnings[0] and "ort-gpu" in warnings[1]


def test_gpu_provider_that_does_not_initialise_is_a_fallback(bundle_dir, monkeypatch):
    """ORT lists CUDA but quietly runs on the CPU (CUDA libraries missing): not accepted as GPU."""
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    model = load_model(bundle_dir)
    with pytest.raises(BackendUnavailable, match="did not initialise|GPU session failed"):
        backends.open_backend(model.files, "ort-gpu")
    sel = select_classifier(model.files)
    assert [f.backend for f in sel.fallbacks] == ["tensorrt", "ort-gpu"]


class FakeEngine(Classifier):
    backend = "tensorrt"

    def __init__(self, precision):
        self.precision = precision

    def logits(self, chw):
        return np.arange(len(CLASSES), dtype=np.float32)


def test_tensorrt_is_first_when_it_opens(bundle_dir):
    model = load_model(bundle_dir)
    opened = []

    def opener(precision):
        opened.append(precision)
        return FakeEngine(precision)

    files = ModelFiles(model.files.onnx, 64, "fp16", opener, ("fp16", "int8"))
    sel = select_classifier(files)
    assert sel.classifier.backend == "tensorrt" and sel.fallbacks == [] and opened == ["fp16"]
    assert select_classifier(files, precision="int8").classifier.precision == "int8"
    # A precision the bundle has no engine for skips TensorRT (and ORT has no int8 ONNX here either).
    with pytest.raises(BackendError, match="no usable int8 variant"):
        select_classifier(ModelFiles(model.files.onnx, 64), precision="int8")


def test_forced_backend_that_cannot_run_fails_with_exit_5(bundle_dir):
    model = load_model(bundle_dir)
    with pytest.raises(BackendError, match="--backend ort-gpu cannot run here: .*no GPU provider"):
        select_classifier(model.files, "ort-gpu")
    res = CliRunner().invoke(main, ["predict", "--bundle", str(bundle_dir), "--backend", "tensorrt", str(bundle_dir)])
    assert res.exit_code == 5 and "--backend tensorrt cannot run here" in res.output
    assert "Traceback" not in res.output


def _bundle_with_engines(tmp_path, bundle_dir, engines):
    from clca_edge.bundle import EngineRecord, Status, read_manifest, write_manifest

    b = tmp_path / "b"
    shutil.copytree(bundle_dir, b)
    (b / "engines").mkdir()
    manifest = read_manifest(b)
    manifest.engines = {}
    for fname, key in engines.items():
        (b / "engines" / fname).write_bytes(b"plan:" + fname.encode())
        manifest.engines[fname] = EngineRecord(file=f"engines/{fname}", key=key, status=Status.PASSED)
    manifest.default_engine = next(iter(engines), None)
    write_manifest(b, manifest)
    return b


@pytest.fixture
def fake_trt(monkeypatch):
    """tensorrt importable (a stub), a known GPU, and a runner that records the plan it was given."""
    from clca_edge.engines import tensorrt as tensorrt_engine
    from clca_edge.runtime import tensorrt_backend  # noqa: F401

    stub = types.ModuleType("tensorrt")
    stub.__version__ = "10.3.0"
    monkeypatch.setitem(sys.modules, "tensorrt", stub)
    gpu = tensorrt_engine.GpuInfo("Orin (nvgpu)", "8.7", "test")
    monkeypatch.setattr(tensorrt_engine, "gpu_info", lambda: gpu)
    plans = []

    class Runner:
        def __init__(self, trt, plan, memory=None):
            plans.append(plan)

        def __call__(self, x):
            return np.full((1, len(CLASSES)), 7.0, np.float32)

    monkeypatch.setattr(tensorrt_engine, "TrtRunner", Runner)
    return plans


def _key(bundle_dir, precision="fp16", trt="10.3.0", gpu="Orin (nvgpu)"):
    from clca_edge.bundle import EngineKey, sha256_file

    return EngineKey(trt_version=trt, gpu_name=gpu, compute_capability="8.7", precision=precision,
                     onnx_sha256=sha256_file(bundle_dir / "model.onnx"))


def test_tensorrt_runs_the_engine_built_for_this_device(tmp_path, bundle_dir, fake_trt):
    b = _bundle_with_engines(tmp_path, bundle_dir, {
        "fp16_old.plan": _key(bundle_dir, trt="8.6.2"),     # built by another TensorRT: never loaded
        "fp16_here.plan": _key(bundle_dir)})
    sel = select_classifier(load_model(b).files)
    assert sel.fallbacks == [] and sel.classifier.backend == "tensorrt" and sel.classifier.precision == "fp16"
    assert fake_trt == [b"plan:fp16_here.plan"] and "fp16_here.plan" in sel.classifier.detail
    assert sel.classifier.logits(np.zeros((3, 64, 64), np.float32)).shape == (len(CLASSES),)


def test_stale_or_missing_engine_falls_back_naming_build_engine(tmp_path, bundle_dir, fake_trt):
    b = _bundle_with_engines(tmp_path, bundle_dir, {"fp16_xavier.plan": _key(bundle_dir, gpu="Xavier")})
    sel = select_classifier(load_model(b).files)
    assert sel.classifier.backend == "ort-cpu" and fake_trt == []
    reason = sel.fallbacks[0].reason
    assert sel.fallbacks[0].backend == "tensorrt" and "fp16_xavier.plan" in reason and "another TensorRT/GPU" in reason
    assert f"clca-edge build-engine --bundle {b} --precision fp16" in reason
    no_engine = select_classifier(load_model(bundle_dir).files)
    assert "no fp16 engine built for TensorRT 10.3.0 on Orin (nvgpu)" in no_engine.fallbacks[0].reason


def _cache_engines(bundle, cache_dir, engines, bundle_sha=None):
    """Engines as build-engine leaves them in this device's cache for ``bundle`` (runtime/engine_cache.py)."""
    from clca_edge.bundle import EngineRecord, Status, sha256_file
    from clca_edge.runtime.engine_cache import DeviceEngines

    sha = sha256_file(bundle / "manifest.json")
    cached = DeviceEngines.open(sha, cache_dir)
    cached.cache.bundle_sha256 = bundle_sha or sha
    for fname, key in engines.items():
        rel = cached.write_plan(fname, b"cached:" + fname.encode())
        cached.cache.engines[fname] = EngineRecord(file=rel, key=key, status=Status.PASSED, workspace_mb=1024)
    cached.cache.default_engine = next(iter(engines), None)
    cached.save()
    return cached


def test_an_engine_in_the_device_cache_is_preferred_to_the_bundles_own(tmp_path, bundle_dir, fake_trt):
    from support.unchanged import tree_digest

    b = _bundle_with_engines(tmp_path, bundle_dir, {"fp16_own.plan": _key(bundle_dir)})
    cache = tmp_path / "cache"
    cached = _cache_engines(b, cache, {"fp16_here_ws1024.plan": _key(bundle_dir)})
    before = tree_digest(b)
    model = load_model(b, cache_dir=cache)
    assert model.files.engine_precisions == ("fp16",)
    sel = select_classifier(model.files)
    assert sel.classifier.backend == "tensorrt" and fake_trt == [b"cached:fp16_here_ws1024.plan"]
    assert sel.classifier.source_file == cached.folder / "engines" / "fp16_here_ws1024.plan"
    assert "this device's cache" in sel.classifier.detail and tree_digest(b) == before
    # Its self-check is cached by the plan's sha256 (it is not a bundle file).
    assert model.checker.model_sha256(sel.classifier) == cached.cache.files["engines/fp16_here_ws1024.plan"]
    # Without that cache (another --cache-dir), the bundle's own engine runs, as before.
    fake_trt.clear()
    sel = select_classifier(load_model(b, cache_dir=tmp_path / "other").files)
    assert fake_trt == [b"plan:fp16_own.plan"] and "the bundle" in sel.classifier.detail


def test_a_cached_engine_that_changed_or_belongs_to_another_bundle_is_not_run(tmp_path, bundle_dir, fake_trt):
    cache = tmp_path / "cache"
    cached = _cache_engines(bundle_dir, cache, {"fp16_here_ws1024.plan": _key(bundle_dir)})
    (cached.folder / "engines" / "fp16_here_ws1024.plan").write_bytes(b"truncated")
    sel = select_classifier(load_model(bundle_dir, cache_dir=cache).files)
    assert sel.classifier.backend == "ort-cpu" and fake_trt == []
    assert "does not match its sha256" in sel.fallbacks[0].reason and "build-engine" in sel.fallbacks[0].reason
    # engines.json written for another bundle's content (same folder prefix): ignored, never loaded.
    _cache_engines(bundle_dir, cache, {"fp16_here_ws1024.plan": _key(bundle_dir)}, bundle_sha="f" * 64)
    model = load_model(bundle_dir, cache_dir=cache)
    assert model.files.engine_precisions == () and select_classifier(model.files).classifier.backend == "ort-cpu"
    assert fake_trt == []


def test_rejected_variant_is_never_used(tmp_path, bundle_dir):
    from clca_edge.bundle import Status, VariantRecord, read_manifest, write_manifest

    b = tmp_path / "b"
    shutil.copytree(bundle_dir, b)
    shutil.copy(b / "model.onnx", b / "model_int8.onnx")
    manifest = read_manifest(b)
    manifest.variants["int8"] = VariantRecord(file="model_int8.onnx", precision="int8", status=Status.REJECTED)
    write_manifest(b, manifest)
    model = load_model(b)
    assert set(model.files.onnx) == {"fp32"}
    with pytest.raises(BackendError, match="no usable int8 variant"):
        select_classifier(model.files, "ort-cpu", "int8")


def test_tampered_bundle_is_refused_by_predict_and_capture(tmp_path, bundle_dir):
    b = tmp_path / "b"
    shutil.copytree(bundle_dir, b)
    data = bytearray((b / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (b / "model.onnx").write_bytes(bytes(data))
    for cmd in (["predict", "--bundle", str(b), str(b)], ["capture", "--bundle", str(b), "--source", str(b)]):
        res = CliRunner().invoke(main, cmd)
        assert res.exit_code == 8, res.output
        assert "model.onnx" in res.output and "does not match" in res.output


def test_capture_logs_fallbacks(tmp_path, bundle_dir):
    from support.runtime_bundle import write_leaf_images

    write_leaf_images(tmp_path, 2, name="{}.png")
    log = tmp_path / "log.jsonl"
    res = CliRunner().invoke(main, ["capture", "--bundle", str(bundle_dir), "--source", str(tmp_path / "*.png"),
                                    "--log", str(log), "--run-dir", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    fbs = [r for r in recs if r["type"] == "fallback"]
    assert [f["backend"] for f in fbs] == ["tensorrt", "ort-gpu"] and all(f["used"] == "ort-cpu" for f in fbs)
    assert recs[-1]["type"] == "summary" and len(recs[-1]["fallbacks"]) == 2
