"""`deploy` records what capture needs to judge frames and trust confidences: a temperature fitted
on the eval images' fp32 logits (lowering the calibration error of an over-confident model) and
the training images' quality reference; predict and capture then use both."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from clca_edge.bundle import load_bundle, read_manifest
from clca_edge.cli import main
from clca_edge.core.confidence import ece, softmax
from clca_edge.core.preprocess import load_rgb, preprocess
from support.workspace import TREE_CLASSES as CLASSES

SCALE = 6.0


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, trained_workspace):
    """An over-confident model (the shared trained tiny model's logits x6) on a copy of its eval set
    with label noise (two images of each class filed under the next class), deployed fp32 only."""
    import torch

    from clca_edge.training.checkpoint import load_checkpoint, save_checkpoint

    root = tmp_path_factory.mktemp("fieldstats")
    shutil.copytree(trained_workspace["eval"], root / "eval")
    ws = {**trained_workspace, "eval": root / "eval"}
    model, meta = load_checkpoint(ws["ckpt"])
    with torch.no_grad():
        model.cla_head.classify.weight.mul_(SCALE)
        model.cla_head.classify.bias.mul_(SCALE)
    ckpt = save_checkpoint(root / "overconfident.safetensors", model, meta)
    for i, c in enumerate(CLASSES):
        for p in sorted((ws["eval"] / c).glob("*.png"))[:2]:
            shutil.move(str(p), str(ws["eval"] / CLASSES[(i + 1) % len(CLASSES)] / f"noisy_{p.name}"))
    out = root / "bundle"
    res = CliRunner().invoke(main, ["deploy", "--checkpoint", str(ckpt), "--out", str(out), "--calib-data",
                                    str(ws["calib"]), "--eval-data", str(ws["eval"]), "--precision", "fp32"])
    assert res.exit_code == 0, res.output
    return out, ws, res


def eval_logits(bundle, ws):
    spec = load_bundle(bundle).preprocess
    sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    xs, ys = [], []
    for ci, c in enumerate(CLASSES):
        for p in sorted((ws["eval"] / c).iterdir()):
            xs.append(sess.run(None, {sess.get_inputs()[0].name: preprocess(load_rgb(p), spec)[None]})[0][0])
            ys.append(ci)
    return np.asarray(xs), np.asarray(ys)


def test_deploy_fits_a_temperature_that_lowers_the_calibration_error(deployed):
    out, ws, res = deployed
    m = read_manifest(out)
    c = m.confidence
    assert c is not None and c.images == 18 and c.bins == 15
    assert c.temperature > 1.5 and not c.at_bound                    # over-confident: T above 1
    assert c.ece_after < c.ece_before and c.nll_after < c.nll_before
    assert c.ece_after_cv is not None and c.ece_after_cv < c.ece_before
    # The recorded figures are those of the bundle's own fp32 ONNX on the eval images.
    z, y = eval_logits(out, ws)
    assert ece(softmax(z), y) == pytest.approx(c.ece_before, abs=1e-5)
    assert ece(softmax(z, c.temperature), y) == pytest.approx(c.ece_after, abs=1e-5)
    assert "confidence: temperature" in res.output and f"{c.ece_before:.3f} -> {c.ece_after:.3f}" in res.output
    raw = json.loads((out / "manifest.json").read_text())
    assert set(raw["confidence"]) >= {"temperature", "ece_before", "ece_after", "ece_after_cv", "bounds"}


def test_deploy_records_the_eval_sets_class_counts(deployed):
    out, ws, _ = deployed
    counts = read_manifest(out).eval_classes        # what `fleet status` compares a device's mix with
    assert counts == {c: len(list((ws["eval"] / c).iterdir())) for c in CLASSES}
    assert sum(counts.values()) == 18


def test_deploy_records_the_training_images_quality_reference(deployed):
    out, ws, res = deployed
    q = read_manifest(out).quality_reference
    # The calibration folder's 24 images (no INT8 here: sampled the same way), colour statistics included.
    assert q is not None and q.images == 24 and q.has_colour and q.img_size == 64
    assert q.sharpness["p5"] > 0 and 0 < q.luminance["p50"] < 1
    assert "quality reference: 24 training images" in res.output


def test_predict_and_capture_use_the_deployed_temperature_and_reference(deployed, tmp_path):
    out, ws, _ = deployed
    t = read_manifest(out).confidence.temperature
    dark = tmp_path / "dark.png"
    cv2.imwrite(str(dark), np.full((80, 80, 3), 3, np.uint8))
    res = CliRunner().invoke(main, ["predict", "--bundle", str(out), "--json", "--top-k", "3", str(ws["eval"]),
                                    str(dark)])
    assert res.exit_code == 0, res.output
    pred = json.loads(res.stdout)
    assert pred["temperature"] == pytest.approx(t)
    flagged = {p["path"].rsplit("/", 1)[-1]: p["quality"]["reason"] for p in pred["predictions"]
               if not p["quality"]["ok"]}
    assert flagged == {"dark.png": "too_dark"}                       # the held-out leaves pass the guard
    z, _ = eval_logits(out, ws)
    assert max(p["confidence"] for p in pred["predictions"][:len(z)]) == pytest.approx(
        softmax(z, t).max(1).max(), abs=1e-5)
    log = tmp_path / "log.jsonl"
    res = CliRunner().invoke(main, ["capture", "--bundle", str(out), "--source", str(ws["eval"] / "ash"), "--log",
                                    str(log), "--run-dir", str(tmp_path / "runs"), "--no-live"])
    assert res.exit_code == 0, res.output
    from clca_edge.capture.fieldlog import read_log

    recs = list(read_log(log))
    assert recs[0]["temperature"] == pytest.approx(t) and recs[-1]["refused"] == 0
    assert recs[-1]["frames"] == len(list((ws["eval"] / "ash").iterdir()))


def test_a_field_trained_checkpoint_gets_a_reference_over_its_training_views(tmp_path, trained_workspace):
    """A checkpoint that records the field preset: deploy measures 4 of its augmentation's views
    of each calibration image (seeded by --seed: two deploys record the same reference), says so,
    and the guard it gives judges a dim eval leaf (exposure x0.6) that the plain crops' reference
    refuses; a black frame is refused by both."""
    from clca_edge.capture.quality import QualityGuard
    from clca_edge.core.preprocess import resize_center_crop
    from clca_edge.data.augment import get_preset
    from clca_edge.deploy.quality_step import QUALITY_VIEWS
    from clca_edge.robustness.suite import BY_NAME
    from clca_edge.training.checkpoint import load_checkpoint, save_checkpoint

    ws = trained_workspace
    model, meta = load_checkpoint(ws["ckpt"])
    assert "augment" not in meta.extra      # (a bare checkpoint: the plain crops, as a weak one)
    meta.extra["augment"] = get_preset("field").to_dict()
    field_ckpt = save_checkpoint(tmp_path / "field.safetensors", model, meta)
    refs = {}
    for name, ckpt in (("weak", ws["ckpt"]), ("field", field_ckpt), ("field again", field_ckpt)):
        out = tmp_path / name.replace(" ", "_")
        res = CliRunner().invoke(main, ["deploy", "--checkpoint", str(ckpt), "--out", str(out), "--calib-data",
                                        str(ws["calib"]), "--eval-data", str(ws["eval"]), "--precision", "fp32",
                                        "--field-suite", "off"])
        assert res.exit_code == 0, res.output
        refs[name] = read_manifest(out).quality_reference
        raw = json.loads((out / "manifest.json").read_text())["quality_reference"]
        assert raw.get("augment") == (None if name == "weak" else "field")
    assert refs["weak"].images == 24 and refs["field"].images == QUALITY_VIEWS * 24
    assert refs["weak"].source == "24 images of --calib-data"
    assert refs["field"].source == "96 field views of 24 images of --calib-data"
    assert "quality reference: 96 field views of training images" in res.output
    assert refs["field"] == refs["field again"] and refs["field"].sharpness != refs["weak"].sharpness
    spec = load_bundle(tmp_path / "field").preprocess
    dim = [resize_center_crop(BY_NAME["exposure_down"].apply(load_rgb(p), 2, None), spec)
           for p in sorted(ws["eval"].rglob("*.png"))]
    guards = {k: QualityGuard.for_bundle(refs[k]) for k in ("weak", "field")}
    judged = {k: np.mean([g.check(x).ok for x in dim]) for k, g in guards.items()}
    assert judged["field"] >= 0.9 and judged["weak"] <= 0.5, judged
    assert all(g.check(np.zeros_like(dim[0])).reason == "too_dark" for g in guards.values())
