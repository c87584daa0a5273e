"""``clca-edge robustness``: accuracy under the field perturbation suite, for a checkpoint
(PyTorch) or a bundle (every usable variant through the device runtime, no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import click

from ..robustness.suite import BY_NAME
from ._common import console, emit_json, main, reports_errors
from .options import OptionGroup, describe_guard, quality_options


def _names(only: Optional[str]) -> Optional[list[str]]:
    return [n.strip() for n in only.split(",") if n.strip()] if only else None


def print_report(reports: dict, title: str, backends: Optional[dict] = None, err: bool = False) -> None:
    """The rich table and one 'worst' line per variant (the same for robustness, eval and deploy)."""
    from ..robustness.report import table

    con = console(stderr=err)
    con.print(table(reports, title))
    for name, rep in reports.items():
        w = rep.worst
        on = f" on {backends[name]}" if backends and name in backends else ""
        if w is not None:
            con.print(f"{name}{on}: clean {rep.clean:.2f}%, worst [bold]{w.name}[/] severity {w.severity} "
                      f"{w.top1:.2f}% (drop {w.drop:.2f} points), {rep.images} images", highlight=False)
        worst_given = rep.most_wrong
        if worst_given is not None:
            con.print(f"{name} with capture's quality guard: most wrong decisions under [bold]{worst_given.name}[/] "
                      f"severity {worst_given.severity}: {worst_given.wrong_given:.2f}% of frames classified wrongly, "
                      f"{worst_given.refused:.2f}% refused (clean: {rep.clean_judged.wrong_given:.2f}% wrong, "
                      f"{rep.clean_judged.refused:.2f}% refused)", highlight=False)


def write_report_outputs(out, reports: dict, title: str) -> list[str]:
    """CSV + PNG into ``out``; notes (e.g. no matplotlib) go to stderr. Returns the written paths."""
    from ..robustness.report import write_outputs

    written, notes = write_outputs(Path(out), reports, title)
    for note in notes:
        click.echo(f"Note: {note}", err=True)
    return [str(p) for p in written]


def _suite_config(suite, only, seed):
    from ..robustness.config import SuiteConfig

    return SuiteConfig(suite=suite, only=tuple(_names(only)) if only else None, seed=seed)


suite_options = OptionGroup("suite_cfg", [
    click.option("--suite", type=click.Choice(["full", "quick"]), default="full",
                 help="full: every perturbation at severities 1-3; quick: severity 2 only."),
    click.option("--only", default=None, help=f"Comma-separated perturbations (of {', '.join(BY_NAME)})."),
    click.option("--seed", type=int, default=0, help="Seed of the random perturbations (noise), per image."),
], _suite_config)


def _variants_config(backend, precision, threads):
    from ..robustness.config import VariantsConfig

    precisions = tuple(p.strip() for p in precision.split(",") if p.strip()) if precision else None
    return VariantsConfig(backend=backend, precisions=precisions, threads=threads)


variants_options = OptionGroup("variants", [
    click.option("--backend", type=click.Choice(["auto", "tensorrt", "ort-gpu", "ort-cpu"]), default="auto",
                 help="Bundle: backend to run the variants on (auto: as capture picks)."),
    click.option("--precision", default=None, help="Bundle: comma-separated variants (default: every usable one)."),
    click.option("--threads", type=click.IntRange(min=0), default=0, help="Bundle: ONNX Runtime CPU threads (0: all)."),
], _variants_config)


@dataclass(frozen=True)
class _Target:
    """What is tested (a checkpoint in PyTorch or a bundle through the device runtime) on which images."""

    checkpoint: Optional[Path]
    bundle: Optional[Path]
    data: Optional[str]
    split: str
    image_root: Optional[str]


def _target(checkpoint, bundle, data, split, image_root):
    from ..core.errors import ConfigError

    if (checkpoint is None) == (bundle is None):
        raise ConfigError("give exactly one of --checkpoint (PyTorch) or --bundle (device runtime)")
    if bundle is not None and data is None:
        raise ConfigError("--bundle needs --data (held-out images, DATA/<class>/ or DATA/<split>/<class>/)")
    return _Target(checkpoint, bundle, data, split, image_root)


target_options = OptionGroup("target", [
    click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
                 help="A .safetensors checkpoint or run folder (PyTorch)."),
    click.option("--bundle", type=click.Path(path_type=Path), default=None,
                 help="A deploy bundle folder or .tar: every usable variant, through the device runtime (no torch)."),
    click.option("--data", default=None,
                 help="Images: DATA/<split>/<class>/ or DATA/<class>/ (checkpoint default: its training split)."),
    click.option("--split", type=click.Choice(["val", "test", "train"]), default="val"),
    click.option("--image-root", default=None, help="Checkpoint + CSV splits: folder the 'dir' paths are relative to."),
], _target)


@main.command(context_settings={"show_default": True})
@reports_errors
@target_options
@suite_options
@variants_options
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", help="Checkpoint: torch device.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, help="Checkpoint: images per forward.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for robustness.csv and robustness.png (accuracy vs severity).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@quality_options
def robustness(target, suite_cfg, variants, device, batch_size, out, as_json, quality) -> None:
    """Accuracy under a fixed suite of field perturbations (exposure, white balance, contrast,
    saturation, JPEG, blur, noise, zoom-out, rotation; 3 severities each), clean vs each.

    Perturbations are applied to the decoded image (at the model's working resolution) before
    the standard preprocessing; noise is seeded per image, so the same data and seed give the
    same figures. A bundle's frames are also judged by its capture quality guard (--quality on, the
    thresholds capture uses): per condition, the share capture would refuse and the share it
    would classify wrongly. See README 'Field robustness'."""
    if target.bundle is not None:
        doc, reports, backends, title, skipped, guard = _bundle_suite(target, suite_cfg, variants, quality)
    else:
        doc, reports, title, skipped = _checkpoint_suite(target, suite_cfg, variants, quality, batch_size, device)
        backends, guard = {}, None
    doc["skipped_images"] = len(skipped)
    if skipped:
        click.echo(f"Skipped {len(skipped)} unreadable image(s): " + ", ".join(map(str, skipped[:5])), err=True)
    if out is not None:
        doc["outputs"] = write_report_outputs(out, reports, title)
    if as_json:
        emit_json(doc)
        return
    print_report(reports, title, backends)
    if target.bundle is not None:
        console().print(describe_guard(guard), highlight=False)
    if out is not None:
        click.echo("wrote " + ", ".join(doc["outputs"]))


def _bundle_suite(target: _Target, suite_cfg, variants, quality):
    from ..robustness.bundle import run_bundle_suite

    res = run_bundle_suite(target.bundle, target.data, target.split, variants, suite_cfg, quality=quality)
    reports, backends = res.result.reports, res.backends
    for note in res.notes:
        click.echo(f"Note: {note}", err=True)
    first = next(iter(reports))
    doc = {"source": "bundle", "bundle": str(target.bundle), "variant": first, **reports[first].to_dict(),
           "variants": {n: {"backend": backends[n], **r.to_dict()} for n, r in reports.items()},
           "notes": res.notes, "quality": res.guard.describe() if res.guard is not None else {"enabled": False}}
    return doc, reports, backends, f"field robustness of {target.bundle}", res.result.skipped, res.guard


def _checkpoint_suite(target: _Target, suite_cfg, variants, quality, batch_size: int, device: str):
    from ..core.errors import ConfigError
    from ..robustness.config import VariantsConfig
    from ..training.robustness import checkpoint_suite

    if variants != VariantsConfig():
        raise ConfigError("--backend/--precision/--threads are for --bundle; a checkpoint runs in PyTorch")
    if quality.has_thresholds:
        raise ConfigError("the quality guard's thresholds are for --bundle (a checkpoint has no quality reference)")
    res, _meta, path = checkpoint_suite(target.checkpoint, target.data, target.split, target.image_root,
                                        suite_cfg.suite, suite_cfg.seed, batch_size, device, suite_cfg.only)
    reports = {"checkpoint": res.reports["checkpoint"]}
    doc = {"source": "checkpoint", "checkpoint": str(path), **reports["checkpoint"].to_dict()}
    return doc, reports, f"field robustness of {path}", res.skipped
