"""lanpeer-agent: the daemon that shares this machine's files with its peers, and `get`,
which fetches files from them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf.json_format import MessageToDict

from agent import __version__
from agent.config import DEFAULT_CONFIG, DEFAULT_LISTEN, AgentConfig, default_state_dir, file_settings, load
from agent.errors import AgentError, OutputNotWritable
from agent.identity import existing_agent_id
from agent.job import AlreadyThere, GetRequest, ProgressBar, print_result
from agent.localapi import SOCKET_NAME, LocalApiClient
from agent.planner import POLICY_NAMES, Policy
from agent.ranges import parse_rate
from lanpeer.v1 import agent_pb2
from tracker.auth import read_token
from tracker.configfile import Setting, add_config_command, add_config_option
from tracker.errors import TrackerError
from tracker.mdns import describe_interfaces
from tracker.process import add_log_options, configure_logging, run_command, run_until_signalled
from tracker.render import human_size, table

if TYPE_CHECKING:
    from agent.discovery import Advert

PROG = "lanpeer-agent"


def _rate(value: str) -> int:
    try:
        return parse_rate(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_config(args: argparse.Namespace) -> AgentConfig:
    """Defaults, then the config file, then the flags given on the command line."""
    return load(args)[0]


def cmd_run(args: argparse.Namespace) -> int:
    config = build_config(args)
    configure_logging(config.log_level, config.log_format, secrets=(config.token,))
    from agent.daemon import Daemon  # noqa: PLC0415 (`get` and `status` start faster without it)

    return run_until_signalled(Daemon(config), PROG)


def _state_dir(args: argparse.Namespace, conf: dict[str, Setting]) -> Path:
    """--state-dir, else the config file's state_dir (so that a user's command finds the
    system's daemon), else the default."""
    if args.state_dir is not None:
        return Path(args.state_dir)
    return Path(conf["state_dir"].value) if "state_dir" in conf else default_state_dir()


def cmd_get(args: argparse.Namespace) -> int:
    conf = file_settings(args.config)

    def setting(name: str) -> Any:
        flag = getattr(args, name)
        return flag if flag is not None or name not in conf else conf[name].value

    state_dir = _state_dir(args, conf)
    token, token_problem = _local_token(args, conf)
    configure_logging("debug" if args.verbose else "warning", secrets=(token,))
    request = GetRequest(
        source=args.source,
        output=args.output,
        sha256=args.sha256,
        tracker=setting("tracker"),
        token=token,
        tracker_tls_ca=setting("tracker_tls_ca"),
        agent_id=existing_agent_id(state_dir),
        connections=args.connections,
        use_origin=not args.no_origin,
        force=args.force,
        policy=Policy(args.policy),
    )
    bar = ProgressBar(sys.stderr, enabled=not (args.quiet or args.json))
    daemon = None if args.no_daemon else LocalApiClient(state_dir / SOCKET_NAME)
    try:
        summary = None
        if daemon is not None and daemon.reachable():
            # The daemon fetches, then serves the file and reports it to the tracker.
            handed = dataclasses.replace(request, output=(args.output or Path.cwd()).absolute())
            try:
                summary = daemon.get(handed, bar.update)
            except OutputNotWritable as exc:
                if not args.quiet:
                    print(f"{PROG}: {exc}; fetching it here instead (it will not be shared)", file=sys.stderr)
        if summary is None:
            from agent.get import get  # noqa: PLC0415 (handing the job to a daemon needs none of it)

            if token_problem and not args.quiet:
                print(f"{PROG}: {token_problem}", file=sys.stderr)

            summary = get(request, bar.update).summary
    except AlreadyThere as exc:
        if not args.quiet:
            print(f"{PROG}: {exc}", file=sys.stderr)
        return 0
    finally:
        bar.close()
        if daemon is not None:
            daemon.close()
    print_result(summary, as_json=args.json, quiet=args.quiet)
    return 0


def _local_token(args: argparse.Namespace, conf: dict[str, Setting]) -> tuple[str | None, str]:
    """The token for a fetch in this process: --token-file, else LANPEER_TOKEN, else the
    config file's token_file, which is the daemon's and may be closed to the user: then
    none, and why (a `get` handed to the daemon needs no token)."""
    if args.token_file is not None or os.environ.get("LANPEER_TOKEN") or "token_file" not in conf:
        return read_token(args.token_file, "LANPEER_TOKEN"), ""
    try:
        return read_token(conf["token_file"].value, "LANPEER_TOKEN"), ""
    except TrackerError as exc:
        return None, f"{exc}: the tracker and peers that need it will refuse this fetch"


def cmd_status(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args, file_settings(args.config))
    client = LocalApiClient(state_dir / SOCKET_NAME)
    try:
        if not client.reachable():
            raise AgentError(
                f"no agent daemon answers on {state_dir / SOCKET_NAME}; is 'lanpeer-agent run' running?"
            )
        s = client.status()
    finally:
        client.close()
    if args.json:
        print(json.dumps(MessageToDict(s, preserving_proto_field_name=True), indent=2, sort_keys=True))
        return 0
    rows = [
        ("agent", f"{s.agent_id} (lanpeer {s.version})"),
        ("serving at", s.base_url),
        ("metrics", f"{s.base_url}/metrics"),
        ("shares", ", ".join(s.shares)),
        ("files", f"{s.files} ({human_size(s.bytes_held)})"),
        ("uploads", f"{s.active_uploads} active, {human_size(s.bytes_served)} served"),
        ("tracker", _tracker_line(s)),
        ("downloads", str(len(s.downloads)) if s.downloads else "none"),
    ]
    if s.discovery_note and s.tracker:
        rows.insert(-1, ("discovery", s.discovery_note))
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    for d in s.downloads:
        done = (
            f"{human_size(d.progress.done_bytes)} of {human_size(d.progress.size)}"
            if d.progress.size
            else "starting"
        )
        print(f"  {d.source} -> {d.output}: {done}")
    return 0


def _tracker_line(s: agent_pb2.StatusResponse) -> str:
    """The tracker and how it was found: '10.77.0.3:7070 (found by mDNS, cluster lab1, connected)'."""
    if not s.tracker:
        if s.tracker_source == agent_pb2.TRACKER_SOURCE_UNSPECIFIED and not s.discovery_note:
            return "none configured"
        return f"none found yet: {s.discovery_note}"
    how = []
    if s.tracker_source == agent_pb2.TRACKER_SOURCE_MDNS:
        how = ["found by mDNS", f"cluster {s.cluster}"]
    how.append("connected" if s.tracker_connected else "not reachable")
    return f"{s.tracker} ({', '.join(how)})"


def cmd_discover(args: argparse.Namespace) -> int:
    configure_logging("warning")
    from agent.discovery import TrackerFinder  # noqa: PLC0415 (only this command needs zeroconf)

    interfaces = _discover_interfaces(args, file_settings(args.config))
    finder = TrackerFinder(interfaces)
    finder.start()
    try:
        time.sleep(args.timeout)
        adverts = finder.adverts()
    finally:
        finder.stop()
    adverts = tuple(
        sorted(
            (a for a in adverts if args.cluster is None or a.cluster == args.cluster),
            key=lambda a: (a.cluster, a.target, a.name),
        )
    )
    if args.json:
        print(json.dumps({"trackers": [_advert_json(a) for a in adverts]}, indent=2, sort_keys=True))
    elif adverts:
        rows = [
            [a.cluster, a.target, "yes" if a.tls else "no", f"v{a.version}", a.host, a.name] for a in adverts
        ]
        print(table(["CLUSTER", "ADDRESS", "TLS", "PROTOCOL", "HOST", "NAME"], rows))
    if not adverts:
        which = f"of cluster {args.cluster} " if args.cluster else ""
        print(
            f"No lanpeer tracker {which}answered on {describe_interfaces(interfaces)} "
            f"within {args.timeout:g} s.",
            file=sys.stderr,
        )
        return 1
    return 0


def _discover_interfaces(args: argparse.Namespace, conf: dict[str, Setting]) -> tuple[str, ...]:
    """--mdns-interface, else the daemon's mdns_interfaces from agent.toml, else () for all."""
    if args.mdns_interface:
        return tuple(args.mdns_interface)
    return tuple(conf["mdns_interfaces"].value) if "mdns_interfaces" in conf else ()


def _advert_json(a: Advert) -> dict[str, Any]:
    return {
        "cluster": a.cluster,
        "address": a.target,
        "tls": a.tls,
        "protocol_version": a.version,
        "host": a.host,
        "name": a.name,
        "tracker_id": a.tracker_id,
    }


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0.1 <= number <= 600:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds from 0.1 to 600")
    return number


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= 256:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number from 1 to 256")
    return number


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options of `run`, which `config --print` takes too. Each has a key of the same
    name in agent.toml (agent.config.FILE_KEYS)."""
    add_config_option(parser, DEFAULT_CONFIG)
    parser.add_argument(
        "--share", action="append", type=Path, metavar="DIR", help="a directory to share (repeat for several)"
    )
    parser.add_argument("--tracker", metavar="HOST:PORT", help="the tracker to report to")
    parser.add_argument(
        "--listen", metavar="HOST:PORT", help=f"where to serve blobs (default: {DEFAULT_LISTEN})"
    )
    parser.add_argument(
        "--advertise-url",
        metavar="URL",
        help="the base URL peers use (default: this machine's LAN address and the port)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help=f"where the agent id and hash cache live (default: {default_state_dir()})",
    )
    parser.add_argument(
        "--token-file", type=Path, metavar="F", help="the cluster token (or set LANPEER_TOKEN)"
    )
    parser.add_argument(
        "--tracker-tls-ca",
        type=Path,
        metavar="F",
        help="talk TLS to the tracker, trusting this CA certificate (PEM)",
    )
    parser.add_argument(
        "--max-uploads",
        type=int,
        metavar="N",
        help="concurrent uploads before peers are told to go elsewhere (default: 16)",
    )
    parser.add_argument(
        "--upload-limit",
        type=_rate,
        metavar="RATE",
        help="cap on the total upload rate, e.g. 50MB/s or 100MiB (default: none)",
    )
    parser.add_argument(
        "--rescan-interval",
        type=float,
        metavar="SECONDS",
        help="how often to look for new, changed and deleted files (default: 60)",
    )
    parser.add_argument(
        "--cluster",
        metavar="NAME",
        help="with no --tracker: use the tracker of this cluster found over mDNS (default: the only one)",
    )
    parser.add_argument(
        "--no-mdns",
        dest="mdns",
        action="store_false",
        default=None,
        help="with no --tracker: do not look for a tracker over mDNS",
    )
    parser.add_argument(
        "--mdns-interface",
        dest="mdns_interfaces",
        action="append",
        metavar="NAME_OR_ADDRESS",
        help="look for the tracker on this interface only (repeat for several; default: all)",
    )
    add_log_options(parser)


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
    add_run_options(run)
    run.set_defaults(handler=cmd_run)

    add_config_command(commands, PROG, add_run_options, load)

    get_ = commands.add_parser(
        "get",
        help="fetch a file from the peers that hold it and the origin",
        description="Fetch a file: its pieces come from the machines that hold it, and from the "
        "origin only for what no peer can give. Every piece is verified; an interrupted download "
        "resumes where it stopped.",
    )
    get_.add_argument("source", metavar="SOURCE", help="an http(s) URL, sha256:HEX or name:NAME")
    get_.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="PATH",
        help="where to put the file (default: its name, in the current directory)",
    )
    get_.add_argument(
        "--sha256",
        metavar="HEX",
        help="the digest the file must have; lets peers serve a URL while its origin is down",
    )
    get_.add_argument("--tracker", metavar="HOST:PORT", help="the tracker that knows which peers hold what")
    get_.add_argument(
        "--connections",
        type=_positive,
        default=16,
        metavar="N",
        help="parallel range requests in all (default: %(default)s)",
    )
    get_.add_argument("--no-origin", action="store_true", help="fetch from peers only")
    get_.add_argument("--force", action="store_true", help="replace a different file already at PATH")
    get_.add_argument(
        "--policy",
        choices=POLICY_NAMES,
        default=Policy.PEERS_FIRST.value,
        help="peers-first: the origin only for what peers cannot give (default); fastest: every source alike",
    )
    get_.add_argument("--token-file", type=Path, metavar="F", help="the cluster token (or set LANPEER_TOKEN)")
    get_.add_argument(
        "--tracker-tls-ca",
        type=Path,
        metavar="F",
        help="talk TLS to the tracker, trusting this CA certificate (PEM)",
    )
    get_.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="the agent's state directory: a daemon running with it does the fetch "
        f"(default: {default_state_dir()})",
    )
    get_.add_argument(
        "--no-daemon", action="store_true", help="fetch in this process even when a local daemon runs"
    )
    add_config_option(get_, DEFAULT_CONFIG)
    get_.add_argument("--json", action="store_true", help="print a machine-readable summary")
    get_.add_argument("--quiet", action="store_true", help="print nothing but errors")
    get_.add_argument("--verbose", action="store_true", help="log what happens, piece by piece")
    get_.set_defaults(handler=cmd_get)

    status = commands.add_parser(
        "status",
        help="show what the local daemon shares, serves and fetches",
        description="Ask the local agent daemon what it shares, serves and fetches, and whether it "
        "reaches its tracker.",
    )
    status.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help=f"the daemon's state directory (default: {default_state_dir()})",
    )
    add_config_option(status, DEFAULT_CONFIG)
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    status.set_defaults(handler=cmd_status)

    discover = commands.add_parser(
        "discover",
        help="list the trackers that answer over mDNS",
        description="Browse for lanpeer trackers over mDNS/DNS-SD for a few seconds and list those "
        "that answered. Exits with status 1 when none did.",
    )
    discover.add_argument("--cluster", metavar="NAME", help="list only the trackers of this cluster")
    discover.add_argument(
        "--timeout",
        type=_seconds,
        default=3.0,
        metavar="SECONDS",
        help="how long to listen (default: %(default)g)",
    )
    discover.add_argument(
        "--mdns-interface",
        action="append",
        metavar="NAME_OR_ADDRESS",
        help="browse on this interface only (repeat for several; default: agent.toml's "
        "mdns_interfaces, else all)",
    )
    add_config_option(discover, DEFAULT_CONFIG)
    discover.add_argument("--json", action="store_true", help="print JSON for scripts")
    discover.set_defaults(handler=cmd_discover)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv, (AgentError, TrackerError))


if __name__ == "__main__":
    sys.exit(main())
