"""The device runtime on Python 3.8, the Python of JetPack 5 (TensorRT's bindings there exist for
3.8 only): predict and capture in a torch-free 3.8 environment give the same decisions as here.

Runs where scripts/setup_py38_runtime.sh could build .venv-py38 (it needs a Python 3.8 install);
skipped elsewhere, saying why.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from support.runtime_bundle import leaf_images, write_video

REPO = Path(__file__).resolve().parents[1]
PY38 = REPO / ".venv-py38" / "bin" / "python"

pytestmark = pytest.mark.skipif(not PY38.exists(), reason="no .venv-py38 (run scripts/setup_py38_runtime.sh)")

CLI = "import sys; sys.argv[0] = 'clca-edge'; from clca_edge.cli import main; main()"


def run38(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(PY38), "-c", CLI, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_interpreter_is_3_8_and_has_no_torch():
    out = subprocess.run([str(PY38), "-c", "import sys, importlib.util as u; "
                          "print(sys.version_info[:2], u.find_spec('torch') is None)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(3, 8) True"


def test_predict_and_capture_on_python_3_8_match_this_runtime(bundle_dir, tmp_path):
    import cv2
    from click.testing import CliRunner

    from clca_edge.capture.fieldlog import read_log
    from clca_edge.cli import main

    frames = leaf_images(6)
    images = []
    for i, f in enumerate(frames):
        images.append(tmp_path / f"leaf{i}.png")
        cv2.imwrite(str(images[-1]), f)
    here = json.loads(CliRunner().invoke(main, ["predict", "--bundle", str(bundle_dir), "--json",
                                                *map(str, images)]).stdout)
    res = run38("predict", "--bundle", str(bundle_dir), "--json", *map(str, images))
    assert res.returncode == 0, res.stderr
    there = json.loads(res.stdout)
    assert [p["topk"][0]["class"] for p in there["predictions"]] == [p["topk"][0]["class"] for p in here["predictions"]]
    for a, b in zip(there["predictions"], here["predictions"]):
        assert a["topk"][0]["conf"] == pytest.approx(b["topk"][0]["conf"], abs=1e-4)

    video = write_video(tmp_path / "v.avi", frames)
    log = tmp_path / "log.jsonl"
    res = run38("capture", "--bundle", str(bundle_dir), "--source", str(video), "--log", str(log),
                "--run-dir", str(tmp_path / "runs"), "--no-live")
    assert res.returncode == 0, res.stderr
    records = list(read_log(log))
    decisions = [r for r in records if r["type"] == "decision"]
    assert len(decisions) == len(images) and records[-1]["type"] == "summary"
    assert records[-1]["backend"] == "ort-cpu"


def test_the_framed_and_grey_world_input_on_python_3_8_is_this_runtimes(tmp_path):
    """core.preprocess with leaf framing and grey world (train's defaults), on 3.8 and its OpenCV:
    the same model input to float32 rounding, for zoomed-out leaves the framing acts on."""
    import numpy as np

    from clca_edge.core.preprocess import PreprocessSpec, leaf_affine, preprocess, resize_center_crop
    from clca_edge.data.synth import class_traits, draw_leaf
    from clca_edge.robustness.suite import BY_NAME

    spec = PreprocessSpec(img_size=96, crop_pct=0.9, framing="leaf", colour_constancy="grey_world")
    leaves = [BY_NAME["zoom_out"].apply(draw_leaf(class_traits(4)[i], spec.resize_size, np.random.default_rng(i)),
                                        2, None) for i in range(3)]
    assert all(leaf_affine(resize_center_crop(x, spec)) is not None for x in leaves)
    np.save(tmp_path / "in.npy", np.stack(leaves))
    code = ("import sys, numpy as np; from clca_edge.core.preprocess import PreprocessSpec, preprocess; "
            f"spec = PreprocessSpec.from_dict({spec.to_dict()!r}); "
            f"x = np.load({str(tmp_path / 'in.npy')!r}); "
            f"np.save({str(tmp_path / 'out.npy')!r}, np.stack([preprocess(i, spec) for i in x]))")
    out = subprocess.run([str(PY38), "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    there = np.load(tmp_path / "out.npy")
    here = np.stack([preprocess(x, spec) for x in leaves])
    assert np.abs(there - here).max() < 1e-4


def test_robustness_of_a_bundle_on_python_3_8_is_this_runtimes(cpu_int8_bundle, tmp_path):
    """`clca-edge robustness --bundle` on the device's Python: the same figures, capture's quality
    guard's refusals included, as here (the report a farmer can run against photos taken there)."""
    import shutil

    from click.testing import CliRunner

    from clca_edge.cli import main

    ws, shared = cpu_int8_bundle
    bundle = shutil.copytree(shared, tmp_path / "bundle")   # opening it caches the self-check there
    args = ["robustness", "--bundle", str(bundle), "--data", str(ws["eval"]), "--suite", "quick",
            "--backend", "ort-cpu", "--json"]
    here = json.loads(CliRunner().invoke(main, args).stdout)
    res = run38(*args)
    assert res.returncode == 0, res.stderr
    there = json.loads(res.stdout)
    assert there["quality"] == here["quality"] and there["clean_judged"] == here["clean_judged"]
    for name in here["variants"]:
        a, b = there["variants"][name]["results"], here["variants"][name]["results"]
        assert [r["refused"] for r in a] == [r["refused"] for r in b]
        assert [r["top1"] for r in a] == pytest.approx([r["top1"] for r in b], abs=1e-6)
