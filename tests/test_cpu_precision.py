"""``--precision auto`` on ONNX Runtime CPU: the faster of fp32 and INT8 as measured on this device
(cached per device key), among those that pass the self-check; INT8 that may saturate here is used
only once a real self-check proved it."""

from __future__ import annotations

import shutil

import pytest

from clca_edge.bundle import read_manifest, write_manifest
from clca_edge.bundle.int8 import int8_isa
from clca_edge.core.cpuinfo import parse_cpuinfo
from clca_edge.runtime import backends
from clca_edge.runtime.backends import select_classifier
from clca_edge.runtime.model import load_model


@pytest.fixture
def bundle(cpu_int8_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))   # fresh device caches: nothing measured yet
    dst = tmp_path / "bundle"
    shutil.copytree(cpu_int8_bundle[1], dst)
    return dst


class FixedLatency:
    def __init__(self, **ms):
        self.ms = ms
        self.asked = []

    def measure(self, clf, threads=0):
        self.asked.append(clf.precision)
        return self.ms[clf.precision], False


def _with_latency(model, probe):
    import dataclasses

    return dataclasses.replace(model.files, latency=probe)


def test_auto_runs_int8_when_it_is_faster_here(bundle):
    model = load_model(bundle)
    files = _with_latency(model, FixedLatency(fp32=2.0, int8=1.0))
    clf = select_classifier(files, "ort-cpu", "auto").classifier
    assert clf.precision == "int8" and clf.source_file.name == "model.int8.onnx"
    assert "running int8" in clf.selection_note and "int8 1 ms vs fp32 2 ms" in clf.selection_note


def test_auto_says_so_and_runs_fp32_when_int8_is_not_faster(bundle):
    model = load_model(bundle)
    probe = FixedLatency(fp32=1.0, int8=1.5)
    sel = select_classifier(_with_latency(model, probe), "ort-cpu", "auto")
    assert sel.classifier.precision == "fp32" and sorted(probe.asked) == ["fp32", "int8"]
    assert sel.classifier.selection_note.startswith("INT8 is not faster than fp32 on this CPU")
    # Both passed the device self-check before being timed.
    assert {c.precision for c in sel.checks} == {"fp32", "int8"} and all(c.usable for c in sel.checks)
    # An explicit precision is not second-guessed.
    assert select_classifier(_with_latency(model, probe), "ort-cpu", "int8").classifier.precision == "int8"


def test_latency_is_measured_once_per_device_key(bundle):
    first = load_model(bundle)
    choice = select_classifier(first.files, "ort-cpu", "auto").classifier
    assert first.files.latency.measured == 2 and first.files.latency.cache.is_file()
    assert not first.files.latency.cache.is_relative_to(bundle)
    again = load_model(bundle)
    clf = select_classifier(again.files, "ort-cpu", "auto").classifier
    assert again.files.latency.measured == 0 and clf.precision == choice.precision  # cached start
    assert "cached" in clf.selection_note
    # Another thread setting is another key: measured again.
    third = load_model(bundle)
    select_classifier(third.files, "ort-cpu", "auto", threads=1)
    assert third.files.latency.measured == 2


def test_int8_that_may_saturate_here_needs_a_real_self_check(bundle, monkeypatch):
    """A bundle whose CPU INT8 is not declared safe on x86 without VNNI (8-bit u8s8, from before the
    7-bit flavour), on such a CPU: without reference samples auto keeps fp32; with them, a passed
    self-check proves the INT8 and it may run."""
    monkeypatch.setattr("clca_edge.runtime.model._int8_may_saturate", lambda b: True)
    model = load_model(bundle)
    assert model.files.cpu_int8_needs_proof
    proven = select_classifier(_with_latency(model, FixedLatency(fp32=2.0, int8=1.0)), "ort-cpu", "auto")
    assert proven.classifier.precision == "int8"  # the self-check ran on reference samples and passed
    m = read_manifest(bundle)
    m.reference = None  # as a bundle deployed before reference samples
    m.int8 = None
    write_manifest(bundle, m, hash_files=False)
    old = load_model(bundle)
    sel = select_classifier(_with_latency(old, FixedLatency(fp32=2.0, int8=1.0)), "ort-cpu", "auto")
    assert sel.classifier.precision == "fp32"


def test_shipped_cpu_int8_is_declared_safe_and_isa_recorded(bundle):
    from clca_edge.runtime.model import _int8_may_saturate

    m = read_manifest(bundle)
    assert m.int8.cpu_variant == "int8" and m.int8.cpu_flavour == "ort-cpu-u8s8-w7" and m.int8.x86_non_vnni_safe
    assert m.int8.tensorrt_variant is None and m.int8.deploy_cpu.isa == int8_isa()
    assert not _int8_may_saturate(type("Bundle", (), {"manifest": m})())  # safe on every CPU


@pytest.mark.parametrize("flags,arch,want", [
    ("fpu sse4_1 avx2 fma", "x86_64", "x86_64 avx2 (no VNNI"),
    ("avx2 avx512f avx512bw", "x86_64", "x86_64 avx512 (no VNNI"),
    ("avx2 avx512f avx512_vnni", "x86_64", "x86_64 avx512_vnni"),
    ("avx2 avx_vnni", "x86_64", "x86_64 avx_vnni"),
])
def test_int8_isa_names_the_kernel_path(flags, arch, want):
    cpu = parse_cpuinfo(f"model name\t: Test CPU\nflags\t\t: {flags}\n", arch)
    assert int8_isa(cpu).startswith(want)


def test_int8_isa_on_arm():
    text = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes asimddp\nCPU implementer\t: 0x41\nCPU part\t: 0xd42\n"
    assert int8_isa(parse_cpuinfo(text, "aarch64")) == "aarch64 neon dotprod"
