"""load_bundle: torch-free, verifies every hash, refuses incomplete or tampered bundles and unsafe archives."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import tempfile

import pytest

from clca_edge.bundle import (BundleError, BundleIntegrityError, EngineKey, EngineRecord, Manifest, Status, TensorSpec,
                              VariantRecord, load_bundle, read_manifest, write_manifest)
from clca_edge.core.preprocess import PreprocessSpec


def _manifest():
    return Manifest(class_names=["a", "b"], input=TensorSpec("images", [1, 3, 64, 64]), output=TensorSpec("logits"),
                    variants={"fp32": VariantRecord(file="model.onnx", precision="fp32", status=Status.PASSED),
                              "trt-fp16": VariantRecord(file=None, precision="fp16", status=Status.TO_VERIFY,
                                                        source="fp32")})


def _bundle(root):
    root.mkdir()
    (root / "model.onnx").write_bytes(b"onnx-bytes")
    (root / "labels.txt").write_text("a\nb\n")
    (root / "preprocess.json").write_text(json.dumps(PreprocessSpec(img_size=64).to_dict()))
    write_manifest(root, _manifest())
    return root


def test_loads_and_exposes_contents(tmp_path):
    b = load_bundle(_bundle(tmp_path / "b"))
    assert b.labels == ["a", "b"] and b.preprocess.img_size == 64 and b.input_shape == (1, 3, 64, 64)
    assert b.variant("fp32").usable and not b.variant("trt-fp16").usable
    with pytest.raises(BundleError, match="no variant 'int4'"):
        b.variant("int4")


@pytest.mark.parametrize("damage,needle", [
    (lambda r: (r / "model.onnx").write_bytes(b"onnx-bytez"), "sha256 of model.onnx does not match"),
    (lambda r: (r / "labels.txt").unlink(), "labels.txt missing"),
    (lambda r: (r / "manifest.json").write_text("{"), "not valid JSON"),
    (lambda r: (r / "manifest.json").unlink(), "has no manifest.json"),
])
def test_damage_is_refused(tmp_path, damage, needle):
    root = _bundle(tmp_path / "b")
    damage(root)
    with pytest.raises(BundleError, match=needle):
        load_bundle(root)


def test_manifest_pointing_outside_is_refused(tmp_path):
    root = _bundle(tmp_path / "b")
    m = read_manifest(root)
    m.files["../escape"] = "0" * 64
    write_manifest(root, m, hash_files=False)
    with pytest.raises(BundleIntegrityError, match="outside the bundle"):
        load_bundle(root)


def test_archive_round_trip_and_unsafe_members(tmp_path):
    root = _bundle(tmp_path / "b")
    tar = tmp_path / "b.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(root, arcname="b")
    assert load_bundle(tar, extract_to=tmp_path / "x").labels == ["a", "b"]
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tf:
        info = tarfile.TarInfo("../../etc/passwd-ish")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(BundleIntegrityError, match="not a plain file inside the bundle"):
        load_bundle(evil, extract_to=tmp_path / "y")
    (tmp_path / "junk.tar").write_bytes(b"junk")
    with pytest.raises(BundleError, match="not a readable bundle archive"):
        load_bundle(tmp_path / "junk.tar")


def test_loading_needs_no_torch(tmp_path):
    root = _bundle(tmp_path / "b")
    code = ("import sys; from clca_edge.bundle import load_bundle; "
            "import clca_edge.engines.tensorrt, clca_edge.engines.build; "
            f"load_bundle({str(root)!r}); print('torch' in sys.modules, 'onnxruntime' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def _tar(root, tar):
    with tarfile.open(tar, "w") as tf:
        tf.add(root, arcname=root.name)
    return tar


@pytest.fixture
def counted_extract(monkeypatch):
    import clca_edge.bundle.store as bmod

    calls = []
    real = bmod._safe_extract
    monkeypatch.setattr(bmod, "_safe_extract", lambda t, d: calls.append(d) or real(t, d))
    return calls


def test_tar_is_extracted_once_next_to_it_and_reused(tmp_path, monkeypatch, counted_extract):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    tar = _tar(_bundle(tmp_path / "b"), tmp_path / "b.tar")
    first = load_bundle(tar)
    second = load_bundle(tar)
    assert first.root == second.root == tmp_path / "b.tar.d" / "b" and second.source == tar
    assert len(counted_extract) == 1  # the second load verified and reused the extraction
    assert list(scratch.iterdir()) == []  # nothing left in the temp folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "b.tar", "b.tar.d", "scratch"]


@pytest.mark.parametrize("tamper", ["file", "manifest", "replaced_tar"])
def test_tampered_or_stale_extraction_is_extracted_again(tmp_path, counted_extract, tamper):
    src = _bundle(tmp_path / "b")
    tar = _tar(src, tmp_path / "b.tar")
    root = load_bundle(tar).root
    if tamper == "file":
        (root / "model.onnx").write_bytes(b"evil-bytes")
    elif tamper == "manifest":  # e.g. a rejected variant marked passed, hashes left intact
        m = read_manifest(root)
        m.variants["trt-fp16"].status = Status.PASSED
        write_manifest(root, m, hash_files=False)
    else:
        (src / "model.onnx").write_bytes(b"new-onnx")
        write_manifest(src, read_manifest(src))
        _tar(src, tar)
    b = load_bundle(tar)
    assert len(counted_extract) == 2
    assert (b.root / "model.onnx").read_bytes() == (src / "model.onnx").read_bytes()
    assert b.variant("trt-fp16").status == "to verify on device"


def test_an_extraction_an_older_build_engine_added_engines_to_is_extracted_again(tmp_path, counted_extract):
    """The extraction is the archive, nothing else: engines live in the device cache now, so one
    where an older build-engine recorded engines no longer agrees and is replaced by the archive's."""
    tar = _tar(_bundle(tmp_path / "b"), tmp_path / "b.tar")
    b = load_bundle(tar)
    (b.root / "engines").mkdir()
    (b.root / "engines" / "x.plan").write_bytes(b"plan")
    key = EngineKey("10.3.0", "Orin (nvgpu)", "8.7", "fp16", b.sha256(b.root / "model.onnx"))
    b.manifest.engines = {"x.plan": EngineRecord(file="engines/x.plan", key=key, status=Status.PASSED)}
    write_manifest(b.root, b.manifest, new_files=["engines/x.plan"])
    again = load_bundle(tar)
    assert len(counted_extract) == 2 and again.engines == {} and not (again.root / "engines").exists()
    load_bundle(tar)
    assert len(counted_extract) == 2  # as extracted: reused


def test_a_foreign_folder_in_the_way_is_refused(tmp_path):
    tar = _tar(_bundle(tmp_path / "b"), tmp_path / "b.tar")
    (tmp_path / "b.tar.d").mkdir()
    (tmp_path / "b.tar.d" / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="was not extracted by clca-edge"):
        load_bundle(tar)
    assert (tmp_path / "b.tar.d" / "notes.txt").read_text() == "mine"


def test_read_only_tar_folder_extracts_into_the_user_cache(tmp_path, monkeypatch):
    import clca_edge.bundle.store as bmod

    tar = _tar(_bundle(tmp_path / "b"), tmp_path / "b.tar")
    monkeypatch.setattr(bmod.os, "access", lambda p, mode: False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    b = load_bundle(tar)
    assert (tmp_path / "cache" / "clca-edge" / "bundles") in b.root.parents and not (tmp_path / "b.tar.d").exists()


def test_write_manifest_hashes_only_new_files(tmp_path, monkeypatch):
    import clca_edge.bundle.store as bmod

    root = _bundle(tmp_path / "b")
    (root / "calibration").mkdir()
    (root / "calibration" / "manifest.json").write_text("{}")
    m = read_manifest(root)
    write_manifest(root, m)
    assert "calibration/manifest.json" in m.files and "manifest.json" not in m.files
    hashed = []
    real = bmod.sha256_file
    monkeypatch.setattr(bmod, "sha256_file", lambda p, *a: hashed.append(p) or real(p, *a))
    (root / "extra.bin").write_bytes(b"x")
    write_manifest(root, m, new_files=["extra.bin"])
    assert hashed == [root / "extra.bin"] and m.files["extra.bin"] == real(root / "extra.bin")
