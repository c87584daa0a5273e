"""`clca-edge predict`: files, folders, globs; corrupt files reported and skipped; JSON output."""

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from clca_edge.cli import main
from clca_edge.runtime.sessions import open_session
from clca_edge.core.preprocess import PreprocessSpec, load_rgb, preprocess
from clca_edge.runtime.decision import softmax
from support.runtime_bundle import BUNDLE_CLASSES as CLASSES, leaf_images


@pytest.fixture
def image_tree(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "deep").mkdir(parents=True)
    imgs = leaf_images(5, seed=7)
    paths = [tmp_path / "a" / "x0.png", tmp_path / "a" / "x1.jpg", tmp_path / "b" / "deep" / "y2.png",
             tmp_path / "b" / "y3.jpeg", tmp_path / "z4.bmp"]
    for p, img in zip(paths, imgs):
        cv2.imwrite(str(p), img)
    good = (tmp_path / "a" / "x1.jpg").read_bytes()
    (tmp_path / "a" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (tmp_path / "b" / "notes.png").write_text("not an image")
    (tmp_path / "a" / "readme.txt").write_text("ignored: not an image suffix")
    return tmp_path, paths


def reference_topk(bundle, path, k=3):
    spec = PreprocessSpec.from_dict(json.loads((bundle / "preprocess.json").read_text()))
    x = preprocess(load_rgb(path), spec)
    probs = softmax(open_session(bundle / "model.onnx").run(None, {"images": x[None]})[0][0])
    order = np.argsort(-probs, kind="stable")[:k]
    return [(CLASSES[i], float(probs[i])) for i in order]


def run_json(bundle, *args):
    res = CliRunner().invoke(main, ["predict", "--bundle", str(bundle), "--json", *map(str, args)])
    return res, (json.loads(res.stdout) if res.stdout.strip().startswith("{") else None)


def test_folders_globs_and_files_match_the_reference(bundle_dir, image_tree):
    root, paths = image_tree
    res, out = run_json(bundle_dir, root / "a", str(root / "b") + "/**/*.png", root / "z4.bmp", root / "b" / "y3.jpeg")
    assert res.exit_code == 0, res.output
    got = {p["path"]: p for p in out["predictions"]}
    expected = [paths[0], paths[1], paths[2], paths[4], paths[3]]
    assert list(got) == [str(p) for p in expected]          # argument order, sorted within a folder/glob
    for p in expected:
        ref = reference_topk(bundle_dir, p)
        pred = got[str(p)]
        assert [d["class"] for d in pred["topk"]] == [c for c, _ in ref]
        np.testing.assert_allclose([d["conf"] for d in pred["topk"]], [v for _, v in ref], atol=1e-5)
        assert pred["class"] == ref[0][0]
    skipped = sorted(s["path"] for s in out["skipped"])
    assert skipped == sorted([str(root / "a" / "truncated.jpg"), str(root / "b" / "notes.png")])
    assert out["backend"] == "ort-cpu" and len(out["bundle_sha"]) == 64
    assert "2 of 7 file(s) unreadable and skipped" in res.stderr


def test_top_k_and_table_output(bundle_dir, image_tree):
    root, paths = image_tree
    res = CliRunner().invoke(main, ["predict", "--bundle", str(bundle_dir), "--top-k", "2", str(paths[0])])
    assert res.exit_code == 0, res.output
    ref = reference_topk(bundle_dir, paths[0], 2)
    assert f"{ref[0][0]} {ref[0][1]:.3f}" in res.stdout and f"{ref[1][0]} {ref[1][1]:.3f}" in res.stdout
    _, out = run_json(bundle_dir, "--top-k", "5", paths[0])
    assert sorted(d["class"] for d in out["predictions"][0]["topk"]) == sorted(CLASSES)
    assert abs(sum(d["conf"] for d in out["predictions"][0]["topk"]) - 1) < 1e-4


@pytest.mark.parametrize("make_args,needle", [
    (lambda root: [root / "nothing_here_*.png"], "no image files found"),
    (lambda root: [root / "b" / "notes.png"], "none of the 1 file(s) could be read"),
])
def test_nothing_classifiable_exits_7(bundle_dir, image_tree, make_args, needle):
    root, _ = image_tree
    res = CliRunner().invoke(main, ["predict", "--bundle", str(bundle_dir), *map(str, make_args(root))])
    assert res.exit_code == 7 and needle in res.output and "Traceback" not in res.output


def test_bad_arguments_are_clicks_errors(bundle_dir, tmp_path):
    res = CliRunner().invoke(main, ["predict", "--bundle", str(bundle_dir), "--top-k", "0", str(tmp_path)])
    assert res.exit_code == 2 and "Invalid value" in res.output
    res = CliRunner().invoke(main, ["predict", "--bundle", str(tmp_path / "missing"), str(tmp_path)])
    assert res.exit_code == 8 and "does not exist" in res.output   # a bundle error, as the exit-code table says
