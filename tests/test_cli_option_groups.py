"""The commands whose options became option groups (``deploy``, ``build-engine``, ``fleet publish``,
``benchmark``, ``eval``, ``data synth``): the same options as before (names, defaults, help, order), and each
command receives one typed config carrying the values given; bad values are the same one-line
errors and exit codes. The library call each command makes is replaced by one that records what it
was handed and stops the command (nothing is deployed, swept or announced)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from clca_edge.cli import main
from clca_edge.cli.options import OptionGroup

# Generated from main before the change (the snapshot's rows are what ``_option_rows`` returns);
# users' scripts and docs depend on these options, so a difference here is a breaking change.
BEFORE = json.loads((Path(__file__).parent / "data" / "cli_options_before_groups.json").read_text())


def _command(path: str) -> click.Command:
    cmd = main
    for name in path.split():
        cmd = cmd.commands[name]
    return cmd


def _option_rows(path: str) -> list[dict]:
    cmd = _command(path)
    ctx = click.Context(cmd, info_name=path.split()[-1], **cmd.context_settings)
    rows = []
    for p in cmd.get_params(ctx):
        if p.name == "_click_default_help":
            continue
        usage, help_text = p.get_help_record(ctx) or (None, None)
        rows.append({"name": p.name, "opts": p.opts + p.secondary_opts, "default": repr(p.default),
                     "required": p.required, "usage": usage, "help": help_text})
    return rows


@pytest.mark.parametrize("path", sorted(BEFORE))
def test_options_are_the_same_as_before_the_groups(path):
    assert [(r["opts"], r["default"]) for r in _option_rows(path)] == [(r["opts"], r["default"]) for r in BEFORE[path]]
    assert _option_rows(path) == BEFORE[path]


def test_the_snapshot_holds_the_names_and_defaults_users_rely_on():
    deploy = {r["opts"][0]: r["default"] for r in BEFORE["deploy"]}
    assert deploy["--precision"] == "'int8,fp16,fp32'" and deploy["--gate-alpha"] == "0.05"
    assert deploy["--min-agreement"] == "90.0" and deploy["--field-suite"] == "'full'"
    assert [r["opts"][0] for r in BEFORE["fleet publish"]][7:] == [
        "--bundle", "--url", "--ring", "--sign-key", "--version", "--rollback", "--store", "--json"]


class Stop(Exception):
    """Raised by the stand-in library call once it has recorded its arguments."""


def _record(monkeypatch, target: str, seen: dict):
    module, name = target.rsplit(".", 1)

    def stand_in(*args, **kwargs):
        seen["args"], seen["kwargs"] = args, kwargs
        raise Stop

    monkeypatch.setattr(f"{module}.{name}", stand_in)


def _invoke(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_error(res, code: int, text: str) -> None:
    assert res.exit_code == code, res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error")]
    assert errors == [f"Error: {text}"], res.stderr
    assert "Traceback" not in res.output


# ------------------------------------------------------------------ deploy
DEPLOY = ["deploy", "--checkpoint", "run/best.safetensors", "--out", "bundle", "--calib-data", "calib",
          "--eval-data", "eval"]


def test_deploy_receives_one_deploy_config(monkeypatch):
    from clca_edge.core.gate_stats import GateRule
    from clca_edge.deploy.calibration import CalibrationConfig

    seen = {}
    _record(monkeypatch, "clca_edge.deploy.pipeline.run_deploy", seen)
    res = _invoke(DEPLOY + ["--target", "cpu", "--precision", "int8, int8,fp16", "--max-drop", "2", "--gate-alpha",
                            "0.01", "--min-agreement", "95", "--calib-images", "32", "--calib-method", "entropy",
                            "--seed", "7", "--workspace-mb", "64", "--tar", "--force", "--no-engines", "--sign-key",
                            "k.key", "--field-suite", "quick", "--max-field-drop", "5"])
    assert isinstance(res.exception, Stop), res.output
    (config,) = seen["args"]
    assert (config.checkpoint, config.out, config.calib_data, config.eval_data) == (
        Path("run/best.safetensors"), Path("bundle"), Path("calib"), Path("eval"))
    assert config.target == "cpu" and config.precisions == ("int8", "fp16", "fp32")
    assert config.gate == GateRule(alpha=0.01, min_agreement=95.0, max_drop=2.0)
    assert config.calibration == CalibrationConfig(num_images=32, method="entropy", seed=7, at_most=False)
    assert (config.workspace_mb, config.tar, config.force, config.build_engines) == (64, True, True, False)
    assert (config.sign_key, config.field_suite, config.max_field_drop) == (Path("k.key"), "quick", 5.0)


def test_deploy_defaults_make_the_default_deploy_config(monkeypatch):
    from clca_edge.deploy.calibration import DEFAULT_CALIB_IMAGES, CalibrationConfig
    from clca_edge.deploy.config import DeployConfig

    seen = {}
    _record(monkeypatch, "clca_edge.deploy.pipeline.run_deploy", seen)
    assert isinstance(_invoke(DEPLOY).exception, Stop)
    (config,) = seen["args"]
    # No --calib-images: the default count is an upper bound, not a demand.
    assert config == DeployConfig(checkpoint=Path("run/best.safetensors"), out=Path("bundle"), calib_data=Path("calib"),
                                  eval_data=Path("eval"), calibration=CalibrationConfig(DEFAULT_CALIB_IMAGES,
                                                                                        at_most=True))


@pytest.mark.parametrize("extra,code,message", [
    (["--precision", "int4"], 2, "--precision 'int4,fp32': each must be one of int8, fp16, fp32"),
    (["--field-suite", "off", "--max-field-drop", "3"], 2, "--max-field-drop needs the field suite; drop --field-suite off"),
])
def test_deploy_bad_values_are_one_line_errors(monkeypatch, extra, code, message):
    seen = {}
    _record(monkeypatch, "clca_edge.deploy.pipeline.run_deploy", seen)
    _one_line_error(_invoke(DEPLOY + extra), code, message)
    assert seen == {}   # refused before anything ran


def test_deploy_out_of_range_gate_is_clicks_error():
    res = _invoke(DEPLOY + ["--gate-alpha", "1"])
    assert res.exit_code == 2 and "Invalid value for '--gate-alpha'" in res.stderr


# ------------------------------------------------------------------ build-engine
def test_build_engine_receives_one_build_engine_config(monkeypatch, tmp_path):
    from clca_edge.engines.build import BuildEngineConfig

    seen = {}
    _record(monkeypatch, "clca_edge.engines.build.build_engines", seen)
    res = _invoke(["build-engine", "--bundle", "b.tar", "--precision", "int8", "--workspace-mb", "64", "--eval-data",
                   "eval", "--max-drop", "1.5", "--builder", "torch-tensorrt", "--checkpoint", "c.safetensors",
                   "--cache-dir", tmp_path, "--json"])
    assert isinstance(res.exception, Stop), res.output
    assert seen["args"] == (BuildEngineConfig(bundle=Path("b.tar"), precision="int8", workspace_mb=64,
                                              eval_data=Path("eval"), max_drop=1.5, builder="torch-tensorrt",
                                              checkpoint=Path("c.safetensors"), cache_dir=tmp_path),)


def test_build_engine_unreadable_trusted_keys_is_a_one_line_trust_error(monkeypatch, tmp_path):
    seen = {}
    _record(monkeypatch, "clca_edge.engines.build.build_engines", seen)
    res = _invoke(["build-engine", "--bundle", "b.tar", "--trusted-keys", tmp_path / "none", "--json"])
    assert res.exit_code == 15 and res.stdout == "" and seen == {}
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and f"trusted keys {tmp_path / 'none'} does not exist" in errors[0], res.stderr


# ------------------------------------------------------------------ fleet publish
def test_publish_receives_a_release_and_the_centres_key(monkeypatch, tmp_path):
    from clca_edge.centre.rollout import Release

    tar, key = tmp_path / "b.tar", tmp_path / "clca-edge.key"
    tar.write_bytes(b"not read: the stand-in stops first")
    key.write_bytes(b"")
    seen = {}
    _record(monkeypatch, "clca_edge.centre.rollout.publish", seen)
    res = _invoke(["fleet", "publish", "--broker", "mqtt://127.0.0.1:1", "--topic-prefix", "farm", "--bundle", tar,
                   "--url", "https://x/b.tar", "--ring", "canary", "--sign-key", key, "--version", "3", "--rollback",
                   "--json"])
    assert isinstance(res.exception, Stop), res.output
    centre, release = seen["args"]
    assert release == Release(bundle=tar, url="https://x/b.tar", ring="canary", version=3, rollback=True)
    assert (centre.sign_key, centre.topic_prefix, centre.broker.url) == (key, "farm", "mqtt://127.0.0.1:1")


def test_publish_bad_values(tmp_path):
    from clca_edge.centre.rollout import Release
    from clca_edge.core.errors import ConfigError

    tar = tmp_path / "b.tar"
    tar.write_bytes(b"x")
    base = ["fleet", "publish", "--broker", "mqtt://127.0.0.1:1", "--bundle", tar, "--url", "https://x/b.tar",
            "--ring", "canary"]
    res = _invoke(base + ["--sign-key", tmp_path / "missing.key"])
    assert res.exit_code == 2 and "Invalid value for '--sign-key'" in res.stderr
    res = _invoke(base + ["--sign-key", tar, "--version", "0"])
    assert res.exit_code == 2 and "Invalid value for '--version'" in res.stderr
    with pytest.raises(ConfigError, match="--version 0 must be >= 1"):
        Release(bundle=tar, url="https://x/b.tar", ring="canary", version=0)


# ------------------------------------------------------------------ benchmark
def test_benchmark_receives_a_sweep_config(monkeypatch, tmp_path):
    from clca_edge.benchmark.config import SweepConfig

    seen, accuracy = {}, {}
    _record(monkeypatch, "clca_edge.benchmark.sweep.run_sweep", seen)
    monkeypatch.setattr("clca_edge.benchmark.accuracy.accuracy_fn",
                        lambda cfg, runs, **kw: accuracy.update(kw) or (lambda *a: None))
    res = _invoke(["benchmark", "--model", "vit_tiny_patch16_224", "--model-kwargs", "depth=2", "--img-size", "64",
                   "--num-classes", "5", "--methods", "evit,tome", "--keep-rates", "0.5,1", "--clca", "both",
                   "--backends", "torch,ort", "--batch-size", "2", "--repeats", "4", "--warmup", "1", "--threads", "1",
                   "--data", tmp_path, "--train-epochs", "1", "--pretrained", "hub", "--lr", "0.01", "--no-isolate"])
    assert isinstance(res.exception, Stop), res.output
    assert seen["args"] == (SweepConfig(backbone="vit_tiny_patch16_224", img_size=64, num_classes=5,
                                        methods=("evit", "tome"), keep_rates=(0.5, 1.0), clca=(False, True),
                                        backends=("torch", "ort"), batch_size=2, warmup=1, repeats=4, device="cpu",
                                        backbone_kwargs={"depth": 2}, threads=1, isolate=False, data=str(tmp_path),
                                        train_epochs=1),)
    assert accuracy == {"pretrained": "hub", "lr": 0.01}   # passed through to the accuracy runs


@pytest.mark.parametrize("extra,message", [
    (["--methods", "nope"], "method 'nope' is unknown; choose from "),
    (["--train-epochs", "2"], "--train-epochs needs --data"),
])
def test_benchmark_bad_values_are_one_line_errors(monkeypatch, extra, message):
    seen = {}
    _record(monkeypatch, "clca_edge.benchmark.sweep.run_sweep", seen)
    res = _invoke(["benchmark"] + extra)
    assert res.exit_code == 2 and seen == {}
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and errors[0].startswith(f"Error: {message}"), res.stderr


# ------------------------------------------------------------------ eval and data synth
def test_eval_receives_an_eval_config(monkeypatch):
    from clca_edge.training.evaluate import EvalConfig

    seen = {}
    _record(monkeypatch, "clca_edge.training.evaluate.evaluate_checkpoint", seen)
    res = _invoke(["eval", "--checkpoint", "run", "--data", "d", "--split", "test", "--image-root", "imgs", "--out", "o",
                   "--batch-size", "3", "--workers", "0", "--device", "cpu", "--json", "--cache-dir", "c"])
    assert isinstance(res.exception, Stop), res.output
    assert seen["args"] == (EvalConfig(checkpoint="run", data="d", split="test", image_root="imgs", out="o",
                                       batch_size=3, workers=0, device="cpu", cache_dir="c"),)


def test_eval_missing_checkpoint_is_one_json_free_error(tmp_path):
    res = _invoke(["eval", "--checkpoint", tmp_path / "none.safetensors", "--json"])
    assert res.exit_code == 12 and res.stdout == ""
    assert len([line for line in res.stderr.splitlines() if line.startswith("Error: ")]) == 1, res.stderr


def test_synth_receives_a_synth_config_and_writes_it(tmp_path):
    out = tmp_path / "leaves"
    res = _invoke(["data", "synth", "--out", out, "--classes", "3", "--per-class", "4", "--size", "32", "--seed", "3",
                   "--val-fraction", "0.5", "--format", "jpg", "--no-tint"])
    assert res.exit_code == 0, res.output
    for split in ("train", "val"):
        classes = sorted(p for p in (out / split).iterdir() if p.is_dir())
        assert len(classes) == 3
        assert all(len(list(c.glob("*.jpg"))) == 2 for c in classes), split
    assert "wrote 6 train + 6 val images of 3 classes" in res.stdout


def test_synth_hands_every_option_to_its_config(monkeypatch, tmp_path):
    from clca_edge.data.synth import SynthConfig

    seen = {}
    _record(monkeypatch, "clca_edge.data.synth.write_synthetic_dataset", seen)
    res = _invoke(["data", "synth", "--out", tmp_path, "--classes", "5", "--per-class", "6", "--size", "40", "--seed",
                   "9", "--val-fraction", "0.3", "--format", "jpg", "--no-tint", "--force"])
    assert isinstance(res.exception, Stop), res.output
    assert seen["args"] == (str(tmp_path), SynthConfig(5, 6, 40, 9, 0.3, "jpg", False), True)


def test_synth_bad_value_is_clicks_error(tmp_path):
    res = _invoke(["data", "synth", "--out", tmp_path / "x", "--classes", "1"])
    assert res.exit_code == 2 and "Invalid value for '--classes'" in res.stderr


# ------------------------------------------------------------------ OptionGroup itself
def _probe_command():
    inner = OptionGroup("pair", [click.option("--a", type=int, default=1), click.option("--b", type=int, default=2)],
                        lambda a, b: (a, b))
    outer = OptionGroup("whole", [click.option("--x", default="x"), inner, click.option("--flag", is_flag=True)],
                        lambda x, pair: {"x": x, "pair": pair}, passes=("flag",))

    @click.command()
    @outer
    def cmd(whole, flag):
        click.echo(json.dumps({"whole": whole, "flag": flag}))

    return cmd


def test_a_group_builds_the_groups_inside_it_first_and_passes_through_what_it_is_told():
    cmd = _probe_command()
    assert [p.name for p in cmd.params] == ["x", "a", "b", "flag"]   # declared order, for --help
    res = CliRunner().invoke(cmd, ["--a", "5", "--flag"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"whole": {"x": "x", "pair": [5, 2]}, "flag": True}


def test_a_pass_through_option_must_be_declared():
    with pytest.raises(ValueError, match="pass through but are not declared"):
        OptionGroup("g", [click.option("--x")], lambda x: x, passes=("y",))
