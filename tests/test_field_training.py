"""Train's defaults against the paper's recipe on synthetic leaves: the same tiny model trained the
paper's way (weak augmentation, plain normalisation, centre crop) and with train's defaults (the
field preset learned by consistency, half grey world), both put through `clca-edge robustness`:
the defaults have the smaller worst-case drop, smaller white-balance drops and a small zoom-out
drop. (The figures that chose the defaults are on real photos: benchmarks/field_real.py.)"""

import json

import pytest
from click.testing import CliRunner

from clca_edge.cli import main
from clca_edge.core.preprocess import DEFAULT_COLOUR_CONSTANCY, DEFAULT_FRAMING
from clca_edge.data.augment import DEFAULT_AUGMENT
from clca_edge.data.synth import SynthConfig, write_synthetic_dataset
from clca_edge.training.config import DEFAULT_CONSISTENCY, DEFAULT_CONSISTENCY_RAMP

TINY = ["--model", "vit_tiny_patch16_224", "--pretrained", "none", "--method", "evit", "--keep-rate", "0.25",
        "--img-size", "64", "--model-kwargs", "depth=4,embed_dim=64,num_heads=2", "--batch-size", "16",
        "--lr", "1e-3", "--workers", "0", "--epochs", "12", "--seed", "0"]
CHANCE = 100 / 6


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("field_vs_weak")
    data = root / "data"
    write_synthetic_dataset(data, SynthConfig(classes=6, per_class=32, size=64, seed=0))
    out = {}
    for name, extra in (("weak", ["--augment", "weak", "--colour-constancy", "none", "--framing", "none"]), ("field", [])):
        res = CliRunner().invoke(main, ["train", "--data", str(data), *TINY, *extra, "--out", str(root / name)])
        assert res.exit_code == 0, res.output
        res = CliRunner().invoke(main, ["robustness", "--checkpoint", str(root / name / "last.safetensors"),
                                        "--data", str(data), "--suite", "quick", "--device", "cpu", "--json"])
        assert res.exit_code == 0, res.output
        out[name] = json.loads(res.stdout)
    return out


def test_the_defaults_are_the_field_ones():
    assert (DEFAULT_AUGMENT, DEFAULT_COLOUR_CONSTANCY, DEFAULT_FRAMING) == ("field", "half_grey_world", "none")
    assert (DEFAULT_CONSISTENCY, DEFAULT_CONSISTENCY_RAMP) == (6.0, 0.5)


def test_field_training_has_the_smaller_worst_case_drop(reports):
    weak, field = reports["weak"], reports["field"]
    assert weak["clean"] > 3 * CHANCE and field["clean"] > 3 * CHANCE, (weak["clean"], field["clean"])
    assert field["worst"]["drop"] < weak["worst"]["drop"], (field["worst"], weak["worst"])


def test_white_balance_costs_the_field_model_less(reports):
    """Issue 13's failure (a white balance shift: the weak model near chance on the tinted
    cultivars), reproduced, and smaller with the defaults (measured: 35 / 60 points at 12 epochs)."""
    drops = {k: {r["name"]: r["drop"] for r in v["results"]} for k, v in reports.items()}
    light = ("wb_warm", "wb_cool")
    assert max(drops["weak"][n] for n in light) >= 20, drops["weak"]
    assert max(drops["field"][n] for n in light) < max(drops["weak"][n] for n in light) - 10, drops


def test_a_zoomed_out_leaf_costs_the_field_model_at_most_half_as_much(reports):
    # measured: 12.5 against 45.8 points (48 images: one image is 2.1 points)
    drops = {k: {r["name"]: r["drop"] for r in v["results"]} for k, v in reports.items()}
    assert drops["weak"]["zoom_out"] >= 20, drops["weak"]
    assert drops["field"]["zoom_out"] <= drops["weak"]["zoom_out"] / 2, drops
