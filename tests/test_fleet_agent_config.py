"""The agent's fleet file: the link's keys plus rings, trusted keys, bandwidth, field log, probation;
capture's reader accepts the same file."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from clca_edge.cli import main
from clca_edge.core.errors import ConfigError
from clca_edge.fleet.agent_config import load_agent_config
from clca_edge.fleet.config import load_fleet

GOOD = """
broker = "mqtt://127.0.0.1:1883"
device = "tractor-07"
rings = ["canary", "all"]
trusted_keys = "keys"
bandwidth_kbps = 250
field_log = "field.jsonl"

[probation]
duration_s = 300
min_frames = 40
max_rise = 0.2
"""


def test_agent_settings_are_read_and_the_link_reads_the_same_file(tmp_path):
    f = tmp_path / "fleet.toml"
    f.write_text(GOOD)
    cfg = load_agent_config(f, tmp_path / "bundles")
    assert cfg.rings == ("canary", "all") and cfg.trusted_keys == tmp_path / "keys"
    assert cfg.download.bandwidth_bps == 250_000 and cfg.field_log == tmp_path / "field.jsonl"
    assert (cfg.probation.duration_s, cfg.probation.min_frames, cfg.probation.max_rise) == (300, 40, 0.2)
    assert load_fleet(f).device == "tractor-07"   # capture --fleet takes the agent's file as it is


@pytest.mark.parametrize("edit, match", [
    (("rings = [\"canary\", \"all\"]", "rings = [\"a/b\"]"), "rings"),
    (("rings = [\"canary\", \"all\"]", "rings = []"), "rings"),
    (("trusted_keys = \"keys\"", ""), "trusted_keys: missing"),
    (("max_rise = 0.2", "max_rise = 2"), "max_rise"),
    (("max_rise = 0.2", "max_fall = 0.2"), "probation.max_fall: unknown key"),
    (("bandwidth_kbps = 250", "bandwidth_kbps = 0"), "bandwidth_kbps"),
    (("bandwidth_kbps = 250", "bandwidth_kbps = \"fast\""), "bandwidth_kbps"),
])
def test_a_wrong_value_is_one_line_naming_the_key(tmp_path, edit, match):
    f = tmp_path / "fleet.toml"
    f.write_text(GOOD.replace(*edit))
    with pytest.raises(ConfigError, match=match):
        load_agent_config(f, tmp_path / "bundles")
    res = CliRunner().invoke(main, ["agent", "--fleet", str(f), "--bundles", str(tmp_path / "b")])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and str(f) in res.stderr
