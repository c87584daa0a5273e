"""The mission end to end on the built-in synthetic leaves: data -> train -> eval -> deploy (cpu
bundle with INT8) -> capture on a video of held-out leaves, headless -> a fleet of two simulated
devices reporting to a local Mosquitto (when it is installed).

Each stage calls the library entry point its ``clca-edge`` command calls, with the settings that
command's options give, and prints that command first: the quick start is a transcript of what to
type on real data (a test holds each printed command to the library call made).
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

# Names this command creates under --out; a rerun replaces exactly these and nothing else.
OWNED = ("data", "run", "bundle", "capture", "heldout.avi", "fleet", "summary.json")
# Written first into --out: a folder without it (or an earlier run's summary.json) is not ours to clear.
MARKER = ".clca-edge-quickstart"


def _check_out(out: Path) -> None:
    """A rerun deletes OWNED names under --out: only in a folder a quickstart made (or an empty/new one)."""
    from .core.errors import OutputError
    from .core.output_paths import is_empty_dir, refuse_enclosing

    refuse_enclosing(out, "--out")
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} exists and is a file; choose a new folder")
    if not out.is_dir() or is_empty_dir(out):
        return
    names = {p.name for p in out.iterdir()}
    if (out / MARKER).is_file() or ("summary.json" in names and names <= set(OWNED)):
        return
    raise OutputError(f"--out {out} is not empty and was not made by `clca-edge quickstart`; a quickstart replaces "
                      f"{', '.join(OWNED)} in its folder, so give a new or empty one")


@dataclass(frozen=True)
class QuickstartConfig:
    """The model fields are the model options' (``--model --model-kwargs --method --keep-rate
    --locations --img-size --clca``, as typed); ``img_size`` is also the synthetic images' side."""

    out: Path = Path("runs/quickstart")
    classes: int = 6
    per_class: int = 60
    epochs: int = 15
    model: str = "vit_tiny_patch16_224"
    model_kwargs: str = "depth=4,embed_dim=64,num_heads=2"
    method: str = "evit"
    keep_rate: str = "0.25"
    locations: Optional[str] = None
    img_size: int = 64
    clca: bool = True
    seed: int = 0


@dataclass
class QuickstartResult:
    out: Path
    val_top1: float = 0.0
    variants: dict[str, dict] = field(default_factory=dict)
    default_variant: str = ""
    capture: dict = field(default_factory=dict)
    capture_accuracy: float = 0.0
    # fp32 vs INT8 p50 on ONNX Runtime CPU as the runtime measured them here (capture's start).
    cpu_latency: dict = field(default_factory=dict)
    fleet: dict = field(default_factory=dict)   # the fleet stage (centre/simulate.py), {} when skipped
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class Stage:
    """One step: ``run()`` does it through the library and returns a line saying what it did;
    ``argv`` is the ``clca-edge`` command that does the same (empty: there is none)."""

    name: str
    argv: list[str]
    run: Callable[[], str]


@contextmanager
def _status(console, label: str) -> Iterator[Callable[[str], None]]:
    """A spinner on ``console`` that progress messages update (nothing without a console)."""
    if console is None:
        yield lambda msg: None
        return
    with console.status(label) as status:
        yield lambda msg: status.update(f"{label}: {msg}")


def stages(cfg: QuickstartConfig, say: Callable[[str], None] = print,
           console=None) -> tuple[list[Stage], list[tuple[Path, str]], dict]:
    """The quick start's stages, in order (each one's outputs are the next one's inputs), the list
    the video stage fills with the held-out (image, true class) pairs it writes, in order, and the
    dict the fleet stage fills with its figures."""
    o = cfg.out
    model_argv = ["--model", cfg.model, "--model-kwargs", cfg.model_kwargs, "--method", cfg.method,
                  "--keep-rate", str(cfg.keep_rate), *(["--locations", cfg.locations] if cfg.locations else []),
                  "--img-size", str(cfg.img_size), "--clca" if cfg.clca else "--no-clca"]
    heldout: list[tuple[Path, str]] = []
    fleet_result: dict = {}

    def data() -> str:
        from .data.synth import SynthConfig, write_synthetic_dataset

        s = write_synthetic_dataset(str(o / "data"), SynthConfig(classes=cfg.classes, per_class=cfg.per_class,
                                                                  size=cfg.img_size, seed=cfg.seed))
        return (f"wrote {s.train_images} train + {s.val_images} val images of {len(s.class_names)} classes "
                f"to {s.root}")

    def train() -> str:
        from .data.sources import DataConfig
        from .models.config import ModelConfig
        from .training.config import OptimConfig, TrainConfig
        from .training.trainer import train as run_training

        model = ModelConfig.from_options(model=cfg.model, model_kwargs=cfg.model_kwargs, method=cfg.method,
                                         keep_rate=cfg.keep_rate, locations=cfg.locations, img_size=cfg.img_size,
                                         clca=cfg.clca)
        # train's own defaults (augmentation, consistency, colour constancy, framing): what a user
        # gets on their own photos with the command as printed
        config = TrainConfig(data=DataConfig(root=str(o / "data")), model=model, out=str(o / "run"),
                             optim=OptimConfig(epochs=cfg.epochs, batch_size=32, lr=1e-3), pretrained="none",
                             seed=cfg.seed, workers=0)
        result = run_training(config, console=console)
        for note in result.notices:
            say(f"Warning: {note}")
        return f"best val top-1 {result.best_top1:.2f}% at epoch {result.best_epoch}; checkpoints in {result.out}"

    def evaluate() -> str:
        from .training.evaluate import EvalConfig, evaluate_checkpoint

        report, folder = evaluate_checkpoint(EvalConfig(checkpoint=str(o / "run"), data=str(o / "data")))
        return (f"top-1 {report.top1:.2f}%  top-5 {report.top5:.2f}%  images {report.num_images}  "
                f"skipped {len(report.skipped)}; confusion matrix and per-class accuracy in {folder}")

    def deploy() -> str:
        from .deploy.calibration import CalibrationConfig
        from .deploy.pipeline import DeployConfig, run_deploy

        config = DeployConfig(checkpoint=o / "run", out=o / "bundle", calib_data=o / "data" / "train",
                              eval_data=o / "data" / "val", target="cpu", precisions=("int8", "fp16", "fp32"),
                              calibration=CalibrationConfig(num_images=120))
        with _status(console, "deploying") as progress:
            report = run_deploy(config, progress=progress)
        variants = ", ".join(f"{v.name} {'' if v.top1 is None else f'{v.top1:.1f}% '}{v.status}"
                             for v in report.variants)
        return f"bundle {report.bundle}: {variants}; default variant {report.default_variant}"

    def video() -> str:
        from .core.image_files import scan_class_images
        from .data.video import write_video

        heldout[:] = [(p, label) for label, paths in scan_class_images(o / "data" / "val").items() for p in paths]
        n = write_video([p for p, _ in heldout], o / "heldout.avi", fps=10, size=cfg.img_size)
        return f"[video] {n} held-out leaves -> {o / 'heldout.avi'}"

    def capture() -> str:
        log_file = o / "capture" / "log.jsonl"
        summary = _capture_heldout(o, log_file, say)
        return (f"capture: {summary.frames} frames at {summary.fps:.1f} fps on {summary.backend} "
                f"({summary.precision}) -> {log_file}")

    def fleet() -> str:
        from .centre.local_broker import have_mosquitto
        from .centre.simulate import simulate_fleet

        if not have_mosquitto():
            return "[fleet] skipped: mosquitto is not installed (scripts/setup_env.sh installs it)"
        sim = simulate_fleet(o / "fleet", lambda log, observers: _capture_heldout(o, log, say, observers))
        fleet_result.update(sim.to_dict())
        devices = ", ".join(f"{d} {n}" for d, n in sorted(sim.decisions_at_centre.items()))
        return (f"[fleet] two devices captured the held-out video, the second with the broker stopped (it sent "
                f"{sum(sim.synced.values())} records with `fleet sync` afterwards); decisions at the centre: {devices}"
                f" ({'each once' if sim.every_decision_once else 'NOT each once'}); see "
                f"`clca-edge fleet status --store {sim.store}`")

    return [
        Stage("data", ["data", "synth", "--out", str(o / "data"), "--classes", str(cfg.classes), "--per-class",
                       str(cfg.per_class), "--size", str(cfg.img_size), "--seed", str(cfg.seed)], data),
        Stage("train", ["train", "--data", str(o / "data"), *model_argv, "--pretrained", "none", "--epochs",
                        str(cfg.epochs), "--batch-size", "32", "--lr", "1e-3", "--workers", "0",
                        "--seed", str(cfg.seed), "--out", str(o / "run")], train),
        Stage("eval", ["eval", "--checkpoint", str(o / "run"), "--data", str(o / "data")], evaluate),
        Stage("deploy", ["deploy", "--checkpoint", str(o / "run"), "--target", "cpu", "--out", str(o / "bundle"),
                         "--calib-data", str(o / "data" / "train"), "--eval-data", str(o / "data" / "val"),
                         "--calib-images", "120", "--precision", "int8,fp16,fp32"], deploy),
        Stage("video", [], video),  # from the held-out images (no command for it)
        Stage("capture", ["capture", "--bundle", str(o / "bundle"), "--source", str(o / "heldout.avi"),
                          "--run-dir", str(o / "capture"), "--log", str(o / "capture" / "log.jsonl"), "--no-live"],
              capture),
        Stage("fleet", [], fleet),  # several commands (capture --fleet, fleet sync, fleet status): said in its line
    ], heldout, fleet_result


def run_quickstart(cfg: QuickstartConfig, say: Callable[[str], None] = print, console=None) -> QuickstartResult:
    """Every stage in order (``say`` gets each command and its one-line result; ``console``, a
    rich Console, shows training progress and a deploy spinner), then summary.json."""
    _check_out(cfg.out)
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / MARKER).write_text("written by clca-edge quickstart; a rerun replaces " + ", ".join(OWNED) + "\n")
    for name in OWNED:
        target = cfg.out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    res = QuickstartResult(out=cfg.out)
    todo, heldout, fleet_result = stages(cfg, say, console)
    for stage in todo:
        t0 = time.perf_counter()
        if stage.argv:
            say(f"$ clca-edge {shlex.join(stage.argv)}")
        say(stage.run())
        res.seconds[stage.name] = round(time.perf_counter() - t0, 1)
    _collect(res, cfg, heldout)
    res.fleet = fleet_result
    (cfg.out / "summary.json").write_text(json.dumps(summary_dict(res), indent=1))
    return res


def _capture_heldout(o: Path, log_file: Path, say: Callable[[str], None], observers: tuple = ()):
    """``capture`` on the held-out video into ``log_file`` (with ``observers``); its summary."""
    from .capture.fieldlog import open_log
    from .capture.frames import FrameSaveConfig, FrameSaver
    from .capture.bundle_runtime import BundleRuntime
    from .capture.config import CaptureConfig
    from .capture.loop import run_capture
    from .capture.stop import StopRequest, stop_on_signals
    from .capture.sources import make_source, parse_source
    from .runtime.backends import select_classifier
    from .runtime.model import load_model

    config = CaptureConfig()
    source = parse_source(str(o / "heldout.avi"), timeout_s=config.reconnect.lost_after_s)
    model = load_model(str(o / "bundle"))
    sel = select_classifier(model.files)
    for fb in sel.fallbacks:
        say(f"FALLBACK: {fb.backend} unavailable ({fb.reason})")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    stop = StopRequest()
    try:
        with stop_on_signals(stop), open_log(log_file, "jsonl") as flog:
            saver = FrameSaver(log_file.parent / "frames", FrameSaveConfig())  # saves none: nothing on disk
            return run_capture(BundleRuntime.create(model, sel, config.quality), make_source(source), flog, config,
                               saver, stop, observers)
    finally:
        sel.classifier.close()


def _collect(res: QuickstartResult, cfg: QuickstartConfig, heldout: list[tuple[Path, str]]) -> None:
    from .training.checkpoint import find_checkpoint, read_checkpoint_meta

    meta = read_checkpoint_meta(find_checkpoint(cfg.out / "run"))
    res.val_top1 = float(meta.metrics["val_top1"])
    from .bundle import read_manifest

    manifest = read_manifest(cfg.out / "bundle")
    res.default_variant = manifest.default_variant or ""
    for name, v in manifest.variants.items():
        res.variants[name] = {"status": v.status.value, "top1": v.accuracy.top1 if v.accuracy else None,
                              "drop": v.drop}
    decisions, summary = [], {}
    from .capture.fieldlog import read_log

    for rec in read_log(cfg.out / "capture" / "log.jsonl"):
        if rec.get("type") == "decision":
            decisions.append(rec)
        elif rec.get("type") == "summary":
            summary = rec
    res.capture = {k: summary.get(k) for k in ("frames", "fps", "backend", "precision", "uncertain", "dropped")}
    truth = [label for _, label in heldout]
    hits = sum(1 for d in decisions if d["source_frame"] < len(truth) and d["raw_class"] == truth[d["source_frame"]])
    res.capture_accuracy = round(100.0 * hits / max(1, len(decisions)), 2)
    res.cpu_latency = _cpu_latency(cfg.out / "bundle")


def _cpu_latency(bundle: Path) -> dict:
    """fp32 and INT8 p50 per image on ONNX Runtime CPU, from the runtime's own latency probe: the
    figures ``capture --precision auto`` chose by (cached at its start, so nothing is re-timed)."""
    from .bundle.int8 import int8_isa
    from .runtime.backends import open_backend
    from .runtime.model import load_model

    model = load_model(bundle)
    out: dict = {"cpu": int8_isa()}
    for prec in ("fp32", "int8"):
        if prec not in model.files.files_for("ort-cpu"):
            continue
        clf = open_backend(model.files, "ort-cpu", prec)
        try:
            out[f"{prec}_p50_ms"] = round(model.files.latency.measure(clf)[0], 3)
        finally:
            clf.close()
    return out


def summary_dict(res: QuickstartResult) -> dict:
    return {
        "out": str(res.out), "val_top1": res.val_top1, "variants": res.variants,
        "default_variant": res.default_variant, "capture": res.capture,
        "capture_accuracy_vs_labels": res.capture_accuracy, "cpu_latency": res.cpu_latency, "fleet": res.fleet,
        "seconds": res.seconds,
        "outputs": {"data": str(res.out / "data"), "checkpoint": str(res.out / "run" / "best.safetensors"),
                    "bundle": str(res.out / "bundle"), "video": str(res.out / "heldout.avi"),
                    "field_log": str(res.out / "capture" / "log.jsonl")},
    }


def render_summary(res: QuickstartResult, console) -> None:
    from rich.table import Table

    d = summary_dict(res)
    t = Table(title="clca-edge quick start: the mission on synthetic leaves", show_header=False)
    t.add_column("what")
    t.add_column("result")
    t.add_row("val top-1 (PyTorch, best epoch)", f"{res.val_top1:.1f}%")
    for name, v in sorted(res.variants.items()):
        top1 = "" if v["top1"] is None else f"{v['top1']:.1f}%"
        drop = "" if v["drop"] is None else f", drop {v['drop']:.2f}"
        t.add_row(f"bundle variant {name}", f"{top1}{drop} — {v['status']}" + (" (default)" if name == res.default_variant else ""))
    c = res.capture
    t.add_row("capture", f"{c.get('frames')} frames at {c.get('fps') or 0:.0f} fps on {c.get('backend')} ({c.get('precision')})")
    t.add_row("capture decisions vs true labels", f"{res.capture_accuracy:.1f}%")
    lat = res.cpu_latency
    if "fp32_p50_ms" in lat and "int8_p50_ms" in lat:
        f, i = lat["fp32_p50_ms"], lat["int8_p50_ms"]
        verdict = f"INT8 {f / i:.1f}x faster" if i < f else "INT8 not faster: auto runs fp32"
        t.add_row("INT8 vs fp32 latency (ONNX Runtime CPU, p50/image)",
                  f"int8 {i:.3f} ms vs fp32 {f:.3f} ms — {verdict} ({lat['cpu']})")
    if res.fleet:
        once = "each once" if res.fleet["every_decision_once"] else "NOT each once"
        t.add_row("fleet (2 devices, broker stopped for one)",
                  ", ".join(f"{k} {v}" for k, v in sorted(res.fleet["decisions_at_centre"].items()))
                  + f" decisions at the centre, {once}")
    for k, v in d["outputs"].items():
        t.add_row(k, v)
    t.add_row("time (s)", ", ".join(f"{k} {v}" for k, v in res.seconds.items()))
    console.print(t)
