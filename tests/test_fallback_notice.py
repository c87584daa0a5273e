"""The TensorRT/GPU fallback notice (issue 11 item 11): said once per run, in red on stderr, not
also as a logged warning; a bundle deployed for the cpu target expects neither, so it says
nothing about them (an INFO record, shown with -v) while the field log still records them."""

from __future__ import annotations

import logging
import shutil

import pytest
from click.testing import CliRunner

from clca_edge.bundle import read_manifest, write_manifest
from clca_edge.capture.fieldlog import read_log
from clca_edge.cli import main
from support.runtime_bundle import write_leaf_images


@pytest.fixture
def images(tmp_path):
    return write_leaf_images(tmp_path / "images", 2, seed=7, name="leaf_{}.png")


def _with_target(bundle_dir, tmp_path, target):
    root = tmp_path / f"bundle-{target}"
    shutil.copytree(bundle_dir, root)
    m = read_manifest(root)
    m.target = target
    write_manifest(root, m)
    return root


def _fallback_warnings(caplog):
    return [r for r in caplog.records if r.levelno >= logging.WARNING and "FALLBACK" in r.getMessage()]


def test_a_jetson_bundle_says_each_fallback_once(bundle_dir, tmp_path, images, caplog):
    bundle = _with_target(bundle_dir, tmp_path, "jetson-orin")
    with caplog.at_level(logging.INFO):
        res = CliRunner().invoke(main, ["predict", "--bundle", str(bundle), str(images)])
    assert res.exit_code == 0, res.output
    assert res.stderr.count("FALLBACK: tensorrt unavailable") == 1
    assert res.stderr.count("FALLBACK: ort-gpu unavailable") == 1
    assert "running on ort-cpu" in res.stderr
    assert not _fallback_warnings(caplog)   # not a second time through logging


def test_a_cpu_bundle_does_not_warn_about_tensorrt(bundle_dir, tmp_path, images, caplog):
    bundle = _with_target(bundle_dir, tmp_path, "cpu")
    log = tmp_path / "log.jsonl"
    for cmd in (["predict", "--bundle", str(bundle), str(images)],
                ["capture", "--bundle", str(bundle), "--source", str(images), "--log", str(log), "--no-live",
                 "--quality", "off", "--run-dir", str(tmp_path / "runs")]):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            res = CliRunner().invoke(main, cmd)
        assert res.exit_code == 0, res.output
        assert "TensorRT" not in res.output and "tensorrt" not in res.output and "FALLBACK" not in res.output
        assert "running on" not in res.stderr
        assert not _fallback_warnings(caplog)
        assert any("tensorrt not used" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
    # Still recorded where it belongs: the field log says which backends were not used, and why.
    fallbacks = [r for r in read_log(log) if r["type"] == "fallback"]
    assert [f["backend"] for f in fallbacks] == ["tensorrt", "ort-gpu"] and all(f["expected"] for f in fallbacks)
