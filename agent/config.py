"""The agent's settings: flags, an optional TOML file, and the environment, merged into one
frozen AgentConfig. Flags win over the file; the file wins over the defaults."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.ranges import parse_rate
from tracker.errors import InvalidArgument
from tracker.mdns import check_cluster, check_interface_choices
from tracker.model import split_host_port
from tracker.process import state_home

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
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level: {self.log_level!r} is not debug, info, warning or error")


def _path_list(value: Any) -> tuple[Path, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("a list of paths")
    return tuple(Path(v) for v in value)


def _text_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("a list of text")
    return tuple(value)


def _typed(kind: type, description: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise TypeError(description)
        return value

    return convert


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("a number")
    return float(value)


def _rate(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError('a rate such as "50MB/s"')
    return value if isinstance(value, int) else parse_rate(value)


# The keys of agent.toml, each with the conversion that checks its type.
FILE_KEYS: Mapping[str, Callable[[Any], Any]] = {
    "share": _path_list,
    "tracker": _typed(str, "HOST:PORT text"),
    "listen": _typed(str, "HOST:PORT text"),
    "advertise_url": _typed(str, "a URL"),
    "state_dir": lambda v: Path(_typed(str, "a path")(v)),
    "token_file": lambda v: Path(_typed(str, "a path")(v)),
    "tracker_tls_ca": lambda v: Path(_typed(str, "a path")(v)),
    "max_uploads": _typed(int, "a whole number"),
    "upload_limit": _rate,
    "rescan_interval": _number,
    "log_level": _typed(str, "text"),
    "cluster": _typed(str, "text"),
    "mdns": _typed(bool, "true or false"),
    "mdns_interfaces": _text_list,
}


def load_file(path: Path) -> dict[str, Any]:
    """Reads agent.toml into checked values. Errors name the file, the line and the key."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    values = {}
    for key, value in raw.items():
        where = f"{path}:{_line_of(text, key)}"
        convert = FILE_KEYS.get(key)
        if convert is None:
            known = ", ".join(sorted(FILE_KEYS))
            raise ConfigError(f"{where}: unknown key {key!r} (known keys: {known})")
        try:
            values[key] = convert(value)
        except TypeError as exc:
            raise ConfigError(f"{where}: {key} must be {exc}") from None
        except ValueError as exc:
            raise ConfigError(f"{where}: {key}: {exc}") from None
    return values


def _line_of(text: str, key: str) -> int:
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return 1
