"""Shared fixtures: tiny timm backbones (real architectures, toy sizes) and small images."""

from __future__ import annotations

import os

import pytest

# Never touch the network from tests: the hub must fail fast and loudly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY = dict(depth=4, embed_dim=64, num_heads=2)
TINY_IMG = 64

# One of each family the wrapper must handle: plain ViT (cls pos-embed), DeiT-III (no pos-embed
# on the class token, LayerScale), CLIP (pre-norm).
TINY_BACKBONES = ["vit_tiny_patch16_224", "deit3_small_patch16_224", "vit_base_patch16_clip_224"]


def tiny_model(method="evit", keep_rate=0.25, clca=True, backbone="vit_tiny_patch16_224", num_classes=5, **kw):
    from clca_edge.models import create_model

    opts = dict(TINY)
    opts.update(kw)
    return create_model(backbone, method=method, keep_rate=keep_rate, clca=clca, img_size=opts.pop("img_size", TINY_IMG),
                        num_classes=num_classes, **opts)


@pytest.fixture(autouse=True)
def _run_in_a_scratch_folder(tmp_path_factory, monkeypatch):
    """Every test (and every process it starts) runs in a fresh empty folder, so an output whose
    path a test left to a default (``runs/...``) or made relative lands under pytest's temporary
    folders, never in the checkout. Tests still name their outputs under ``tmp_path``."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(autouse=True)
def _no_terminal_width_from_the_runner(monkeypatch):
    """The CLI's tables take their width from $COLUMNS when it is set, even off a terminal
    (cli._common.console: a user may ask for a width); a shell or CI runner that exports it would
    wrap every table the tests read (file names, 'flagged: ...', headers cut). Tests see what a
    pipe sees: no $COLUMNS, tables unwrapped."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory):
    """A tiny EViT+CLCA bundle folder (fp32 ONNX, labels, preprocessing, manifest): built once per
    session (per worker under xdist) and shared by every test module; tests that change it copy it."""
    from test_runtime_helpers import write_bundle

    return write_bundle(tmp_path_factory.mktemp("bundle") / "leafnet")


@pytest.fixture
def images():
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, TINY_IMG, TINY_IMG, generator=g)


@pytest.fixture(scope="session")
def cpu_int8_bundle(tmp_path_factory):
    """(workspace, bundle folder): a tiny trained model deployed for --target cpu with fp32 and
    INT8 variants (and reference samples); tests copy the folder before changing it."""
    from clca_edge.deploy.calibration import CalibrationConfig
    from clca_edge.deploy.pipeline import DeployConfig, run_deploy
    from test_deploy_support import make_workspace

    root = tmp_path_factory.mktemp("cpu_int8")
    ws = make_workspace(root)
    out = root / "bundle"
    run_deploy(DeployConfig(checkpoint=ws["ckpt"], out=out, calib_data=ws["calib"], eval_data=ws["eval"], target="cpu",
                            precisions=("int8", "fp32"), calibration=CalibrationConfig(num_images=12),
                            build_engines=False))
    return ws, out
