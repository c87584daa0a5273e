"""Staging a downloaded bundle: where TensorRT is installed the engine is built (build-engine in its
own process) before the self-check; a failed build is said, not a refusal."""

from __future__ import annotations

import importlib.util
import os
import stat

from clca_edge.fleet import install


def test_build_engine_runs_only_where_tensorrt_is(tmp_path, monkeypatch):
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "bin" / "clca-edge"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\nexit ${{FAKE_EXIT:-0}}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: real(name, *a) if name != "tensorrt" else None)
    assert install._build_engines(tmp_path / "b").startswith("TensorRT not installed") and not calls.exists()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "tensorrt" else real(name, *a))
    assert install._build_engines(tmp_path / "b") == "engine built"
    assert calls.read_text().split() == ["build-engine", "--bundle", str(tmp_path / "b"), "--precision", "auto"]
    monkeypatch.setenv("FAKE_EXIT", "9")
    assert "failed (exit 9)" in install._build_engines(tmp_path / "b")
