"""load_bundle: torch-free, verifies every hash, refuses incomplete or tampered bundles and unsafe archives."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile

import pytest

from clca_edge.runtime.bundle import BundleError, BundleIntegrityError, load_bundle, write_manifest


def _bundle(root):
    root.mkdir()
    (root / "model.onnx").write_bytes(b"onnx-bytes")
    (root / "labels.txt").write_text("a\nb\n")
    (root / "preprocess.json").write_text(json.dumps({"img_size": 64}))
    manifest = {"format": 1, "class_names": ["a", "b"], "input": {"name": "images", "shape": [1, 3, 64, 64]},
                "output": {"name": "logits"},
                "variants": {"fp32": {"file": "model.onnx", "precision": "fp32", "status": "passed"},
                             "trt-fp16": {"file": None, "precision": "fp16", "status": "to verify on device"}}}
    write_manifest(root, manifest)
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
    m = json.loads((root / "manifest.json").read_text())
    m["files"]["../escape"] = "0" * 64
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
    code = ("import sys; from clca_edge.runtime.bundle import load_bundle; "
            "import clca_edge.runtime.tensorrt_engine, clca_edge.export.engine_build; "
            f"load_bundle({str(root)!r}); print('torch' in sys.modules, 'onnxruntime' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
