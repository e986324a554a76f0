"""An emulated office LAN built from Linux network namespaces.

For the prefix `lp` and two lab machines, `Lab("lp").up(hosts=2)` makes:

    lp-sw        the switch: bridge br0, and one veth port per host (v-origin, v-tracker, v-host1, ...)
    lp-origin    eth0 10.77.0.2/24     the origin web server's machine
    lp-tracker   eth0 10.77.0.3/24     the tracker's machine
    lp-host1     eth0 10.77.0.11/24    lab machine 1
    lp-host2     eth0 10.77.0.12/24    lab machine 2

Every host is a namespace of its own with loopback up and one veth into the switch. Each
link is capped in both directions with `tc tbf`: on the host's eth0 (what it uploads) and
on its switch port (what it downloads). Nothing is made in the root namespace: every
address, route, link and qdisc lives inside namespaces this module creates, and `down()`
deletes them (ending the processes still running inside them first).

What `up()` made is recorded as it goes in a state file (/run/lanpeer-lab/PREFIX.json),
so that `down()` removes exactly that, even after an `up()` that was killed half way, and
so that the command line's `exec`, `status` and `down` find the lab again.

Standard library only: the lab tools run with any Python 3.11.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any

DEFAULT_PREFIX = "lp"
DEFAULT_SUBNET = "10.77.0.0/24"
DEFAULT_STATE_DIR = Path("/run/lanpeer-lab")
DEFAULT_LAN = "200mbit"
DEFAULT_ORIGIN_RATE = "50mbit"

ORIGIN = "origin"
TRACKER = "tracker"
SWITCH = "sw"
BRIDGE = "br0"
HOST_IFACE = "eth0"
# Host addresses inside the subnet: the origin and the tracker first, lab machines from here.
ORIGIN_INDEX = 2
TRACKER_INDEX = 3
FIRST_HOST_INDEX = 10
MAX_HOSTS = 200

# tbf: a burst of at least this, or this many seconds' worth of the rate, whichever is
# more (large enough for a GSO super-packet, so tbf never has to split one); packets wait
# in its queue at most TBF_LATENCY.
TBF_MIN_BURST = 128 * 1024
TBF_BURST_SECONDS = 0.004
TBF_LATENCY = "50ms"

COMMAND_TIMEOUT = 30.0
STOP_GRACE = 5.0

_PR_SET_PDEATHSIG = 1
_PREFIX = re.compile(r"[a-z][a-z0-9]{0,7}")
_HOST = re.compile(r"host([1-9][0-9]{0,2})")
_RATE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?i?)(bit|bps)", re.IGNORECASE)
_UNLIMITED = ("unlimited", "none", "off")
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30}


class LabError(Exception):
    """The lab could not be built, found or used; the message says why in one line."""


# ----------------------------------------------------------------------------- rates


def parse_rate(text: str) -> int | None:
    """A rate in tc's words (`200mbit`, `1gbit`, `500kbit`, `10mbps` = bytes, `unlimited`)
    as bits per second; None when unlimited."""
    cleaned = text.strip().lower()
    if cleaned in _UNLIMITED:
        return None
    match = _RATE.fullmatch(cleaned)
    if match is None or match.group(2).lower() not in _SCALE:
        raise LabError(f"{text!r} is not a rate (say e.g. 200mbit, 1gbit, 500kbit or unlimited)")
    value = float(match.group(1)) * _SCALE[match.group(2).lower()]
    if match.group(3).lower() == "bps":
        value *= 8
    bits = round(value)
    if bits < 8000:
        raise LabError(f"{text!r}: a rate below 8kbit is not a LAN")
    return bits


def format_rate(bits: int | None) -> str:
    """200000000 -> '200mbit', None -> 'unlimited'."""
    if bits is None:
        return "unlimited"
    for unit, scale in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bits >= scale:
            value = bits / scale
            return f"{value:g}{unit}" if value == round(value, 3) else f"{value:.3f}{unit}"
    return f"{bits}bit"


# ----------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Host:
    """One machine of the lab: its namespace, its address, and its link's caps (bits per
    second; None is uncapped)."""

    name: str
    netns: str
    address: str
    up: int | None
    down: int | None

    @property
    def port(self) -> str:
        """Its port on the switch (the veth end in the switch's namespace)."""
        return f"v-{self.name}"


@dataclass(frozen=True, slots=True)
class _State:
    prefix: str
    subnet: str
    # Namespaces in the order they were (about to be) made; `up` records each one first.
    namespaces: list[str]
    hosts: list[Host]
    complete: bool


# ----------------------------------------------------------------------------- helpers


def die_with_parent() -> None:
    """For preexec_fn: the kernel sends the child SIGTERM when the thread that started it
    ends, so nothing outlives a benchmark or a test that died. It survives the exec of
    `ip netns exec` and the exec that follows."""
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = COMMAND_TIMEOUT) -> str:
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise LabError(f"{argv[0]} is not installed (it is in iproute2)") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(argv)} did not finish within {timeout:g} s") from None
    if check and done.returncode != 0:
        why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"status {done.returncode}"
        raise LabError(f"{' '.join(argv)}: {why}")
    return done.stdout


def _ip(netns: str, words: str) -> None:
    """`ip -n NETNS WORDS...`; the words are names this module made, free of spaces."""
    _run(["ip", "-n", netns, *words.split()])


def namespaces() -> list[str]:
    """The names `ip netns list` shows."""
    return [line.split()[0] for line in _run(["ip", "netns", "list"]).splitlines() if line.strip()]


@cache
def unavailable_reason() -> str | None:
    """Why no lab can be built here (not root, no iproute2, no network namespaces), or
    None when it can. Probes by making and deleting one namespace."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces and tc)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None:
            return f"the lab needs {tool} (iproute2)"
    probe = f"lpprobe{os.getpid()}"
    try:
        _run(["ip", "netns", "add", probe])
    except LabError as exc:
        return f"network namespaces are not available: {exc}"
    try:
        _run(["ip", "-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1"])
        _run(["tc", "-n", probe, "qdisc", "add", "dev", "p0", "root", "tbf", *_tbf_args(10**6)])
    except LabError as exc:
        return f"veth links or tc tbf are not available: {exc}"
    finally:
        _run(["ip", "netns", "del", probe], check=False)
    return None


def _tbf_args(bits: int) -> list[str]:
    burst = max(TBF_MIN_BURST, int(bits / 8 * TBF_BURST_SECONDS))
    return ["rate", f"{bits}bit", "burst", str(burst), "latency", TBF_LATENCY]


def _pids_in(netns: str) -> list[int]:
    out = _run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in out.split() if p.isdigit()]


# ----------------------------------------------------------------------------- the lab


class Lab:
    """A lab LAN: `up()` builds it, `down()` removes it; a context manager that removes it
    on the way out. `attach()` finds one built by another process (the command line)."""

    def __init__(
        self,
        prefix: str = DEFAULT_PREFIX,
        *,
        subnet: str = DEFAULT_SUBNET,
        state_dir: Path = DEFAULT_STATE_DIR,
    ) -> None:
        if not _PREFIX.fullmatch(prefix):
            raise LabError(f"prefix {prefix!r}: 1 to 8 lower-case letters and digits, starting with a letter")
        try:
            network = ipaddress.IPv4Network(subnet)
        except ValueError as exc:
            raise LabError(f"subnet {subnet!r}: {exc}") from None
        if not network.is_private:
            raise LabError(f"subnet {subnet}: use a private range, such as {DEFAULT_SUBNET}")
        if network.num_addresses < FIRST_HOST_INDEX + MAX_HOSTS + 2:
            raise LabError(f"subnet {subnet}: too small, use a /24")
        self.prefix = prefix
        self.network = network
        self.state_path = state_dir / f"{prefix}.json"
        self._hosts: dict[str, Host] = {}
        self._made: list[str] = []

    # ------------------------------------------------------------------------- names

    @property
    def switch(self) -> str:
        return f"{self.prefix}-{SWITCH}"

    @property
    def hosts(self) -> dict[str, Host]:
        """Every host by name: origin, tracker, host1 ... hostN."""
        return dict(self._hosts)

    @property
    def lab_hosts(self) -> list[str]:
        """The lab machines' names, host1 first."""
        return [name for name in self._hosts if _HOST.fullmatch(name)]

    def host(self, name: str) -> Host:
        try:
            return self._hosts[name]
        except KeyError:
            known = ", ".join(self._hosts) or "none (is the lab up?)"
            raise LabError(f"no host {name!r} in lab {self.prefix}; hosts: {known}") from None

    def address_of(self, name: str) -> str:
        return self.host(name).address

    def netns_of(self, name: str) -> str:
        if name in (SWITCH, "switch"):
            return self.switch
        return self.host(name).netns

    def _address(self, index: int) -> str:
        return str(self.network.network_address + index)

    # ------------------------------------------------------------------------- up and down

    def up(
        self,
        hosts: int,
        *,
        lan: str = DEFAULT_LAN,
        origin_rate: str = DEFAULT_ORIGIN_RATE,
        tracker_rate: str | None = None,
        rates: Mapping[str, str | tuple[str, str]] | None = None,
    ) -> Lab:
        """Builds the lab: the switch, the origin, the tracker and `hosts` lab machines.
        `lan` caps the lab machines' and the tracker's links (both ways), `origin_rate`
        the origin's; `rates` overrides single hosts with a rate or (upload, download).
        On any error it removes what it made and raises LabError."""
        if not 1 <= hosts <= MAX_HOSTS:
            raise LabError(f"--hosts {hosts}: from 1 to {MAX_HOSTS}")
        specs = self._plan(hosts, lan, origin_rate, tracker_rate, rates or {})
        if unavailable := unavailable_reason():
            raise LabError(unavailable)
        existing = set(namespaces())
        clash = sorted(({h.netns for h in specs} | {self.switch}) & existing)
        if clash or self.state_path.exists():
            raise LabError(
                f"lab {self.prefix} is already up (or left over: {', '.join(clash) or self.state_path}); "
                f"run 'scripts/lab down --prefix {self.prefix}' first"
            )
        self._hosts = {}
        self._made = []
        try:
            self._add_switch()
            for spec in specs:
                self._add_host(spec)
            self._save(complete=True)
        except BaseException:
            self.down()
            raise
        return self

    def _plan(
        self,
        count: int,
        lan: str,
        origin_rate: str,
        tracker_rate: str | None,
        rates: Mapping[str, str | tuple[str, str]],
    ) -> list[Host]:
        """Every host to make, with its rates parsed: bad input fails before anything is made."""
        lan_bits = parse_rate(lan)
        origin_bits = parse_rate(origin_rate)
        tracker_bits = parse_rate(tracker_rate) if tracker_rate is not None else lan_bits
        specs = [
            Host(ORIGIN, f"{self.prefix}-{ORIGIN}", self._address(ORIGIN_INDEX), origin_bits, origin_bits),
            Host(
                TRACKER, f"{self.prefix}-{TRACKER}", self._address(TRACKER_INDEX), tracker_bits, tracker_bits
            ),
        ]
        specs += [
            Host(
                f"host{i}", f"{self.prefix}-host{i}", self._address(FIRST_HOST_INDEX + i), lan_bits, lan_bits
            )
            for i in range(1, count + 1)
        ]
        by_name = {h.name: h for h in specs}
        for name, rate in rates.items():
            if name not in by_name:
                raise LabError(f"a rate for {name!r}, which is not a host of this lab ({', '.join(by_name)})")
            up_text, down_text = (rate, rate) if isinstance(rate, str) else rate
            by_name[name] = replace(by_name[name], up=parse_rate(up_text), down=parse_rate(down_text))
        return list(by_name.values())

    def _make_netns(self, name: str) -> None:
        # Recorded before it exists, so that down() after a crash right here still removes it.
        self._made.append(name)
        self._save(complete=False)
        _run(["ip", "netns", "add", name])
        _run(["ip", "-n", name, "link", "set", "lo", "up"])

    def _add_switch(self) -> None:
        self._make_netns(self.switch)
        # No spanning tree (ports forward at once) and no multicast snooping (mDNS floods).
        _ip(self.switch, f"link add {BRIDGE} type bridge stp_state 0 forward_delay 0 mcast_snooping 0")
        _ip(self.switch, f"link set {BRIDGE} up")

    def _add_host(self, host: Host) -> None:
        self._make_netns(host.netns)
        self._hosts[host.name] = host
        _ip(host.netns, f"link add {HOST_IFACE} type veth peer name {host.port} netns {self.switch}")
        _ip(self.switch, f"link set {host.port} master {BRIDGE}")
        _ip(self.switch, f"link set {host.port} up")
        _run(
            [
                "ip",
                "-n",
                host.netns,
                "addr",
                "add",
                f"{host.address}/{self.network.prefixlen}",
                "dev",
                HOST_IFACE,
            ]
        )
        _run(["ip", "-n", host.netns, "link", "set", HOST_IFACE, "up"])
        self._shape(host.netns, HOST_IFACE, host.up)
        self._shape(self.switch, host.port, host.down)

    @staticmethod
    def _shape(netns: str, device: str, bits: int | None) -> None:
        if bits is None:
            _run(["tc", "-n", netns, "qdisc", "del", "dev", device, "root"], check=False)
            return
        _run(["tc", "-n", netns, "qdisc", "replace", "dev", device, "root", "tbf", *_tbf_args(bits)])

    def set_rate(self, name: str, up: str | None = None, down: str | None = None) -> Host:
        """Changes a host's caps while the lab runs (a rate, 'unlimited', or None to keep)."""
        host = self.host(name)
        if up is not None:
            host = replace(host, up=parse_rate(up))
            self._shape(host.netns, HOST_IFACE, host.up)
        if down is not None:
            host = replace(host, down=parse_rate(down))
            self._shape(self.switch, host.port, host.down)
        self._hosts[name] = host
        self._save(complete=True)
        return host

    def down(self) -> list[str]:
        """Ends the processes inside the lab's namespaces and deletes the namespaces (and with
        them every link and qdisc in them) and the state file. Safe to call twice, and after
        an `up()` that failed or was killed. Returns the namespaces it deleted."""
        recorded = list(self._made)
        with suppress(LabError):
            recorded += [n for n in self._load_state().namespaces if n not in recorded]
        present = set(namespaces()) if recorded else set()
        targets = [name for name in reversed(recorded) if name in present]
        # Hosts first (the switch last), each one's processes ended before it goes.
        self._end_processes(targets)
        errors = []
        for name in targets:
            try:
                _run(["ip", "netns", "del", name])
            except LabError as exc:
                errors.append(str(exc))
        self._made = []
        self._hosts = {}
        if not errors:
            self.state_path.unlink(missing_ok=True)
        if errors:
            raise LabError("; ".join(errors))
        return targets

    def leftovers(self) -> list[str]:
        """Namespaces of this lab that still exist."""
        mine = re.compile(rf"{re.escape(self.prefix)}-(?:{SWITCH}|{ORIGIN}|{TRACKER}|host[0-9]+)")
        return [name for name in namespaces() if mine.fullmatch(name)]

    @staticmethod
    def _end_processes(targets: Iterable[str]) -> None:
        """SIGTERM to every process in the namespaces, SIGKILL to those left after STOP_GRACE."""
        pids = {pid for name in targets for pid in _pids_in(name)}
        pids.discard(os.getpid())
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while pids and time.monotonic() < deadline:
            pids = {pid for pid in pids if Path(f"/proc/{pid}").exists() and not _is_zombie(pid)}
            time.sleep(0.05)
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # ------------------------------------------------------------------------- state

    def _save(self, *, complete: bool) -> None:
        state = _State(self.prefix, str(self.network), self._made, list(self._hosts.values()), complete)
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
        tmp.replace(self.state_path)

    def _load_state(self) -> _State:
        try:
            raw: dict[str, Any] = json.loads(self.state_path.read_text())
            return _State(
                prefix=raw["prefix"],
                subnet=raw["subnet"],
                namespaces=list(raw["namespaces"]),
                hosts=[Host(**h) for h in raw["hosts"]],
                complete=bool(raw["complete"]),
            )
        except FileNotFoundError:
            raise LabError(f"lab {self.prefix} is not up (no {self.state_path})") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LabError(
                f"{self.state_path} is unreadable ({exc}); remove it and the lab by hand"
            ) from None

    @classmethod
    def attach(cls, prefix: str = DEFAULT_PREFIX, *, state_dir: Path = DEFAULT_STATE_DIR) -> Lab:
        """The lab another process built with this prefix."""
        lab = cls(prefix, state_dir=state_dir)
        state = lab._load_state()
        lab.network = ipaddress.IPv4Network(state.subnet)
        lab._made = list(state.namespaces)
        lab._hosts = {h.name: h for h in state.hosts}
        if not state.complete:
            raise LabError(f"lab {prefix} was never finished; run 'scripts/lab down --prefix {prefix}'")
        return lab

    # ------------------------------------------------------------------------- running things

    def command(self, name: str, argv: Sequence[str]) -> list[str]:
        """argv run inside the host's namespace. `ip netns exec` execs it, so the process
        started is argv's own (same pid)."""
        if not argv:
            raise LabError("no command given")
        return ["ip", "netns", "exec", self.netns_of(name), *argv]

    def run(
        self,
        name: str,
        argv: Sequence[str],
        *,
        timeout: float = 60.0,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Runs argv to completion in the host's namespace; its output as text."""
        try:
            done = subprocess.run(
                self.command(name, argv),
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=None if env is None else dict(env),
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise LabError(f"{name}: {' '.join(argv)} did not finish within {timeout:g} s") from None
        if check and done.returncode != 0:
            raise LabError(
                f"{name}: {' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-800:]}"
            )
        return done

    def popen(self, name: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Starts argv in the host's namespace (subprocess.Popen's keywords apply). It gets
        SIGTERM should the thread that started it end first, unless preexec_fn is given."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("preexec_fn", die_with_parent)
        return subprocess.Popen(self.command(name, argv), **kwargs)

    def wait_for_port(self, name: str, address: str, port: int, timeout: float = 20.0) -> None:
        """Waits until a TCP connection from the host to address:port succeeds."""
        probe = (
            "import socket, sys, time\n"
            "deadline = time.monotonic() + float(sys.argv[3])\n"
            "while True:\n"
            "    try:\n"
            "        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()\n"
            "        break\n"
            "    except OSError:\n"
            "        if time.monotonic() > deadline:\n"
            "            sys.exit(f'nothing listens on {sys.argv[1]}:{sys.argv[2]}')\n"
            "        time.sleep(0.05)\n"
        )
        self.run(name, [_python(), "-c", probe, address, str(port), str(timeout)], timeout=timeout + 10)

    def status_lines(self) -> Iterator[str]:
        present = set(namespaces())
        yield f"lab {self.prefix}: subnet {self.network}, switch {self.switch} (bridge {BRIDGE})"
        width = max(len(name) for name in self._hosts) if self._hosts else 4
        for host in self._hosts.values():
            state = "" if host.netns in present else "  MISSING"
            pids = len(_pids_in(host.netns)) if host.netns in present else 0
            yield (
                f"  {host.name:<{width}}  {host.address:<12}  netns {host.netns:<12}  "
                f"up {format_rate(host.up):>9}  down {format_rate(host.down):>9}  "
                f"{pids} process{'es' if pids != 1 else ''}{state}"
            )

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _python() -> str:
    return sys.executable or "python3"
