"""scripts/lab: build, use and remove an emulated office LAN (see lab.py).

scripts/lab up --hosts 8 [--lan 200mbit] [--origin-rate 50mbit] [--rate host1=100mbit/1gbit]
scripts/lab status
scripts/lab exec host1 -- curl -sS http://10.77.0.2/
scripts/lab rate host1 100mbit [1gbit]
scripts/lab down
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict

from scripts.lablib.lab import (
    DEFAULT_LAN,
    DEFAULT_ORIGIN_RATE,
    DEFAULT_PREFIX,
    DEFAULT_SUBNET,
    Lab,
    LabError,
    format_rate,
)

PROG = "scripts/lab"


def _rate_override(text: str) -> tuple[str, tuple[str, str]]:
    name, sep, rates = text.partition("=")
    if not sep or not name or not rates:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST=UP[/DOWN], e.g. host1=100mbit/1gbit")
    up, _, down = rates.partition("/")
    return name, (up, down or up)


def cmd_up(args: argparse.Namespace) -> int:
    lab = Lab(args.prefix, subnet=args.subnet).up(
        args.hosts,
        lan=args.lan,
        origin_rate=args.origin_rate,
        tracker_rate=args.tracker_rate,
        rates=dict(args.rate or ()),
    )
    for line in lab.status_lines():
        print(line)
    print(f"run commands in it with: {PROG} exec HOST -- CMD...")
    print(f"remove it with: {PROG} down --prefix {lab.prefix}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    lab = Lab(args.prefix)
    removed = lab.down()
    left = lab.leftovers()
    if removed:
        print(f"lab {args.prefix}: removed {', '.join(removed)}")
    else:
        print(f"lab {args.prefix}: nothing to remove")
    if left:
        print(
            f"{PROG}: namespaces {', '.join(left)} look like this lab's but no state file records them; "
            "not removed (delete them with 'ip netns del NAME' if they are yours)",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    lab = Lab.attach(args.prefix)
    if args.json:
        hosts = {
            name: {**asdict(h), "up": format_rate(h.up), "down": format_rate(h.down)}
            for name, h in lab.hosts.items()
        }
        print(json.dumps({"prefix": lab.prefix, "subnet": str(lab.network), "hosts": hosts}, indent=2))
        return 0
    for line in lab.status_lines():
        print(line)
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    lab = Lab.attach(args.prefix)
    command = lab.command(args.host, args.command)
    os.execvp(command[0], command)


def cmd_rate(args: argparse.Namespace) -> int:
    lab = Lab.attach(args.prefix)
    host = lab.set_rate(args.host, up=args.up, down=args.down or args.up)
    print(f"{host.name}: up {format_rate(host.up)}, down {format_rate(host.down)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="An emulated office LAN: an origin, a tracker and N lab machines, each a network "
        "namespace with a veth into one bridge (in a switch namespace), links capped with tc tbf in "
        f"both directions. Addresses ({DEFAULT_SUBNET}) exist only inside the namespaces. Needs root.",
    )
    commands = parser.add_subparsers(dest="command_name", required=True, metavar="COMMAND")

    def sub(name: str, help_text: str) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--prefix", default=DEFAULT_PREFIX, help="namespace name prefix (default: %(default)s)"
        )
        return p

    up = sub("up", "build the lab")
    up.add_argument("--hosts", type=int, required=True, metavar="N", help="lab machines (host1 .. hostN)")
    up.add_argument(
        "--lan", default=DEFAULT_LAN, metavar="RATE", help="each lab machine's link (default: %(default)s)"
    )
    up.add_argument(
        "--origin-rate",
        "--origin",
        default=DEFAULT_ORIGIN_RATE,
        metavar="RATE",
        help="the origin's link (default: %(default)s)",
    )
    up.add_argument("--tracker-rate", metavar="RATE", help="the tracker's link (default: --lan)")
    up.add_argument(
        "--rate",
        action="append",
        type=_rate_override,
        metavar="HOST=UP[/DOWN]",
        help="one host's own caps, e.g. host1=100mbit/1gbit (repeat for several)",
    )
    up.add_argument("--subnet", default=DEFAULT_SUBNET, help="a private /24 (default: %(default)s)")
    up.set_defaults(handler=cmd_up)

    down = sub("down", "remove the lab: end its processes, delete its namespaces (safe to repeat)")
    down.set_defaults(handler=cmd_down)

    status = sub("status", "list the lab's hosts, addresses and rates")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=cmd_status)

    exec_ = sub("exec", "run a command in a host's namespace: exec HOST -- CMD...")
    exec_.add_argument("host", metavar="HOST", help="origin, tracker, hostN, or sw (the switch)")
    exec_.add_argument("command", nargs="+", metavar="CMD", help="the command, after --")
    exec_.set_defaults(handler=cmd_exec)

    rate = sub("rate", "change a host's caps while the lab runs")
    rate.add_argument("host", metavar="HOST")
    rate.add_argument("up", metavar="UP", help="upload cap, e.g. 100mbit or unlimited")
    rate.add_argument("down", nargs="?", metavar="DOWN", help="download cap (default: UP)")
    rate.set_defaults(handler=cmd_rate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except LabError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
