"""Config files for the `run` commands: a TOML file read against a table of known keys, and
merged with the command line. Every flag of `run` has a key of the same name (`--max-uploads`
is `max_uploads`); flags win over the file, the file over the defaults. An unknown key or a
value of the wrong type is an error that names the file, the line and the key."""

from __future__ import annotations

import argparse
import json
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A conversion checks one value read from a file: it returns the value to use, or raises
# TypeError("a whole number") (what the value must be) or ValueError (what is wrong with it).
Convert = Callable[[Any], Any]

DEFAULT_ORIGIN = "default"
FLAG_ORIGIN = "command line"


@dataclass(frozen=True, slots=True)
class Setting:
    """A value and where it came from: DEFAULT_ORIGIN, FLAG_ORIGIN or "FILE:LINE"."""

    value: Any
    origin: str


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("text")
    return value


def path(value: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise TypeError("a path")
    return Path(value)


def paths(value: Any) -> tuple[Path, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise TypeError("a list of paths")
    return tuple(Path(v) for v in value)


def texts(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("a list of text values")
    return tuple(value)


def whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("a whole number")
    return value


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError("a number")
    return float(value)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("true or false")
    return value


def one_of(*choices: str) -> Convert:
    def convert(value: Any) -> str:
        if value not in choices:
            raise TypeError(" or ".join(", ".join(repr(c) for c in choices).rsplit(", ", 1)))
        return str(value)

    return convert


def config_path(explicit: Path | None, default: Path) -> Path | None:
    """The file to read: the one named on the command line (which must exist), else the
    default one when it exists."""
    if explicit is not None:
        return explicit
    return default if default.is_file() else None


def read_file(path: Path, keys: Mapping[str, Convert], error: type[Exception]) -> dict[str, Setting]:
    """Reads `path` into checked values, each with its file and line."""
    try:
        content = path.read_text()
    except OSError as exc:
        raise error(f"cannot read the config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file") from None
    try:
        raw = tomllib.loads(content)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: {exc}") from None
    values = {}
    for key, value in raw.items():
        where = f"{path}:{_line_of(content, key)}"
        convert = keys.get(key)
        if convert is None:
            known = ", ".join(sorted(keys))
            raise error(f"{where}: unknown key {key!r} (known keys: {known})")
        try:
            values[key] = Setting(convert(value), where)
        except TypeError as exc:
            raise error(f"{where}: {key} must be {exc}") from None
        except ValueError as exc:
            raise error(f"{where}: {key}: {exc}") from None
    return values


def _line_of(content: str, key: str) -> int:
    pattern = re.compile(rf"""^\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*=""")
    for number, line in enumerate(content.splitlines(), start=1):
        if pattern.match(line):
            return number
    return 1


def merge(
    keys: Iterable[str], from_file: Mapping[str, Setting], args: argparse.Namespace
) -> dict[str, Setting]:
    """The settings given: those of the file, replaced by the flags given (a flag not
    given is None in `args`)."""
    settings = dict(from_file)
    for key in keys:
        flag = getattr(args, key, None)
        if flag is not None:
            settings[key] = Setting(flag, FLAG_ORIGIN)
    return settings


def locate(message: str, settings: Mapping[str, Setting]) -> str:
    """An error about a setting (a message that starts with its key), prefixed with the file
    and line the value came from when it came from a file."""
    key = re.split(r"[:\s]", message, maxsplit=1)[0]
    setting = settings.get(key)
    if setting is None or setting.origin in (DEFAULT_ORIGIN, FLAG_ORIGIN):
        return message
    return f"{setting.origin}: {message}"


def effective(
    keys: Iterable[str], given: Mapping[str, Setting], config: object, fields: Mapping[str, str] = {}
) -> dict[str, Setting | None]:
    """Every key's setting: the one given, else the value `config` (the configuration built
    from them) holds by default in the field of that name (or `fields[key]`); None when it
    holds none (a key naming a token file: the token is not shown)."""
    shown: dict[str, Setting | None] = {}
    for key in keys:
        value = getattr(config, fields.get(key, key), None)
        shown[key] = given.get(key) or (None if value is None else Setting(value, DEFAULT_ORIGIN))
    return shown


def add_config_option(parser: argparse.ArgumentParser, default: Path) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="F",
        help=f"read settings from this TOML file instead of {default} (read when it exists); flags win",
    )


def add_config_command(
    commands: Any,
    prog: str,
    add_run_options: Callable[[argparse.ArgumentParser], None],
    load: Callable[[argparse.Namespace], tuple[Any, Mapping[str, Setting | None]]],
) -> None:
    """`PROG config [--print]`, with the options of `run`: checks the configuration `run`
    would use, or prints it."""
    config = commands.add_parser(
        "config",
        help="check the configuration `run` would use, or print it",
        description=f"Check the settings `{prog} run` would use with these options: its defaults, "
        "the config file and the flags given. Exit status 1 when they are not valid.",
    )
    config.add_argument(
        "--print",
        action="store_true",
        dest="print_settings",
        help="print every setting as TOML, with where it comes from",
    )
    add_run_options(config)

    def check(args: argparse.Namespace) -> int:
        _, settings = load(args)
        if args.print_settings:
            print(render(settings))
            return 0
        files = {s.origin.rsplit(":", 1)[0] for s in settings.values() if s and s.origin[:1] == "/"}
        read = f"read from {', '.join(sorted(files))}" if files else "no config file"
        print(f"The configuration is valid ({read}).")
        return 0

    config.set_defaults(handler=check)


def render(settings: Mapping[str, Setting | None]) -> str:
    """The settings as TOML, each with where it came from; a setting with no value is a
    comment, so the output can be used as a config file."""
    lines = []
    for key, setting in settings.items():
        if setting is None or setting.value is None:
            lines.append(f"# {key} is not set")
            continue
        lines.append(f"{key} = {_toml_value(setting.value)}  # {setting.origin}")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # JSON's string escapes are valid in TOML's basic strings.
    return json.dumps(str(value))
