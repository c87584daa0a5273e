"""The field robustness suite: perturbations do what the table says, the clean path is the standard
preprocessing, `clca-edge robustness` (checkpoint and bundle) gives the same figures for the same
data and seed with the documented JSON shape, and deploy records the suite and gates on it."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from clca_edge.cli import main
from clca_edge.core.errors import ConfigError, ExitCode
from clca_edge.core.preprocess import PreprocessSpec, load_rgb, preprocess, resize_shorter
from clca_edge.robustness.evaluate import perturbed_crops, perturbed_inputs, run_suite
from clca_edge.robustness.suite import BY_NAME, SUITE, conditions

from support.workspace import TREE_CLASSES as CLASSES

N_CONDITIONS = 33  # 11 perturbations x 3 severities


@pytest.fixture(scope="module")
def ws(trained_workspace):
    return trained_workspace


def _img(h=60, w=80, seed=0):
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), (110, 80, 50), np.uint8)
    img[15:45, 25:55] = (60, 170, 70)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def test_the_suite_is_fixed_three_severities_each():
    assert [p.name for p in SUITE] == ["exposure_down", "exposure_up", "wb_warm", "wb_cool", "contrast", "saturation",
                                       "jpeg", "blur", "noise", "zoom_out", "rotation"]
    assert all(len(p.levels) == 3 for p in SUITE)
    assert len(conditions("full")) == N_CONDITIONS and len(conditions("quick")) == 11 and conditions("off") == []
    assert [c.severity for c in conditions("full", ["jpeg"])] == [1, 2, 3]
    with pytest.raises(ConfigError, match="unknown perturbation"):
        conditions("full", ["fog"])


def test_perturbations_do_what_the_table_says():
    rng = np.random.default_rng(0)
    flat = np.full((20, 20, 3), 100, np.uint8)
    assert (BY_NAME["exposure_down"].apply(flat, 2, rng) == 60).all()
    assert (BY_NAME["exposure_up"].apply(flat, 3, rng) == 170).all()
    warm = BY_NAME["wb_warm"].apply(flat, 2, rng)
    assert warm[0, 0].tolist() == [115, 100, 85]
    assert BY_NAME["wb_cool"].apply(flat, 2, rng)[0, 0].tolist() == [85, 100, 115]
    img = _img()
    low = BY_NAME["contrast"].apply(img, 3, rng).astype(float)
    assert low.std() < 0.4 * img.astype(float).std()
    grey = np.repeat(img[..., :1], 3, axis=2)
    assert np.array_equal(BY_NAME["saturation"].apply(grey, 3, rng), grey)  # grey has nothing to lose
    assert BY_NAME["blur"].apply(img, 3, rng).astype(float).std() < img.astype(float).std()
    jpg = BY_NAME["jpeg"].apply(img, 3, rng)
    assert jpg.shape == img.shape and not np.array_equal(jpg, img)
    a = BY_NAME["noise"].apply(img, 2, np.random.default_rng(7))
    b = BY_NAME["noise"].apply(img, 2, np.random.default_rng(7))
    assert np.array_equal(a, b) and 8 < np.abs(a.astype(float) - img).mean() < 14
    # Geometry: what is uncovered takes the border colour (the soil), never black.
    zoomed = BY_NAME["zoom_out"].apply(img, 3, rng)
    assert np.abs(zoomed[0, 0].astype(int) - (110, 80, 50)).max() <= 8
    sq = _img(64, 64)
    assert np.array_equal(BY_NAME["rotation"].apply(sq, 2, rng), np.rot90(sq, 1))  # +90 = counter-clockwise
    assert np.abs(BY_NAME["rotation"].apply(sq, 1, rng)[0, 0].astype(int) - (110, 80, 50)).max() <= 12


@pytest.mark.parametrize("shape", [(60, 80), (73, 73), (200, 150)])
def test_the_clean_input_is_the_standard_preprocessing(shape):
    spec = PreprocessSpec(img_size=64)
    img = _img(*shape)
    x = perturbed_inputs(img, spec, conditions("quick"), seed=0, index=0)
    assert x.shape == (12, 3, 64, 64) and np.array_equal(x[0], preprocess(img, spec))
    # Perturbing at working resolution then preprocessing goes through the same resize and crop.
    assert np.array_equal(preprocess(resize_shorter(img, spec), spec), preprocess(img, spec))


def test_run_suite_is_deterministic_and_drops_are_from_clean(ws):
    from clca_edge.runtime.scoring import eval_set

    items = eval_set(ws["eval"], CLASSES).items
    spec = PreprocessSpec(img_size=64)

    def by_colour(x):  # a "model" that reads the mean colour: the photometric perturbations fool it
        return x.mean(axis=(2, 3))

    a = run_suite(items, spec, {"m": by_colour}, seed=3).reports["m"].to_dict()
    b = run_suite(items, spec, {"m": by_colour}, seed=3).reports["m"].to_dict()
    assert a == b
    assert len(a["results"]) == N_CONDITIONS and a["images"] == len(items)
    assert all(r["drop"] == pytest.approx(a["clean"] - r["top1"], abs=1e-3) for r in a["results"])
    assert a["worst"]["drop"] == max(r["drop"] for r in a["results"])


def test_a_judge_splits_each_condition_into_refused_and_classified(ws):
    """With a judge, each condition's figures: refused = share of crops it turns down; the top-1 of
    the rest; wrong_given = the share classified, and wrongly. An accept-all judge changes nothing."""
    from clca_edge.runtime.scoring import eval_set

    items = eval_set(ws["eval"], CLASSES).items
    spec = PreprocessSpec(img_size=64)
    by_colour = lambda x: x.mean(axis=(2, 3))  # noqa: E731
    names = ["exposure_down", "rotation"]
    plain = run_suite(items, spec, {"m": by_colour}, names=names).reports["m"]
    everything = run_suite(items, spec, {"m": by_colour}, names=names, judge=lambda c: True).reports["m"]
    assert plain.clean_judged is None and all(r.refused is None and r.wrong_given is None for r in plain.results)
    for a, b in zip(plain.results, everything.results):
        assert (a.top1, a.drop) == (b.top1, b.drop) and b.refused == 0 and b.judged_top1 == b.top1
        assert b.wrong_given == pytest.approx(100 - b.top1)
    bright = lambda c: float(c.mean()) > 60  # noqa: E731  (refuses dim crops)
    rep = run_suite(items, spec, {"m": by_colour}, names=names, judge=bright).reports["m"]
    crops = {}
    conds = conditions("full", names)
    for i, (path, _) in enumerate(items):
        for c, crop in zip([None, *conds], perturbed_crops(load_rgb(path), spec, conds, 0, i)):
            crops.setdefault(None if c is None else (c.name, c.severity), []).append(bright(crop))
    for r in rep.results:
        assert r.refused == pytest.approx(100 * (1 - np.mean(crops[(r.name, r.severity)])))
    assert rep.clean_judged.refused == pytest.approx(100 * (1 - np.mean(crops[None])))
    dark = {(r.name, r.severity): r for r in rep.results}[("exposure_down", 3)]
    assert dark.refused > 50
    back = type(rep).from_dict(json.loads(json.dumps(rep.to_dict())))
    assert back.to_dict() == rep.to_dict()


def _robustness(*args):
    res = CliRunner().invoke(main, ["robustness", *map(str, args)])
    assert res.exit_code == 0, res.output
    return res


@pytest.fixture(scope="module")
def ckpt_report(ws, tmp_path_factory):
    """One full-suite run of a checkpoint with --json and --out (shared: each run costs seconds)."""
    out = tmp_path_factory.mktemp("ckpt_report")
    doc = json.loads(_robustness("--checkpoint", ws["ckpt"], "--data", ws["eval"], "--device", "cpu", "--json",
                                 "--out", out).stdout)
    return doc, out


def test_robustness_of_a_checkpoint_json_csv_png(ckpt_report):
    doc, out = ckpt_report
    assert doc["source"] == "checkpoint" and doc["images"] == 18 and 0 <= doc["clean"] <= 100
    assert len(doc["results"]) == N_CONDITIONS and doc["suite"] == "full" and doc["seed"] == 0
    assert set(doc["results"][0]) == {"name", "severity", "level", "top1", "drop"}
    assert doc["worst"]["drop"] == max(r["drop"] for r in doc["results"])
    rows = list(csv.DictReader(open(out / "robustness.csv")))
    assert len(rows) == 1 + N_CONDITIONS and rows[0]["name"] == "clean"
    assert [float(r["top1"]) for r in rows[1:]] == pytest.approx([r["top1"] for r in doc["results"]], abs=1e-3)
    assert (out / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert doc["outputs"] == [str(out / "robustness.csv"), str(out / "robustness.png")]


def test_same_data_and_seed_give_the_same_figures(ws, ckpt_report):
    doc, _ = ckpt_report
    args = ["--checkpoint", ws["ckpt"], "--data", ws["eval"], "--device", "cpu", "--only", "noise,rotation", "--json"]
    a = json.loads(_robustness(*args).stdout)
    b = json.loads(_robustness(*args).stdout)
    assert a["results"] == b["results"] and a["clean"] == b["clean"] == doc["clean"]
    # A figure does not depend on which other perturbations ran with it.
    assert a["results"] == [r for r in doc["results"] if r["name"] in ("noise", "rotation")]
    # Another seed moves only the random perturbation.
    c = json.loads(_robustness(*args, "--seed", "5").stdout)
    assert [r for r in c["results"] if r["name"] == "rotation"] == [r for r in a["results"] if r["name"] == "rotation"]
    table = _robustness(*args[:-1]).stdout
    assert "noise" in table and "rotation" in table and "worst" in table


def test_eval_robustness_reports_the_same_figures(ws, ckpt_report, tmp_path):
    res = CliRunner().invoke(main, ["eval", "--checkpoint", str(ws["ckpt"]), "--data", str(ws["eval"]), "--workers", "0",
                                    "--device", "cpu", "--out", str(tmp_path / "e"), "--json", "--robustness"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["robustness"]["results"] == ckpt_report[0]["results"]
    assert d["robustness"]["clean"] == pytest.approx(d["top1"], abs=1e-3)  # the same preprocessing as eval
    assert (tmp_path / "e" / "robustness.csv").is_file()


def test_bad_robustness_arguments_are_one_line_errors(ws, tmp_path):
    for args, needle in ((["--data", ws["eval"]], "exactly one of --checkpoint"),
                         (["--bundle", ws["ckpt"]], "--bundle needs --data"),
                         (["--checkpoint", ws["ckpt"], "--data", ws["eval"], "--only", "fog"], "unknown perturbation"),
                         (["--checkpoint", ws["ckpt"], "--data", ws["eval"], "--backend", "ort-cpu"], "are for --bundle")):
        res = CliRunner().invoke(main, ["robustness", *map(str, args)])
        assert res.exit_code == ExitCode.BAD_INPUT and needle in res.output and "Traceback" not in res.output, res.output


def _deploy(ws, out, *extra):
    args = ["deploy", "--checkpoint", str(ws["ckpt"]), "--out", str(out), "--calib-data", str(ws["calib"]),
            "--eval-data", str(ws["eval"]), "--calib-images", "12", "--target", "cpu", *extra]
    return CliRunner().invoke(main, args)


def test_deploy_records_the_suite_per_variant_and_robustness_reads_the_bundle(ws, tmp_path):
    res = _deploy(ws, tmp_path / "b", "--precision", "int8,fp32")
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["gate"]["field_suite"] == "full" and "max_field_drop" not in m["gate"]
    for name in ("fp32", "int8"):
        fr = m["variants"][name]["field_robustness"]
        assert fr["clean"] == pytest.approx(m["variants"][name]["accuracy"]["top1"], abs=1e-3)
        assert len(fr["results"]) == N_CONDITIONS and fr["worst"]["drop"] == max(r["drop"] for r in fr["results"])
    assert "field: worst" in res.output
    # The device path (torch-free runtime) gives the figures deploy recorded, capture's quality
    # guard's judgement of every frame included (deploy judges with the thresholds capture derives).
    args = ("--bundle", tmp_path / "b", "--data", ws["eval"], "--backend", "ort-cpu", "--json")
    judged = json.loads(_robustness(*args).stdout)
    assert judged["source"] == "bundle" and judged["variant"] == "fp32" and set(judged["variants"]) == {"fp32", "int8"}
    for name in ("fp32", "int8"):
        fr = m["variants"][name]["field_robustness"]
        assert judged["variants"][name]["results"] == fr["results"]
        assert judged["variants"][name]["clean_judged"] == fr["clean_judged"]
    assert judged["results"] == judged["variants"]["fp32"]["results"]
    assert judged["quality"]["enabled"] and judged["quality"]["thresholds"]["min_sharpness"] > 0
    assert f"capture's quality guard on the eval images ({m['default_variant']}): refuses" in " ".join(res.output.split())
    # --quality off: the same accuracies, without the guard's columns.
    out = json.loads(_robustness(*args, "--quality", "off").stdout)
    assert out["quality"] == {"enabled": False} and "clean_judged" not in out
    for name in ("fp32", "int8"):
        for r, plain in zip(judged["variants"][name]["results"], out["variants"][name]["results"]):
            assert {k: r[k] for k in plain} == plain
            assert 0 <= r["refused"] <= 100 and r["wrong_given"] == pytest.approx(
                (100 - r["refused"]) * (100 - (r["judged_top1"] or 0)) / 100, abs=1e-3)
    by = {(r["name"], r["severity"]): r for r in judged["results"]}
    assert by[("exposure_down", 3)]["refused"] == 100.0 and by[("exposure_down", 3)]["judged_top1"] is None
    assert judged["clean_judged"]["refused"] < 50
    text = _robustness(*args[:-1]).stdout
    assert "refused %" in text and "wrong %" in text and "with capture's quality guard" in text
    # --precision picks variants; one the bundle lacks is a one-line error naming those it has.
    only = json.loads(_robustness(*args, "--quality", "off", "--precision", "int8").stdout)
    assert set(only["variants"]) == {"int8"} and only["variants"]["int8"] == out["variants"]["int8"]
    res = CliRunner().invoke(main, ["robustness", *map(str, args), "--precision", "fp16,int8"])
    assert res.exit_code == ExitCode.BAD_INPUT and "Traceback" not in res.output, res.output
    assert "has no usable fp16 variant (usable: fp32, int8)" in " ".join(res.output.split())


def _pale(src, dst):
    """The eval images with 65% of their colour taken away: the colour-reading test model still gets
    them right, but a cool white balance now tips reds towards blue."""
    import cv2

    for p in sorted(src.rglob("*.png")):
        img = cv2.imread(str(p))
        if img is None:
            continue
        img = img.astype(np.float32)
        grey = img.mean(axis=2, keepdims=True)
        (dst / p.parent.name).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(dst / p.parent.name / p.name), np.clip(grey + 0.35 * (img - grey), 0, 255).astype(np.uint8))
    return dst


def test_max_field_drop_rejects_naming_the_perturbation(ws, tmp_path):
    from clca_edge.data.augment import get_preset
    from clca_edge.training.checkpoint import load_checkpoint, save_checkpoint

    model, meta = load_checkpoint(ws["ckpt"])
    meta.extra = {"augment": get_preset("weak").to_dict()}
    ckpt = save_checkpoint(tmp_path / "weak.safetensors", model, meta)
    pale = {**ws, "ckpt": ckpt, "eval": _pale(ws["eval"], tmp_path / "pale")}
    res = _deploy(pale, tmp_path / "b", "--precision", "fp32", "--field-suite", "quick", "--max-field-drop", "10")
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    worst = m["variants"]["fp32"]["field_robustness"]["worst"]
    assert m["variants"]["fp32"]["accuracy"]["top1"] >= 90 and worst["name"] == "wb_cool" and worst["drop"] > 10
    assert res.exit_code == ExitCode.GATE, res.output
    assert m["variants"]["fp32"]["status"] == "rejected" and m["gate"]["max_field_drop"] == 10
    assert f"REJECTED: fp32 field gate: wb_cool severity 2 drops {worst['drop']:.2f} points (> 10)" in res.output
    assert "the field gate (--max-field-drop 10) rejected fp32" in res.output
    assert "Traceback" not in res.output
    assert m["augment"]["name"] == "weak"  # the checkpoint's preset travels into the bundle
    assert len(m["variants"]["fp32"]["field_robustness"]["results"]) == 11  # quick: severity 2 only
    # A lenient tolerance passes the same model.
    res = _deploy(pale, tmp_path / "c", "--precision", "fp32", "--field-suite", "quick",
                  "--max-field-drop", str(worst["drop"] + 0.01))
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["variants"]["fp32"]["status"] == "passed"


def test_deploy_warns_when_capture_would_refuse_the_clean_eval_photos(ws, tmp_path):
    """Held-out photos far softer than the calibration (training) ones: capture's guard would refuse
    them all as blurred; deploy records it per condition and says so, naming the way out."""
    import cv2

    soft = tmp_path / "soft"
    for p in sorted(ws["eval"].rglob("*.png")):
        (soft / p.parent.name).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(soft / p.parent.name / p.name), cv2.GaussianBlur(cv2.imread(str(p)), (0, 0), 6))
    res = _deploy({**ws, "eval": soft}, tmp_path / "b", "--precision", "fp32", "--field-suite", "quick",
                  "--max-drop", "100")
    assert res.exit_code == 0, res.output
    fr = json.loads((tmp_path / "b" / "manifest.json").read_text())["variants"]["fp32"]["field_robustness"]
    assert fr["clean_judged"]["refused"] == 100.0 and fr["clean_judged"]["judged_top1"] is None
    assert "warning: capture would refuse 100.0% of the clean held-out photos" in " ".join(res.output.split())
