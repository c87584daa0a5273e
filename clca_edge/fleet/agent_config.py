"""The agent's settings: the fleet file of the fleet link plus the rollout keys::

    rings = ["canary", "all"]          # the rollout rings this device follows
    trusted_keys = "/etc/clca-edge/trusted"   # folder (or file) of clca-edge.pub keys announcements must be signed by
    bandwidth_kbps = 500               # download limit (kB/s); unset: no limit
    field_log = "/var/lib/clca-edge/field.jsonl"   # capture's log: the probation's evidence

    [probation]
    duration_s = 600
    min_frames = 50
    low_confidence = 0.5
    max_rise = 0.15
    max_share = 0.5
    z = 2.33

Read whole and validated: a wrong value is one ConfigError line naming the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple

from ..core.errors import ConfigError
from .announce import NAME_RE
from .config import FleetConfig, fleet_from_dict, read_fleet_toml
from .download import DownloadConfig
from .probation import ProbationConfig

_PROBATION_KEYS = {"duration_s", "min_frames", "low_confidence", "max_rise", "max_share", "z"}


@dataclass(frozen=True)
class AgentConfig:
    fleet: FleetConfig
    rings: Tuple[str, ...]
    trusted_keys: Path
    bundles: Path
    field_log: Optional[Path] = None
    download: DownloadConfig = field(default_factory=DownloadConfig)
    probation: ProbationConfig = field(default_factory=ProbationConfig)
    retry_s: Tuple[float, float] = (2.0, 300.0)   # back-off between download tries (first, longest)
    poll_s: float = 0.5                           # how often the agent looks at its queue and the field log

    def __post_init__(self) -> None:
        if not self.rings:
            raise ConfigError("rings: give at least one ring, e.g. rings = [\"canary\", \"all\"]")
        bad = [r for r in self.rings if not NAME_RE.match(r)]
        if bad:
            raise ConfigError(f"rings: {bad[0]!r} is not a ring name (letters, digits, '.', '_', '-')")


def _probation(data: Any) -> ProbationConfig:
    if not isinstance(data, dict):
        raise ConfigError("probation must be a table")
    unknown = sorted(set(data) - _PROBATION_KEYS)
    if unknown:
        raise ConfigError(f"probation.{unknown[0]}: unknown key; known keys: {', '.join(sorted(_PROBATION_KEYS))}")
    for k, v in data.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"probation.{k} = {v!r}: expected a number")
    kwargs = {k: (int(v) if k == "min_frames" else float(v)) for k, v in data.items()}
    return ProbationConfig(**kwargs)


def agent_from_dict(data: Mapping[str, Any], base: Path, bundles: Path) -> AgentConfig:
    fleet = fleet_from_dict(data, base)
    rings = data.get("rings")
    if rings is None or not all(isinstance(r, str) for r in rings):
        raise ConfigError("rings: missing or not a list of names; the agent needs rings = [\"canary\", ...]")
    if "trusted_keys" not in data:
        raise ConfigError("trusted_keys: missing; the agent installs only bundles announced with a trusted key")
    path = lambda v: Path(v) if Path(v).is_absolute() else base / v  # noqa: E731
    kbps = data.get("bandwidth_kbps")
    if kbps is not None and kbps <= 0:
        raise ConfigError(f"bandwidth_kbps {kbps} must be > 0 (leave it out for no limit)")
    return AgentConfig(fleet=fleet, rings=tuple(rings), trusted_keys=path(data["trusted_keys"]), bundles=Path(bundles),
                       field_log=path(data["field_log"]) if "field_log" in data else None,
                       download=DownloadConfig(bandwidth_bps=kbps * 1000.0 if kbps else None),
                       probation=_probation(data.get("probation", {})))


def load_agent_config(path, bundles) -> AgentConfig:
    path = Path(path)
    data = read_fleet_toml(path)
    try:
        return agent_from_dict(data, path.parent, Path(bundles))
    except ConfigError as e:
        raise ConfigError(f"--fleet {path}: {e}") from None


__all__ = ["AgentConfig", "agent_from_dict", "load_agent_config"]
