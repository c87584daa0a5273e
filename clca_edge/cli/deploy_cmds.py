"""Deployment commands: ``deploy`` (checkpoint -> gated bundle) and ``build-engine`` (on the device)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ..bundle import BUILD_FAILED
from ..core.errors import ExitCode
from ._common import console, emit_json, main, reports_errors
from .deploy_options import build_engine_options, deploy_options
from .progress import StageProgress

if TYPE_CHECKING:
    from ..deploy.config import DeployConfig
    from ..engines.build import BuildEngineConfig


def _fmt(v, nd=2):
    return "" if v is None else f"{v:.{nd}f}"


@main.command()
@reports_errors
@deploy_options
def deploy(config: DeployConfig) -> None:
    """Turn a checkpoint into a verified deploy bundle: fp32/INT8/FP16 ONNX, accuracy-gated."""
    from ..deploy.calibration import DEFAULT_CALIB_IMAGES
    from ..deploy.pipeline import run_deploy

    con = console()
    with StageProgress(console(stderr=True)) as progress:   # stages and image counts, on stderr
        report = run_deploy(config, progress=progress)
    _print_variants(con, report, config.gate)
    for k, val in sorted(report.parity.items()):
        con.print(f"parity {k}: max abs diff {val:.3g}")
    con.print(f"eval images: {report.eval_images} ({report.eval_skipped} unreadable, skipped); "
              f"calibration images: {report.calib_images} ({report.calib_excluded} excluded: also in eval)")
    if config.calibration.at_most and 0 < report.calib_images < DEFAULT_CALIB_IMAGES:
        con.print(f"[yellow]--calib-images: {config.calib_data} has {report.calib_images} usable calibration "
                  f"images, fewer than the default {DEFAULT_CALIB_IMAGES}: calibrated on all of them[/]", highlight=False)
    for v in report.failed:
        click.echo(f"FAILED TO RUN: {v.name} ({v.note}); recorded in the manifest, never used", err=True)
    for v in report.rejected:
        if v.field_rejected:
            click.echo(f"REJECTED: {v.name} {v.note}", err=True)
            continue
        if v.drop is None:  # an engine plan whose source ONNX was rejected
            click.echo(f"REJECTED: {v.name} ({v.note}, whose ONNX was rejected)", err=True)
            continue
        worst = ", ".join(c for c, _ in v.worst) or "none in particular"
        click.echo(f"REJECTED: {v.name} {v.note}; worst classes: {worst}", err=True)
    _print_field_stats(con, report)
    ref = getattr(report, "reference", None)
    if ref is None:
        con.print("[yellow]reference samples: none[/] (no readable eval image left; the device self-check is skipped)",
                  highlight=False)
    else:
        con.print(f"reference samples: {len(ref.samples)} eval images, {ref.stored_bytes / 1e3:.1f} kB of the "
                  f"{ref.budget_bytes / 1e6:g} MB budget, for the device self-check", highlight=False)
    con.print(f"default variant: [bold]{report.default_variant}[/]")
    if report.tar:
        con.print(f"archive: {report.tar} (verified)")
    if report.signed_by:
        con.print(f"signed: manifest.sig by key {report.signed_by} (verified)")
    if report.engines is not None:
        _print_engines(con, report.engines)
    if any(v.field_rejected and v.name == "fp32" for v in report.variants):
        from ..core.errors import GateError

        raise GateError(f"the field gate (--max-field-drop {config.max_field_drop:g}) rejected fp32, so the device "
                        f"has no variant to run; {report.bundle} is kept for inspection. Train with --augment field "
                        "(or more field-like data), or raise --max-field-drop")


def _print_variants(con, report, gate) -> None:
    """The variants' table, and what the gate can tell on these eval images."""
    from rich.table import Table

    rule = f"significant drop at {gate.alpha:g}, agreement < {gate.min_agreement:g}%"
    if gate.max_drop is not None:
        rule += f", drop > {gate.max_drop:g} points"
    table = Table(title=f"bundle {report.bundle}  (gate vs fp32: rejects {rule})")
    for col in ("variant", "top-1 %", "drop", "agree %", "p", "status", "worst classes / note", "field: worst (drop)"):
        table.add_column(col)
    for v in report.variants:
        worst = ", ".join(f"{c} -{d:.1f}" for c, d in v.worst) or v.note
        style = "red" if v.status in ("rejected", "failed to run") else None
        paired = v.record.paired
        table.add_row(v.name, _fmt(v.top1), _fmt(v.drop), _fmt(paired.agreement if paired else None, 1),
                      _fmt(paired.p_value if paired else None, 3), str(v.status), worst, _field_cell(v), style=style)
    con.print(table)
    detectable = report.detectable_drop
    what = (f"the smallest drop these {report.eval_images} eval images can detect is {detectable:.2f} points"
            if detectable is not None else f"{report.eval_images} eval images are too few to detect any drop")
    con.print(f"gate: {what} (at {gate.alpha:g}); more eval images detect smaller drops", highlight=False)


def _field_cell(v) -> str:
    w = v.robustness.worst if v.robustness is not None else None
    return "" if w is None else f"{w.name} s{w.severity} ({w.drop:+.1f})"


def _print_field_stats(con, report) -> None:
    """The temperature (and the calibration error it fixes) and the capture quality reference."""
    c = report.confidence
    if c is not None:
        cv = f", cross-validated {c.ece_after_cv:.3f}" if c.ece_after_cv is not None else ""
        bound = " [yellow](at its bound: too few or too easy eval images to pin it down)[/]" if c.at_bound else ""
        con.print(f"confidence: temperature {c.temperature:.3f} fitted on {c.images} eval images; "
                  f"ECE ({c.bins} bins) {c.ece_before:.3f} -> {c.ece_after:.3f}{cv}{bound}", highlight=False)
    q = report.quality_reference
    if q is None:
        con.print("[yellow]quality reference: none[/] (capture judges exposure and blur only)", highlight=False)
    else:
        ood = (f", colour distance p99 {q.ood_distance['p99']:.2f}" if q.has_colour
               else " (too few for the colour check)")
        what = f"{q.images} {q.augment} views of training images" if q.augment else f"{q.images} training images"
        con.print(f"quality reference: {what}, sharpness p5 {q.sharpness['p5']:.1f}{ood}", highlight=False)
    _print_guard_on_eval(con, report)


# Capture refusing more of the clean held-out photos than this says its thresholds do not fit them.
CLEAN_REFUSAL_WARNING = 5.0


def _print_guard_on_eval(con, report) -> None:
    """What capture's quality guard would do with the eval images, clean and under the suite."""
    judged = [v for v in report.variants if v.robustness is not None and v.robustness.clean_judged is not None]
    # the variant the device will run, when it was judged (refusals are the same for every variant)
    v = next((v for v in judged if v.name == report.default_variant), judged[0] if judged else None)
    if v is None:
        return
    rep, c = v.robustness, v.robustness.clean_judged
    line = f"capture's quality guard on the eval images ({v.name}): refuses {c.refused:.1f}% of the clean ones"
    worst = rep.most_wrong
    if worst is not None:
        line += (f"; most wrong decisions under {worst.name} s{worst.severity}: {worst.wrong_given:.1f}% of frames "
                 f"({worst.refused:.1f}% refused)")
    con.print(line, highlight=False)
    if c.refused > CLEAN_REFUSAL_WARNING:
        con.print(f"[yellow]warning[/]: capture would refuse {c.refused:.1f}% of the clean held-out photos: the "
                  "guard's thresholds do not fit them (calibration images unlike the eval ones?); check "
                  "`clca-edge robustness --bundle`, or set --min-sharpness/--min-luminance/--max-ood/--max-cast "
                  "at capture",
                  highlight=False)


def _print_engines(con, report) -> None:
    from rich.table import Table

    table = Table(title=f"TensorRT {report.trt_version} on {report.gpu['name']} (sm {report.gpu['compute_capability']})")
    for col in ("precision", "engine", "p50 ms", "top-1 %", "drop", "status", "note"):
        table.add_column(col)
    for o in report.outcomes:
        rec = o.record
        t = rec.timing.p50_ms if rec is not None and rec.timing is not None else None
        acc = rec.accuracy.top1 if rec is not None and rec.accuracy is not None else None
        note = o.note or ("cached" if o.reused else "")
        table.add_row(o.precision, o.file or "", _fmt(t, 3), _fmt(acc), _fmt(rec.drop if rec else None), str(o.status),
                      note)
    con.print(table)
    con.print(f"default engine: [bold]{report.default_engine}[/]")
    if report.engine_dir is not None:
        where = ("this device's cache (the bundle is not written)" if report.where == "cache"
                 else "the bundle (its own engines)")
        con.print(f"engines in: {report.engine_dir} ({where})", highlight=False)


@main.command("build-engine")
@reports_errors
@build_engine_options
def build_engine(config: BuildEngineConfig, as_json: bool) -> None:
    """Build (or reuse) the TensorRT engines of a bundle on this device, into this device's cache."""
    from ..engines.build import build_engines

    report = build_engines(config)
    if as_json:
        emit_json(report.to_dict(), indent=1)
    else:
        _print_engines(console(), report)
    for o in report.outcomes:
        if o.status == "rejected" and o.record is not None:
            worst = ", ".join(w.class_name for w in o.record.worst_classes or []) or "none in particular"
            click.echo(f"REJECTED: {o.precision} engine drops {o.record.drop or 0:.2f} points; worst classes: {worst}",
                       err=True)
        elif o.status == BUILD_FAILED:
            click.echo(f"BUILD FAILED: {o.precision} engine: {o.note}", err=True)
    if not any(o.file for o in report.outcomes) and any(o.status == BUILD_FAILED for o in report.outcomes):
        raise SystemExit(ExitCode.ENGINE)  # nothing usable was built: capture will fall back to ONNX Runtime
