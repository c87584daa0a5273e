"""The mission end to end on the built-in synthetic leaves: data -> train -> eval -> deploy (cpu
bundle with INT8) -> capture on a video of held-out leaves, headless.

Each stage runs the real ``clca-edge`` command, in-process, with the arguments it prints, so the
quick start is also a transcript of what to type on real data.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .core.errors import ClcaEdgeError

# Names this command creates under --out; a rerun replaces exactly these and nothing else.
OWNED = ("data", "run", "bundle", "capture", "heldout.avi", "summary.json")
# Written first into --out: a folder without it (or an earlier run's summary.json) is not ours to clear.
MARKER = ".clca-edge-quickstart"


def _check_out(out: Path) -> None:
    """A rerun deletes OWNED names under --out: only in a folder a quickstart made (or an empty/new one)."""
    from .core.errors import OutputError
    from .core.outputs import is_empty_dir, refuse_enclosing

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


class StageFailed(ClcaEdgeError):
    exit_code = 1


@dataclass(frozen=True)
class QuickstartConfig:
    out: Path = Path("runs/quickstart")
    classes: int = 6
    per_class: int = 60
    img_size: int = 64
    epochs: int = 15
    method: str = "evit"
    keep_rate: float = 0.25
    backbone: str = "vit_tiny_patch16_224"
    backbone_kwargs: str = "depth=4,embed_dim=64,num_heads=2"
    seed: int = 0


@dataclass
class QuickstartResult:
    out: Path
    val_top1: float = 0.0
    variants: dict[str, dict] = field(default_factory=dict)
    default_variant: str = ""
    capture: dict = field(default_factory=dict)
    capture_accuracy: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)


def _stages(cfg: QuickstartConfig) -> list[tuple[str, list[str]]]:
    o = cfg.out
    return [
        ("data", ["data", "synth", "--out", str(o / "data"), "--classes", str(cfg.classes), "--per-class",
                  str(cfg.per_class), "--size", str(cfg.img_size), "--seed", str(cfg.seed)]),
        ("train", ["train", "--data", str(o / "data"), "--model", cfg.backbone, "--model-kwargs", cfg.backbone_kwargs,
                   "--img-size", str(cfg.img_size), "--method", cfg.method, "--keep-rate", str(cfg.keep_rate),
                   "--pretrained", "none", "--epochs", str(cfg.epochs), "--batch-size", "32", "--lr", "1e-3",
                   "--workers", "0", "--seed", str(cfg.seed), "--out", str(o / "run")]),
        ("eval", ["eval", "--checkpoint", str(o / "run"), "--data", str(o / "data")]),
        ("deploy", ["deploy", "--checkpoint", str(o / "run"), "--target", "cpu", "--out", str(o / "bundle"),
                    "--calib-data", str(o / "data" / "train"), "--eval-data", str(o / "data" / "val"),
                    "--calib-images", "120", "--precision", "int8,fp16,fp32"]),
        ("video", []),  # made in-process from the held-out images (no command for it)
        ("capture", ["capture", "--bundle", str(o / "bundle"), "--source", str(o / "heldout.avi"),
                     "--run-dir", str(o / "capture"), "--log", str(o / "capture" / "log.jsonl"), "--no-live"]),
    ]


def _run_cli(args: list[str]) -> None:
    from .cli import main

    try:
        main.main(args=args, prog_name="clca-edge", standalone_mode=False)
    except SystemExit as e:
        if e.code not in (0, None):
            raise StageFailed(f"`clca-edge {args[0]}` exited with {e.code}") from None


def _heldout_images(data: Path) -> list[tuple[Path, str]]:
    from .core.files import scan_class_images

    return [(p, label) for label, paths in scan_class_images(data / "val").items() for p in paths]


def run_quickstart(cfg: QuickstartConfig, say: Callable[[str], None] = print) -> QuickstartResult:
    from .data.video import write_video

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
    heldout: list[tuple[Path, str]] = []
    for stage, args in _stages(cfg):
        t0 = time.perf_counter()
        if stage == "video":
            heldout = _heldout_images(cfg.out / "data")
            n = write_video([p for p, _ in heldout], cfg.out / "heldout.avi", fps=10, size=cfg.img_size)
            say(f"[video] {n} held-out leaves -> {cfg.out / 'heldout.avi'}")
        else:
            say(f"$ clca-edge {shlex.join(args)}")
            _run_cli(args)
        res.seconds[stage] = round(time.perf_counter() - t0, 1)
    _collect(res, cfg, heldout)
    (cfg.out / "summary.json").write_text(json.dumps(summary_dict(res), indent=1))
    return res


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


def summary_dict(res: QuickstartResult) -> dict:
    return {
        "out": str(res.out), "val_top1": res.val_top1, "variants": res.variants,
        "default_variant": res.default_variant, "capture": res.capture,
        "capture_accuracy_vs_labels": res.capture_accuracy, "seconds": res.seconds,
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
    for k, v in d["outputs"].items():
        t.add_row(k, v)
    t.add_row("time (s)", ", ".join(f"{k} {v}" for k, v in res.seconds.items()))
    console.print(t)
