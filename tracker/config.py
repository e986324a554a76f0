"""The tracker's settings: flags, a TOML file (/etc/lanpeer/tracker.toml unless --config
names another) and the environment, merged into one frozen TrackerConfig. Flags win over
the file; the file wins over the defaults."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

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
    read_file,
    text,
    texts,
)
from tracker.errors import TrackerError
from tracker.policy import POLICY_NAMES
from tracker.process import LOG_FORMATS, LOG_LEVELS, state_home
from tracker.server import DEFAULT_METRICS_LISTEN, TrackerConfig

DEFAULT_CONFIG = Path("/etc/lanpeer/tracker.toml")

# The keys of tracker.toml: one for each flag of `lanpeer-tracker run`.
FILE_KEYS: Mapping[str, Convert] = {
    "listen": text,
    "db": path,
    "token_file": path,
    "admin_token_file": path,
    "tls_cert": path,
    "tls_key": path,
    "heartbeat_interval": number,
    "handout_policy": one_of(*POLICY_NAMES),
    "metrics_listen": text,
    "cluster": text,
    "mdns": boolean,
    "mdns_interfaces": texts,
    "log_level": one_of(*LOG_LEVELS),
    "log_format": one_of(*LOG_FORMATS),
}


def default_db_path() -> Path:
    return state_home() / "tracker.db"


def load(args: argparse.Namespace) -> tuple[TrackerConfig, dict[str, Setting | None]]:
    """The configuration `lanpeer-tracker run` uses, and every key's setting with where it
    came from."""
    chosen = config_path(args.config, DEFAULT_CONFIG)
    settings = merge(FILE_KEYS, read_file(chosen, FILE_KEYS, TrackerError) if chosen else {}, args)
    values = {key: s.value for key, s in settings.items()}
    values["cluster_token"] = read_token(values.pop("token_file", None), "LANPEER_TOKEN")
    values["admin_token"] = read_token(values.pop("admin_token_file", None), "LANPEER_ADMIN_TOKEN")
    values.setdefault("db", default_db_path())
    # The library serves no metrics unless asked; the command serves them unless told "".
    values["metrics_listen"] = values.get("metrics_listen", DEFAULT_METRICS_LISTEN) or None
    # Likewise the mDNS advert.
    values.setdefault("mdns", True)
    values["mdns_interfaces"] = tuple(values.get("mdns_interfaces", ()))
    try:
        config = TrackerConfig(**values)
    except TrackerError as exc:
        raise TrackerError(locate(str(exc), settings)) from None
    return config, effective(FILE_KEYS, settings, config)
