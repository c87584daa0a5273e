"""The README's main job: the whole mission on synthetic leaves, end to end, from the CLI."""

import json
import os
import shutil

import pytest

from click.testing import CliRunner

from clca_edge.cli import main
from clca_edge.bundle import load_bundle


@pytest.mark.slow  # the whole mission: trains 15 epochs, deploys three variants, captures 90 frames (18-35 s)
def test_quickstart_runs_the_mission_and_reports_real_figures(tmp_path):
    out = tmp_path / "qs"
    res = CliRunner().invoke(main, ["quickstart", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary == json.loads((out / "summary.json").read_text())
    # 6 classes: chance is 16.7%; measured 85.6% at 15 epochs with train's defaults (93% with the
    # paper's weak recipe; 77-88% at 10 over seeds in test_train).
    assert summary["val_top1"] >= 50.0
    assert set(summary["variants"]) == {"fp32", "fp16", "int8"}
    assert all(v["status"] in ("passed", "rejected") and v["top1"] is not None for v in summary["variants"].values())
    bundle = load_bundle(out / "bundle")  # every hash verified
    assert summary["default_variant"] in summary["variants"]
    assert summary["capture"]["frames"] == len(list((out / "data" / "val").glob("*/*"))) == 90
    assert summary["capture"]["backend"] == "ort-cpu" and summary["capture"]["fps"] > 0
    assert summary["capture_accuracy_vs_labels"] >= 50.0
    assert sorted(bundle.labels) == sorted(p.name for p in (out / "data" / "val").iterdir())
    # INT8 vs fp32 on ONNX Runtime CPU, as the runtime timed them for capture's --precision auto
    # (INT8 only when the gate passed it: with train's defaults it lost one of the 90 images, 1.11
    # points against --max-drop 1, and was rejected; a gate with statistics is issue 21's).
    lat = summary["cpu_latency"]
    int8 = summary["variants"]["int8"]
    assert lat["fp32_p50_ms"] > 0 and lat["cpu"]
    # The statistical gate: one or two images lost of 90 is noise; 90 images show 5 or more (5.6 points).
    assert int8["status"] == "passed" and int8["drop"] < 100 * 5 / 90 and lat["int8_p50_ms"] > 0
    # The fleet stage: two devices, the broker stopped during the second's capture, every decision once.
    if shutil.which("mosquitto") or os.access("/usr/sbin/mosquitto", os.X_OK):
        fleet = summary["fleet"]
        assert fleet["every_decision_once"] and set(fleet["decisions_at_centre"].values()) == {90}
        assert fleet["pending_after_capture"]["field-b"] > 0 and fleet["synced"]["field-b"] > 0
    # A rerun replaces its own outputs and leaves anything else in the folder alone.
    (out / "keep.txt").write_text("mine")
    res2 = CliRunner().invoke(main, ["quickstart", "--out", str(out), "--epochs", "2"])
    assert res2.exit_code == 0, res2.output
    assert (out / "keep.txt").read_text() == "mine"
    assert json.loads((out / "summary.json").read_text())["seconds"]["train"] > 0


# The library entry point each stage reaches, and which of its arguments say what is done
# (progress callbacks, consoles and open objects are left out; capture's are reduced to settings).
ENTRY_POINTS = {
    "data": "clca_edge.data.synth.write_synthetic_dataset",
    "train": "clca_edge.training.trainer.train",
    "eval": "clca_edge.training.evaluate.evaluate_checkpoint",
    "deploy": "clca_edge.deploy.pipeline.run_deploy",
    "capture": "clca_edge.capture.loop.run_capture",
}
NOT_SETTINGS = {"console", "progress", "step_hook", "on_record", "stop"}


class _Reached(Exception):
    pass


def _settings(stage, arguments):
    d = {k: v for k, v in arguments.items() if k not in NOT_SETTINGS}
    if stage == "capture":
        rt = d.pop("runtime")
        d["runtime"] = (rt.sha, rt.classifier.describe(), rt.describe_guard(), [c.summary() for c in rt.checks],
                        [f.to_dict() for f in rt.fallbacks])
        d["source"] = d["source"].cfg
        d["flog"] = str(d["flog"].path)
        d["saver"] = d["saver"].config
    return d


def test_each_stage_calls_the_library_as_its_printed_command_does(tmp_path, monkeypatch, bundle_dir):
    """The quick start runs library functions, not the CLI; each printed command, run through the
    CLI, reaches the same library function with the same settings."""
    import importlib
    import inspect
    import shutil

    from clca_edge.quickstart import QuickstartConfig, stages
    from support.runtime_bundle import leaf_images, write_video

    seen = []

    for stage, target in ENTRY_POINTS.items():
        module, name = target.rsplit(".", 1)
        mod = importlib.import_module(module)
        signature = inspect.signature(getattr(mod, name))

        def reached(*args, _stage=stage, _sig=signature, **kwargs):
            bound = _sig.bind(*args, **kwargs)
            bound.apply_defaults()
            seen.append((_stage, _settings(_stage, bound.arguments)))
            raise _Reached

        monkeypatch.setattr(mod, name, reached)

    out = tmp_path / "qs"
    todo, *_ = stages(QuickstartConfig(out=out, epochs=3, keep_rate="0.5", locations="1,3"), say=lambda msg: None)
    # What capture opens before it runs: a bundle and the video (the earlier stages are not run here).
    shutil.copytree(bundle_dir, out / "bundle")
    write_video(out / "heldout.avi", leaf_images(3, size=(64, 64)))
    for stage in todo:
        if not stage.argv:
            continue
        with pytest.raises(_Reached):
            stage.run()
        library = seen.pop()
        res = CliRunner().invoke(main, stage.argv)
        assert isinstance(res.exception, _Reached), (stage.argv, res.output)
        command = seen.pop()
        assert library == command, stage.name
        assert library[0] == stage.name
    assert [s.name for s in todo if s.argv] == list(ENTRY_POINTS)
