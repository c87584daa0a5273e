"""Cost accounting reproduces the paper's figures (counted on the meta device: no weights)."""

import json

import pytest
from click.testing import CliRunner

from clca_edge.cli import main
from clca_edge.models import ClcaConfig, ModelConfig
from clca_edge.models.flops import cost_report
from clca_edge.models.zoo import REFERENCE_GFLOPS


def vit_b(method="none", rate=1.0, clca=False, size=448):
    return ModelConfig(backbone="vit_base_patch16_224", method=method, keep_rate=rate,
                       clca=ClcaConfig() if clca else ClcaConfig.off(), num_classes=200, img_size=size)


def test_plain_vit_b16():
    assert cost_report(vit_b()).gflops == pytest.approx(78.5, abs=0.2)
    assert cost_report(vit_b(size=224)).gflops == pytest.approx(17.58, abs=0.05)
    assert cost_report(vit_b()).params_m == pytest.approx(86.4, abs=0.1)


@pytest.mark.parametrize("rate,paper,tol", [(0.1, 25.2, 0.25), (0.7, 50.9, 0.5)])
def test_evit_clca_paper_table(rate, paper, tol):
    assert cost_report(vit_b("evit", rate, True)).gflops == pytest.approx(paper, abs=tol)


@pytest.mark.parametrize("clca", [False, True])
@pytest.mark.parametrize("rate", [0.1, 0.25, 0.5, 0.7])
@pytest.mark.parametrize("method", ["topk", "evit"])
def test_reference_table_within_3_percent(method, rate, clca):
    ref = REFERENCE_GFLOPS[method][rate][int(clca)]
    assert cost_report(vit_b(method, rate, clca)).gflops == pytest.approx(ref, rel=0.03)


def test_tokens_per_block_of_evit_clca():
    rep = cost_report(vit_b("evit", 0.1, True))
    # 784 patches + CLS + CLR; block 3 keeps ceil(0.1 * 784) = 79 + 1 fused, then recovers 3 x (GAP + CLR).
    assert rep.tokens_per_block[:5] == [786, 786, 786, 786, 2 + 79 + 1 + 6]
    assert len(rep.tokens_per_block) == 12


def test_flops_cli_json():
    args = ["flops", "--model", "vit_base_patch16_224", "--method", "evit", "--keep-rate", "0.1",
            "--img-size", "448", "--num-classes", "200", "--json"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["gflops"] == pytest.approx(25.2, abs=0.25)
    assert out["params_m"] == pytest.approx(86.57, abs=0.05)
    assert out["tokens_per_block"][0] == 786
    plain = json.loads(CliRunner().invoke(main, args + ["--no-clca"]).output)
    assert plain["gflops"] < out["gflops"] and plain["tokens_per_block"][0] == 785
