"""The agent's settings: flags, a TOML file (/etc/lanpeer/agent.toml unless --config names
another) and the environment, merged into one frozen AgentConfig. Flags win over the file;
the file wins over the defaults."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.ranges import parse_rate
from tracker.auth import read_token
from tracker.configfile import (
    Convert,
    Setting,
    boolean,
    config_path,
    effective,
    locate,
    merge,
    number,
    one_of,
    path,
    paths,
    read_file,
    text,
    texts,
    whole,
)
from tracker.errors import InvalidArgument
from tracker.mdns import check_cluster, check_interface_choices
from tracker.model import split_host_port
from tracker.process import LOG_FORMATS, LOG_LEVELS, state_home

DEFAULT_CONFIG = Path("/etc/lanpeer/agent.toml")
DEFAULT_LISTEN = "0.0.0.0:7071"


def default_state_dir() -> Path:
    return state_home() / "agent"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    shares: tuple[Path, ...]
    state_dir: Path
    tracker: str | None = None
    listen: str = DEFAULT_LISTEN
    advertise_url: str | None = None
    token: str | None = None
    tracker_tls_ca: Path | None = None
    max_uploads: int = 16
    upload_limit: int | None = None
    rescan_interval: float = 60.0
    log_level: str = "info"
    log_format: str = "text"
    # With no tracker configured: the cluster whose tracker to find over mDNS (None: the
    # only one visible), whether to look at all (on by default in `lanpeer-agent run`),
    # and on which interfaces (names or IPv4 addresses; empty is all).
    cluster: str | None = None
    mdns: bool = False
    mdns_interfaces: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.shares:
            raise ConfigError("nothing to share: give at least one --share DIR")
        try:
            if self.cluster is not None:
                check_cluster(self.cluster)
            check_interface_choices(self.mdns_interfaces)
        except InvalidArgument as exc:
            raise ConfigError(str(exc)) from None
        for what, value in (("listen", self.listen), ("tracker", self.tracker)):
            if value is None:
                continue
            try:
                split_host_port(value, what)
            except InvalidArgument as exc:
                raise ConfigError(str(exc)) from None
        if not 1 <= self.max_uploads <= 10_000:
            raise ConfigError(f"max_uploads: {self.max_uploads} is not between 1 and 10000")
        if not 0.1 <= self.rescan_interval <= 86_400:
            raise ConfigError(f"rescan_interval: {self.rescan_interval} is not between 0.1 and 86400 seconds")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level: {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format: {self.log_format!r} is not one of {', '.join(LOG_FORMATS)}")


def _rate(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError('a rate such as "50MB/s"')
    return value if isinstance(value, int) else parse_rate(value)


# The keys of agent.toml: one for each flag of `lanpeer-agent run`, with the conversion that
# checks its type.
FILE_KEYS: Mapping[str, Convert] = {
    "share": paths,
    "tracker": text,
    "listen": text,
    "advertise_url": text,
    "state_dir": path,
    "token_file": path,
    "tracker_tls_ca": path,
    "max_uploads": whole,
    "upload_limit": _rate,
    "rescan_interval": number,
    "log_level": one_of(*LOG_LEVELS),
    "log_format": one_of(*LOG_FORMATS),
    "cluster": text,
    "mdns": boolean,
    "mdns_interfaces": texts,
}


def file_settings(explicit: Path | None) -> dict[str, Setting]:
    """The settings of the config file named, else of /etc/lanpeer/agent.toml if it exists."""
    path_ = config_path(explicit, DEFAULT_CONFIG)
    return read_file(path_, FILE_KEYS, ConfigError) if path_ is not None else {}


def load(args: argparse.Namespace) -> tuple[AgentConfig, dict[str, Setting | None]]:
    """The configuration `lanpeer-agent run` uses: defaults, then the config file, then the
    flags given. Also returns every key's setting, with where it came from."""
    settings = merge(FILE_KEYS, file_settings(args.config), args)
    values = {key: s.value for key, s in settings.items()}
    shares = values.pop("share", ())
    token = read_token(values.pop("token_file", None), "LANPEER_TOKEN")
    values.setdefault("state_dir", default_state_dir())
    # The library looks for no tracker unless asked; the command does unless told not to.
    values.setdefault("mdns", True)
    values["mdns_interfaces"] = tuple(values.get("mdns_interfaces", ()))
    try:
        config = AgentConfig(shares=tuple(shares), token=token, **values)
    except ConfigError as exc:
        raise ConfigError(locate(str(exc), settings)) from None
    return config, effective(FILE_KEYS, settings, config, {"share": "shares"})
