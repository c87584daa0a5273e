"""With --json, stdout holds exactly one JSON document (issue 11 item 9), for every command that has
--json: progress, tables, notices and warnings go to stderr. click >= 8.2's CliRunner keeps
stdout and stderr apart (``result.stdout`` / ``result.stderr``)."""

from __future__ import annotations

import json

import cv2
import pytest
from click.testing import CliRunner

from clca_edge.cli import main
from support.runtime_bundle import leaf_images

TINY = ["--model", "vit_tiny_patch16_224", "--pretrained", "none", "--img-size", "32", "--model-kwargs",
        "depth=2,embed_dim=32,num_heads=2", "--keep-rate", "0.5", "--epochs", "1", "--batch-size", "8",
        "--workers", "0"]


@pytest.fixture(scope="module")
def ws(trained_workspace):
    return trained_workspace


def run_json(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    return json.loads(res.stdout), res   # the whole of stdout is one document


def test_train_json_keeps_progress_on_stderr(tmp_path):
    data = tmp_path / "data"
    assert CliRunner().invoke(main, ["data", "synth", "--out", str(data), "--classes", "2", "--per-class", "6",
                                     "--size", "32"]).exit_code == 0
    doc, res = run_json("train", "--data", data, "--out", tmp_path / "run", *TINY, "--json")
    assert doc["epochs"] == 1 and doc["num_classes"] == 2
    assert "epoch 1" in res.stderr and "data:" in res.stderr   # the progress and the start header


def test_eval_json(ws, tmp_path):
    doc, _ = run_json("eval", "--checkpoint", ws["ckpt"], "--data", ws["eval"], "--out", tmp_path / "ev", "--json")
    assert doc["num_images"] == 18 and "top1" in doc


def test_flops_and_zoo_json():
    doc, _ = run_json("flops", "--model", "vit_tiny_patch16_224", "--model-kwargs", "depth=2", "--img-size", "32",
                      "--keep-rate", "0.5", "--json")
    assert doc["gflops"] > 0
    rows, _ = run_json("zoo", "--methods", "evit", "--json")
    assert rows and {r["method"] for r in rows} == {"none", "evit"}


def test_predict_json_says_fallbacks_on_stderr_only(bundle_dir, tmp_path):
    img = tmp_path / "leaf.png"
    cv2.imwrite(str(img), leaf_images(1)[0])
    doc, res = run_json("predict", "--bundle", bundle_dir, "--json", img)
    assert [p["path"] for p in doc["predictions"]] == [str(img)]


def test_doctor_json():
    doc, _ = run_json("doctor", "--json")
    assert isinstance(doc, list) and doc


def test_robustness_and_explain_json(ws, tmp_path):
    doc, _ = run_json("robustness", "--checkpoint", ws["ckpt"], "--data", ws["eval"], "--suite", "quick",
                      "--only", "blur", "--device", "cpu", "--json")
    assert doc["source"] == "checkpoint"
    img = sorted((ws["eval"] / "ash").iterdir())[0]
    doc, _ = run_json("explain", "--checkpoint", ws["ckpt"], "--out", tmp_path / "ex", "--json", img)
    assert doc
