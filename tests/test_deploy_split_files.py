"""deploy on a small data set and on a --val-split run's own split files (issue 11 item 12), with
progress a person can follow on stderr (item 10): the --calib-images default takes what the data
has when it has fewer than 256 usable images, and says so; --eval-data/--calib-data accept
RUN/split/val.csv and RUN/split/train.csv; deploy and eval name their stages as they go."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner
from rich.console import Console

from clca_edge.cli import main
from clca_edge.cli.progress import StageProgress
from clca_edge.core.errors import ExitCode
from support.workspace import write_class_tree

TINY = ["--model", "vit_tiny_patch16_224", "--pretrained", "none", "--img-size", "32", "--model-kwargs",
        "depth=2,embed_dim=32,num_heads=2", "--keep-rate", "0.5", "--batch-size", "8", "--workers", "0",
        "--epochs", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A --val-split run on one class-folder tree (3 classes x 8 images)."""
    root = tmp_path_factory.mktemp("splitrun")
    tree = write_class_tree(root / "photos", 8, seed=5, size=40)
    res = CliRunner().invoke(main, ["train", "--data", str(tree), "--val-split", "0.25", "--out", str(root / "run"),
                                    *TINY])
    assert res.exit_code == 0, res.output
    return root / "run"


def _rows(path):
    return list(csv.DictReader(path.open()))


def test_deploy_against_the_runs_own_split_with_the_default_calib_images(run, tmp_path):
    out = tmp_path / "bundle"
    res = CliRunner().invoke(main, ["deploy", "--checkpoint", str(run), "--target", "cpu", "--out", str(out),
                                    "--calib-data", str(run / "split" / "train.csv"),
                                    "--eval-data", str(run / "split" / "val.csv"),
                                    "--precision", "int8,fp32", "--field-suite", "off"])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    n_train, n_val = len(_rows(run / "split" / "train.csv")), len(_rows(run / "split" / "val.csv"))
    m = json.loads((out / "manifest.json").read_text())
    assert m["gate"]["eval_images"] == n_val                     # the run's own hold-out
    calib = json.loads((out / "calibration" / "manifest.json").read_text())
    assert calib["count"] == n_train and calib["requested"] == 256    # all of them, not refused
    assert f"has {n_train} usable calibration images, fewer than the default 256" in res.stdout
    # Progress on stderr, stage by stage (stdout keeps the results).
    for stage in ("loading", "sampling calibration images", "exporting fp32 ONNX", "calibrating INT8",
                  "evaluating fp32, int8 on"):
        assert stage in res.stderr, stage
    assert "sampling calibration images" not in res.stdout


def test_an_explicit_calib_images_beyond_the_data_is_still_refused(run, tmp_path):
    res = CliRunner().invoke(main, ["deploy", "--checkpoint", str(run), "--target", "cpu", "--out",
                                    str(tmp_path / "b"), "--calib-data", str(run / "split" / "train.csv"),
                                    "--eval-data", str(run / "split" / "val.csv"), "--calib-images", "500",
                                    "--precision", "int8,fp32", "--field-suite", "off"])
    assert res.exit_code == ExitCode.DATA and "--calib-images asks for 500" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "b").exists()


def test_a_split_file_of_another_run_is_refused(run, tmp_path):
    bad = tmp_path / "val.csv"
    rows = _rows(run / "split" / "val.csv")
    with bad.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "class_name": "oak"})
    (tmp_path / "source.json").write_text((run / "split" / "source.json").read_text())
    res = CliRunner().invoke(main, ["deploy", "--checkpoint", str(run), "--target", "cpu", "--out",
                                    str(tmp_path / "b"), "--calib-data", str(run / "split" / "train.csv"),
                                    "--eval-data", str(bad), "--precision", "fp32", "--field-suite", "off"])
    assert res.exit_code == ExitCode.DATA and "is 'oak' there" in res.output and "Traceback" not in res.output


def test_eval_names_its_stages_on_stderr(run, tmp_path):
    res = CliRunner().invoke(main, ["eval", "--checkpoint", str(run), "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    assert "evaluating 6 images on cpu" in res.stderr and "top-1" in res.stdout


def test_stage_progress_on_a_terminal_shows_stages_and_counts():
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=120)
    with StageProgress(con) as p:
        p("calibrating")
        p.expect(4)
        for _ in range(4):
            p.advance()
        p("gating")
    text = buf.getvalue()
    assert "calibrating" in text and "gating" in text and "4/4" in text


def test_stage_lines_off_a_terminal_stay_whole_with_columns_set(monkeypatch, capsys):
    """$COLUMNS (exported by many shells and CI runners) sizes tables only: a stage line with a
    long path stays one line on stderr, so a log keeps one line per stage."""
    from clca_edge.cli._common import console

    monkeypatch.setenv("COLUMNS", "40")
    path = "/a/rather/long/folder/name/for/a/training/run/model.safetensors"
    with StageProgress(console(stderr=True)) as p:
        p(f"loading {path}")
    console().print(f"has 18 usable calibration images, fewer than the default 256 ({path})")
    cap = capsys.readouterr()
    err, out = cap.err.splitlines(), cap.out.splitlines()
    assert len(err) == 1 and err[0].startswith("[") and err[0].endswith(path)
    assert len(out) == 1 and out[0].endswith(f"({path})")
