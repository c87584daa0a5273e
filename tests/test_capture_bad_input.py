"""capture's bad input (issue 11 items 5, 6, 13): an existing field log of the other format (or no
log at all) is refused and left byte for byte as it was; an unopenable SQLite log, a folder as
--log or a file as --run-dir are one-line errors (exit 11); records from an image source name
the classified file; --top-k beyond the classes is clamped; no empty run folder stays behind."""

from __future__ import annotations

import json
import sqlite3

import cv2
import pytest
from click.testing import CliRunner

from clca_edge.capture.fieldlog import SQLITE_HEADER, detect_format, open_log, read_log
from clca_edge.cli import main
from clca_edge.core.errors import ExitCode, OutputError
from support.runtime_bundle import BUNDLE_CLASSES as CLASSES, leaf_images, write_leaf_images


def _sqlite_log(path):
    with open_log(path, "sqlite") as log:
        log.write({"type": "start"})
    return path


def _jsonl_log(path):
    with open_log(path, "jsonl") as log:
        log.write({"type": "start"})
    return path


def test_formats_are_told_by_content_not_by_name(tmp_path):
    assert detect_format(tmp_path / "none.jsonl") is None
    (tmp_path / "empty").write_bytes(b"")
    assert detect_format(tmp_path / "empty") is None
    assert detect_format(_sqlite_log(tmp_path / "log.jsonl")) == "sqlite"   # a misleading name
    assert detect_format(_jsonl_log(tmp_path / "log.sqlite")) == "jsonl"
    (tmp_path / "notes.txt").write_text("field notes\n")
    assert detect_format(tmp_path / "notes.txt") == "unknown"
    assert [r["type"] for r in read_log(tmp_path / "log.jsonl")] == ["start"]   # read as what it is
    assert [r["type"] for r in read_log(tmp_path / "log.sqlite")] == ["start"]


@pytest.mark.parametrize("existing,fmt,needle", [
    ("sqlite", "jsonl", "is a sqlite field log; pass --log-format sqlite"),
    ("jsonl", "sqlite", "is a jsonl field log; pass --log-format jsonl"),
    ("text", "jsonl", "is neither a JSON-lines nor a SQLite field log"),
    ("text", "sqlite", "is neither a JSON-lines nor a SQLite field log"),
])
def test_open_log_refuses_a_mismatch_and_leaves_the_file(tmp_path, existing, fmt, needle):
    path = tmp_path / "field.log"
    if existing == "sqlite":
        _sqlite_log(path)
    elif existing == "jsonl":
        _jsonl_log(path)
    else:
        path.write_text("not a log\n")
    before = path.read_bytes()
    with pytest.raises(OutputError, match=needle):
        open_log(path, fmt)
    assert path.read_bytes() == before


def _images(tmp_path):
    src = tmp_path / "images"
    if not src.exists():
        write_leaf_images(src, 3, seed=4, name="leaf_{}.png")
    return src


def _capture(bundle, tmp_path, *extra):
    src = _images(tmp_path)
    return CliRunner().invoke(main, ["capture", "--bundle", str(bundle), "--source", str(src), "--no-live", "--quality", "off",
                                     "--run-dir", str(tmp_path / "runs"), *map(str, extra)])


@pytest.mark.parametrize("existing,fmt", [("sqlite", "jsonl"), ("jsonl", "sqlite")])
def test_capture_refuses_to_append_to_a_log_of_the_other_format(bundle_dir, tmp_path, existing, fmt):
    log = tmp_path / "field.log"
    (_sqlite_log if existing == "sqlite" else _jsonl_log)(log)
    before = log.read_bytes()
    res = _capture(bundle_dir, tmp_path, "--log", log, "--log-format", fmt)
    assert res.exit_code == ExitCode.OUTPUT, res.output
    assert f"pass --log-format {existing}" in res.stderr and "Traceback" not in res.output
    assert log.read_bytes() == before
    assert not (tmp_path / "runs").exists()    # no empty run folder behind


@pytest.mark.parametrize("case,code", [("not_a_database", ExitCode.OUTPUT),
                                       ("a_folder", ExitCode.OUTPUT),
                                       ("run_dir_is_a_file", ExitCode.OUTPUT)])
def test_unopenable_logs_and_run_folders_are_one_line(bundle_dir, tmp_path, case, code):
    extra = ["--log-format", "sqlite"]
    if case == "not_a_database":
        log = tmp_path / "log.sqlite"
        log.write_bytes(SQLITE_HEADER + b"\x00garbage" * 600)   # a header, then no database
        extra += ["--log", log]
    elif case == "a_folder":
        (tmp_path / "logdir").mkdir()
        extra += ["--log", tmp_path / "logdir"]
    else:
        (tmp_path / "runs").write_text("a file\n")
    _images(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    res = _capture(bundle_dir, tmp_path, *extra)
    assert res.exit_code == code, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_image_records_name_the_file_top_k_is_clamped_and_no_empty_run_folder(bundle_dir, tmp_path):
    log = tmp_path / "elsewhere" / "log.jsonl"
    res = _capture(bundle_dir, tmp_path, "--log", log, "--top-k", 10)
    assert res.exit_code == 0, res.output
    assert f"--top-k 10: the bundle has {len(CLASSES)} classes" in res.stderr
    decisions = [r for r in read_log(log) if r["type"] == "decision"]
    assert [r["file"] for r in decisions] == [str(tmp_path / "images" / f"leaf_{i}.png") for i in range(3)]
    assert all(len(r["topk"]) == len(CLASSES) for r in decisions)
    assert not (tmp_path / "runs").exists()    # the log went elsewhere and no frame was saved

    res = _capture(bundle_dir, tmp_path, "--save-frames", "uncertain", "--min-conf", 0.0)
    assert res.exit_code == 0, res.output
    (run,) = (tmp_path / "runs").iterdir()
    assert sorted(p.name for p in run.iterdir()) == ["log.jsonl"]   # frames/ stayed empty and went


def test_predict_top_k_beyond_the_classes_has_no_empty_columns(bundle_dir, tmp_path):
    img = tmp_path / "a_rather_long_file_name_of_a_leaf_photographed_in_the_field_on_a_monday_morning.png"
    cv2.imwrite(str(img), leaf_images(1)[0])
    res = CliRunner().invoke(main, ["predict", "--bundle", str(bundle_dir), "--top-k", "9", str(img)])
    assert res.exit_code == 0, res.output
    header = next(ln for ln in res.stdout.splitlines() if "top-1" in ln)
    assert f"top-{len(CLASSES)}" in header and f"top-{len(CLASSES) + 1}" not in header
    assert str(img) in res.stdout          # not cut to 80 columns off a terminal
    res = CliRunner().invoke(main, ["predict", "--bundle", str(bundle_dir), "--top-k", "9", "--json", str(img)])
    assert len(json.loads(res.stdout)["predictions"][0]["topk"]) == len(CLASSES)
