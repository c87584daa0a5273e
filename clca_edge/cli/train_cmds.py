"""Training commands: ``train``, ``eval`` and the ``data`` group (``data synth``).

``train`` reads an optional recipe (YAML of the same option names); options given on the command
line override the recipe, which overrides the defaults. Under ``torchrun --nproc_per_node=N`` the
same command trains with DistributedDataParallel.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

from ..core.preprocess import COLOUR_CONSTANCY, DEFAULT_COLOUR_CONSTANCY, DEFAULT_FRAMING, FRAMING
from ..data.augment import AUGMENT_CHOICES, DEFAULT_AUGMENT
from ..data.cache import CACHE_MODES, DEFAULT_CACHE
from ..training.defaults import DEFAULT_CONSISTENCY, DEFAULT_CONSISTENCY_MIX, DEFAULT_CONSISTENCY_RAMP
from ._common import console, emit_json, main, model_options, reports_errors
from .options import OptionGroup

if TYPE_CHECKING:
    from ..data.synth import SynthConfig
    from ..training.evaluate import EvalConfig

log = logging.getLogger(__name__)

# The model options train takes (all but --num-classes, which the data decides).
TRAIN_MODEL_OPTIONS = ("model", "model_kwargs", "method", "keep_rate", "locations", "img_size", "clca")
# Options of the train command that say how to run it, not what to train: no recipe sets them.
COMMAND_ONLY = frozenset({"recipe", "resume", "as_json"})


def recipe_keys() -> frozenset[str]:
    """What a recipe (train/*.yaml) may set: every option of ``train`` but COMMAND_ONLY."""
    return frozenset(p.name for p in train.params) - COMMAND_ONLY


def _apply_recipe(ctx: click.Context, params: dict) -> dict:
    """Recipe values fill every option not given on the command line."""
    from ..training.config import load_recipe

    if not params.get("recipe"):
        return params
    recipe = load_recipe(params["recipe"], recipe_keys())
    by_name = {p.name: p for p in ctx.command.params}
    out = dict(params)
    for key, value in recipe.items():
        if ctx.get_parameter_source(key) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            continue
        try:
            out[key] = by_name[key].type_cast_value(ctx, value)
        except click.BadParameter as e:
            raise click.UsageError(f"recipe {params['recipe']}: {key}: {e.message}") from None
    return out


def _train_config(p: dict):
    from ..data.sources import DataConfig
    from ..core.errors import ConfigError
    from ..models.config import ModelConfig
    from ..training.config import OptimConfig, TrainConfig

    if not p.get("data"):
        raise ConfigError("--data is required (or a recipe with data:)")
    if not p.get("out"):
        raise ConfigError("--out is required (or a recipe with out:)")
    model = ModelConfig.from_options(**{k: p[k] for k in TRAIN_MODEL_OPTIONS}, drop_path_rate=p["drop_path"])
    data = DataConfig(root=p["data"], val_split=p["val_split"], split_seed=p["split_seed"], image_root=p["image_root"],
                      train_csv=p["train_csv"], val_csv=p["val_csv"], test_csv=p["test_csv"],
                      extra=tuple(p["extra_data"] or ()))
    optim = OptimConfig(epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"], min_lr=p["min_lr"],
                        weight_decay=p["weight_decay"], warmup_epochs=p["warmup_epochs"],
                        label_smoothing=p["label_smoothing"], clip_grad=p["clip_grad"])
    return TrainConfig(data=data, model=model, out=p["out"], optim=optim, pretrained=p["pretrained"], seed=p["seed"],
                       workers=p["workers"], crop_pct=p["crop_pct"], hflip=p["hflip"], augment=p["augment"],
                       colour_constancy=p["colour_constancy"], framing=p["framing"], consistency=p["consistency"],
                       consistency_ramp=p["consistency_ramp"], consistency_mix=p["consistency_mix"], amp=p["amp"],
                       device=p["device"], resume=p["resume"], cache=p["cache"], cache_dir=p["cache_dir"],
                       cache_budget=p["cache_budget"])


@main.command(context_settings={"show_default": True})
@click.option("--recipe", type=click.Path(dir_okay=False), default=None,
              help="YAML recipe (train/*.yaml); options given here override it.")
@click.option("--data", default=None, help="Dataset folder: train/+val/ class folders, train.csv+val.csv, "
              "or one class-folder tree with --val-split.")
@click.option("--val-split", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              help="Hold out this fraction of a single class-folder tree (stratified, seeded, written to OUT/split/).")
@click.option("--split-seed", type=int, default=0, help="Seed of the --val-split draw.")
@click.option("--image-root", default=None, help="Folder the CSV 'dir' paths are relative to.")
@click.option("--train-csv", default=None, help="Explicit train split CSV (class_id,dir).")
@click.option("--val-csv", default=None, help="Explicit val split CSV.")
@click.option("--test-csv", default=None, help="Explicit test split CSV.")
@click.option("--extra-data", multiple=True, type=click.Path(file_okay=False), default=(),
              help="More labelled images, CLASS/<images> (e.g. `fleet harvest` labelled by moving files), added "
                   "to the train split only; repeatable.")
@model_options(*TRAIN_MODEL_OPTIONS)
@click.option("--pretrained", default="hub", help="'hub' (timm/Hugging Face), 'none' (random init) or a weights file.")
@click.option("--drop-path", type=click.FloatRange(0, 1, max_open=True), default=0.0, help="Stochastic depth rate.")
@click.option("--epochs", type=click.IntRange(min=1), default=50)
@click.option("--batch-size", type=click.IntRange(min=2), default=32, help="Per process.")
@click.option("--lr", type=float, default=1e-4)
@click.option("--min-lr", type=float, default=1e-6)
@click.option("--weight-decay", type=float, default=0.05)
@click.option("--warmup-epochs", type=float, default=1.0)
@click.option("--label-smoothing", type=float, default=0.1)
@click.option("--clip-grad", type=float, default=1.0, help="Max gradient norm (0: off).")
@click.option("--amp/--no-amp", default=True, help="Mixed precision (CUDA only; ignored on CPU).")
@click.option("--seed", type=int, default=0)
@click.option("--workers", type=click.IntRange(min=0), default=2, help="DataLoader worker processes.")
@click.option("--crop-pct", type=float, default=0.875, help="Evaluation crop: resize to img_size/crop_pct, center crop.")
@click.option("--hflip", type=float, default=0.5, help="Horizontal flip probability (training).")
@click.option("--augment", type=click.Choice(AUGMENT_CHOICES), default=DEFAULT_AUGMENT,
              help="Training augmentation preset: field (field camera: rotation, zoom-out, exposure, white balance, "
                   "blur, noise, JPEG...), weak (the paper's crop + flip), none. See README 'Field robustness'.")
@click.option("--colour-constancy", type=click.Choice(COLOUR_CONSTANCY), default=DEFAULT_COLOUR_CONSTANCY,
              help="Colour constancy of the model's input, in training, deploy and on the device: grey_world scales "
                   "each channel of the crop to the same mean, so a camera's white balance or exposure gain cancels "
                   "(and so does the tint of a leaf that fills the frame); half_grey_world goes half way (a light's "
                   "cast and level halved, the leaf's colour kept, compressed); exposure: one gain to a fixed median "
                   "brightness (colours kept); none: the pretrained backbone's plain normalisation. Recorded in the "
                   "model's preprocessing.")
@click.option("--framing", type=click.Choice(FRAMING), default=DEFAULT_FRAMING,
              help="Framing of the model's input, in training, deploy and on the device: leaf finds the leaf on a "
                   "plain background (scan, board, soil) and centres and zooms the crop on it, so the camera's "
                   "distance does not change what the model sees (left as it is where no plain background is "
                   "found); none: the plain centre crop. Recorded in the model's preprocessing.")
@click.option("--consistency", type=click.FloatRange(min=0), default=DEFAULT_CONSISTENCY,
              help="Weight of the consistency loss: each image's clean crop carries its label and the same crop "
                   "through the --augment preset is asked for the same prediction (Jensen-Shannon, as AugMix), so "
                   "the field conditions are learned without being fitted as hard labels (which costs a small "
                   "model its clean accuracy). 0: the preset's images are trained on as labelled images. No effect "
                   "with weak or none.")
@click.option("--consistency-ramp", type=click.FloatRange(0, 1), default=DEFAULT_CONSISTENCY_RAMP,
              help="Share of the run's steps over which the consistency weight ramps up from 0 (the model first "
                   "learns the labelled views); 0: the full weight from the first step.")
@click.option("--consistency-mix", type=click.IntRange(0, 8), default=DEFAULT_CONSISTENCY_MIX,
              help="AugMix mixing: each image gives two perturbed views, each its clean crop blended (Beta(1,1) "
                   "share) with this many chains of the --augment preset (Dirichlet(1) weights), and the "
                   "consistency is taken over the clean and both views; 0: one perturbed view, the preset's chain "
                   "itself.")
@click.option("--cache", type=click.Choice(CACHE_MODES), default=DEFAULT_CACHE,
              help="Decoded-image cache: each image decoded and resized once, not every epoch. auto: in RAM when the "
                   "decoded images fit the budget (default 50% of the memory available at the start), else none; "
                   "ram: in RAM, what fits; disk: content-hashed .npy files in OUT/cache (or --cache-dir), reused "
                   "by later runs, --resume, eval and deploy; none: decode every epoch. The start of the run says "
                   "which is used.")
@click.option("--cache-dir", default=None, help="Folder of the --cache disk cache (default OUT/cache); runs over "
              "the same images and preprocessing may share one.")
@click.option("--cache-budget", type=click.FloatRange(min=0, min_open=True), default=None,
              help="GB of RAM the cache may use (default: 50% of the memory available at the start; more than 90% "
                   "of it is clamped, with a note).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
@click.option("--out", default=None, help="Run folder (checkpoints, metrics.csv, split/).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last finished epoch.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary at the end.")
@click.pass_context
@reports_errors
def train(ctx: click.Context, **params) -> None:
    """Fine-tune (or train from scratch) a CLCA token-reduced ViT on a leaf dataset."""
    params = _apply_recipe(ctx, params)
    config = _train_config(params)
    from ..training.trainer import train as run_training

    result = run_training(config, console=console())
    if int(os.environ.get("RANK", "0")) != 0:
        return
    summary = {"out": str(result.out), "epochs": result.epochs, "best_top1": result.best_top1,
               "best_epoch": result.best_epoch, "last_top1": result.last_top1,
               "num_classes": len(result.class_names), "skipped_images": len(result.skipped)}
    for note in result.notices:
        click.echo(f"Warning: {note}", err=True)
    if result.skipped:
        click.echo(f"Skipped {len(result.skipped)} unreadable image(s): " + ", ".join(result.skipped[:5])
                   + (" ..." if len(result.skipped) > 5 else ""), err=True)
    if params.get("as_json"):
        emit_json(summary)
    else:
        console().print(f"best val top-1 [bold]{result.best_top1:.2f}%[/] at epoch {result.best_epoch}; "
                        f"checkpoints in {result.out}")


def _eval_config(**fields):
    from ..training.evaluate import EvalConfig

    return EvalConfig(**fields)


# The options named as EvalConfig's fields; --json and --robustness say what to print, not what to evaluate.
eval_options = OptionGroup("config", [
    click.option("--checkpoint", required=True, help="A .safetensors checkpoint or a run folder (uses best)."),
    click.option("--data", default=None, help="Dataset folder (default: the checkpoint's training data)."),
    click.option("--split", type=click.Choice(["val", "test", "train"]), default="val"),
    click.option("--image-root", default=None, help="Folder the CSV 'dir' paths are relative to."),
    click.option("--out", default=None, help="Folder for confusion.csv/png and per_class.csv."),
    click.option("--batch-size", type=click.IntRange(min=1), default=64),
    click.option("--workers", type=click.IntRange(min=0), default=2),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto"),
    click.option("--json", "as_json", is_flag=True, help="Print one JSON object (top1, top5, num_images, ...)."),
    click.option("--robustness", is_flag=True,
                 help="Also the field robustness report (as `clca-edge robustness --checkpoint`: full suite, seed 0; "
                      "robustness.csv/png into the outputs folder; under 'robustness' with --json)."),
    click.option("--cache-dir", default=None,
                 help="Read decoded images through this `train --cache disk` cache (default: the checkpoint's run "
                      "cache, when it has one with the checkpoint's preprocessing). Read only; a changed image is "
                      "decoded afresh."),
], _eval_config, passes=("as_json", "robustness"))


@main.command(name="eval", context_settings={"show_default": True})
@reports_errors
@eval_options
def eval_cmd(config: EvalConfig, as_json: bool, robustness: bool) -> None:
    """Top-1/top-5, per-class accuracy and confusion matrix (CSV + PNG) of a checkpoint."""
    from ..training.evaluate import evaluate_checkpoint

    from .progress import StageProgress

    with StageProgress(console(stderr=True)) as progress:   # on stderr: stdout is for the results
        report, folder = evaluate_checkpoint(config, progress=progress)
    if report.skipped:
        click.echo(f"Skipped {len(report.skipped)} unreadable image(s): " + ", ".join(report.skipped[:5]), err=True)
    field = None
    if robustness:
        from ..training.robustness import checkpoint_suite
        from .robustness_cmds import write_report_outputs

        res, _meta, path = checkpoint_suite(config.checkpoint, config.data, config.split, config.image_root,
                                            batch_size=config.batch_size, device=config.device)
        field = res.reports["checkpoint"]
        write_report_outputs(folder, {"checkpoint": field}, f"field robustness of {path}")
    if as_json:
        d = report.to_dict()
        d["outputs"] = str(folder)
        if field is not None:
            d["robustness"] = field.to_dict()
        emit_json(d)
        return
    from rich.table import Table

    con = console()
    con.print(f"top-1 [bold]{report.top1:.2f}%[/]  top-5 {report.top5:.2f}%  images {report.num_images}"
              f"  skipped {len(report.skipped)}")
    table = Table(title="per-class accuracy")
    for col in ("class", "images", "top-1 %"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for row in report.per_class():
        table.add_row(row["class_name"], str(row["images"]), "" if row["accuracy"] is None else f"{row['accuracy']:.1f}")
    con.print(table)
    con.print(f"confusion matrix: {folder / 'confusion.csv'}, {folder / 'confusion.png'}")
    if field is not None:
        from .robustness_cmds import print_report

        print_report({"checkpoint": field}, "field robustness")
        con.print(f"robustness: {folder / 'robustness.csv'}, {folder / 'robustness.png'}")


@main.group()
def data() -> None:
    """Dataset tools."""


def _synth_config(**fields):
    from ..data.synth import SynthConfig

    return SynthConfig(**fields)


# The options named as SynthConfig's fields: what the data set is, not where it goes.
synth_options = OptionGroup("config", [
    click.option("--classes", type=click.IntRange(min=2), default=8),
    click.option("--per-class", type=click.IntRange(min=2), default=40, help="Images per class (train + val)."),
    click.option("--size", type=click.IntRange(min=16), default=96, help="Image side in pixels."),
    click.option("--seed", type=int, default=0),
    click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.25),
    click.option("--format", "fmt", type=click.Choice(["png", "jpg"]), default="png"),
    click.option("--tint/--no-tint", default=True, help="Cultivars differ in blade tint too (--no-tint: only in "
                 "shape and texture, so colour identifies no class)."),
], _synth_config)


@data.command(context_settings={"show_default": True})
@reports_errors
@click.option("--out", required=True, type=click.Path(), help="Output folder (train/ and val/).")
@synth_options
@click.option("--force", is_flag=True, help="Replace a synthetic data set written here before (and nothing else).")
def synth(out: str, config: SynthConfig, force: bool) -> None:
    """Write a synthetic ultra-fine-grained leaf dataset (ImageFolder train/ + val/).

    --out must be new or empty; --force replaces an earlier `data synth` output there whole, and
    never a folder holding anything else."""
    from ..data.synth import write_synthetic_dataset

    summary = write_synthetic_dataset(out, config, force)
    click.echo(f"wrote {summary.train_images} train + {summary.val_images} val images of "
               f"{len(summary.class_names)} classes to {summary.root}")
