"""Outputs never destroy what is not ours (issue 11 items 3, 4, 6, 14; the design's "--force replaces
only what the tool itself wrote"): for every command with an --out, a file, a data set, the
working folder or a folder holding the inputs is refused with one line (exit 11) and left byte for
byte as it was; only a bundle / synthetic data set / run folder the tool wrote is replaced."""

from __future__ import annotations

import os
import stat

import pytest
from click.testing import CliRunner

from clca_edge.cli import main
from clca_edge.core.errors import ExitCode

TINY = ["--model", "vit_tiny_patch16_224", "--pretrained", "none", "--img-size", "32", "--model-kwargs",
        "depth=2,embed_dim=32,num_heads=2", "--keep-rate", "0.5", "--epochs", "1", "--batch-size", "8",
        "--workers", "0"]


def snapshot(*roots):
    """Every file under the roots with its bytes, and every folder: compared before and after."""
    out = {}
    for root in roots:
        for p in [root, *root.rglob("*")] if root.exists() else []:
            out[p] = p.read_bytes() if p.is_file() else None
    return out


def invoke(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in res.output, res.output
    return res


def one_error_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    return lines[0]


@pytest.fixture(scope="module")
def ws(trained_workspace):
    return trained_workspace


@pytest.fixture
def synth(tmp_path):
    def make(out, *extra):
        return invoke("data", "synth", "--out", out, "--classes", "2", "--per-class", "4", "--size", "32", *extra)
    return make


# ---- data synth (item 3) ---------------------------------------------------------------------

def test_synth_refuses_a_non_empty_folder_and_force_replaces_only_its_own(tmp_path, synth):
    mine = tmp_path / "photos"
    (mine / "oak").mkdir(parents=True)
    (mine / "oak" / "IMG_0001.jpg").write_bytes(b"my photo")
    before = snapshot(mine)
    for extra in ([], ["--force"]):
        res = synth(mine, *extra)
        assert res.exit_code == ExitCode.OUTPUT and "not a data set written by `clca-edge data synth`" in \
            one_error_line(res)
        assert snapshot(mine) == before

    data = tmp_path / "leaves"
    assert synth(data).exit_code == 0
    first = snapshot(data)
    res = synth(data, "--classes", "3")
    assert res.exit_code == ExitCode.OUTPUT and "pass --force to replace it" in one_error_line(res)
    assert snapshot(data) == first
    res = synth(data, "--classes", "3", "--force")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (data / "train").iterdir()) == ["cultivar_00", "cultivar_01", "cultivar_02"]
    # --force replaced the folder whole; what someone added to a synthetic set makes it theirs.
    (data / "notes.txt").write_text("added by hand")
    res = synth(data, "--force")
    assert res.exit_code == ExitCode.OUTPUT and (data / "notes.txt").read_text() == "added by hand"


def test_synth_on_a_file_or_an_unwritable_place_is_one_line(tmp_path, synth):
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile", tmp_path / "afile" / "below"):
        res = synth(out)
        assert res.exit_code == ExitCode.OUTPUT, res.output
        one_error_line(res)
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_synth_into_a_read_only_folder_is_one_line(tmp_path, synth):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        res = synth(ro / "data")
        assert res.exit_code == ExitCode.OUTPUT and "writable" in one_error_line(res)
    finally:
        ro.chmod(0o755)


def test_synth_refuses_the_working_folder(tmp_path, synth, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("x")
    for out in (".", tmp_path.parent):
        res = synth(out, "--force")
        assert res.exit_code == ExitCode.OUTPUT and "working folder" in one_error_line(res)
    assert (tmp_path / "keep.txt").read_text() == "x"


# ---- deploy (items 4, 6, 14) ----------------------------------------------------------------

def _deploy(ws, out, *extra):
    return invoke("deploy", "--checkpoint", ws["ckpt"], "--target", "cpu", "--out", out, "--calib-data",
                  ws["calib"], "--eval-data", ws["eval"], "--precision", "fp32", *extra)


@pytest.mark.parametrize("case", ["dataset", "plain_folder", "file", "cwd", "parent_of_data", "parent_of_ckpt",
                                  "home"])
def test_deploy_force_never_replaces_what_is_not_a_bundle(ws, tmp_path, monkeypatch, case):
    root = ws["ckpt"].parent
    if case == "dataset":
        out = tmp_path / "photos"
        (out / "oak").mkdir(parents=True)
        (out / "oak" / "a.jpg").write_bytes(b"jpg")
    elif case == "plain_folder":
        out = tmp_path / "stuff"
        out.mkdir()
        (out / "manifest.json").write_text('{"not": "a bundle"}')
    elif case == "file":
        out = tmp_path / "notes.txt"
        out.write_text("x")
    elif case == "cwd":
        monkeypatch.chdir(tmp_path)
        (tmp_path / "keep.txt").write_text("x")
        out = "."
    elif case == "parent_of_data":
        out = ws["calib"].parent
    elif case == "parent_of_ckpt":
        out = root
    else:
        out = os.path.expanduser("~")
    watched = [tmp_path, root] if case != "home" else [tmp_path]
    before = snapshot(*watched)
    res = _deploy(ws, out, "--force", "--tar")
    assert res.exit_code == ExitCode.OUTPUT, res.output
    one_error_line(res)
    assert snapshot(*watched) == before


def test_deploy_force_replaces_its_own_bundle_and_archive_with_the_users_umask(ws, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "bundle"
        assert _deploy(ws, out, "--tar").exit_code == 0
        res = _deploy(ws, out, "--tar")
        assert res.exit_code == ExitCode.OUTPUT and "pass --force" in one_error_line(res)
        (out / "stale.txt").write_text("from the old bundle")
        res = _deploy(ws, out, "--tar", "--force")
        assert res.exit_code == 0, res.output
    finally:
        os.umask(old)
    assert not (out / "stale.txt").exists()          # replaced whole
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]
    assert stat.S_IMODE(out.stat().st_mode) == 0o755          # mkdtemp's 0700 would keep others out
    assert stat.S_IMODE((out / "manifest.json").stat().st_mode) == 0o644   # mkstemp's 0600 likewise
    assert stat.S_IMODE((out / "model.onnx").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "bundle.tar").stat().st_mode) == 0o644

    # An OUT.tar that is not a bundle archive is not replaced by --tar, with or without --force.
    other = tmp_path / "other"
    (tmp_path / "other.tar").write_bytes(b"my own archive")
    res = _deploy(ws, other, "--tar", "--force")
    assert res.exit_code == ExitCode.OUTPUT and "not a bundle archive" in one_error_line(res)
    assert (tmp_path / "other.tar").read_bytes() == b"my own archive" and not other.exists()


# ---- train / eval (item 6) ------------------------------------------------------------------

@pytest.fixture(scope="module")
def leaves(tmp_path_factory):
    root = tmp_path_factory.mktemp("leaves") / "data"
    assert invoke("data", "synth", "--out", root, "--classes", "2", "--per-class", "6", "--size", "32").exit_code == 0
    return root


@pytest.mark.parametrize("case", ["file", "below_a_file", "not_a_run", "inside_data", "holds_data"])
def test_train_out_that_is_not_a_run_folder_is_refused_untouched(leaves, tmp_path, case):
    if case == "file":
        out = tmp_path / "afile"
        out.write_text("x")
    elif case == "below_a_file":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "run"
    elif case == "not_a_run":
        out = tmp_path / "photos"
        out.mkdir()
        (out / "metrics.csv").write_text("my own spreadsheet")
    elif case == "inside_data":
        out = leaves / "train" / "run"
    else:
        out = leaves.parent
    before = snapshot(tmp_path, leaves)
    res = invoke("train", "--data", leaves, "--out", out, *TINY)
    assert res.exit_code == ExitCode.OUTPUT, res.output
    one_error_line(res)
    assert snapshot(tmp_path, leaves) == before


def test_train_then_eval_out_checks(leaves, tmp_path):
    run = tmp_path / "run"
    res = invoke("train", "--data", leaves, "--out", run, *TINY)
    assert res.exit_code == 0, res.output
    res = invoke("train", "--data", leaves, "--out", run, *TINY)   # a run already there: --resume or elsewhere
    assert res.exit_code == ExitCode.OUTPUT and "pass --resume" in one_error_line(res)
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile", leaves / "val" / "eval"):
        before = snapshot(tmp_path, leaves)
        res = invoke("eval", "--checkpoint", run, "--data", leaves, "--out", out)
        assert res.exit_code == ExitCode.OUTPUT, res.output
        one_error_line(res)
        assert snapshot(tmp_path, leaves) == before


# ---- quickstart: its rerun clears what it wrote, in its own folder only ----------------------

def test_quickstart_refuses_a_folder_it_did_not_make(tmp_path):
    out = tmp_path / "project"
    (out / "data" / "oak").mkdir(parents=True)
    (out / "data" / "oak" / "a.jpg").write_bytes(b"the user's data")
    before = snapshot(out)
    res = invoke("quickstart", "--out", out, "--epochs", "1")
    assert res.exit_code == ExitCode.OUTPUT and "not made by `clca-edge quickstart`" in one_error_line(res)
    assert snapshot(out) == before
