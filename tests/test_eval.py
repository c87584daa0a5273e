"""clca-edge eval: metrics from the confusion matrix, CSV/PNG outputs, class mapping errors; and a
2-process DDP training run on CPU (gloo) where only rank 0 writes."""

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from clca_edge.core.errors import ExitCode
from clca_edge.cli import main
from clca_edge.data.synth import SynthConfig, write_synthetic_dataset
from clca_edge.training.metrics import ClassificationReport, confusion_image

TINY_ARGS = ["--model", "vit_tiny_patch16_224", "--pretrained", "none", "--method", "evit", "--keep-rate", "0.25",
             "--img-size", "32", "--model-kwargs", "depth=4,embed_dim=32,num_heads=2", "--batch-size", "8",
             "--workers", "0", "--epochs", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev")
    write_synthetic_dataset(root / "data", SynthConfig(classes=3, per_class=8, size=32, seed=3))
    res = CliRunner().invoke(main, ["train", "--data", str(root / "data"), "--out", str(root / "run")] + TINY_ARGS)
    assert res.exit_code == 0, res.output
    return root


def test_report_metrics_from_confusion():
    cm = np.array([[3, 1, 0], [0, 2, 2], [0, 0, 0]])
    r = ClassificationReport(["a", "b", "c"], cm, top5_correct=8)
    assert r.num_images == 8 and r.top1 == 62.5 and r.top5 == 100.0
    assert [p["accuracy"] for p in r.per_class()] == [75.0, 50.0, None]
    img = confusion_image(r)
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8


def test_eval_writes_confusion_csv_png_and_per_class(run):
    out = run / "evalout"
    res = CliRunner().invoke(main, ["eval", "--checkpoint", str(run / "run"), "--data", str(run / "data"),
                                    "--out", str(out), "--json", "--workers", "0"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert {"top1", "top5", "num_images", "per_class"} <= set(d) and d["num_images"] == 6
    rows = list(csv.reader(open(out / "confusion.csv")))
    assert rows[0][1:] == ["cultivar_00", "cultivar_01", "cultivar_02"]
    cm = np.array([[int(v) for v in r[1:]] for r in rows[1:]])
    assert cm.sum() == 6 and cm.sum(axis=1).tolist() == [2, 2, 2]
    assert 100 * np.trace(cm) / 6 == pytest.approx(d["top1"])
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    per = list(csv.DictReader(open(out / "per_class.csv")))
    assert [int(p["images"]) for p in per] == [2, 2, 2]
    # The human-readable form prints a table.
    text = CliRunner().invoke(main, ["eval", "--checkpoint", str(run / "run"), "--data", str(run / "data"),
                                     "--out", str(out), "--workers", "0"])
    assert "top-1" in text.output and "cultivar_02" in text.output


def test_eval_rejects_classes_the_checkpoint_does_not_know(run, tmp_path):
    import shutil

    shutil.copytree(run / "data" / "val", tmp_path / "val")
    (tmp_path / "val" / "cultivar_00").rename(tmp_path / "val" / "weed")
    res = CliRunner().invoke(main, ["eval", "--checkpoint", str(run / "run"), "--data", str(tmp_path), "--workers", "0"])
    assert res.exit_code == ExitCode.DATA and "['weed']" in res.output and "not trained on" in res.output


def test_eval_missing_checkpoint_is_an_error(tmp_path):
    res = CliRunner().invoke(main, ["eval", "--checkpoint", str(tmp_path / "nope.safetensors"), "--data", str(tmp_path)])
    assert res.exit_code == ExitCode.CHECKPOINT and "does not exist" in res.output


def test_ddp_two_cpu_processes_train_and_only_rank0_writes(run, tmp_path):
    """torchrun --nproc_per_node=2 of the same command (gloo); the run folder holds exactly what a
    single-process run writes, one metrics row per epoch, and a checkpoint of the same shapes."""
    from safetensors.torch import load_file

    launcher = tmp_path / "cli.py"
    launcher.write_text(textwrap.dedent("""
        import sys
        from clca_edge.cli import main
        sys.exit(main())
    """))
    out = tmp_path / "ddp"
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", str(launcher),
           "train", "--data", str(run / "data"), "--out", str(out), "--device", "cpu", "--json"] + TINY_ARGS
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    if proc.returncode != 0 and "terminate called without an active exception" in proc.stderr:
        # Known rare abort of a gloo worker at exit on a loaded 2-core machine (about 1 run in 6
        # under pytest, never seen standalone); one retry, any other failure fails the test.
        shutil.rmtree(out, ignore_errors=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and summaries[0]["epochs"] == 1  # rank 1 prints nothing
    single = run / "run"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in single.iterdir()
                                                          if not p.name.startswith("eval"))
    assert len(list(csv.DictReader(open(out / "metrics.csv")))) == 1
    a, b = load_file(str(out / "last.safetensors")), load_file(str(single / "last.safetensors"))
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    res = CliRunner().invoke(main, ["eval", "--checkpoint", str(out), "--data", str(run / "data"), "--json",
                                    "--workers", "0"])
    d = json.loads(res.stdout)
    assert d["num_images"] == 6 and d["top1"] == pytest.approx(summaries[0]["best_top1"])
