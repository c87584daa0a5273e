"""The quality guard and the temperature inside `clca-edge capture` and `predict`, end to end: a
bundle whose manifest carries a quality reference (synthetic leaves measured like deploy measures
training images) and a temperature; an image folder and a video holding normal leaves and a black,
an overexposed, a heavily blurred and a colour-cast frame."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from clca_edge.bundle import read_manifest, write_manifest
from clca_edge.capture.fieldlog import read_log
from clca_edge.cli import main
from clca_edge.core.confidence import ConfidenceCalibration, softmax
from clca_edge.core.image_stats import build_reference, measure
from clca_edge.core.preprocess import PreprocessSpec, load_rgb, preprocess, resize_center_crop
from clca_edge.data.synth import class_traits, draw_leaf
from support.runtime_bundle import BUNDLE_CLASSES as CLASSES, write_video

TRAITS = class_traits(4, seed=0)
TEMPERATURE = 2.5
# (file name, what was done to a leaf, the reason capture must give; None: classified)
FRAMES = [("00_leaf", None, None), ("01_black", "black", "too_dark"), ("02_leaf", None, None),
          ("03_overexposed", "overexposed", "overexposed"), ("04_blurred", "blurred", "blurred"),
          ("05_leaf", None, None), ("06_tinted", "tinted", "out_of_distribution"), ("07_leaf", None, None)]


def leaf(i: int, seed: int) -> np.ndarray:
    """An RGB synthetic leaf, 96 x 128 (wider than high, like a camera frame)."""
    return cv2.resize(draw_leaf(TRAITS[i % len(TRAITS)], 128, np.random.default_rng([seed, i])), (128, 96),
                      interpolation=cv2.INTER_AREA)


def spoil(rgb: np.ndarray, how) -> np.ndarray:
    if how == "black":
        return np.zeros_like(rgb)
    if how == "overexposed":
        return np.clip(rgb.astype(np.float32) * 3.5, 0, 255).astype(np.uint8)
    if how == "blurred":
        return cv2.GaussianBlur(rgb, (0, 0), 5)
    if how == "tinted":
        return np.clip(rgb.astype(np.float32) * np.array([1.7, 1.0, 0.5]), 0, 255).astype(np.uint8)
    return rgb


@pytest.fixture(scope="module")
def guarded_bundle(bundle_dir, tmp_path_factory):
    """The session bundle plus a quality reference of 40 synthetic leaves and a temperature."""
    root = tmp_path_factory.mktemp("guarded") / "leafnet"
    shutil.copytree(bundle_dir, root)
    m = read_manifest(root)
    spec = PreprocessSpec.from_dict(json.loads((root / "preprocess.json").read_text()))
    m.quality_reference = build_reference([measure(resize_center_crop(leaf(i, 1), spec)) for i in range(40)],
                                          "40 synthetic leaves", spec.img_size)
    m.confidence = ConfidenceCalibration(temperature=TEMPERATURE, images=40)
    write_manifest(root, m)
    return root


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frames")
    imgs = folder / "imgs"
    imgs.mkdir()
    bgr = []
    for i, (name, how, _) in enumerate(FRAMES):
        img = cv2.cvtColor(spoil(leaf(i, 2), how), cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(imgs / f"{name}.png"), img)
        bgr.append(img)
    return imgs, write_video(folder / "field.avi", bgr, fps=10.0)


def run(*args):
    res = CliRunner().invoke(main, [*map(str, args)])
    assert res.exit_code == 0, res.output
    return res


def capture(bundle, source, log, *extra):
    run("capture", "--bundle", bundle, "--source", source, "--log", log, "--run-dir", log.parent / "runs",
        "--no-live", *extra)
    return list(read_log(log))


@pytest.mark.parametrize("kind", ["images", "video"])
def test_capture_refuses_what_it_cannot_judge_and_logs_why(guarded_bundle, frames, tmp_path, kind):
    imgs, video = frames
    recs = capture(guarded_bundle, imgs if kind == "images" else video, tmp_path / "log.jsonl")
    start, summary = recs[0], recs[-1]
    assert start["type"] == "start" and start["quality"]["enabled"] and start["temperature"] == TEMPERATURE
    assert start["quality"]["thresholds"]["max_ood"] is not None       # the bundle's reference is used
    seen = {r["source_frame"]: r for r in recs if r["type"] in ("decision", "refused")}
    assert sorted(seen) == list(range(len(FRAMES)))                      # every frame: a verdict or a class
    for i, (name, _, reason) in enumerate(FRAMES):
        r = seen[i]
        if reason is None:
            assert r["type"] == "decision" and r["class"] in CLASSES, (name, r)
            assert set(r["quality"]) >= {"luminance", "sharpness", "ood", "cast"}
        else:
            # Refused: the reason and the measures, and never a class.
            assert r["type"] == "refused" and r["reason"] == reason, (name, r)
            assert "class" not in r and "topk" not in r and "confidence" not in r
            assert set(r["measures"]) == {"luminance", "dark_fraction", "bright_fraction", "sharpness", "ood", "cast"}
            if kind == "images":
                assert r["file"].endswith(f"{name}.png")
    assert summary["frames"] == 4 and summary["refused"] == 4
    assert summary["refused_reasons"] == {"too_dark": 1, "overexposed": 1, "blurred": 1, "out_of_distribution": 1}
    assert sum(summary["class_counts"].values()) == 4


def test_a_refused_frame_restarts_the_smoothing(guarded_bundle, frames, tmp_path):
    """Every classified frame of FRAMES but the first follows a refused one: with --smooth 8 each
    decision is then that frame's own, exactly as with --smooth 1."""
    imgs, _ = frames
    one = [r for r in capture(guarded_bundle, imgs, tmp_path / "s1.jsonl") if r["type"] == "decision"]
    eight = [r for r in capture(guarded_bundle, imgs, tmp_path / "s8.jsonl", "--smooth", 8)
             if r["type"] == "decision"]
    assert [r["source_frame"] for r in one] == [r["source_frame"] for r in eight] == [0, 2, 5, 7]
    assert len({round(r["confidence"], 4) for r in one}) == 4  # different leaves: averaging them would show
    for a, b in zip(one, eight):
        assert a["class"] == b["class"] and a["confidence"] == pytest.approx(b["confidence"], abs=1e-6), (a, b)


def test_quality_off_and_user_thresholds(guarded_bundle, frames, tmp_path):
    imgs, _ = frames
    recs = capture(guarded_bundle, imgs, tmp_path / "off.jsonl", "--quality", "off")
    assert recs[0]["quality"] == {"enabled": False}
    assert recs[-1]["frames"] == len(FRAMES) and recs[-1]["refused"] == 0
    assert all("quality" not in r for r in recs if r["type"] == "decision")
    # Blur and colour checks off: only the dark and the overexposed frames are refused.
    recs = capture(guarded_bundle, imgs, tmp_path / "user.jsonl", "--min-sharpness", 0, "--max-ood", "inf",
                   "--max-cast", "inf")
    assert recs[-1]["refused_reasons"] == {"too_dark": 1, "overexposed": 1}
    t = recs[0]["quality"]["thresholds"]
    assert t["min_sharpness"] == 0 and t["max_ood"] is None and t["max_cast"] is None
    # The colour-distance check off alone: the tinted frame is still refused, by its cast.
    recs = capture(guarded_bundle, imgs, tmp_path / "cast.jsonl", "--min-sharpness", 0, "--max-ood", "inf")
    assert recs[-1]["refused_reasons"] == {"too_dark": 1, "overexposed": 1, "out_of_distribution": 1}
    res = CliRunner().invoke(main, ["capture", "--bundle", str(guarded_bundle), "--source", str(imgs),
                                    "--min-luminance", "0.6", "--max-luminance", "0.5"])
    assert res.exit_code == 2 and "--min-luminance" in res.output and "Traceback" not in res.output


def test_saved_frames_include_the_refused_ones(guarded_bundle, frames, tmp_path):
    imgs, _ = frames
    runs = tmp_path / "runs"
    run("capture", "--bundle", guarded_bundle, "--source", imgs, "--run-dir", runs, "--no-live",
        "--save-frames", "uncertain", "--min-conf", 0.0)
    saved = sorted(p.name for p in runs.glob("capture-*/frames/*.jpg"))
    assert saved == ["refused_00000001_too_dark.jpg", "refused_00000003_overexposed.jpg",
                     "refused_00000004_blurred.jpg", "refused_00000006_out_of_distribution.jpg"]


def test_predict_classifies_flags_and_applies_the_temperature(guarded_bundle, frames):
    imgs, _ = frames
    out = json.loads(run("predict", "--bundle", guarded_bundle, "--json", "--top-k", len(CLASSES), imgs).stdout)
    assert out["temperature"] == TEMPERATURE and out["flagged"] == 4 and out["quality"]["enabled"]
    by_name = {p["path"].rsplit("/", 1)[-1][:-4]: p for p in out["predictions"]}
    assert len(by_name) == len(FRAMES)                                   # all classified
    spec = PreprocessSpec.from_dict(json.loads((guarded_bundle / "preprocess.json").read_text()))
    sess = ort.InferenceSession(str(guarded_bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    for name, _, reason in FRAMES:
        p = by_name[name]
        assert p["quality"]["ok"] is (reason is None) and p["quality"]["reason"] == reason
        # Probabilities are softmax(logits / T) of the bundle's own ONNX on the same pixels.
        x = preprocess(load_rgb(imgs / f"{name}.png"), spec)[None]
        want = softmax(sess.run(None, {sess.get_inputs()[0].name: x})[0][0], TEMPERATURE)
        got = {d["class"]: d["conf"] for d in p["topk"]}
        np.testing.assert_allclose([got[c] for c in CLASSES], want, atol=2e-5)
    table = run("predict", "--bundle", guarded_bundle, imgs)
    assert "flagged: too_dark" in table.output and "4 of 8 image(s) flagged" in table.output
    plain = json.loads(run("predict", "--bundle", guarded_bundle, "--json", "--quality", "off", imgs).stdout)
    assert plain["flagged"] == 0 and all("quality" not in p for p in plain["predictions"])


def test_live_panel_shows_refusals(guarded_bundle, frames, tmp_path):
    from rich.console import Console

    from clca_edge.capture.display import LivePanel
    from clca_edge.capture.records import Summary

    imgs, _ = frames
    recs = capture(guarded_bundle, imgs, tmp_path / "panel.jsonl")
    refused = next(r for r in recs if r["type"] == "refused")
    summary = Summary(refused=1)
    summary.refused_reasons[refused["reason"]] += 1
    con = Console(record=True, width=120)
    panel = LivePanel(con, "test")
    con.print(panel._render(refused, summary))
    text = con.export_text()
    assert f"refused: {refused['reason']}" in text and "not classified" in text
    assert f"1 ({refused['reason']}: 1)" in text


def test_an_older_bundle_says_it_has_no_reference_once(bundle_dir, frames, tmp_path, caplog):
    imgs, _ = frames
    with caplog.at_level("WARNING"):
        recs = capture(bundle_dir, imgs, tmp_path / "old.jsonl")
    notes = recs[0]["quality"]["notes"]
    assert any("no quality_reference" in n for n in notes) and recs[0]["temperature"] == 1.0
    assert sum("no quality_reference" in r.getMessage() for r in caplog.records) == 1
    # Exposure and blur are still judged; the colour cast is not (nothing to measure it against).
    assert recs[-1]["refused_reasons"] == {"too_dark": 1, "overexposed": 1, "blurred": 1}


def test_live_frames_are_judged_in_the_loop_and_refused_ones_never_reach_the_model(tmp_path):
    """A live source (grabber thread, frames checked in the loop): every other frame black; the
    classifier sees only the leaves."""
    import time

    from clca_edge.capture.fieldlog import open_log
    from clca_edge.capture.config import CaptureConfig
    from clca_edge.capture.loop import run_capture
    from clca_edge.capture.sources import Frame, FrameSource
    from test_capture_camera import runtime_of
    from clca_edge.runtime.backends import Classifier, ModelFiles
    from clca_edge.runtime.model import RuntimeModel

    spec = PreprocessSpec(img_size=32)
    leaves = [cv2.cvtColor(leaf(i, 4), cv2.COLOR_RGB2BGR) for i in range(3)]

    class Camera(FrameSource):
        live, description = True, "camera:fake"

        def __init__(self):
            self.n = 0

        def open(self):
            pass

        def read(self):
            time.sleep(0.003)
            self.n += 1
            bgr = np.zeros_like(leaves[0]) if self.n % 2 == 0 else leaves[self.n % 3]
            return Frame(bgr, 0, time.monotonic(), self.n * 0.03, 0.0)

    class Counting(Classifier):
        backend, precision = "fake", "fp32"

        def __init__(self):
            self.means = []

        def logits(self, chw):
            self.means.append(float(chw.mean()))
            return np.array([1.0, 0.0, 0.0, 0.0, 0.0], np.float32)

    model = RuntimeModel(ModelFiles({"fp32": "unused.onnx"}, 32), spec, tuple(CLASSES), "0" * 64)
    clf = Counting()
    with open_log(tmp_path / "live.jsonl") as flog:
        summary = run_capture(runtime_of(model, clf), Camera(), flog, CaptureConfig(max_frames=6))
    recs = list(read_log(tmp_path / "live.jsonl"))
    refused = [r for r in recs if r["type"] == "refused"]
    # The run's one warm-up inference (a blank input) comes first, then the six frames.
    assert clf.means[0] == 0.0 and recs[0]["warm_up_ms"] >= 0
    clf.means.pop(0)
    assert summary.frames == 6 and len(clf.means) == 6 and summary.refused == len(refused) >= 1
    assert all(r["reason"] == "too_dark" and r["frame_age_ms"] >= 0 and "class" not in r for r in refused)
    # A black frame normalises to a constant tensor far below any leaf's mean: none was classified.
    black = float(preprocess(np.zeros((32, 32, 3), np.uint8), spec).mean())
    assert min(clf.means) > black + 0.5
