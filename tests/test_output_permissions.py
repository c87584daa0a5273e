"""Item 14 of issue 11: what clca-edge writes (checkpoints, metrics, bundle files and folders) gets
the user's umask, like a plain ``open``/``mkdir``, not the private 0600/0700 of temp files."""

from __future__ import annotations

import os
import stat

import pytest

from clca_edge.core.atomic_io import atomic_write_bytes, current_umask, make_temp_dir


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    os.umask(old)
    yield set_mask
    os.umask(old)


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_writes_and_temp_folders_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    assert current_umask() == mask
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert _mode(tmp_path / "a.bin") == 0o666 & ~mask
    d = make_temp_dir(tmp_path, prefix=".x.")
    assert _mode(d) == 0o777 & ~mask
    assert (tmp_path / "a.bin").read_bytes() == b"x" and not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"
                                                              and p.is_file()]


def test_a_checkpoint_and_its_metrics_are_readable_by_others(tmp_path, umask):
    umask(0o022)
    from conftest import tiny_model

    from clca_edge.core.preprocess import PreprocessSpec
    from clca_edge.training.checkpoint import CheckpointMeta, save_checkpoint
    from clca_edge.training.metrics import MetricsLog

    model = tiny_model(num_classes=2, depth=1)
    meta = CheckpointMeta(model=model.config, class_names=["a", "b"], preprocess=PreprocessSpec(img_size=64))
    save_checkpoint(tmp_path / "c.safetensors", model, meta)
    log = MetricsLog(tmp_path / "metrics.csv")
    log.append({"epoch": 1, "val_top1": 50.0})
    log.close()
    assert _mode(tmp_path / "c.safetensors") == 0o644
    assert _mode(tmp_path / "metrics.csv") == 0o644
