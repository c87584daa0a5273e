"""clca-edge benchmark on tiny models: table, CSV and plot from real measurements."""

import csv

import cv2
import pytest
from click.testing import CliRunner

from clca_edge.benchmark.config import SweepConfig
from clca_edge.benchmark.sweep import model_configs
from clca_edge.cli import main
from clca_edge.core.errors import ConfigError

TINY_ARGS = ["--model", "vit_tiny_patch16_224", "--model-kwargs", "depth=4,embed_dim=64,num_heads=2",
             "--img-size", "64", "--repeats", "3", "--warmup", "1", "--batch-size", "2"]


def test_sweep_includes_baseline_once_and_dedupes_full_keep_rate():
    cfg = SweepConfig(methods=("topk", "evit"), keep_rates=(0.25, 1.0), clca=(False, True))
    keys = [(c.method, c.keep_rate[0], c.clca.enabled) for c in model_configs(cfg)]
    assert keys[0] == ("none", 1.0, False)
    assert len(keys) == len(set(keys))
    assert ("none", 1.0, True) in keys and ("topk", 0.25, True) in keys and ("evit", 0.25, False) in keys
    assert len(keys) == 1 + 1 + 4  # baseline, CLCA at r=1, 2 methods x 2 CLCA at r=0.25


def test_bad_sweep_values():
    with pytest.raises(ConfigError, match="backend 'tensorrt9'"):
        SweepConfig(backends=("tensorrt9",))
    with pytest.raises(ConfigError, match="keep rate 0.0"):
        SweepConfig(keep_rates=(0.0,))


def test_benchmark_cli_writes_table_csv_and_plot(tmp_path):
    out = tmp_path / "bench"
    res = CliRunner().invoke(main, ["benchmark", *TINY_ARGS, "--methods", "evit", "--keep-rates", "0.25,1.0",
                                    "--backends", "ort,torch", "--no-isolate", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["method"], r["keep_rate"], r["clca"], r["backend"]) for r in rows] == [
        ("none", "1.0", "False", "ort"), ("none", "1.0", "False", "torch"),
        ("evit", "0.25", "True", "ort"), ("evit", "0.25", "True", "torch"),
        ("none", "1.0", "True", "ort"), ("none", "1.0", "True", "torch"),
    ]
    assert all(r["error"] == "" for r in rows), [r["error"] for r in rows]
    for r in rows:
        assert float(r["p50_ms"]) > 0 and float(r["p90_ms"]) >= float(r["p50_ms"])
        assert float(r["throughput"]) > 0 and float(r["peak_mb"]) > 50
    base = {r["backend"]: r for r in rows if r["method"] == "none" and r["clca"] == "False"}
    assert all(float(b["speedup"]) == 1.0 for b in base.values())
    evit = [r for r in rows if r["method"] == "evit"][0]
    assert float(evit["gflops"]) < float(base["ort"]["gflops"])
    img = cv2.imread(str(out / "tradeoff.png"))
    assert img is not None and img.shape[0] > 200 and img.shape[1] > 300
    assert (out / "meta.json").read_text().count("machine") == 1


def test_isolated_run_measures_each_model_in_its_own_process():
    from clca_edge.benchmark.sweep import run_sweep

    cfg = SweepConfig(backbone="vit_tiny_patch16_224", img_size=64, methods=("topk",), keep_rates=(0.25,),
                      backbone_kwargs={"depth": 4, "embed_dim": 64, "num_heads": 2}, backends=("ort",),
                      repeats=2, warmup=1, batch_size=2, isolate=True)
    rows = run_sweep(cfg)
    assert [r.error for r in rows] == ["", ""]
    assert rows[0].speedup == 1.0 and rows[1].p50_ms > 0 and rows[1].peak_mb > 50


def test_accuracy_sweep_trains_each_model_and_plots_accuracy(tmp_path):
    data, out = tmp_path / "leaves", tmp_path / "bench"
    assert CliRunner().invoke(main, ["data", "synth", "--out", str(data), "--classes", "3", "--per-class", "8",
                                     "--size", "64"]).exit_code == 0
    res = CliRunner().invoke(main, ["benchmark", *TINY_ARGS, "--methods", "topk", "--keep-rates", "0.5",
                                    "--backends", "torch", "--no-isolate", "--data", str(data), "--train-epochs", "1",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 2 and all(0.0 <= float(r["top1"]) <= 100.0 for r in rows)
    assert (out / "runs" / "topk_r0.5_clca" / "best.safetensors").is_file()
    assert (out / "runs" / "none_r1_plain" / "best.safetensors").is_file()


def test_accuracy_without_budget_is_refused(tmp_path):
    res = CliRunner().invoke(main, ["benchmark", *TINY_ARGS, "--data", str(tmp_path)])
    assert res.exit_code == 2 and "--train-epochs needs --data" not in res.output and "--train-epochs N" in res.output


def test_a_benchmark_scripts_results_open_with_machine_date_and_load_and_go_to_stdout_and_json(tmp_path, capsys):
    import json

    from clca_edge.benchmark.report import emit_results, run_header

    header = run_header()
    assert header["machine"].endswith(" cores") and header["date"].endswith(" UTC")
    assert len(header["load"]) == 3 and all(x >= 0 for x in header["load"])
    results = {**header, "fps": 12.5}
    emit_results(results, tmp_path / "r.json")
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(results))
    emit_results({"fps": 1.0}, None)   # stdout only
    assert json.loads(capsys.readouterr().out) == {"fps": 1.0}
