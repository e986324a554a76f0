"""lanpeer-agent: the daemon that shares this machine's files with its peers."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent import __version__
from agent.config import DEFAULT_LISTEN, AgentConfig, default_state_dir, load_file
from agent.daemon import Daemon
from agent.errors import AgentError
from agent.ranges import parse_rate
from tracker.auth import read_token
from tracker.errors import TrackerError
from tracker.process import configure_logging, run_command, run_until_signalled

PROG = "lanpeer-agent"


def _rate(value: str) -> int:
    try:
        return parse_rate(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_config(args: argparse.Namespace) -> AgentConfig:
    """Defaults, then the config file, then the flags given on the command line."""
    values: dict[str, Any] = load_file(args.config) if args.config else {}
    shares = values.pop("share", ())
    token_file = values.pop("token_file", None)
    for name in (
        "tracker",
        "listen",
        "advertise_url",
        "state_dir",
        "max_uploads",
        "upload_limit",
        "rescan_interval",
        "log_level",
        "tracker_tls_ca",
    ):
        flag = getattr(args, name)
        if flag is not None:
            values[name] = flag
    if args.share:
        shares = tuple(args.share)
    token = read_token(args.token_file or token_file, "LANPEER_TOKEN")
    values.setdefault("state_dir", default_state_dir())
    return AgentConfig(shares=tuple(shares), token=token, **values)


def cmd_run(args: argparse.Namespace) -> int:
    config = build_config(args)
    configure_logging(config.log_level)
    return run_until_signalled(Daemon(config), PROG)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The lanpeer agent: shares this machine's files with the other machines of the LAN.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run the agent daemon",
        description="Serve the files under the shared directories to peers, and tell the tracker "
        "what this machine holds. Runs until SIGTERM or SIGINT.",
    )
    run.add_argument(
        "--share", action="append", type=Path, metavar="DIR", help="a directory to share (repeat for several)"
    )
    run.add_argument("--tracker", metavar="HOST:PORT", help="the tracker to report to")
    run.add_argument(
        "--listen", metavar="HOST:PORT", help=f"where to serve blobs (default: {DEFAULT_LISTEN})"
    )
    run.add_argument(
        "--advertise-url",
        metavar="URL",
        help="the base URL peers use (default: this machine's LAN address and the port)",
    )
    run.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help=f"where the agent id and hash cache live (default: {default_state_dir()})",
    )
    run.add_argument("--token-file", type=Path, metavar="F", help="the cluster token (or set LANPEER_TOKEN)")
    run.add_argument(
        "--tracker-tls-ca",
        type=Path,
        metavar="F",
        help="talk TLS to the tracker, trusting this CA certificate (PEM)",
    )
    run.add_argument(
        "--max-uploads",
        type=int,
        metavar="N",
        help="concurrent uploads before peers are told to go elsewhere (default: 16)",
    )
    run.add_argument(
        "--upload-limit",
        type=_rate,
        metavar="RATE",
        help="cap on the total upload rate, e.g. 50MB/s or 100MiB (default: none)",
    )
    run.add_argument(
        "--rescan-interval",
        type=float,
        metavar="SECONDS",
        help="how often to look for new, changed and deleted files (default: 60)",
    )
    run.add_argument("--config", type=Path, metavar="F", help="read settings from this TOML file; flags win")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.set_defaults(handler=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv, (AgentError, TrackerError))


if __name__ == "__main__":
    sys.exit(main())
