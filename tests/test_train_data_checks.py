"""Data that would train a meaningless model is refused before training, with advice that works
(issue 11 items 1, 2); the start of a run says what it found and what it will do, and a resumed
run says where it resumes (item 10)."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from clca_edge.cli import main
from clca_edge.core.errors import ExitCode

TINY = ["--model", "vit_tiny_patch16_224", "--pretrained", "none", "--img-size", "32", "--model-kwargs",
        "depth=2,embed_dim=32,num_heads=2", "--keep-rate", "0.5", "--batch-size", "8", "--workers", "0"]


@pytest.fixture(scope="module")
def leaves(tmp_path_factory):
    root = tmp_path_factory.mktemp("checks") / "leaves"
    res = CliRunner().invoke(main, ["data", "synth", "--out", str(root), "--classes", "3", "--per-class", "8",
                                    "--size", "32"])
    assert res.exit_code == 0, res.output
    return root


def train(data, out, *extra):
    res = CliRunner().invoke(main, ["train", "--data", str(data), "--out", str(out), *TINY, *extra])
    assert "Traceback" not in res.output, res.output
    return res


def error(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_split_folders_with_val_split_are_refused_not_taken_as_classes(leaves, tmp_path):
    res = train(leaves, tmp_path / "run", "--val-split", "0.2", "--epochs", "1")
    assert res.exit_code == ExitCode.DATA and "drop --val-split" in error(res)
    assert not (tmp_path / "run").exists()
    csvs = tmp_path / "csvs"
    csvs.mkdir()
    (csvs / "train.csv").write_text("class_id,dir\n0,a.png\n")
    res = train(csvs, tmp_path / "run", "--val-split", "0.2", "--epochs", "1")
    assert res.exit_code == ExitCode.DATA and "drop --val-split" in error(res)


def test_only_train_folder_the_advice_given_works(leaves, tmp_path):
    data = tmp_path / "only-train"
    shutil.copytree(leaves / "train", data / "train")
    res = train(data, tmp_path / "r1", "--epochs", "1")
    assert res.exit_code == ExitCode.DATA and "pass --val-split 0.2 to split train/" in error(res)
    res = train(data, tmp_path / "r2", "--epochs", "1", "--val-split", "0.2", "--json")   # the advice
    assert res.exit_code == 0, res.output
    assert '"num_classes": 3' in res.stdout            # the cultivars, not one class called "train"
    assert "3 classes" in res.stderr
    split = tmp_path / "r2" / "split"
    assert sorted(p.name for p in split.iterdir()) == ["source.json", "train.csv", "val.csv"]
    assert "cultivar_00" in (split / "val.csv").read_text()


@pytest.mark.parametrize("case", ["one_class", "one_class_imagefolder", "all_corrupt_class", "all_corrupt_val"])
def test_meaningless_data_is_refused_before_training_naming_the_class(leaves, tmp_path, case):
    data = tmp_path / "data"
    extra = []
    if case == "one_class":
        shutil.copytree(leaves / "train" / "cultivar_01", data / "cultivar_01")
        extra, needle = ["--val-split", "0.2"], "one class ('cultivar_01')"
    elif case == "one_class_imagefolder":
        for split in ("train", "val"):
            shutil.copytree(leaves / split / "cultivar_01", data / split / "cultivar_01")
        needle = "one class ('cultivar_01')"
    else:
        shutil.copytree(leaves, data)
        split = "train" if case == "all_corrupt_class" else "val"
        for cls in (["cultivar_02"] if split == "train" else ["cultivar_00", "cultivar_01", "cultivar_02"]):
            for p in (data / split / cls).iterdir():
                p.write_bytes(b"not an image")
        needle = "'cultivar_02': 6 file(s), none readable" if split == "train" else "validation image(s) can be read"
    res = train(data, tmp_path / "run", "--epochs", "1", *extra)
    assert res.exit_code == ExitCode.DATA, res.output
    assert needle in error(res)
    assert not (tmp_path / "run").exists()   # refused before anything was written


def test_start_header_reports_skipped_files_per_class_and_resume_says_where(leaves, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(leaves, data)
    for name in ("bad_1.png", "bad_2.png"):
        (data / "train" / "cultivar_01" / name).write_bytes(b"corrupt")
    run = tmp_path / "run"

    from clca_edge.training import trainer

    real = trainer.train_epoch

    def crash_in_epoch_2(*args, **kwargs):
        if args[2] == 1:   # the epoch index
            raise RuntimeError("power cut")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_epoch", crash_in_epoch_2)
    res = CliRunner().invoke(main, ["train", "--data", str(data), "--out", str(run), *TINY, "--epochs", "2"])
    assert isinstance(res.exception, RuntimeError)
    out = res.stdout
    header = out[:out.index("epoch 1")]
    assert "data: " in header and "3 classes, 18 train / 6 val images" in header
    assert "skipped 2 unreadable image(s): cultivar_01 2" in header     # at the start, per class
    assert "device: cpu" in header and f"output: {run}" in header
    assert "tokens per block" in header and "evit keep 0.5" in header

    monkeypatch.setattr(trainer, "train_epoch", real)
    res = train(data, run, "--epochs", "2", "--resume")
    assert res.exit_code == 0, res.output
    assert "resuming from epoch 2 of 2" in res.stdout
