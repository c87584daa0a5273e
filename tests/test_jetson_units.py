"""The shipped systemd units of deploy/jetson/ agree with each other (review 3.1, 3.2): capture runs
the bundle the agent points at, with --fleet and one fixed field log; both use one device cache,
where the agent's self-check before a switch lands, so capture finds it after the switch."""

from __future__ import annotations

import shlex
from pathlib import Path

from clca_edge.cli import main

UNITS = Path(__file__).resolve().parents[1] / "deploy" / "jetson"


def _unit(name: str):
    env, execs = {}, {}
    for line in (UNITS / name).read_text().splitlines():
        if line.startswith("Environment="):
            k, _, v = line[len("Environment="):].partition("=")
            env[k] = v
        elif line.startswith(("ExecStart=", "ExecStartPre=")):
            key, _, cmd = line.partition("=")
            execs[key] = shlex.split(cmd.lstrip("-"))
    return env, execs


def _opts(argv):
    out, i = {}, 0
    while i < len(argv):
        if argv[i].startswith("--"):
            has_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
            out[argv[i]] = argv[i + 1] if has_value else True
            i += 2 if has_value else 1
        else:
            i += 1
    return out


def test_capture_runs_what_the_agent_points_at_with_the_fleet_and_a_fixed_log():
    cap_env, cap = _unit("clca-edge-capture.service")
    agent_env, agent = _unit("clca-edge-agent.service")
    c, a = _opts(cap["ExecStart"]), _opts(agent["ExecStart"])
    assert cap["ExecStart"][1] == "capture" and agent["ExecStart"][1] == "agent"
    assert c["--bundle"] == a["--bundles"] + "/current"
    assert _opts(cap["ExecStartPre"])["--bundle"] == c["--bundle"]
    assert c["--fleet"] == a["--fleet"]
    assert c["--log"].startswith("/") and c["--log"] in (UNITS / "clca-edge-agent.service").read_text()
    known = {o for p in main.commands["capture"].params for o in (*p.opts, *p.secondary_opts)}
    assert set(c) <= known, set(c) - known                   # every option the unit gives exists
    assert cap_env["CLCA_EDGE_CACHE_DIR"] == agent_env["CLCA_EDGE_CACHE_DIR"]


def test_the_agents_self_check_lands_in_the_device_cache_capture_reads(tmp_path, monkeypatch, cpu_int8_bundle):
    from support.rollout import make_tar

    from clca_edge.fleet import install
    from clca_edge.fleet.slots import Slots
    from clca_edge.runtime.device_cache import SELFCHECK_FILE, bundle_cache_dir
    from clca_edge.runtime.model import load_model

    cache = tmp_path / "cache"
    monkeypatch.setenv("CLCA_EDGE_CACHE_DIR", str(cache))      # as both units set it
    monkeypatch.setattr(install, "_build_engines", lambda root: "no TensorRT here")
    tar = make_tar(cpu_int8_bundle[1], tmp_path / "leafnet.tar")
    staged = install.stage(Slots(tmp_path / "bundles"), tar, "v1", None)
    before = sorted(p.relative_to(staged.root) for p in staged.root.rglob("*"))
    verdicts = bundle_cache_dir(staged.manifest_sha, cache) / SELFCHECK_FILE
    assert verdicts.is_file() and "passed" in verdicts.read_text()
    assert sorted(p.relative_to(staged.root) for p in staged.root.rglob("*")) == before   # bundle unwritten
    # Capture's start (same cache folder) finds the agent's verdict instead of running it again.
    model = load_model(staged.root)
    assert model.checker.cache.path == verdicts
