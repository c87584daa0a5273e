"""The CLI is thin and lazy, and turns bad input into messages and exit codes."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from clca_edge.cli import main


def test_help_imports_neither_torch_nor_tensorrt():
    code = ("import sys; from click.testing import CliRunner; from clca_edge.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'tensorrt', 'timm', 'onnxruntime', 'paho') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("args,needle", [
    (["flops", "--keep-rate", "1.5"], "keep_rate=1.5 is outside (0, 1]"),
    (["flops", "--keep-rate", "abc"], "keep rate 'abc' is not a number"),
    (["flops", "--locations", "6,3"], "strictly increasing"),
    (["flops", "--locations", "3,6,12"], "allowed 0..11"),
    (["flops", "--img-size", "450"], "not divisible by the patch size 16"),
    (["flops", "--method", "magic"], "method='magic' is unknown"),
])
def test_bad_values_exit_2_with_a_message(args, needle):
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2
    assert needle in res.output
    assert "Traceback" not in res.output


def test_bad_option_is_clicks_error():
    res = CliRunner().invoke(main, ["flops", "--img-size", "-3"])
    assert res.exit_code == 2 and "Invalid value" in res.output


def test_zoo_json_lists_reference_rows():
    res = CliRunner().invoke(main, ["zoo", "--methods", "evit", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert len(rows) == 1 + 4 * 2
    assert rows[0]["method"] == "none" and abs(rows[0]["gflops"] - 78.5) < 0.2
    for r in rows[1:]:
        assert abs(r["diff_pct"]) < 3.0 and abs(r["gflops"] / r["reference"] - 1) < 0.03


def test_flops_prints_a_readable_report():
    res = CliRunner().invoke(main, ["flops", "--model", "vit_base_patch16_224", "--method", "evit", "--keep-rate", "0.1",
                                    "--img-size", "448"])
    assert res.exit_code == 0, res.output
    assert "GFLOPs (MACs, batch 1): 25.2" in res.output
    assert "tokens per block (entering attention): 786, 786, 786, 786, 88" in res.output


@pytest.mark.parametrize("args,needle", [
    (["flops", "--model", "vit_small_patch16_18x2_224"], "only timm's pre-norm Block is supported"),
    (["flops", "--model", "vit_base_patch16_rpn_224"], "no class token"),
])
def test_unsupported_vit_variants_are_config_errors(args, needle):
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output
