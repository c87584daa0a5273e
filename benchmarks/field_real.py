"""Train's defaults against the paper's recipe (and candidate recipes) on REAL leaf photos.

Trains the benchmark's tiny EViT r=0.25 + CLCA from scratch (benchmarks/robustness_weak_vs_field.py:
vit_tiny depth 4, dim 64, 2 heads, lr 1e-3, batch 32) on each data set (default the two real sets
in ../shared/data: blackgram and chilli; any ``--data`` tree of train/val/test class folders), once
per variant, seed and epoch budget, one training at a time, and scores the LAST epoch's weights on
the held-out TEST split: clean top-1 and the field suite (default severity 2 of each perturbation,
``robustness --suite quick``). Reports per data set and budget: clean, each condition, the worst
drop, the suite mean, the last epoch's train accuracy and the train time; means over seeds.

Results accumulate in OUT/results.json (a run already there is not trained again), so the budgets
can be run separately into one --out:

    python benchmarks/field_real.py --out runs/field_real --epochs 30 --seeds 0,1,2 --variants weak,defaults
    python benchmarks/field_real.py --out runs/field_real --epochs 150 --seeds 0 --data ../shared/data/blackgram
    python benchmarks/field_real.py --out runs/field_real --table-only

Variants are named in VARIANTS (``defaults`` is whatever ``clca-edge train`` does unless told);
``--variant NAME:key=value,...`` adds one (keys: TrainConfig's augment, colour_constancy, framing,
consistency).
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager
import json
import statistics
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from robustness_weak_vs_field import machine_meta, tiny_config, train_and_score  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
# The field preset's white balance before issue 24 (a per-channel gain of +-20%, no warm-cool axis).
BEFORE_WC = {"warm_cool": 0.0, "channel_gain": 0.2}


def _v(augment: str, colour: str, framing: str = "none", js: float = 0.0, ramp: float = 0.0,
       preset: Optional[dict] = None, mix: int = 0) -> dict:
    """A variant: TrainConfig fields, and the field preset's strengths it changes (``preset``)."""
    d = {"augment": augment, "colour_constancy": colour, "framing": framing, "consistency": js,
         "consistency_ramp": ramp, "consistency_mix": mix}
    return {**d, "preset": preset} if preset else d


# Each variant's TrainConfig fields; ``defaults`` sets none (train's own defaults). Rows of dropped
# variants whose code is gone (levels, exposure_half_cast and half_auto input normalisation, the
# clean-target KL) stay in the results: BENCHMARKS.md names the commit that ran them.
VARIANTS: dict[str, dict] = {
    "weak": _v("weak", "none"),  # the paper's recipe
    "defaults": {},
    # train's defaults before issue 24: the field preset fitted as labelled images, grey world, leaf framing
    "field-labels": _v("field", "grey_world", "leaf", preset=BEFORE_WC),
    "field-labels-plain": _v("field", "none", preset=BEFORE_WC),
    "weak-grey": _v("weak", "grey_world"),
    "weak-halfgrey": _v("weak", "half_grey_world"),
    "weak-exposure": _v("weak", "exposure"),
    "weak-leaf": _v("weak", "none", "leaf"),
    # consistency training (JS x12) with the field preset as it was
    "js": _v("field", "none", js=12.0, preset=BEFORE_WC),
    "js-grey": _v("field", "grey_world", js=12.0, preset=BEFORE_WC),
    "js-exposure": _v("field", "exposure", js=12.0, preset=BEFORE_WC),
    "js-leaf": _v("field", "none", "leaf", js=12.0, preset=BEFORE_WC),
    # ... with white balance along the warm-cool axis (a light's colour temperature) and a smaller tint
    "js-wc": _v("field", "none", js=12.0),
    "js-exposure-wc": _v("field", "exposure", js=12.0),
    "js-halfgrey-wc": _v("field", "half_grey_world", js=12.0),
    "js30-wc": _v("field", "none", js=30.0),
    "js30-exposure-wc": _v("field", "exposure", js=30.0),
    "js-halfgrey-wc-ramp": _v("field", "half_grey_world", js=12.0, ramp=0.5),
    # the defaults of issue 24 before AugMix mixing (its rows named ``defaults`` then are renamed to this)
    "js6-halfgrey-wc-ramp": _v("field", "half_grey_world", js=6.0, ramp=0.5),
    # issue 24's follow-up: the weight ramped in over the whole run instead of its first half
    "js6-halfgrey-wc-ramp1": _v("field", "half_grey_world", js=6.0, ramp=1.0),
    # ... AugMix: clean + 2 views, each the clean crop mixed with 3 field chains (AugMix's width, alpha 1)
    "js6-halfgrey-wc-ramp-augmix3": _v("field", "half_grey_world", js=6.0, ramp=0.5, mix=3),  # = defaults
    # ... without colour constancy (half grey world cost the paper's recipe 6.8 points at 150 epochs)
    "augmix3-none": _v("field", "none", js=6.0, ramp=0.5, mix=3),
    # issue 24's second follow-up: the suite's worst conditions are saturation and contrast, which the
    # AugMix blend dilutes; every chain gets the photometric step, reaching further down
    "augmix3-photo": _v("field", "half_grey_world", js=6.0, ramp=0.5, mix=3,
                        preset={"photometric_p": 1.0, "saturation": (0.15, 1.3), "contrast": (0.25, 1.25)}),
    # ... with full grey world instead of half (without mixing, JS x12, it had the smallest drops and cost clean)
    "augmix3-grey": _v("field", "grey_world", js=6.0, ramp=0.5, mix=3),
}
KEYS = ("augment", "colour_constancy", "framing", "consistency", "consistency_ramp", "consistency_mix")


@contextmanager
def field_strengths(overrides: dict):
    """The ``field`` preset with some strengths changed, while a candidate trains (its checkpoint
    records the strengths it was trained with)."""
    import dataclasses

    from clca_edge.data import augment

    today = augment.PRESETS["field"]
    augment.PRESETS["field"] = dataclasses.replace(today, **overrides)
    try:
        yield
    finally:
        augment.PRESETS["field"] = today


def parse_variant(text: str) -> tuple[str, dict]:
    """``NAME:key=value,...`` -> (NAME, TrainConfig fields)."""
    name, _, body = text.partition(":")
    fields = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        if key not in KEYS:
            raise SystemExit(f"--variant {text}: unknown key {key!r} (one of {', '.join(KEYS)})")
        fields[key] = (float(value) if key in ("consistency", "consistency_ramp")
                      else int(value) if key == "consistency_mix" else value)
    return name, fields


def _key(row: dict) -> tuple:
    return row["data"], row["epochs"], row["variant"], row["seed"]


def run(args, variants: dict[str, dict]) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    doc = json.loads(path.read_text()) if path.is_file() else {"rows": []}
    done = {_key(r) for r in doc["rows"]}
    for data in (Path(d) for d in args.data.split(",")):
        for epochs in (int(e) for e in args.epochs.split(",")):
            for name in args.variants.split(","):
                for seed in (int(s) for s in args.seeds.split(",")):
                    if (data.name, epochs, name, seed) in done:
                        continue
                    run_args = argparse.Namespace(**{**vars(args), "epochs": epochs})
                    fields = dict(variants[name])
                    strengths = fields.pop("preset", {})
                    cfg = tiny_config(data, out / data.name / f"e{epochs}" / f"{name}_s{seed}", run_args, seed,
                                      **fields)
                    with field_strengths(strengths):
                        row = train_and_score(cfg, data, split=args.split, suite=args.suite)
                    row.update(data=data.name, epochs=epochs, variant=name, augment=cfg.augment, preset=strengths,
                               consistency=cfg.consistency, consistency_ramp=cfg.consistency_ramp,
                               consistency_mix=cfg.consistency_mix)
                    doc["rows"].append(row)
                    doc["meta"] = machine_meta(args)
                    path.write_text(json.dumps(doc, indent=2))
                    print(f"{data.name} {epochs} ep {name} s{seed}: clean {row['clean']:.1f}, worst drop "
                          f"{row['worst_drop']:.1f} ({row['worst']}), mean {row['mean_top1']:.1f}, train acc "
                          f"{row['train_acc']}, {row['train_s']:.0f} s", file=sys.stderr, flush=True)
    return doc


def synthetic_frames(size: int, photo) -> dict:
    """Frames the guard must refuse: pure sensor noise (uniform, and Gaussian about mid grey as a
    capped camera at high gain gives), a black frame, and a held-out photo blurred to mush."""
    import numpy as np

    from clca_edge.core.imageops import gaussian_blur

    rng = np.random.default_rng(0)
    return {"noise_uniform": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
            "noise_gaussian": np.clip(rng.normal(128, 40, (size, size, 3)), 0, 255).astype(np.uint8),
            "black": np.zeros((size, size, 3), np.uint8),
            "blurred_photo": gaussian_blur(photo, 0.05 * size)}


def guard_report(run_dir: Path, data: Path) -> dict:
    """Deploy the run's last epoch (fp32 CPU bundle; the field suite at severity 2 on the test
    split, each frame judged by the bundle's capture guard) and report: the share of clean
    held-out photos the guard refuses and its refusals per condition, the temperature's ECE
    before/after, and the guard's verdict on synthetic_frames."""
    from clca_edge.capture.quality import QualityGuard
    from clca_edge.core.preprocess import load_rgb, resize_center_crop
    from clca_edge.deploy.pipeline import DeployConfig, run_deploy
    from clca_edge.robustness.bundle import bundle_items
    from clca_edge.runtime.model import load_model

    bundle = run_dir / "bundle"
    rep = run_deploy(DeployConfig(checkpoint=run_dir / "last.safetensors", out=bundle, calib_data=data / "train",
                                  eval_data=data / "test", target="cpu", precisions=("fp32",), field_suite="quick",
                                  force=True, build_engines=False))
    rob = rep.variants[0].robustness
    model = load_model(bundle)
    guard = QualityGuard.for_bundle(model.quality_reference)
    photo = resize_center_crop(load_rgb(bundle_items(data, model.class_names, "test")[0][0]), model.spec)
    frames = {name: guard.check(f).reason or "accepted"
              for name, f in synthetic_frames(model.spec.img_size, photo).items()}
    conf = rep.confidence
    return {"clean_refused": rob.clean_judged.refused if rob.clean_judged else None,
            "refused": {r.name: r.refused for r in rob.results}, "ece_before": conf.ece_before,
            "ece_after": conf.ece_after, "ece_after_cv": conf.ece_after_cv, "temperature": conf.temperature,
            "frames": frames, "eval_images": rep.eval_images}


def run_guard(args) -> dict:
    """guard_report for each data set x variant of the first seed and epoch budget (runs trained
    before, into the same --out), stored under ``guard`` in OUT/results.json."""
    out = Path(args.out)
    path = out / "results.json"
    doc = json.loads(path.read_text())
    seed, epochs = args.seeds.split(",")[0], args.epochs.split(",")[0]
    for data in (Path(d) for d in args.data.split(",")):
        for name in args.variants.split(","):
            run_dir = out / data.name / f"e{epochs}" / f"{name}_s{seed}"
            g = guard_report(run_dir, data)
            doc.setdefault("guard", {})[f"{data.name} e{epochs} {name} s{seed}"] = g
            path.write_text(json.dumps(doc, indent=2))
            print(f"{data.name} {name}: {json.dumps(g)}", file=sys.stderr, flush=True)
    return doc


def guard_markdown(guard: dict) -> str:
    if not guard:
        return ""
    conds = list(next(iter(guard.values()))["refused"])
    frames = list(next(iter(guard.values()))["frames"])
    lines = ["", "**capture guard and temperature** (fp32 bundle; % of the test photos refused)", "",
             "| run | clean refused | ECE before / after (cv) | T | " + " | ".join(conds) + " | "
             + " | ".join(frames) + " |", "|---" * (4 + len(conds) + len(frames)) + "|"]
    for key, g in guard.items():
        lines.append(f"| {key} | {g['clean_refused']:.1f} | {g['ece_before']:.3f} / {g['ece_after']:.3f} "
                     f"({g['ece_after_cv']:.3f}) | {g['temperature']:.2f} | "
                     + " | ".join(f"{g['refused'][c]:.1f}" for c in conds) + " | "
                     + " | ".join(g["frames"][f] for f in frames) + " |")
    return "\n".join(lines)


def _settings(r: dict) -> str:
    # rows of the dropped clean-target KL variant (BENCHMARKS.md) say so
    loss = {"js": "JS", "clean_target": "KL to clean"}[r.get("consistency_loss", "js")]
    ramp = f" ramp {r['consistency_ramp']:g}" if r.get("consistency_ramp") else ""
    ramp += f" AugMix width {r['consistency_mix']}" if r.get("consistency_mix") else ""
    # rows of the dropped temperature on the consistency's softmax (BENCHMARKS.md) say so
    ramp += f" T {r['consistency_temperature']:g}" if r.get("consistency_temperature") else ""
    # ... and of the dropped distillation from a weak-recipe teacher
    ramp += f", KL to the teacher's clean prediction x{r['distill']:g}" if r.get("distill") else ""
    js = f", {loss} x{r['consistency']:g}{ramp}" if r.get("consistency") and r["augment"] not in ("weak", "none") else ""
    preset = "".join(f" {k}={v}" for k, v in (r.get("preset") or {}).items())
    return f"{r['augment']}{preset}{js}, {r['colour_constancy']}, framing {r['framing']}"


def markdown(doc: dict) -> str:
    rows = doc["rows"]
    lines = []
    for data, epochs in dict.fromkeys((r["data"], r["epochs"]) for r in rows):
        sel = [r for r in rows if r["data"] == data and r["epochs"] == epochs]
        conds = [c["name"] for c in sel[0]["report"]["results"]]
        lines += ["", f"**{data}, {epochs} epochs** (test split; mean over seeds; per-seed clean in brackets)", "",
                  "| variant | settings | seeds | clean | worst drop (condition) | suite mean | train acc | train s | "
                  + " | ".join(conds) + " |", "|---" * (8 + len(conds)) + "|"]
        for name in dict.fromkeys(r["variant"] for r in sel):
            vs = [r for r in sel if r["variant"] == name]
            m = lambda k: statistics.mean(r[k] for r in vs)  # noqa: E731
            worst = statistics.mean(r["clean"] - min(c["top1"] for c in r["report"]["results"]) for r in vs)
            per = {c: statistics.mean(next(x["top1"] for x in r["report"]["results"] if x["name"] == c) for r in vs)
                   for c in conds}
            which = ", ".join(dict.fromkeys(r["worst"] for r in vs))
            seeds = " / ".join(f"{r['clean']:.1f}" for r in vs)
            accs = [r["train_acc"] for r in vs if r.get("train_acc") is not None]
            lines.append(f"| {name} | {_settings(vs[0])} | {len(vs)} | {m('clean'):.1f} "
                         f"({seeds}) | {worst:.1f} ({which}) | "
                         f"{m('mean_top1'):.1f} | {statistics.mean(accs) if accs else float('nan'):.1f} | "
                         f"{m('train_s'):.0f} | " + " | ".join(f"{per[c]:.1f}" for c in conds) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/field_real")
    ap.add_argument("--data", default=f"{SHARED / 'blackgram'},{SHARED / 'chilli'}",
                    help="data set folders (train/val/test class folders), comma separated")
    ap.add_argument("--variants", default="weak,defaults", help=f"comma separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--variant", action="append", default=[], help="NAME:key=value,... another variant")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", default="30", help="epoch budgets, comma separated")
    ap.add_argument("--img-size", type=int, default=112)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--keep-rate", type=float, default=0.25)
    ap.add_argument("--model-kwargs", default="depth=4,embed_dim=64,num_heads=2")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--split", default="test", help="held-out split the last epoch is scored on")
    ap.add_argument("--suite", default="quick", help="field suite: quick (severity 2) or full")
    ap.add_argument("--table-only", action="store_true", help="print the table of OUT/results.json")
    ap.add_argument("--guard", action="store_true",
                    help="deploy the first seed's runs of the first budget (trained before into --out) and report "
                         "the capture guard's refusals and the temperature's ECE")
    args = ap.parse_args()
    variants = dict(VARIANTS)
    variants.update(parse_variant(v) for v in args.variant)
    unknown = set(args.variants.split(",")) - set(variants)
    if unknown:
        raise SystemExit(f"unknown variant(s) {sorted(unknown)}; known: {', '.join(variants)}")
    if args.guard:
        doc = run_guard(args)
    elif args.table_only:
        doc = json.loads((Path(args.out) / "results.json").read_text())
    else:
        doc = run(args, variants)
    m = doc.get("meta", {})
    if m:
        print(f"machine: {m['cpu_model']}, avx512_vnni {'yes' if m['avx512_vnni'] else 'no'}; {m['date']}; "
              f"load average {', '.join(f'{x:.1f}' for x in m.get('load_avg', []))}")
    print(markdown(doc))
    print(guard_markdown(doc.get("guard", {})))


if __name__ == "__main__":
    main()
