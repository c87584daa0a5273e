"""The fleet file: a TOML file that tells a device (or the centre) where its broker is, who it is,
and what it may send. Read once, validated whole, passed on as frozen dataclasses.

A wrong value is one ``ConfigError`` line naming the file and the key, so a farm manager editing
the file on a device can fix it without reading code.

Example::

    broker = "mqtts://broker.farm.example:8883"
    device = "tractor-07"
    username = "tractor-07"
    password_file = "/etc/clca-edge/mqtt.pass"
    ca = "/etc/clca-edge/ca.pem"
    heartbeat_s = 60
    replay_rate = 200        # records per second at most when catching up
    batch_size = 100

    [sampling]
    low_confidence = 0.5
    small_margin = 0.1
    out_of_distribution = true
    random_share = 0.01
    quota_mb = 200
    min_gap_s = 1.0

    [sampling.per_hour]
    low_confidence = 60
    small_margin = 60
    out_of_distribution = 60
    random = 20
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import urlsplit

from ..core.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.8 on JetPack 5: the same parser, from PyPI (setup.cfg's install_requires)
    import tomli as tomllib

SCHEMES = {"mqtt": (False, 1883), "mqtts": (True, 8883)}
# A device name and a topic prefix become topic levels: no wildcards, no separators, no '$'.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
SAMPLING_REASONS = ("low_confidence", "small_margin", "out_of_distribution", "random")


@dataclass(frozen=True)
class BrokerConfig:
    """Where the broker is and how to prove who we are: shared by devices and the collector."""

    url: str
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    ca: Optional[Path] = None
    cert: Optional[Path] = None
    key: Optional[Path] = None
    keepalive_s: int = 30

    def __post_init__(self) -> None:
        self.endpoint()  # validates the URL
        if (self.cert is None) != (self.key is None):
            raise ConfigError("cert and key go together: give both (a client certificate) or neither")
        if self.password is not None and self.username is None:
            raise ConfigError("password without username: give the username too")
        for name in ("ca", "cert", "key"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{name} {path} is not a readable file")
        if not 5 <= self.keepalive_s <= 3600:
            raise ConfigError(f"keepalive_s {self.keepalive_s} must be within 5..3600 seconds")

    def endpoint(self) -> Tuple[str, int, bool]:
        """(host, port, tls) of ``mqtt://HOST[:PORT]`` or ``mqtts://HOST[:PORT]``."""
        parts = urlsplit(self.url)
        if parts.scheme not in SCHEMES:
            raise ConfigError(f"broker {self.url!r}: use mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
        tls, default_port = SCHEMES[parts.scheme]
        try:
            port = parts.port or default_port
        except ValueError:
            raise ConfigError(f"broker {self.url!r}: the port is not a number within 1..65535") from None
        if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.username:
            raise ConfigError(f"broker {self.url!r}: give only scheme, host and port "
                              "(credentials go in username/password)")
        return parts.hostname, port, tls

    @property
    def tls(self) -> bool:
        return self.endpoint()[2]


@dataclass(frozen=True)
class CentreLink:
    """The centre's side of the broker (the collector, the rollout's publisher): the broker and
    credentials as a device's fleet file gives them, and the fleet's topic prefix."""

    broker: BrokerConfig
    topic_prefix: str = "clca"

    def __post_init__(self) -> None:
        if not PREFIX_RE.match(self.topic_prefix):
            raise ConfigError(f"--topic-prefix {self.topic_prefix!r}: use letters, digits, '_', '-', '.' "
                              "and '/' between levels, no wildcards")


@dataclass(frozen=True)
class SamplingPolicy:
    """Which frames travel to the centre for labelling, and how many the device may keep.

    A decision is chosen for the first reason it meets, in this order: refused by the quality guard
    as out_of_distribution, calibrated confidence below ``low_confidence``, top-1/top-2 margin below
    ``small_margin``, else a ``random_share`` of the confident ones (an unbiased accuracy sample).
    Each reason has its own cap per hour and at least ``min_gap_s`` between two of its frames; the
    stored JPEGs stay within ``quota_mb``."""

    low_confidence: float = 0.5
    small_margin: float = 0.1
    out_of_distribution: bool = True
    random_share: float = 0.01
    per_hour: Mapping[str, int] = field(default_factory=lambda: {r: 60 for r in SAMPLING_REASONS})
    quota_mb: float = 200.0
    jpeg_quality: int = 90
    enabled: bool = True
    # Seconds between two frames kept for the same reason: consecutive video frames are near
    # duplicates, so spacing them gives the labeller more different views, and an hour's caps cannot
    # be spent (encoded) in one burst.
    min_gap_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("low_confidence", "small_margin", "random_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"sampling.{name} {getattr(self, name)} must be within 0..1")
        unknown = sorted(set(self.per_hour) - set(SAMPLING_REASONS))
        if unknown:
            raise ConfigError(f"sampling.per_hour.{unknown[0]}: unknown reason; use {', '.join(SAMPLING_REASONS)}")
        for reason, cap in self.per_hour.items():
            if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
                raise ConfigError(f"sampling.per_hour.{reason} {cap!r} must be a whole number >= 0")
        if self.quota_mb < 0:
            raise ConfigError(f"sampling.quota_mb {self.quota_mb} must be >= 0")
        if not 0 <= self.min_gap_s <= 3600:
            raise ConfigError(f"sampling.min_gap_s {self.min_gap_s} must be within 0..3600 seconds")
        if not 10 <= self.jpeg_quality <= 100:
            raise ConfigError(f"sampling.jpeg_quality {self.jpeg_quality} must be within 10..100")

    def cap(self, reason: str) -> int:
        return int(self.per_hour.get(reason, 0))

    @property
    def quota_bytes(self) -> int:
        return int(self.quota_mb * 1024 * 1024)


@dataclass(frozen=True)
class FleetConfig:
    """A device's place in the fleet: its broker, its name, its limits."""

    broker: BrokerConfig
    device: str
    topic_prefix: str = "clca"
    heartbeat_s: float = 60.0
    replay_rate: float = 200.0          # records per second at most, when catching up
    batch_size: int = 100               # records per message
    reconnect_max_s: int = 60           # longest wait between reconnection attempts (back-off from 1 s)
    sampling: SamplingPolicy = field(default_factory=SamplingPolicy)
    frames_dir: Optional[Path] = None   # where chosen frames wait; default: next to the field log

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.device):
            raise ConfigError(f"device {self.device!r}: use 1-64 letters, digits, '_', '-' or '.' "
                              "(it becomes a topic level)")
        if not PREFIX_RE.match(self.topic_prefix):
            raise ConfigError(f"topic_prefix {self.topic_prefix!r}: use letters, digits, '_', '-', '.' "
                              "and '/' between levels, no wildcards")
        if not 1 <= self.heartbeat_s <= 86400:
            raise ConfigError(f"heartbeat_s {self.heartbeat_s} must be within 1..86400 seconds")
        if not 0 < self.replay_rate <= 100000:
            raise ConfigError(f"replay_rate {self.replay_rate} must be within 0..100000 records/s (not 0)")
        if not 1 <= self.batch_size <= 1000:
            raise ConfigError(f"batch_size {self.batch_size} must be within 1..1000 records")
        if not 1 <= self.reconnect_max_s <= 3600:
            raise ConfigError(f"reconnect_max_s {self.reconnect_max_s} must be within 1..3600 seconds")


# TOML key -> (type(s) it must have, where it goes). Paths are relative to the fleet file's folder.
_TOP: Dict[str, tuple] = {
    "broker": (str,), "device": (str,), "username": (str,), "password": (str,), "password_file": (str,),
    "ca": (str,), "cert": (str,), "key": (str,), "topic_prefix": (str,), "keepalive_s": (int,),
    "heartbeat_s": (int, float), "replay_rate": (int, float), "batch_size": (int,),
    "reconnect_max_s": (int,), "frames_dir": (str,), "sampling": (dict,),
    # The bundle rollout's keys (``clca-edge agent``): type-checked here, read by fleet/agent_config.py.
    "rings": (list,), "trusted_keys": (str,), "bandwidth_kbps": (int, float), "field_log": (str,),
    "probation": (dict,),
}
ROLLOUT_KEYS = ("rings", "trusted_keys", "bandwidth_kbps", "field_log", "probation")
_SAMPLING: Dict[str, tuple] = {
    "low_confidence": (int, float), "small_margin": (int, float), "out_of_distribution": (bool,),
    "random_share": (int, float), "per_hour": (dict,), "quota_mb": (int, float), "jpeg_quality": (int,),
    "enabled": (bool,), "min_gap_s": (int, float),
}
_PATHS = ("password_file", "ca", "cert", "key", "frames_dir")


def _check_keys(where: str, data: Mapping[str, Any], schema: Mapping[str, tuple]) -> None:
    for key, value in data.items():
        if key not in schema:
            raise ConfigError(f"{where}{key}: unknown key; known keys: {', '.join(sorted(schema))}")
        types = schema[key]
        if isinstance(value, bool) and bool not in types:
            raise ConfigError(f"{where}{key} = {value!r}: expected {'/'.join(t.__name__ for t in types)}")
        if not isinstance(value, types):
            raise ConfigError(f"{where}{key} = {value!r}: expected {'/'.join(t.__name__ for t in types)}")


def read_password(path: Path) -> str:
    """The first line of a password file (a secret kept out of the fleet file, mode 0600)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"password_file {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise ConfigError(f"password_file {path} is empty; its first line is the password")
    return lines[0]


def sampling_from_dict(data: Mapping[str, Any]) -> SamplingPolicy:
    _check_keys("sampling.", data, _SAMPLING)
    kwargs = dict(data)
    if "per_hour" in kwargs:
        kwargs["per_hour"] = {**{r: 60 for r in SAMPLING_REASONS}, **kwargs["per_hour"]}
    for name in ("low_confidence", "small_margin", "random_share", "quota_mb", "min_gap_s"):
        if name in kwargs:
            kwargs[name] = float(kwargs[name])
    return SamplingPolicy(**kwargs)


def fleet_from_dict(data: Mapping[str, Any], base: Path = Path(".")) -> FleetConfig:
    """A FleetConfig from a parsed fleet file; relative paths are taken from ``base``."""
    _check_keys("", data, _TOP)
    for required in ("broker", "device"):
        if required not in data:
            raise ConfigError(f"{required}: missing; the fleet file needs broker = \"mqtt://HOST:PORT\" and device")
    if "password" in data and "password_file" in data:
        raise ConfigError("password and password_file: give one of them")
    paths = {k: (base / data[k] if not Path(data[k]).is_absolute() else Path(data[k])) for k in _PATHS if k in data}
    password = data.get("password")
    if "password_file" in paths:
        password = read_password(paths["password_file"])
    broker = BrokerConfig(url=data["broker"], username=data.get("username"), password=password,
                          ca=paths.get("ca"), cert=paths.get("cert"), key=paths.get("key"),
                          keepalive_s=data.get("keepalive_s", 30))
    rest = {k: data[k] for k in ("topic_prefix", "batch_size", "reconnect_max_s") if k in data}
    rest.update({k: float(data[k]) for k in ("heartbeat_s", "replay_rate") if k in data})
    return FleetConfig(broker=broker, device=data["device"], sampling=sampling_from_dict(data.get("sampling", {})),
                       frames_dir=paths.get("frames_dir"), **rest)


def read_fleet_toml(path: Path) -> Dict[str, Any]:
    """The fleet file's TOML, or one ConfigError line naming the file (shared by the agent's settings)."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"--fleet {path}: cannot read it ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--fleet {path}: not valid TOML ({e})") from None


def load_fleet(path) -> FleetConfig:
    """Read and validate a fleet file; every problem is one ConfigError line naming the file and key."""
    path = Path(path)
    data = read_fleet_toml(path)
    try:
        return fleet_from_dict(data, path.parent)
    except ConfigError as e:
        raise ConfigError(f"--fleet {path}: {e}") from None
