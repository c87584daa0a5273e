"""The commands' typed configs (capture, deploy, robustness, the runtime) refuse a bad value when
they are built, with a message that names the option; good values build."""

from __future__ import annotations

from pathlib import Path

import pytest

from clca_edge.capture.config import CaptureConfig, OutputConfig
from clca_edge.core.errors import ConfigError
from clca_edge.deploy.config import DeployConfig
from clca_edge.robustness.config import SuiteConfig, VariantsConfig
from clca_edge.runtime.open import RuntimeConfig


def _deploy(**kw) -> DeployConfig:
    return DeployConfig(checkpoint=Path("c.pt"), out=Path("out"), calib_data=Path("calib"), eval_data=Path("eval"), **kw)


BAD = [
    (lambda: CaptureConfig(top_k=0), r"--top-k 0 must be >= 1"),
    (lambda: CaptureConfig(every=0), r"--every 0 must be >= 1"),
    (lambda: CaptureConfig(interval_s=-1.0), r"--interval -1.0 must be >= 0 seconds"),
    (lambda: CaptureConfig(max_frames=0), r"--max-frames 0 must be >= 1"),
    (lambda: CaptureConfig(duration_s=0.0), r"--duration 0.0 must be > 0 seconds"),
    (lambda: CaptureConfig(open_timeout_s=0.0), r"open timeout and poll interval must be > 0"),
    (lambda: CaptureConfig(poll_s=-0.1), r"open timeout and poll interval must be > 0"),
    (lambda: OutputConfig(log_format="csv"), r"--log-format 'csv'; choose one of jsonl, sqlite"),
    (lambda: _deploy(field_suite="some"), r"--field-suite 'some'; choose one of full, quick, off"),
    (lambda: _deploy(max_field_drop=-1.0), r"--max-field-drop -1.0 must be >= 0"),
    (lambda: _deploy(max_field_drop=2.0, field_suite="off"), r"--max-field-drop needs the field suite"),
    (lambda: _deploy(target="tpu"), r"--target 'tpu'; choose one of jetson-orin, cpu"),
    (lambda: _deploy(precisions=("int4",)), r"--precision 'int4': each must be one of"),
    (lambda: _deploy(precisions=()), r"--precision '': each must be one of"),
    (lambda: _deploy(opset=18), r"opset 18 > 17: TensorRT"),
    (lambda: SuiteConfig(suite="most"), r"--suite 'most'; choose one of full, quick, off"),
    (lambda: SuiteConfig(only=("blur", "rain")), r"--only rain: unknown perturbation"),
    (lambda: VariantsConfig(precisions=("int4",)), r"--precision int4: choose among"),
    (lambda: VariantsConfig(threads=-1), r"--threads -1 must be >= 0"),
    (lambda: RuntimeConfig("b", backend="cuda"), r"--backend 'cuda'; choose one of auto, "),
    (lambda: RuntimeConfig("b", precision="int4"), r"--precision 'int4'; choose one of auto, "),
    (lambda: RuntimeConfig("b", threads=-2), r"--threads -2 must be >= 0"),
    (lambda: RuntimeConfig("b", force_variant=True), r"--force-variant needs an explicit --precision"),
]


@pytest.mark.parametrize("build, message", BAD, ids=[f"{i}{m.split()[0]}" for i, (_, m) in enumerate(BAD)])
def test_a_bad_value_is_refused_naming_the_option(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_good_values_build():
    capture = CaptureConfig(top_k=5, every=2, interval_s=0.5, max_frames=10, duration_s=3.0)
    assert capture.log_dict()["top_k"] == 5 and "quality" not in capture.log_dict()
    assert OutputConfig(log_format="sqlite").log_format == "sqlite"
    deploy = _deploy(target="cpu", precisions=("int8", "fp32"), field_suite="quick", max_field_drop=3.0, opset=18)
    assert deploy.precisions == ("int8", "fp32") and deploy.opset == 18   # opset 18 is fine off Jetson
    assert SuiteConfig(suite="quick", only=("blur",)).only == ("blur",)
    assert VariantsConfig(precisions=("fp32",), threads=1).threads == 1
    assert RuntimeConfig("b", precision="fp16", force_variant=True).force_variant
