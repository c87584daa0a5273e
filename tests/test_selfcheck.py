"""Device self-check: deploy stores reference samples; predict/capture/doctor run every
backend/precision on them before it classifies; a variant that computes wrongly is passed over
(auto) or refused (explicit); results are cached per device key."""

from __future__ import annotations

import json
import logging
import shutil
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from clca_edge.bundle import load_bundle, read_manifest, sha256_file, write_manifest
from clca_edge.cli import main
from clca_edge.core.errors import BackendError, ExitCode, SelfCheckError
from clca_edge.core.preprocess import load_bgr, preprocess
from clca_edge.runtime import backends, selfcheck
from clca_edge.runtime.backends import OrtClassifier, select_classifier
from clca_edge.runtime.model import load_model

from support.workspace import TREE_CLASSES as CLASSES


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))


@pytest.fixture
def bundle(cpu_int8_bundle, tmp_path):
    """A copy of the cpu INT8 bundle whose default variant is INT8 (what auto runs on ort-cpu)."""
    dst = tmp_path / "bundle"
    shutil.copytree(cpu_int8_bundle[1], dst)
    m = read_manifest(dst)
    m.default_variant = "int8"
    write_manifest(dst, m, new_files=[])
    return dst


def _reference(root):
    return json.loads((root / "manifest.json").read_text())["reference"]


def _break_int8(root):
    """Replace model.int8.onnx by the export of a differently initialised model (same input and
    classes) and re-hash it: the bundle verifies, the INT8 variant computes something else."""
    import torch
    from conftest import tiny_model

    from clca_edge.deploy.onnx_export import export_onnx

    torch.manual_seed(123)
    export_onnx(tiny_model(num_classes=len(CLASSES)), root / "model.int8.onnx")
    write_manifest(root, read_manifest(root), new_files=["model.int8.onnx"])
    load_bundle(root)  # intact: every hash matches


def _count_logits(monkeypatch):
    calls = {"n": 0}
    real = OrtClassifier.logits

    def counted(self, chw):
        calls["n"] += 1
        return real(self, chw)

    monkeypatch.setattr(OrtClassifier, "logits", counted)
    return calls


# --------------------------------------------------------------------------------- deploy side
def test_deploy_stores_class_balanced_reference_samples_with_fp32_logits(cpu_int8_bundle):
    ws, root = cpu_int8_bundle
    ref = _reference(root)
    files = json.loads((root / "manifest.json").read_text())["files"]
    samples = ref["samples"]
    # 2 per class (3 classes), each a stored, hashed file of the eval set, never a calibration image.
    assert sorted(s["label"] for s in samples) == sorted(CLASSES * 2)
    calib = {f["sha256"] for f in json.loads((root / "calibration/manifest.json").read_text())["files"]}
    eval_sha = {sha256_file(p) for p in ws["eval"].rglob("*.png")}
    for s in samples:
        assert s["file"] in files and files[s["file"]] == sha256_file(root / s["file"])
        assert s["source_sha256"] in eval_sha and s["source_sha256"] not in calib
        assert s["stored"] == "original"  # small PNGs are kept byte for byte
    assert len({s["source_sha256"] for s in samples}) == len(samples)
    assert ref["stored_bytes"] == sum((root / s["file"]).stat().st_size for s in samples) <= ref["budget_bytes"]
    # The logits are the fp32 ONNX's on the stored file through the device preprocessing.
    from clca_edge.core.preprocess import PreprocessSpec
    from clca_edge.runtime.sessions import open_session

    spec = PreprocessSpec.from_dict(json.loads((root / "preprocess.json").read_text()))
    sess = open_session(root / "model.onnx")
    for s in samples:
        x = preprocess(load_bgr(root / s["file"]), spec, bgr=True)[None]
        np.testing.assert_allclose(sess.run(None, {"images": x})[0][0], s["logits"], atol=1e-5)
    assert set(ref["bounds"]) >= {"fp32", "fp16", "int8"}
    b = ref["bounds"]
    assert b["fp32"]["max_logit_distance"] < b["fp16"]["max_logit_distance"] < b["int8"]["max_logit_distance"]
    assert ref["deploy_figures"]["int8"]["samples"] == len(samples)


def test_sample_choice_skips_calibration_images_and_unreadable_files(cpu_int8_bundle, tmp_path):
    from clca_edge.deploy.selfcheck_samples import choose_samples
    from clca_edge.runtime.scoring import eval_set

    ws, _ = cpu_int8_bundle
    ev = tmp_path / "eval"
    shutil.copytree(ws["eval"], ev)
    (ev / "ash" / "zz_broken.png").write_bytes(b"\x89PNG not really")
    data = eval_set(ev, CLASSES)
    ash = sorted((ev / "ash").glob("ash_*.png"))
    calib = {sha256_file(p) for p in ash[:4]}  # as if these were also calibration images
    picked, overlap = choose_samples(data.items, CLASSES, calib, per_class=2, max_images=16, seed=0)
    assert [c for _, c, _ in picked].count("ash") == 2 and len(picked) == 6
    assert not {h for _, _, h in picked} & calib and all(p.name != "zz_broken.png" for p, _, _ in picked)
    picked1, _ = choose_samples(data.items, CLASSES, set(), per_class=2, max_images=4, seed=0)
    assert len(picked1) == 4 and {c for _, c, _ in picked1} == set(CLASSES)  # the cap, still balanced


def test_large_images_are_shrunk_and_reencoded_within_the_budget(tmp_path):
    import cv2

    from clca_edge.core.preprocess import PreprocessSpec
    from clca_edge.deploy.selfcheck_samples import store_samples

    rng = np.random.default_rng(0)
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), rng.integers(0, 255, (1500, 2000, 3), dtype=np.uint8))  # ~9 MB of noise
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.full((90, 120, 3), 80, np.uint8))
    spec = PreprocessSpec(img_size=224)
    stored = store_samples([(big, "a", "x" * 64), (small, "b", "y" * 64)], tmp_path / "b", spec, budget_bytes=400_000)
    (rel_big, _, _, how_big), (rel_small, _, _, how_small) = stored
    assert rel_big.endswith(".jpg") and how_big.startswith("jpeg") and how_small == "original"
    assert (tmp_path / "b" / rel_big).stat().st_size <= 200_000  # its share of the budget
    img = load_bgr(tmp_path / "b" / rel_big)
    assert min(img.shape[:2]) >= spec.resize_size  # the device still resizes it


# --------------------------------------------------------------------------------- device side
def test_wrong_int8_auto_runs_fp32_and_logs_why_explicit_int8_refuses(bundle, tmp_path, cpu_int8_bundle):
    ws, _ = cpu_int8_bundle
    run = CliRunner()
    base = ["capture", "--bundle", str(bundle), "--source", str(ws["eval"] / "ash"), "--max-frames", "2", "--no-live",
            "--run-dir", str(tmp_path / "runs")]
    # Intact: INT8 passes its self-check (auto on ort-cpu then runs the faster of fp32 and INT8 here).
    res = run.invoke(main, base + ["--log", str(tmp_path / "ok.jsonl")])
    assert res.exit_code == 0, res.output
    from clca_edge.capture.fieldlog import read_log

    recs = list(read_log(tmp_path / "ok.jsonl"))
    assert ("int8", "passed") in [(r["precision"], r["status"]) for r in recs if r["type"] == "selfcheck"]

    _break_int8(bundle)
    res = run.invoke(main, base + ["--log", str(tmp_path / "bad.jsonl")])
    assert res.exit_code == 0, res.output
    recs = list(read_log(tmp_path / "bad.jsonl"))
    assert next(r for r in recs if r["type"] == "start")["precision"] == "fp32"
    assert all(r["precision"] == "fp32" for r in recs if r["type"] == "decision")
    checks = {r["precision"]: r for r in recs if r["type"] == "selfcheck"}
    assert {p: r["status"] for p, r in checks.items()} == {"int8": "failed", "fp32": "passed"}
    bad = checks["int8"]
    assert bad["figures"]["max_logit_distance"] > bad["bounds"]["max_logit_distance"]
    assert "SELF-CHECK FAILED" in res.stderr and "int8" in res.stderr
    assert res.stderr.count("SELF-CHECK FAILED: ort-cpu int8") == 1  # said once on the console
    summary = next(r for r in recs if r["type"] == "summary")
    assert sorted(c["status"] for c in summary["self_checks"]) == ["failed", "passed"]

    # Explicitly requested: an error naming the check and the figures, exit SELF_CHECK.
    res = run.invoke(main, base + ["--precision", "int8", "--log", str(tmp_path / "x.jsonl")])
    assert res.exit_code == ExitCode.SELF_CHECK, res.output
    assert "failed the device self-check" in res.stderr and "max logit distance" in res.stderr
    assert f"(max {bad['bounds']['max_logit_distance']:g}" in res.stderr
    # ... unless forced, loudly.
    res = run.invoke(main, base + ["--precision", "int8", "--force-variant", "--log", str(tmp_path / "f.jsonl")])
    assert res.exit_code == 0, res.output
    assert "FORCED" in res.stderr
    forced = [r for r in read_log(tmp_path / "f.jsonl") if r["type"] == "selfcheck"]
    assert forced[0]["status"] == "failed" and forced[0]["forced"] is True
    assert run.invoke(main, base + ["--force-variant"]).exit_code == ExitCode.BAD_INPUT  # never with auto


def test_predict_json_reports_the_checks(bundle, cpu_int8_bundle):
    ws, _ = cpu_int8_bundle
    _break_int8(bundle)
    res = CliRunner().invoke(main, ["predict", "--bundle", str(bundle), "--json", str(ws["eval"] / "ash")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["precision"] == "fp32"
    assert {c["precision"]: c["status"] for c in out["self_check"]} == {"int8": "failed", "fp32": "passed"}


def _cache_files(tmp_path):
    return sorted((tmp_path / "user-cache" / "clca-edge" / "device").glob("*/selfcheck.json"))


def test_cached_start_runs_nothing_and_a_changed_key_checks_again(bundle, monkeypatch, tmp_path):
    from clca_edge.core.cpuinfo import CpuInfo

    calls = _count_logits(monkeypatch)  # every inference of every ONNX Runtime classifier
    n = len(_reference(bundle)["samples"])

    def start():
        return select_classifier(load_model(bundle).files, "ort-cpu", "int8")

    sel = start()
    assert calls["n"] == n and not sel.checks[0].cached
    assert len(_cache_files(tmp_path)) == 1 and not list(bundle.glob(".*"))   # in the device cache, not the bundle
    sel = start()  # a second start
    assert calls["n"] == n and sel.checks[0].cached and sel.checks[0].status == "passed"
    # Another OpenCV: check again (and once more only).
    real = selfcheck._library_versions
    monkeypatch.setattr(selfcheck, "_library_versions", lambda: {**real(), "opencv": "0.0-other"})
    start()
    start()
    assert calls["n"] == 2 * n
    # Another CPU instruction set: check again.
    monkeypatch.setattr("clca_edge.core.cpuinfo.cpu_info", lambda: CpuInfo("Other CPU", "x86_64", ("avx2",)))
    start()
    assert calls["n"] == 3 * n
    # Another model file under the same name: check again (and this one fails, every time).
    _break_int8(bundle)
    for _ in range(2):
        with pytest.raises(SelfCheckError):
            start()
    assert calls["n"] == 4 * n


def test_caches_go_to_the_cache_dir_keyed_by_content_and_the_bundle_is_never_written(bundle, monkeypatch, tmp_path):
    """Reading a bundle writes nothing into it; its caches live in --cache-dir (or the user cache),
    under the bundle's content, so a copy of the bundle elsewhere finds them."""
    before = {p: p.stat().st_mtime_ns for p in bundle.rglob("*")}
    calls = _count_logits(monkeypatch)
    select_classifier(load_model(bundle, cache_dir=tmp_path / "dev").files, "ort-cpu", "auto")
    assert {p: p.stat().st_mtime_ns for p in bundle.rglob("*")} == before
    [folder] = (tmp_path / "dev" / "device").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["latency.json", "selfcheck.json"]
    assert folder.name == sha256_file(bundle / "manifest.json")[:16]
    n = calls["n"]
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    sel = select_classifier(load_model(copy, cache_dir=tmp_path / "dev").files, "ort-cpu", "auto")
    assert calls["n"] == n and all(c.cached for c in sel.checks)
    # The CLI's --cache-dir (and CLCA_EDGE_CACHE_DIR) reach it.
    res = CliRunner().invoke(main, ["predict", "--bundle", str(copy), "--cache-dir", str(tmp_path / "cli"),
                                    "--json", str(bundle / "reference")])
    assert res.exit_code == 0, res.output
    assert list((tmp_path / "cli" / "device").glob("*/selfcheck.json"))


def test_bundle_without_reference_samples_is_used_with_one_warning(bundle_dir, caplog):
    model = load_model(bundle_dir)
    with caplog.at_level(logging.WARNING, logger="clca_edge.runtime.selfcheck"):
        first = select_classifier(model.files, "ort-cpu")
        second = select_classifier(model.files, "ort-cpu")
    assert first.checks[0].status == second.checks[0].status == "skipped"
    warnings = [r.getMessage() for r in caplog.records if "reference samples" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0]


def test_a_check_that_cannot_run_is_a_fallback_not_a_verdict(bundle, monkeypatch):
    real = OrtClassifier.logits

    def broken_int8(self, chw):
        if self.precision == "int8":
            raise RuntimeError("provider lost")
        return real(self, chw)

    monkeypatch.setattr(OrtClassifier, "logits", broken_int8)
    sel = select_classifier(load_model(bundle).files)
    assert sel.classifier.precision == "fp32"
    assert {c.precision: c.status for c in sel.checks} == {"int8": "failed to run", "fp32": "passed"}
    with pytest.raises(BackendError, match="could not run"):
        select_classifier(load_model(bundle).files, "ort-cpu", "int8")


def test_wrong_preprocessing_fails_fp32_too(bundle, monkeypatch):
    """Channels swapped in this device's preprocessing: the stored logits are not reproduced, by
    any variant; auto has nothing left and says so (exit SELF_CHECK)."""
    real = preprocess
    monkeypatch.setattr("clca_edge.core.preprocess.preprocess", lambda img, spec, bgr=False: real(img, spec, not bgr))
    with pytest.raises(SelfCheckError, match="no backend/precision passes"):
        select_classifier(load_model(bundle).files)


def test_doctor_bundle_table_and_json(bundle):
    _break_int8(bundle)
    res = CliRunner().invoke(main, ["doctor", "--bundle", str(bundle), "--json"])
    out = json.loads(res.stdout)
    rows = {(r["backend"], r["precision"]): r for r in out["self_check"]["rows"]}
    assert rows[("ort-cpu", "fp32")]["verdict"] == "passed" and rows[("ort-cpu", "int8")]["verdict"] == "failed"
    assert rows[("ort-cpu", "int8")]["figures"]["samples"] == len(_reference(bundle)["samples"])
    assert rows[("ort-cpu", "fp32")]["latency_ms"] > 0
    assert any(r["verdict"] == "unavailable" and r["backend"] == "tensorrt" for r in out["self_check"]["rows"])
    assert isinstance(out["findings"], list)
    res = CliRunner().invoke(main, ["doctor", "--bundle", str(bundle)])
    for word in ("device self-check", "agreement", "max logit distance", "latency", "verdict", "failed", "passed"):
        assert word in res.output
    assert CliRunner().invoke(main, ["doctor", "--bundle", str(bundle.parent / "nope")]).exit_code == ExitCode.BUNDLE


def test_compare_logits_figures_and_non_finite_outputs():
    ref = np.array([[0.0, 4.0, 1.0], [2.0, 0.0, 0.0]])
    f = selfcheck.compare_logits(ref + [[0.0, 0.3, 0.0], [0.0, 2.5, 0.0]], ref)
    assert f.top1_agreement == 50.0 and f.max_abs_diff == pytest.approx(2.5)
    assert f.max_logit_distance == pytest.approx(2.5 / 3.0)  # mean spread (4 + 2) / 2
    bad = selfcheck.compare_logits(np.full_like(ref, np.nan), ref)
    assert bad.max_logit_distance == float("inf") and bad.to_dict()["max_logit_distance"] is None


def test_cpuinfo_reads_x86_and_arm():
    from clca_edge.core.cpuinfo import parse_cpuinfo

    x86 = parse_cpuinfo("processor: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 avx512_vnni\n\n"
                        "processor: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 avx512_vnni\n", "x86_64")
    assert x86.model == "AMD EPYC 7B13" and x86.has("avx512_vnni") and x86.notable() == ["avx2", "avx512_vnni"]
    arm = parse_cpuinfo("processor: 0\nFeatures\t: fp asimd asimddp\nCPU implementer\t: 0x41\nCPU part\t: 0xd42\n", "aarch64")
    assert arm.model == "ARM implementer 0x41 part 0xd42" and arm.has("asimddp")
    assert arm.flags_sha256 != x86.flags_sha256


def test_build_engine_self_checks_each_engine_before_gating_it(bundle, monkeypatch, tmp_path):
    """Fake TensorRT (tests/fake_tensorrt runs the plan's ONNX in ONNX Runtime): the fp16 engine
    passes; an INT8 engine whose outputs are wrong is rejected, never the default."""
    from fake_tensorrt import make_module

    from clca_edge.runtime.engine_cache import DeviceEngines

    from clca_edge.engines import tensorrt as te
    from clca_edge.engines.build import BuildEngineConfig, build_engines
    from clca_edge.engines.tensorrt import GpuInfo, HostMemory

    monkeypatch.setattr("clca_edge.engines.build.gpu_info", lambda: GpuInfo("Orin (nvgpu)", "8.7", "test"))

    class Wrong:
        def __init__(self, runner):
            self.runner = runner

        def __call__(self, x):
            return -3.0 * np.asarray(self.runner(x))

        def __getattr__(self, name):
            return getattr(self.runner, name)

    def runners(trt, plan):
        r = te.TrtRunner(trt, plan, memory=HostMemory())
        return Wrong(r) if b"INT8" in plan.split(b"\n", 1)[0] else r

    rep = build_engines(BuildEngineConfig(bundle=bundle, precision="auto", timing_iters=2, cache_dir=tmp_path / "cache"),
                        trt=make_module("10.3.0.30"), memory=HostMemory(), runner_factory=runners)
    engines = DeviceEngines.open(sha256_file(bundle / "manifest.json"), tmp_path / "cache").cache.engines
    by_prec = {e.key.precision: e for e in engines.values()}
    assert by_prec["fp16"].self_check["status"] == "passed" and by_prec["fp16"].status == "built, not verified"
    assert by_prec["int8"].self_check["status"] == "failed" and by_prec["int8"].status == "rejected"
    assert "device self-check" in by_prec["int8"].note
    assert engines[rep.default_engine].key.precision == "fp16"


def test_deploy_widens_a_bound_a_passed_variant_needs():
    from clca_edge.deploy.selfcheck_samples import _bounds

    b = _bounds({"int8": {"samples": 12, "top1_agreement": 100.0, "max_logit_distance": 0.004},
                 "fp16": {"samples": 12, "top1_agreement": 83.333, "max_logit_distance": 0.04}},
                {"int8": "int8", "fp16": "fp16"})
    assert b["int8"].to_dict() == {"min_top1_agreement": 75.0, "max_logit_distance": 0.05}  # the default
    assert b["fp16"].max_logit_distance == pytest.approx(0.08) and b["fp16"].min_top1_agreement == pytest.approx(75.0)
