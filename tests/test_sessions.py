"""One ONNX Runtime session factory: export parity, the deploy gate, build-engine's reference,
the benchmark and the device backends open sessions with the same settings."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from clca_edge.runtime.sessions import open_session, session_options


def _settings(opts: ort.SessionOptions) -> dict:
    return {"optimization": opts.graph_optimization_level, "log_severity": opts.log_severity_level,
            "threads": opts.intra_op_num_threads,
            "spinning": opts.get_session_config_entry("session.intra_op.allow_spinning")}


def test_the_settings_are_the_device_ones():
    assert _settings(session_options(threads=2)) == {
        "optimization": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "log_severity": 3, "threads": 2, "spinning": "0"}
    assert session_options().intra_op_num_threads == 0  # ONNX Runtime's default
    assert session_options(optimize=False).graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL


@pytest.fixture
def opened(monkeypatch):
    """Every InferenceSession created, as (caller's settings, providers)."""
    seen = []
    real = ort.InferenceSession

    def recording(model, sess_options=None, providers=None, **kw):
        seen.append((_settings(sess_options), tuple(providers or ())))
        return real(model, sess_options, providers=providers, **kw)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    return seen


def test_gate_parity_benchmark_and_runtime_open_sessions_alike(opened, bundle_dir, images, tmp_path):
    from conftest import tiny_model

    from clca_edge.benchmark.measure import _ort_sessions
    from clca_edge.deploy.onnx_export import OnnxExportConfig, export_onnx, onnx_parity
    from clca_edge.runtime.backends import OrtClassifier
    from clca_edge.runtime.scoring import ort_runner

    onnx_path = bundle_dir / "model.onnx"
    clf = OrtClassifier(onnx_path, img_size=64)                       # predict / capture on ort-cpu
    runner = ort_runner(onnx_path, "images", "logits")                # deploy gate, build-engine reference
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    assert np.allclose(runner(x)[0], clf.logits(x[0]), atol=1e-6)
    model = tiny_model().eval()
    exported = export_onnx(model, tmp_path / "m.onnx", OnnxExportConfig(batch_size=1))
    assert onnx_parity(model, exported, images) <= 1e-4              # export parity
    _ort_sessions(model, 64, 2, int8=False, threads=0, workdir=tmp_path / "bench")  # benchmark (batch 1 and 2)
    assert [settings for settings, _ in opened] == [_settings(session_options())] * 5
    assert {providers for _, providers in opened} == {("CPUExecutionProvider",)}


def test_bytes_and_unoptimised_sessions_for_graph_inspection(bundle_dir):
    sess = open_session((bundle_dir / "model.onnx").read_bytes(), optimize=False)
    out = sess.run(None, {"images": np.zeros((1, 3, 64, 64), np.float32)})[0]
    assert out.shape == (1, 5)
