"""``clca-edge explain``: pictures (and JSON) of which patches a checkpoint keeps, merges and relies on."""

from __future__ import annotations


import click

from ._common import emit_json, main, reports_errors

BUNDLE_REFUSAL = (
    "explain needs the checkpoint (--checkpoint): a bundle's ONNX graph keeps no record of which patches each "
    "token came from, and exposing it would mean changing the deployed graph. Pass the checkpoint the bundle "
    "was made from (its manifest names it)")


@main.command(context_settings={"show_default": True})
@click.option("--checkpoint", default=None, help="A .safetensors checkpoint or a run folder (uses best).")
@click.option("--bundle", default=None, help="Not supported: explain runs on checkpoints only (see the README).")
@click.argument("paths", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(),
              help="Folder for the pictures (NAME.explain.png per image).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu")
@click.option("--batch-size", type=click.IntRange(min=1), default=8)
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: per image the prediction and, per location, the kept patch indices "
                   "(and merge groups).")
@reports_errors
def explain(checkpoint, bundle, paths, out, device, batch_size, as_json) -> None:
    """For each image (files, folders, globs): the crop the model saw and, per reduction location,
    which patches it still looks at (merge groups for merging methods), from the same forward pass
    that classified it; with a CLA head, what each depth's summary added to the prediction. The true
    class is read from the image's folder name when it is one of the checkpoint's classes."""
    from ..core.errors import ConfigError

    if bundle is not None:
        raise ConfigError(BUNDLE_REFUSAL)
    if checkpoint is None:
        raise click.UsageError("--checkpoint is required")
    from ..explain.run import ExplainConfig, explain_images

    def say(exp) -> None:
        if not as_json:
            verdict = "" if exp.true is None else (" (right)" if exp.true == exp.predicted else f" (true: {exp.true})")
            click.echo(f"{exp.path}: {exp.predicted} {exp.confidence:.0%}{verdict} -> {exp.png}")

    report = explain_images(ExplainConfig(checkpoint, tuple(paths), out, device, batch_size), on_image=say)
    for path in report.skipped:
        click.echo(f"skipped {path}: unreadable image", err=True)
    if as_json:
        emit_json(report.to_dict())
