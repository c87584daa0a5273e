"""Signed bundles: keygen, deploy --sign-key, and devices with trusted keys refusing unsigned,
foreign or tampered bundles; build-engine leaves a signed bundle as it was (engines go to the device
cache), and the bundle's own engines recorded after signing keep the signature valid."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest
from click.testing import CliRunner

from clca_edge.bundle import load_bundle, read_manifest, sha256_file, write_manifest
from clca_edge.bundle.signature import (SIGNATURE_NAME, TrustedKeys, generate_keypair, sign_bundle, verify_bundle)
from clca_edge.cli import main
from clca_edge.core.errors import ExitCode, TrustError


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    priv, pub, kid = generate_keypair(root / "deploy")
    other = generate_keypair(root / "other")
    trusted = root / "trusted"
    trusted.mkdir()
    shutil.copy(pub, trusted / "deploy.pub")
    return {"priv": priv, "pub": pub, "kid": kid, "trusted": trusted, "other_priv": other[0]}


@pytest.fixture(scope="module")
def signed(tmp_path_factory, keys, trained_workspace):
    """A jetson-orin bundle (fp16 + fp32: a TensorRT plan to build later) deployed with --sign-key."""
    ws = trained_workspace
    out = tmp_path_factory.mktemp("signed") / "bundle"
    res = CliRunner().invoke(main, ["deploy", "--checkpoint", str(ws["ckpt"]), "--out", str(out), "--calib-data",
                                    str(ws["calib"]), "--eval-data", str(ws["eval"]), "--precision", "fp16,fp32",
                                    "--no-engines", "--tar", "--sign-key", str(keys["priv"])])
    assert res.exit_code == 0, res.output
    assert f"by key {keys['kid']} (verified)" in res.output
    return ws, out


def _copy(signed, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(signed[1], dst)
    return dst


def _predict(bundle, ws, *extra, env=None):
    img = next((ws["eval"] / "ash").iterdir())
    return CliRunner().invoke(main, ["predict", "--bundle", str(bundle), "--backend", "ort-cpu", str(img), *extra],
                              env=env)


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path):
    res = CliRunner().invoke(main, ["keygen", "--out", str(tmp_path / "k")])
    assert res.exit_code == 0, res.output
    priv, pub = tmp_path / "k" / "clca-edge.key", tmp_path / "k" / "clca-edge.pub"
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600
    assert b"PRIVATE KEY" in priv.read_bytes() and b"PUBLIC KEY" in pub.read_bytes()
    again = CliRunner().invoke(main, ["keygen", "--out", str(tmp_path / "k")])
    assert again.exit_code == ExitCode.TRUST and "already exist" in again.output
    assert priv.read_bytes() == priv.read_bytes()  # untouched
    assert CliRunner().invoke(main, ["keygen", "--out", str(tmp_path / "k"), "--force"]).exit_code == 0
    res = CliRunner().invoke(main, ["keygen", "--out", str(priv)])  # a file where the folder should be
    assert res.exit_code == ExitCode.OUTPUT and "exists and is a file, not a folder" in res.output, res.output


def test_signed_bundle_verifies_and_runs_with_trusted_keys(signed, keys):
    ws, out = signed
    assert (out / SIGNATURE_NAME).is_file() and SIGNATURE_NAME not in read_manifest(out).files
    info = verify_bundle(out, TrustedKeys.load(keys["trusted"]))
    assert info.key_id == keys["kid"] and set(info.signed_files) == set(read_manifest(out).files)
    assert "model.onnx" in info.signed_files and "labels.txt" in info.signed_files
    # The archive carries the signature too.
    tar = out.with_name(out.name + ".tar")
    b = load_bundle(tar, extract_to=out.parent / "x", trusted_keys=TrustedKeys.load(keys["trusted"]))
    assert (b.root / SIGNATURE_NAME).is_file()
    # Through the CLI, by option and by the environment variable the systemd unit sets.
    assert _predict(out, ws, "--trusted-keys", str(keys["trusted"])).exit_code == 0
    assert _predict(out, ws, env={"CLCA_EDGE_TRUSTED_KEYS": str(keys["trusted"])}).exit_code == 0


def test_tampered_signed_bundle_is_refused(signed, keys, tmp_path):
    """One byte of model.onnx changed and the manifest re-hashed, as an attacker would: the hashes
    agree, so only the signature catches it."""
    ws, _ = signed
    b = _copy(signed, tmp_path)
    data = bytearray((b / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (b / "model.onnx").write_bytes(bytes(data))
    m = read_manifest(b)
    m.files["model.onnx"] = sha256_file(b / "model.onnx")
    write_manifest(b, m, hash_files=False)
    load_bundle(b)  # the hash list alone is fooled
    with pytest.raises(TrustError, match="does not verify"):
        load_bundle(b, trusted_keys=TrustedKeys.load(keys["trusted"]))
    res = _predict(b, ws, "--trusted-keys", str(keys["trusted"]))
    assert res.exit_code == ExitCode.TRUST and "does not verify" in res.output
    # Without trusted keys the device runs it, as before (it cannot know better).
    assert _predict(b, ws).exit_code == 0


def test_changed_file_without_rehash_is_a_trust_error_with_keys(signed, keys, tmp_path):
    ws, _ = signed
    b = _copy(signed, tmp_path)
    (b / "labels.txt").write_text((b / "labels.txt").read_text() + "intruder\n")
    with pytest.raises(TrustError, match="labels.txt"):
        load_bundle(b, trusted_keys=TrustedKeys.load(keys["trusted"]))


def test_unsigned_and_foreign_bundles_are_refused_with_keys_only(signed, keys, tmp_path):
    ws, _ = signed
    b = _copy(signed, tmp_path)
    (b / SIGNATURE_NAME).unlink()
    res = _predict(b, ws, "--trusted-keys", str(keys["trusted"]))
    assert res.exit_code == ExitCode.TRUST and "is not signed" in res.output
    assert _predict(b, ws).exit_code == 0  # no keys set: unsigned bundles run
    sign_bundle(b, keys["other_priv"])  # signed, but by a key the device does not trust
    res = _predict(b, ws, "--trusted-keys", str(keys["trusted"]))
    assert res.exit_code == ExitCode.TRUST and "not among the trusted keys" in res.output
    # A signature that leaves out more than the engine keys is refused.
    sign_bundle(b, keys["priv"])
    sig = json.loads((b / SIGNATURE_NAME).read_text())
    sig["unsigned_keys"].append("variants")
    (b / SIGNATURE_NAME).write_text(json.dumps(sig))
    with pytest.raises(TrustError, match="only deploy writes"):
        load_bundle(b, trusted_keys=TrustedKeys.load(keys["trusted"]))


def test_build_engine_leaves_a_signed_bundle_and_its_signature_as_they_were(signed, keys, tmp_path, monkeypatch):
    from fake_tensorrt import make_module

    from clca_edge.engines.build import BuildEngineConfig, build_engines
    from clca_edge.engines.tensorrt import GpuInfo, HostMemory
    from support.unchanged import tree_digest

    ws, _ = signed
    b = _copy(signed, tmp_path)
    before = tree_digest(b)
    trusted = TrustedKeys.load(keys["trusted"])
    monkeypatch.setattr("clca_edge.engines.build.gpu_info", lambda: GpuInfo("Orin (nvgpu)", "8.7", "test"))
    rep = build_engines(BuildEngineConfig(bundle=b, precision="fp16", timing_iters=2, eval_data=ws["eval"],
                                          trusted_keys=trusted, cache_dir=tmp_path / "cache"),
                        trt=make_module("8.5.2.2"), memory=HostMemory())
    assert rep.outcomes[0].file and rep.engine_dir.parent.parent == tmp_path / "cache"
    assert tree_digest(b) == before  # manifest, manifest.sig and every file, byte for byte
    assert load_bundle(b, trusted_keys=trusted).engines == {}


def test_a_signed_bundle_with_engines_recorded_after_signing_still_verifies_and_runs_them(signed, keys, tmp_path):
    """Deploy on a Jetson records the bundle's own engines after signing (and bundles signed before
    engines moved to the device cache hold what an older build-engine added): the engine keys are
    outside the signature, so these verify and their engines are found; a deploy-written field
    edited on the device does not verify."""
    from clca_edge.bundle import EngineKey, EngineRecord, Status
    from clca_edge.runtime.model import load_model

    b = _copy(signed, tmp_path)
    m = read_manifest(b)
    (b / "engines").mkdir()
    (b / "engines" / "own.plan").write_bytes(b"plan")
    key = EngineKey("8.5.2.2", "Orin (nvgpu)", "8.7", "fp16", m.files["model.onnx"])
    m.engines = {"own.plan": EngineRecord(file="engines/own.plan", key=key, status=Status.PASSED, workspace_mb=1024)}
    m.default_engine = "own.plan"
    write_manifest(b, m, new_files=["engines/own.plan"])
    trusted = TrustedKeys.load(keys["trusted"])
    bundle = load_bundle(b, trusted_keys=trusted)
    (engine,) = bundle.engines.values()
    assert engine.file in bundle.manifest.files and engine.file not in verify_bundle(b, trusted).signed_files
    assert load_model(b, trusted_keys=trusted).files.engine_precisions == ("fp16",)
    m = read_manifest(b)
    m.default_variant = "fp16" if m.default_variant != "fp16" else "fp32"
    write_manifest(b, m, hash_files=False)
    with pytest.raises(TrustError, match="does not verify"):
        load_bundle(b, trusted_keys=trusted)


def test_build_engine_refuses_an_unsigned_bundle_with_keys(signed, keys, tmp_path):
    b = _copy(signed, tmp_path)
    (b / SIGNATURE_NAME).unlink()
    res = CliRunner().invoke(main, ["build-engine", "--bundle", str(b), "--trusted-keys", str(keys["trusted"])])
    assert res.exit_code == ExitCode.TRUST and "is not signed" in res.output


def test_bad_key_files_are_one_line_naming_them(signed, keys, tmp_path):
    ws, out = signed
    junk = tmp_path / "junk.key"
    junk.write_text("not a key")
    res = CliRunner().invoke(main, ["deploy", "--checkpoint", str(ws["ckpt"]), "--out", str(tmp_path / "b"),
                                    "--calib-data", str(ws["calib"]), "--eval-data", str(ws["eval"]),
                                    "--sign-key", str(junk)])
    assert res.exit_code == ExitCode.TRUST and str(junk) in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()  # refused before any work
    res = CliRunner().invoke(main, ["deploy", "--checkpoint", str(ws["ckpt"]), "--out", str(tmp_path / "b"),
                                    "--calib-data", str(ws["calib"]), "--eval-data", str(ws["eval"]),
                                    "--sign-key", str(keys["pub"])])  # the public half by mistake
    assert res.exit_code == ExitCode.TRUST and "not a PEM private key" in res.output
    bad_dir = tmp_path / "trusted"
    bad_dir.mkdir()
    shutil.copy(keys["pub"], bad_dir / "ok.pub")
    (bad_dir / "broken.pub").write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    res = _predict(out, ws, "--trusted-keys", str(bad_dir))
    assert res.exit_code == ExitCode.TRUST and "broken.pub" in res.output
    assert len(res.output.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    res = _predict(out, ws, "--trusted-keys", str(empty))
    assert res.exit_code == ExitCode.TRUST and "holds no .pub file" in res.output
    res = _predict(out, ws, "--trusted-keys", str(tmp_path / "missing"))
    assert res.exit_code == ExitCode.TRUST and "does not exist" in res.output


def test_verification_on_python_3_8(signed, keys, tmp_path):
    """JetPack 5's Python: the device verifies signatures there too (cryptography 47, quietly)."""
    import subprocess
    from pathlib import Path

    py38 = Path(__file__).resolve().parents[1] / ".venv-py38" / "bin" / "python"
    if not py38.exists():
        pytest.skip("no .venv-py38 (run scripts/setup_py38_runtime.sh)")
    ws, out = signed
    img = str(next((ws["eval"] / "ash").iterdir()))
    cli = "import sys; sys.argv[0] = 'clca-edge'; from clca_edge.cli import main; main()"

    def run(bundle):
        return subprocess.run([str(py38), "-c", cli, "predict", "--bundle", str(bundle), "--backend", "ort-cpu",
                               "--trusted-keys", str(keys["trusted"]), img], capture_output=True, text=True, timeout=120)

    ok = run(out)
    assert ok.returncode == 0, ok.stderr
    assert "Warning" not in ok.stderr
    b = _copy(signed, tmp_path)
    (b / SIGNATURE_NAME).unlink()
    refused = run(b)
    assert refused.returncode == ExitCode.TRUST and "is not signed" in refused.stderr
