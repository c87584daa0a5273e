"""Dataset layouts, the seeded split, CSV split files, bad input, synthetic leaves, transforms."""

import csv

import numpy as np
import pytest
from click.testing import CliRunner

from clca_edge.core.errors import ExitCode
from clca_edge.cli import main
from clca_edge.data.sources import DataConfig, DataError, load_csv_splits, load_splits, stratified_split
from clca_edge.data.synth import SynthConfig, class_traits, write_synthetic_dataset


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, SynthConfig(classes=3, per_class=8, size=32, seed=1))
    return root


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_synth_is_seeded_deterministic_and_an_imagefolder(tmp_path, synth):
    write_synthetic_dataset(tmp_path / "again", SynthConfig(classes=3, per_class=8, size=32, seed=1))
    write_synthetic_dataset(tmp_path / "other", SynthConfig(classes=3, per_class=8, size=32, seed=2))
    assert _files(synth) == _files(tmp_path / "again")
    for rel in _files(synth):
        assert (synth / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes()
    assert any((synth / r).read_bytes() != (tmp_path / "other" / r).read_bytes() for r in _files(synth))
    splits = load_splits(DataConfig(str(synth)))
    assert splits.class_names == ["cultivar_00", "cultivar_01", "cultivar_02"]
    assert len(splits.train) == 18 and len(splits.val) == 6  # 25% of 8 = 2 val per class
    assert sorted({lab for _, lab in splits.val}) == [0, 1, 2]


def test_synth_classes_differ_in_traits_not_outline():
    traits = class_traits(5, seed=0)
    for attr in ("vein_angle", "hue", "texture_freq", "tooth_depth"):
        assert len({round(getattr(t, attr), 6) for t in traits}) == 5  # every class has its own level


def test_synth_without_tint_keeps_every_other_trait(tmp_path):
    """--no-tint: one blade colour for every cultivar (shape and texture still differ), so the
    images' mean blade colour no longer tells classes apart."""
    tinted, plain = class_traits(5, seed=0), class_traits(5, seed=0, tint=False)
    assert len({(t.hue, t.saturation) for t in plain}) == 1
    for a, b in zip(tinted, plain):
        assert (a.vein_angle, a.teeth, a.tooth_depth, a.texture_freq) == (b.vein_angle, b.teeth, b.tooth_depth,
                                                                         b.texture_freq)
    res = CliRunner().invoke(main, ["data", "synth", "--out", str(tmp_path), "--classes", "3", "--per-class", "6",
                                    "--size", "48", "--no-tint"])
    assert res.exit_code == 0, res.output
    from clca_edge.core.preprocess import load_rgb

    def hue_of_class(name):  # median hue of green pixels over the class's images
        import cv2
        hsv = np.concatenate([cv2.cvtColor(load_rgb(p), cv2.COLOR_RGB2HSV).reshape(-1, 3)
                              for p in sorted((tmp_path / "train" / name).glob("*.png"))])
        green = hsv[(hsv[:, 0] > 30) & (hsv[:, 0] < 75) & (hsv[:, 1] > 60)]
        return float(np.median(green[:, 0]))

    hues = [hue_of_class(d.name) for d in sorted((tmp_path / "train").iterdir())]
    assert max(hues) - min(hues) <= 2, hues  # OpenCV hue: 2 degrees per step


def test_synth_cli_writes_images(tmp_path):
    from clca_edge.core.preprocess import load_rgb

    res = CliRunner().invoke(main, ["data", "synth", "--out", str(tmp_path), "--classes", "2", "--per-class", "4",
                                    "--size", "40", "--format", "jpg"])
    assert res.exit_code == 0, res.output
    imgs = sorted(tmp_path.rglob("*.jpg"))
    assert len(imgs) == 8
    assert load_rgb(imgs[0]).shape == (40, 40, 3)


def test_synth_bad_values_exit_2(tmp_path):
    res = CliRunner().invoke(main, ["data", "synth", "--out", str(tmp_path / "x"), "--size", "8"])
    assert res.exit_code == 2 and "Invalid value" in res.output


def test_val_split_is_stratified_seeded_and_written(tmp_path, synth):
    tree = synth / "train"
    split_dir = tmp_path / "split"
    a = load_splits(DataConfig(str(tree), val_split=0.34, split_seed=3), split_dir=split_dir)
    assert (split_dir / "train.csv").is_file() and (split_dir / "val.csv").is_file()
    assert sorted(lab for _, lab in a.val) == [0, 0, 1, 1, 2, 2]  # round(6 * 0.34) = 2 per class
    assert not set(a.train) & set(a.val)
    b = load_splits(DataConfig(str(tree), val_split=0.34, split_seed=3))
    assert sorted(a.val) == sorted(b.val)
    c = load_splits(DataConfig(str(tree), val_split=0.34, split_seed=4))
    assert sorted(a.val) != sorted(c.val)
    # Reading the written split back (how a resumed run gets it) gives the same samples.
    again = load_splits(DataConfig(str(tree), val_split=0.34, split_seed=99), split_dir=split_dir)
    assert sorted(again.val) == sorted(a.val) and again.class_names == a.class_names


def test_stratified_split_needs_two_per_class():
    with pytest.raises(DataError, match="needs >= 2 per class"):
        stratified_split([("a.png", 0), ("b.png", 0), ("c.png", 1)], 0.5, 0)


def _write_csv(path, rows, header=("class_id", "dir")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_ufg_csv_layout_with_images_in_a_subfolder(tmp_path, synth):
    imgs = tmp_path / "cotton_square_new"
    imgs.mkdir()
    src = sorted((synth / "train").rglob("*.png"))
    for i, p in enumerate(src[:6]):
        (imgs / f"{i}.png").write_bytes(p.read_bytes())
    _write_csv(tmp_path / "train.csv", [(0, "0.png"), (0, "1.png"), (1, "2.png"), (1, "3.png")])
    _write_csv(tmp_path / "val.csv", [(0, "4.png"), (1, "5.png")])
    splits = load_splits(DataConfig(str(tmp_path)))
    assert splits.layout == "csv" and splits.class_names == ["0", "1"]
    assert splits.val == [(str(imgs / "4.png"), 0), (str(imgs / "5.png"), 1)]
    # eval reads one split file; a subset of the classes is fine, an unknown id is not.
    from clca_edge.training.evaluate import eval_samples

    _write_csv(tmp_path / "test.csv", [(1, "5.png")])
    assert eval_samples(tmp_path, "test", ["0", "1"]) == [(str(imgs / "5.png"), 1)]
    _write_csv(tmp_path / "test.csv", [(4, "5.png")])
    with pytest.raises(DataError, match="outside the checkpoint's 0..1"):
        eval_samples(tmp_path, "test", ["0", "1"])


@pytest.mark.parametrize("case,needle", [
    ("empty_class", "holds no images"),
    ("val_only_class", "that {root}/train lacks"),
    ("missing_csv", "split file '{root}/nope.csv' does not exist"),
    ("csv_val_only_class", "class id(s) [2]"),
    ("csv_missing_image", "do not exist, e.g."),
    ("no_val", "pass --val-split"),
])
def test_bad_datasets_name_the_problem(tmp_path, synth, case, needle):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(synth, root)
    cfg = DataConfig(str(root))
    if case == "empty_class":
        (root / "train" / "cultivar_09").mkdir()
    elif case == "val_only_class":
        (root / "val" / "cultivar_07").mkdir()
        shutil.copy(next((root / "val" / "cultivar_00").iterdir()), root / "val" / "cultivar_07" / "x.png")
    elif case == "missing_csv":
        cfg = DataConfig(str(root), train_csv=str(root / "nope.csv"), val_csv=str(root / "nope.csv"))
    elif case in ("csv_val_only_class", "csv_missing_image"):
        img = next((root / "train" / "cultivar_00").iterdir()).relative_to(root).as_posix()
        _write_csv(root / "train.csv", [(0, img), (1, img)])
        _write_csv(root / "val.csv", [(2, img)] if case == "csv_val_only_class" else [(0, "gone.png")])
    elif case == "no_val":
        shutil.rmtree(root / "val")
    with pytest.raises(DataError) as err:
        load_splits(cfg)
    assert needle.format(root=root) in str(err.value)


def test_train_cli_reports_missing_csv_without_traceback(tmp_path):
    res = CliRunner().invoke(main, ["train", "--data", str(tmp_path), "--train-csv", str(tmp_path / "t.csv"),
                                    "--val-csv", str(tmp_path / "v.csv"), "--out", str(tmp_path / "run")])
    assert res.exit_code == ExitCode.DATA, res.output
    assert f"split file '{tmp_path / 't.csv'}' does not exist" in res.output
    assert "Traceback" not in res.output


def test_eval_transform_is_the_runtime_preprocess_and_train_augments(synth):
    import torch

    from clca_edge.data.transforms import EvalTransform, TrainTransform
    from clca_edge.core.preprocess import PreprocessSpec
    from clca_edge.core.preprocess import load_rgb, preprocess

    spec = PreprocessSpec(img_size=24, crop_pct=0.75)
    rgb = load_rgb(next((synth / "val" / "cultivar_01").iterdir()))
    assert torch.equal(EvalTransform(spec)(rgb), torch.from_numpy(preprocess(rgb, spec)))
    torch.manual_seed(0)
    aug = [TrainTransform(spec)(rgb) for _ in range(6)]
    assert all(a.shape == (3, 24, 24) and a.dtype == torch.float32 for a in aug)
    assert len({a.numpy().tobytes() for a in aug}) > 1  # random crops / flips differ
    # With no flip and a crop equal to the resize, augmentation is the eval transform.
    full = PreprocessSpec(img_size=24, crop_pct=1.0)
    assert np.allclose(TrainTransform(full, hflip=0.0)(rgb).numpy(), preprocess(rgb, full))


def test_one_image_listing_for_train_deploy_predict_and_capture(tmp_path):
    """Nested class folders count everywhere; hidden files/folders and non-images nowhere."""
    from pathlib import Path

    from clca_edge.capture.sources import expand_images
    from clca_edge.data.sources import scan_class_tree
    from clca_edge.deploy.calibration import scan_class_folders
    from clca_edge.runtime.predict import expand_inputs
    from clca_edge.training.evaluate import eval_samples

    root = tmp_path / "data"
    for rel in ["oak/a.png", "oak/2024/b.JPG", "oak/2024/deep/c.webp", "oak/.d.png", "oak/.cache/e.png",
                "oak/notes.txt", "elm/f.jpg", ".trash/g.png"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    want = {"elm": ["elm/f.jpg"], "oak": ["oak/2024/b.JPG", "oak/2024/deep/c.webp", "oak/a.png"]}

    def rel(paths):
        return [Path(p).relative_to(root).as_posix() for p in paths]

    assert {c: rel(v) for c, v in scan_class_tree(root).items()} == want                 # train
    assert {c: rel(v) for c, v in scan_class_folders(root, "calibration").items()} == want  # deploy
    evals = eval_samples(root, "val", ["elm", "oak"])                                      # eval
    assert rel(p for p, _ in evals) == want["elm"] + want["oak"] and [c for _, c in evals] == [0, 1, 1, 1]
    assert rel(expand_inputs([str(root / "oak")]).files) == want["oak"]                   # predict
    assert rel(expand_images(str(root / "oak"))) == want["oak"]                           # capture
    assert rel(expand_images(str(root / "oak" / "**" / "*"))) == want["oak"]              # glob


def test_split_files_are_written_atomically(tmp_path, monkeypatch):
    import os

    from clca_edge.data.sources import write_split_csv

    fsynced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsynced.append(fd), real_fsync(fd)))
    write_split_csv(tmp_path / "s" / "train.csv", [("/d/a.png", 1), ("/d/b.png", 0)], ["x", "y"], root=None)
    assert fsynced and sorted(p.name for p in (tmp_path / "s").iterdir()) == ["train.csv"]
    rows = list(csv.reader(open(tmp_path / "s" / "train.csv", newline="")))
    assert rows == [["class_id", "dir", "class_name"], ["1", "/d/a.png", "y"], ["0", "/d/b.png", "x"]]
