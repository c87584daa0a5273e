"""Shared fixtures: tiny timm backbones (real architectures, toy sizes), small images, one trained
workspace and the bundles made from it. Helpers live in tests/support/."""

from __future__ import annotations

import os
from types import MappingProxyType

import pytest

from support.tiny import TINY, TINY_BACKBONES, TINY_IMG, tiny_model  # noqa: F401 (tests import them from here)

# Never touch the network from tests: the hub must fail fast and loudly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
    from support.runtime_bundle import write_bundle

    return read_only(write_bundle(tmp_path_factory.mktemp("bundle") / "leafnet"))


@pytest.fixture
def images():
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, TINY_IMG, TINY_IMG, generator=g)


@pytest.fixture(scope="session")
def trained_workspace(tmp_path_factory):
    """The one trained workspace (read-only mapping: calib/, eval/, train/ class trees and ckpt, a
    tiny model trained on train/) every module that deploys or evaluates reads, instead of training
    its own. Tests write only elsewhere; teardown fails the session if any test changed a file in it."""
    from support.unchanged import changes, tree_digest
    from support.workspace import make_workspace

    root = tmp_path_factory.mktemp("trained_workspace")
    ws = MappingProxyType(make_workspace(root))
    before = tree_digest(root)
    yield ws
    changed = changes(before, tree_digest(root))
    assert not changed, f"a test changed the shared trained workspace (copy it first): {changed[:5]}"


@pytest.fixture(scope="session")
def cpu_int8_bundle(tmp_path_factory, trained_workspace):
    """(workspace, bundle folder): the trained workspace deployed for --target cpu with fp32 and
    INT8 variants (and reference samples); tests copy the folder before changing it."""
    from clca_edge.deploy.calibration import CalibrationConfig
    from clca_edge.deploy.pipeline import DeployConfig, run_deploy

    ws = trained_workspace
    out = tmp_path_factory.mktemp("cpu_int8") / "bundle"
    run_deploy(DeployConfig(checkpoint=ws["ckpt"], out=out, calib_data=ws["calib"], eval_data=ws["eval"], target="cpu",
                            precisions=("int8", "fp32"), calibration=CalibrationConfig(num_images=12),
                            build_engines=False))
    return ws, read_only(out)


@pytest.fixture(scope="session")
def _device_cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("user-cache")


@pytest.fixture(autouse=True)
def _device_caches_under_tmp(_device_cache_root, monkeypatch):
    """The device caches (runtime/device_cache.py: self-check verdicts, CPU latencies, engines) of every test,
    and of every process it starts, go to one session folder under pytest's tmp, never to the real
    user cache; a test that needs them fresh sets its own XDG_CACHE_HOME or --cache-dir."""
    monkeypatch.delenv("CLCA_EDGE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(_device_cache_root))


# ------------------------------------------------------------------ read-only session fixtures
# Session fixtures that tests only read (bundles above all: reading one must never write it) are
# registered with read_only(); at the end of the session every file in them must be as it was
# (support/unchanged.py, as for the trained workspace).
_READ_ONLY: dict = {}


def read_only(path):
    """Register a session fixture's folder as read-only (a test that changes it must copy it first)."""
    from support.unchanged import tree_digest

    _READ_ONLY[path] = tree_digest(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def _read_only_fixtures_are_left_unchanged():
    yield
    from support.unchanged import changes, tree_digest

    changed = {str(p): changes(before, tree_digest(p)) for p, before in _READ_ONLY.items()}
    changed = {p: c for p, c in changed.items() if c}
    assert not changed, f"tests changed files of read-only session fixtures (copy before writing): {changed}"
