"""What every lanpeer command does the same way: logging, running until a signal, and
turning errors into one line on stderr."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
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


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


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
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
