"""benchmark --device is validated before any model is built (issue 11 item 7): an unknown device,
or cuda where there is none, is a one-line error (exit 2), not exit 0 with errors inside the table."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from clca_edge.cli import main
from clca_edge.core.errors import ExitCode

ARGS = ["benchmark", "--model", "vit_tiny_patch16_224", "--model-kwargs", "depth=1,embed_dim=32,num_heads=2",
        "--img-size", "32", "--keep-rates", "0.5", "--backends", "torch", "--repeats", "1", "--warmup", "0",
        "--no-isolate"]


@pytest.mark.parametrize("device,needle", [
    ("tpu", "--device 'tpu' is unknown; choose cpu or cuda"),
    ("cuda:99", "--device cuda:99"),
    pytest.param("cuda", "no CUDA device is available", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="this machine has a GPU")),
])
def test_a_bad_device_is_refused_up_front(tmp_path, device, needle):
    res = CliRunner().invoke(main, [*ARGS, "--device", device, "--out", str(tmp_path / "bench")])
    assert res.exit_code == ExitCode.BAD_INPUT, res.output
    assert needle in res.stderr and "Traceback" not in res.output
    assert not (tmp_path / "bench").exists()     # nothing measured, nothing written


def test_cpu_still_runs(tmp_path):
    res = CliRunner().invoke(main, [*ARGS, "--device", "cpu", "--out", str(tmp_path / "bench")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "bench" / "results.csv").is_file()
