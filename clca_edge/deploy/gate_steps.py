"""Deploy's gate steps: one pass of every variant over the eval images (parity with torch, the
temperature fitted on fp32's logits), the accuracy gate with statistics (core/gate_stats.py), and
the field robustness suite judged by capture's quality guard. Each step is ``step(run: DeployRun)
-> None`` and sets its results on the variants' manifest records."""

from __future__ import annotations

import logging
from ..bundle import AccuracyRecord, GateRecord, PairedTest, Status, VariantRecord, WorstClass
from ..core.gate_stats import TopOneRecorder, detectable_drop, judge, paired_outcome
from .run_state import DeployRun, Evaluation

log = logging.getLogger(__name__)


def evaluate_variants(run: DeployRun) -> None:
    """Every runnable variant on every eval image in one pass; torch against the fp32 ONNX on the
    first --parity-images. The fp32 logits of this pass are what the temperature is fitted on."""
    import torch

    from ..runtime.scoring import evaluate
    from .field_stats import LogitRecorder, fit_confidence

    def torch_ref(x):
        with torch.no_grad():
            return run.model(torch.from_numpy(x)).numpy()

    run.say(f"evaluating {', '.join(run.runners)} on {len(run.data.items)} eval images")
    run.expect(len(run.data.items))
    fp32_logits = LogitRecorder(run.runners["fp32"])
    recorders = {n: TopOneRecorder(fp32_logits if n == "fp32" else r) for n, r in run.runners.items()}
    res = evaluate(run.data, run.spec, recorders, reference=torch_ref, reference_images=run.config.parity_images,
                   progress=run.advance)
    skipped = set(res.skipped)
    labels = [label for p, label in run.data.items if p not in skipped]
    run.evaluation = Evaluation(result=res, labels=labels, top1={n: r.top1 for n, r in recorders.items()})
    run.manifest.eval_classes = eval_class_counts(labels, run.manifest.class_names)
    run.manifest.confidence = fit_confidence(fp32_logits, labels,
                                             f"fp32 ONNX logits of {len(labels)} --eval-data images")


def eval_class_counts(labels, class_names) -> dict:
    """Images per class name of the evaluated eval set (every class, zeros included)."""
    counts = {name: 0 for name in class_names}
    for label in labels:
        counts[class_names[label]] += 1
    return counts


def _accuracy_record(acc) -> AccuracyRecord:
    """runtime.scoring.Accuracy as the manifest records it (rounded as it always was)."""
    return AccuracyRecord(top1=round(acc.top1, 4), per_class={k: round(v, 4) for k, v in acc.per_class.items()},
                          images=acc.count, latency_ms_mean=None if acc.latency_ms is None else round(acc.latency_ms, 4))


def gate_accuracy(run: DeployRun) -> None:
    """Each variant against fp32 on the same images: accuracy, parity, the paired test and verdict."""
    from ..runtime.scoring import drop_and_worst

    ev = run.evaluation
    res, fp32 = ev.result, ev.result.accuracy["fp32"]
    run.manifest.gate = gate_record(run)
    for name, v in run.onnx_variants().items():
        if name not in res.accuracy:
            continue
        acc = res.accuracy[name]
        _, worst = drop_and_worst(fp32, acc)
        verdict = judge(paired_outcome(ev.labels, ev.top1["fp32"], ev.top1[name]), run.config.gate)
        o = verdict.outcome
        v.accuracy = _accuracy_record(acc)
        v.drop = round(o.drop, 4)
        v.paired = PairedTest(images=o.images, agreement=round(o.agreement, 4), lost=o.lost, gained=o.gained,
                              p_value=round(verdict.p_value, 6))
        v.worst_classes = [WorstClass(c, round(d, 2)) for c, d in worst]
        v.status = Status.PASSED if verdict.passed else Status.REJECTED
        if not verdict.passed:
            v.rejected_by, v.note = verdict.rule, verdict.reason
        # The gate's timing runs on ONNX Runtime's CPU provider (ort_runner); the runtime's
        # --precision auto on ort-cpu trusts default_variant only when it was measured there.
        v.measured_on = "ort-cpu"
        v.parity = _parity(name, res.parity, acc.count, run.config.parity_images)


def gate_record(run: DeployRun) -> GateRecord:
    """The gate's rules, its images and the smallest drop they can show."""
    cfg, res = run.config, run.evaluation.result
    images = res.accuracy["fp32"].count
    detectable = detectable_drop(images, cfg.gate.alpha)
    return GateRecord(max_drop=cfg.gate.max_drop, alpha=cfg.gate.alpha, min_agreement=cfg.gate.min_agreement,
                      detectable_drop=None if detectable is None else round(detectable, 4),
                      eval_data=str(cfg.eval_data), eval_images=images, eval_skipped=len(res.skipped),
                      field_suite=cfg.field_suite, max_field_drop=cfg.max_field_drop)


def _parity(name: str, parity: dict, images: int, parity_images: int) -> dict:
    if name == "fp32":
        return {"torch_vs_onnx_max_abs": parity.get("torch_vs_fp32"), "images": min(parity_images, images)}
    return {"fp32_onnx_vs_this_max_abs": parity.get(f"fp32_vs_{name}"), "images": images}


def field_suite(run: DeployRun) -> None:
    """The field robustness suite on the gate's images for every variant that ran here, recorded
    per variant; with --max-field-drop, a variant whose worst perturbation drops more is rejected
    (the perturbation named). Variants' drops are measured against their own clean accuracy.
    Each frame is also judged by the capture quality guard this bundle gives (its default
    thresholds): the record says, per condition, what capture would refuse and classify wrongly."""
    cfg = run.config
    gated = [n for n, v in run.onnx_variants().items() if v.accuracy is not None and n in run.runners]
    if cfg.field_suite == "off" or not gated:
        return
    from ..capture.quality import QualityGuard
    from ..robustness.evaluate import one_at_a_time, run_suite

    run.say(f"field robustness suite ({cfg.field_suite}) on {', '.join(gated)}")
    # The calibration seed also seeds the suite's noise: one --seed makes the whole deploy repeatable.
    guard = QualityGuard.for_bundle(run.manifest.quality_reference)
    result = run_suite(run.data.items, run.spec, {n: one_at_a_time(run.runners[n]) for n in gated},
                       suite=cfg.field_suite, seed=cfg.calibration.seed, judge=guard.accepts)
    for name in gated:
        _record_field(run.variants[name], result.reports[name], cfg.max_field_drop)


def _record_field(v: VariantRecord, rep, max_field_drop) -> None:
    from .field_record import field_robustness

    v.field_robustness = field_robustness(rep)
    worst = rep.worst
    # A variant the accuracy gate rejected keeps that reason; its field figures are still recorded.
    if max_field_drop is not None and worst is not None and worst.drop > max_field_drop and v.status.usable:
        v.status, v.rejected_by = Status.REJECTED, "field gate"
        v.note = (f"field gate: {worst.name} severity {worst.severity} drops {worst.drop:.2f} points "
                  f"(> {max_field_drop:g}) from clean {rep.clean:.2f}%")
