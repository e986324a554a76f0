"""What every lanpeer command does the same way: logging, running until a signal, and
turning errors into one line on stderr."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Protocol


class Service(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


def state_home() -> Path:
    """Where lanpeer keeps its state unless told otherwise: $XDG_STATE_HOME/lanpeer, or
    ~/.local/state/lanpeer."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "lanpeer"


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


# What can carry a secret in a log line or an error message: the password in a URL, the
# value of a query parameter that signs or authorizes a URL (presigned object-store URLs),
# and a bearer token.
_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]*@")
_SECRET_PARAMETER = re.compile(
    r"(?i)([?&](?:[a-z0-9_.-]*(?:signature|token|secret|password|passwd|credential|sig|key))=)[^&#\s]*"
)
_BEARER = re.compile(r"(?i)(\bbearer\s+)[^\s,;]+")
REDACTED = "***"


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """`text` without the secrets it may hold: those given, and what the patterns above find."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    text = _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)
    text = _SECRET_PARAMETER.sub(rf"\1{REDACTED}", text)
    return _BEARER.sub(rf"\1{REDACTED}", text)


class TextFormatter(logging.Formatter):
    """Lines for people: time, level, logger and message, with secrets taken out."""

    def __init__(self, secrets: Sequence[str] = ()) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self._secrets)


class JsonFormatter(logging.Formatter):
    """One JSON object a line, for log collectors: time (UTC, RFC 3339), level, logger,
    message, and the exception's traceback when there is one; secrets taken out."""

    def __init__(self, secrets: Sequence[str] = ()) -> None:
        super().__init__()
        self._secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage(), self._secrets),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info), self._secrets)
        return json.dumps(entry, ensure_ascii=False)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{seconds}.{int(record.msecs):03d}Z"


def add_log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", choices=LOG_LEVELS, help="default: info")
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, help="text for people (default), json for log collectors"
    )


def configure_logging(level: str, log_format: str = "text", secrets: Sequence[str | None] = ()) -> None:
    """Logs to stderr; `secrets` (the tokens this process holds) never appear in a line."""
    known = [s for s in secrets if s]
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(known) if log_format == "json" else TextFormatter(known))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])


def run_until_signalled(service: Service, prog: str) -> int:
    """Starts `service`, waits for SIGTERM or SIGINT, stops it."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logging.getLogger(prog).info("%s received; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.start()
    while not stop.wait(1.0):
        pass
    service.stop()
    return 0


def run_command(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    errors: tuple[type[Exception], ...],
) -> int:
    """Parses the arguments and calls the chosen command's handler; an expected error is
    one line on stderr and exit status 1."""
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except errors as exc:
        print(f"{parser.prog}: {redact(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
