"""lanpeer-tracker: run the tracker, or look at and manage a running one."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tracker import __version__
from tracker.auth import read_token
from tracker.client import AdminClient
from tracker.config import DEFAULT_CONFIG, default_db_path, load
from tracker.configfile import add_config_command, add_config_option
from tracker.errors import InvalidArgument, TrackerError
from tracker.mdns import DEFAULT_CLUSTER
from tracker.model import (
    AgentStatus,
    ContentDetails,
    ContentQuery,
    DigestQuery,
    Fetched,
    FileSummary,
    NameQuery,
    SourceQuery,
    SourceRef,
    Stats,
    UrlQuery,
    Validator,
    bitmap_count,
    split_host_port,
)
from tracker.policy import DEFAULT_POLICY, POLICY_NAMES
from tracker.process import add_log_options, configure_logging, run_command, run_until_signalled
from tracker.render import human_age, human_size, plural, table
from tracker.server import DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_LISTEN, DEFAULT_METRICS_LISTEN, TrackerServer

PROG = "lanpeer-tracker"
DEFAULT_TRACKER = "127.0.0.1:7070"


def host_port(value: str) -> str:
    try:
        split_host_port(value)
    except InvalidArgument:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT") from None
    return value


def host_port_or_off(value: str) -> str:
    return value and host_port(value)


# ----------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    config, _ = load(args)
    configure_logging(config.log_level, config.log_format, secrets=(config.cluster_token, config.admin_token))
    return run_until_signalled(TrackerServer(config), PROG)


# ----------------------------------------------------------------------------- admin


def _admin(args: argparse.Namespace) -> AdminClient:
    return AdminClient(
        args.tracker,
        token=read_token(args.admin_token_file, "LANPEER_ADMIN_TOKEN"),
        tls_ca=args.tls_ca,
        timeout=args.timeout,
    )


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _agent_json(a: AgentStatus) -> dict[str, Any]:
    return {
        "agent_id": a.agent.agent_id,
        "hostname": a.agent.hostname,
        "base_url": a.agent.base_url,
        "version": a.agent.version,
        "live": a.live,
        "last_seen_age_seconds": a.last_seen_age,
        "files": a.files,
        "bytes_held": a.bytes_held,
        "active_uploads": a.load.active_uploads,
        "active_downloads": a.load.active_downloads,
        "bad_source_reports": a.bad_source_reports,
        "banned": a.banned,
    }


def _state(a: AgentStatus) -> str:
    if a.banned:
        return "banned"
    return "live" if a.live else "dead"


def cmd_agents(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        agents = admin.agents()
    if args.json:
        _print_json({"agents": [_agent_json(a) for a in agents]})
        return 0
    if not agents:
        print("No agents have registered.")
        return 0
    rows = [
        [
            a.agent.agent_id,
            a.agent.hostname,
            a.agent.base_url,
            _state(a),
            human_age(a.last_seen_age),
            str(a.files),
            human_size(a.bytes_held),
            str(a.load.active_uploads),
            str(a.bad_source_reports),
        ]
        for a in agents
    ]
    headers = ["AGENT", "HOST", "URL", "STATE", "LAST SEEN", "FILES", "HELD", "UPLOADS", "BAD"]
    print(table(headers, rows, right=(5, 6, 7, 8)))
    return 0


def _source_json(s: SourceRef) -> dict[str, Any]:
    v = s.validator
    return {
        "url": s.url,
        "etag": v.etag,
        "last_modified": v.last_modified,
        "content_length": v.content_length,
    }


def _file_json(f: FileSummary) -> dict[str, Any]:
    return {
        "sha256": f.sha256,
        "size": f.size,
        "names": list(f.names),
        "live_holders": f.live_holders,
        "holders": f.holders,
        "has_manifest": f.has_manifest,
        "sources": [_source_json(s) for s in f.sources],
    }


def cmd_files(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        files = []
        for summary in admin.files():
            files.append(summary)
            if args.limit and len(files) >= args.limit:
                break
    if args.json:
        _print_json({"files": [_file_json(f) for f in files]})
        return 0
    if not files:
        print("No agent holds any file.")
        return 0
    rows = [
        [
            f.sha256[:16],
            human_size(f.size),
            f"{f.live_holders}/{f.holders}",
            "yes" if f.has_manifest else "no",
            ", ".join(f.names) or "-",
        ]
        for f in files
    ]
    print(table(["SHA256", "SIZE", "LIVE/ALL", "MANIFEST", "NAMES"], rows, right=(1, 2)))
    return 0


def parse_query(text: str, *, etag: str, last_modified: str, content_length: int | None) -> ContentQuery:
    """`sha256:HEX` or bare HEX, an http(s) URL (every version, or the one a validator
    names), `name:NAME`, or anything else as a file name."""
    if text.startswith("sha256:"):
        return DigestQuery(text[len("sha256:") :].lower())
    if re.fullmatch(r"[0-9A-Fa-f]{64}", text):
        return DigestQuery(text.lower())
    if text.startswith(("http://", "https://")):
        if etag or last_modified:
            validator = Validator(etag, last_modified, content_length or 0)
            return SourceQuery(SourceRef(text, validator))
        return UrlQuery(text)
    if etag or last_modified or content_length is not None:
        raise InvalidArgument("--etag, --last-modified and --content-length go with a URL query")
    return NameQuery(text[len("name:") :] if text.startswith("name:") else text)


def _details_json(d: ContentDetails) -> dict[str, Any]:
    manifest = d.manifest
    return {
        "sha256": d.sha256,
        "size": d.size,
        "names": list(d.names),
        "manifest": None
        if manifest is None
        else {"piece_size": manifest.piece_size, "pieces": manifest.piece_count},
        "holders": [
            {
                "agent_id": view.agent.agent_id,
                "hostname": view.agent.hostname,
                "base_url": view.agent.base_url,
                "state": state.value,
                "complete": view.holding.complete,
                "pieces_held": None if view.holding.complete else bitmap_count(view.holding.bitmap),
                "active_uploads": view.load.active_uploads,
            }
            for view, state in d.holders
        ],
        "sources": [_source_json(s) for s in d.sources],
    }


def cmd_locate(args: argparse.Namespace) -> int:
    query = parse_query(
        args.query,
        etag=args.etag,
        last_modified=args.last_modified,
        content_length=args.content_length,
    )
    with _admin(args) as admin:
        matches = admin.inspect(query)
    if args.json:
        _print_json({"matches": [_details_json(d) for d in matches]})
        return 0 if matches else 1
    if not matches:
        print(f"Nothing matches {args.query}.", file=sys.stderr)
        return 1
    for i, d in enumerate(matches):
        if i:
            print()
        print(f"sha256:{d.sha256}")
        print(f"  size      {human_size(d.size)} ({d.size} bytes)")
        print(f"  names     {', '.join(d.names) or '-'}")
        if d.manifest is None:
            print("  manifest  not published yet")
        else:
            m = d.manifest
            print(f"  manifest  {m.piece_count} pieces of {human_size(m.piece_size)}")
        for s in d.sources:
            v = s.validator
            validator = v.etag or f"{v.last_modified}, {v.content_length} bytes"
            print(f"  source    {s.url} ({validator})")
        if not d.holders:
            print("  holders   none")
            continue
        pieces = d.manifest.piece_count if d.manifest else 0
        rows = [
            [
                view.agent.agent_id,
                view.agent.hostname,
                view.agent.base_url,
                state.value,
                "all" if view.holding.complete else f"{bitmap_count(view.holding.bitmap)}/{pieces}",
                str(view.load.active_uploads),
            ]
            for view, state in d.holders
        ]
        print()
        block = table(["AGENT", "HOST", "URL", "STATE", "PIECES", "UPLOADS"], rows, right=(4, 5))
        print("\n".join("  " + line for line in block.splitlines()))
    return 0


def cmd_evict(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        removed = admin.evict(args.agent_id, ban=args.ban)
    if args.json:
        _print_json({"agent_id": args.agent_id, "banned": args.ban, "holdings_removed": removed})
    else:
        banned = " and banned it" if args.ban else ""
        print(f"Evicted {args.agent_id}{banned}; withdrew {removed} holdings.")
    return 0


def cmd_unban(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        admin.unban(args.agent_id)
    if args.json:
        _print_json({"agent_id": args.agent_id, "banned": False})
    else:
        print(f"Unbanned {args.agent_id}; it may register again.")
    return 0


def _stats_json(s: Stats) -> dict[str, Any]:
    return {
        "live_agents": s.live_agents,
        "dead_agents": s.dead_agents,
        "banned_agents": s.banned_agents,
        "distinct_files": s.distinct_files,
        "holdings": s.holdings,
        "bytes_held": s.bytes_held,
        "manifests": s.manifests,
        "sources": s.sources,
        "bad_source_reports": s.bad_source_reports,
        "swarms": s.swarms,
        "swarm_members": s.swarm_members,
        "bytes_from_peers": s.fetched.from_peers,
        "bytes_from_origin": s.fetched.from_origin,
        "origin_offload": None if s.fetched.offload is None else round(s.fetched.offload, 4),
    }


def offload_line(fetched: Fetched) -> str:
    """How much of what agents fetched came from peers rather than the origin."""
    if fetched.offload is None:
        return "no downloads reported yet"
    return (
        f"{fetched.offload * 100:.1f} % ({human_size(fetched.from_peers)} of "
        f"{human_size(fetched.total)} fetched came from peers)"
    )


def cmd_stats(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        stats = admin.stats()
    if args.json:
        _print_json(_stats_json(stats))
        return 0
    rows = [
        [
            "agents",
            f"{stats.live_agents} live, {stats.dead_agents} dead, {stats.banned_agents} banned",
        ],
        ["files", f"{stats.distinct_files} distinct, {stats.holdings} holdings"],
        ["bytes held", f"{human_size(stats.bytes_held)} ({stats.bytes_held} bytes)"],
        ["manifests", str(stats.manifests)],
        ["URL mappings", str(stats.sources)],
        ["bad-source reports", str(stats.bad_source_reports)],
        ["swarms", f"{stats.swarms} ({plural(stats.swarm_members, 'member')})"],
        ["origin offload", offload_line(stats.fetched)],
    ]
    width = max(len(r[0]) for r in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    return 0


# ----------------------------------------------------------------------------- parser


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options of `run`, which `config` takes too. Each has a key of the same name in
    tracker.toml (tracker.config.FILE_KEYS)."""
    add_config_option(parser, DEFAULT_CONFIG)
    parser.add_argument(
        "--listen",
        type=host_port,
        metavar="HOST:PORT",
        help=f"where to listen (default: {DEFAULT_LISTEN}; port 0 picks a free one)",
    )
    parser.add_argument(
        "--db",
        type=Path,
        metavar="PATH",
        help=f"the SQLite database (default: {default_db_path()})",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        metavar="F",
        help="the cluster token agents must present (or set LANPEER_TOKEN)",
    )
    parser.add_argument(
        "--admin-token-file",
        type=Path,
        metavar="F",
        help="the token the admin commands must present (or set LANPEER_ADMIN_TOKEN)",
    )
    parser.add_argument("--tls-cert", type=Path, metavar="F", help="serve TLS with this certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, metavar="F", help="the private key of --tls-cert (PEM)")
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        metavar="SECONDS",
        help="how often agents report in; three missed beats make an agent dead "
        f"(default: {DEFAULT_HEARTBEAT_INTERVAL})",
    )
    parser.add_argument(
        "--handout-policy",
        choices=POLICY_NAMES,
        help=f"the order holders are handed out in (default: {DEFAULT_POLICY})",
    )
    parser.add_argument(
        "--metrics-listen",
        type=host_port_or_off,
        metavar="HOST:PORT",
        help="where to serve Prometheus metrics over HTTP at /metrics, without a token: counts only "
        f"(default: {DEFAULT_METRICS_LISTEN}; an empty value serves none)",
    )
    parser.add_argument(
        "--cluster",
        metavar="NAME",
        help=f"the name agents find this tracker by over mDNS (default: {DEFAULT_CLUSTER})",
    )
    parser.add_argument(
        "--no-mdns",
        dest="mdns",
        action="store_false",
        default=None,
        help="do not advertise this tracker over mDNS",
    )
    parser.add_argument(
        "--mdns-interface",
        dest="mdns_interfaces",
        action="append",
        metavar="NAME_OR_ADDRESS",
        help="advertise on this interface only (repeat for several; default: all)",
    )
    add_log_options(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The lanpeer tracker: knows which agent holds which file. "
        "'run' starts it; the other commands look at and manage a running one.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run the tracker", description="Run the tracker until SIGTERM or SIGINT."
    )
    add_run_options(run)
    run.set_defaults(handler=cmd_run)

    add_config_command(commands, PROG, add_run_options, load)

    def admin_command(
        name: str, handler: Callable[[argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=help_text, description=help_text[0].upper() + help_text[1:] + "."
        )
        sub.add_argument(
            "--tracker",
            type=host_port,
            default=DEFAULT_TRACKER,
            metavar="HOST:PORT",
            help="the tracker to ask (default: %(default)s)",
        )
        sub.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
        sub.add_argument(
            "--admin-token-file",
            type=Path,
            metavar="F",
            help="the admin token (or set LANPEER_ADMIN_TOKEN)",
        )
        sub.add_argument(
            "--tls-ca", type=Path, metavar="F", help="use TLS, trusting this CA certificate (PEM)"
        )
        sub.add_argument(
            "--timeout",
            type=float,
            default=5.0,
            metavar="SECONDS",
            help="how long to wait for the tracker (default: %(default)s)",
        )
        sub.set_defaults(handler=handler)
        return sub

    admin_command("agents", cmd_agents, "list the agents the tracker knows")
    files = admin_command("files", cmd_files, "list the files agents hold")
    files.add_argument("--limit", type=int, default=0, metavar="N", help="show at most N files")
    locate = admin_command("locate", cmd_locate, "show what matches a digest, URL or name, and who holds it")
    locate.add_argument(
        "query",
        metavar="QUERY",
        help="sha256:HEX, an http(s) URL, or a file name (name:NAME if it looks like either)",
    )
    locate.add_argument("--etag", default="", help="with a URL: the version with this strong ETag")
    locate.add_argument(
        "--last-modified",
        default="",
        metavar="DATE",
        help="with a URL: the version with this Last-Modified",
    )
    locate.add_argument(
        "--content-length",
        type=int,
        metavar="BYTES",
        help="with --last-modified: the version's length",
    )
    evict = admin_command("evict", cmd_evict, "forget an agent and withdraw its holdings")
    evict.add_argument("agent_id", metavar="AGENT_ID")
    evict.add_argument(
        "--ban",
        action="store_true",
        help="also refuse its registrations until 'unban' (survives restarts)",
    )
    unban = admin_command("unban", cmd_unban, "let a banned agent register again")
    unban.add_argument("agent_id", metavar="AGENT_ID")
    admin_command("stats", cmd_stats, "show cluster totals")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv, (TrackerError,))


if __name__ == "__main__":
    sys.exit(main())
