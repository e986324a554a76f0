"""Benchmarks the swarm (issue 5) on the lab LAN (scripts/lab): machines that fetch the same
file at the same time pass each other the pieces they have, so that the origin sends about
one copy in all. Each figure is measured in the same run, on the same file, and set
against the theoretical minimum distribution time of DESIGN.md (Kumar & Ross, 2006):

    T_min = max(S/u_s, S/d_min, N*S/(u_s + sum u_i))

with S the file's size, u_s what the servers upload (the origin, plus the holder in
"warm"), d_min the slowest machine's download and u_i each fetching machine's upload.

It builds one lab (an origin serving with nginx, a tracker on a 1 Gbit/s link, and
machines whose links tc tbf caps both ways), writes a random file, and measures:

cold     8 machines at 200 Mbit/s, the origin at 50 Mbit/s, nobody holds the file: all 8
         daemons are asked at the same moment (`lanpeer-agent get URL` through each
         machine's daemon). Targets: the last finisher within 1.15 x T_min (here S/u_s),
         and at most 1.05 copies from the origin. Then 8 curls from the origin at once
         (same hosts, same rates), which cannot do better than N*S/u_s.
warm     the same 8 machines, and a 9th one that already holds the file (it fetched it
         through its daemon before the timed run, which published it): the 8 start at
         once. T_min counts the holder as a server: u_s = origin + the holder's upload.
         Targets: the last finisher within 1.3 x T_min, at most 0.1 copies from the origin.
scaling  N = 2, 4, 8, 16 machines at 100 Mbit/s, the origin at 50 Mbit/s, cold: the time
         against T_min (S/u_s for every N here) and the origin's copies, for each N.

Every run starts from a fresh tracker (its database removed) and fresh daemons (new state
directories, nothing shared), so "cold" means that nobody holds or knows the file. Times
are wall-clock times of whole `get` commands (start-up included), from the moment they are
let go together (each is spawned first and held at a gate, so that spawning 16 processes
is not timed) to the moment the last one exits; get's own clock is shown beside them.
Origin bytes are the body bytes nginx logged for the file, read after the daemons stopped
(so that every request they made is logged); every machine's output is hashed and compared
with the file. Rates are nominal link rates: TCP payload is at most 95.6% of a link's, so
no tool can do better than 1.046 x a T_min set by one link.

Run it as `scripts/bench/swarm` (root; it uses .venv/bin/python); `--help` lists the
options. A quick run: `scripts/bench/swarm --size 16 --ns 2,4`. The figures go to a JSON
file and a PNG plot (when matplotlib is importable) under scripts/bench/results/.

Exit status: 0 when every target is met, 3 when one is missed, 1 when the run failed (a
process did not start, a download failed, or the lab could not be built).
"""

from __future__ import annotations

import argparse
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchlib import (
    NO_MATPLOTLIB,
    BenchError,
    Row,
    as_json,
    exit_status,
    mem_available_mib,
    positive_int,
    print_table,
    progress,
    pyplot,
)
from get_bench import (
    CPU_BOUND_SHARE,
    PAYLOAD_SHARE,
    CpuWindow,
    DataFile,
    Origin,
    Runner,
    Timed,
    Tools,
    fresh_dir,
    lab_run,
    read_status_kib,
    run_or_exit,
    running_nginx,
    save_results,
    sha256_of,
    transfer_timeout,
    try_plot,
    write_random_file,
)

from scripts.lablib import ORIGIN, Lab, format_rate, parse_rate
from scripts.lablib.services import STOP_TIMEOUT, AgentProc, Proc, Services

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "scripts" / "bench" / "results"

MiB = 1024 * 1024

# The scenarios, as the issue gives them.
SCENARIOS = ("cold", "warm", "scaling")
SIZE_MIB = 128
MACHINES = 8
LAN = "200mbit"
ORIGIN_RATE = "50mbit"
SCALING_NS = (2, 4, 8, 16)
SCALING_LAN = "100mbit"
MAX_MACHINES = 64
# The warm holder's own fetch is set-up, not a figure: the origin runs fast for it.
SETUP_ORIGIN = "1gbit"
TRACKER_LINK = "1gbit"

# The targets.
COLD_MAX_TIME = 1.15
COLD_MAX_COPIES = 1.05
WARM_MAX_TIME = 1.3
WARM_MAX_COPIES = 0.1

# How long the commands behind the start gate may take to reach it.
GATE_TIMEOUT = 120.0
# Each command waits at the gate in a shell: it opens the "go" FIFO ($2), says it is ready
# on the other ($1), reads one line from "go", then becomes the command (same pid, so wait4
# still sees it). It opens "go" before it says so: once the benchmark has written and closed
# its end, a FIFO that nobody holds open loses what was written to it.
GATE_SCRIPT = 'exec 3< "$2" && printf . > "$1" && read -r _ <&3 && exec 3<&- && shift 2 && exec "$@"'

# nginx logs a request when it ends: once the daemons are gone, the log settles this fast.
LOG_SETTLE_SECONDS = 0.3
LOG_SETTLE_LIMIT = 10.0

TERM_NAMES = ("S/u_s", "S/d_min", "N*S/(u_s+sum u_i)")


@dataclass(frozen=True, slots=True)
class SwarmConfig:
    scenarios: tuple[str, ...]
    size_mib: int
    ns: tuple[int, ...]
    curl: bool
    prefix: str
    plot: Path | None
    results: Path | None
    keep: bool = False
    keep_lab: bool = False

    @property
    def lab_hosts(self) -> int:
        """Machines the lab needs: 8 for cold, 8 and the holder for warm, max(N) for scaling."""
        wanted = [MACHINES] if "cold" in self.scenarios else []
        wanted += [MACHINES + 1] if "warm" in self.scenarios else []
        wanted += list(self.ns) if "scaling" in self.scenarios else []
        return max(wanted)


# ----------------------------------------------------------------------------- T_min


def t_min_terms(size_bits: int, server_up: int, d_min: int, n: int, peers_up: int) -> tuple[float, ...]:
    """The three terms of T_min: S/u_s, S/d_min and N*S/(u_s + sum u_i)."""
    return (size_bits / server_up, size_bits / d_min, n * size_bits / (server_up + peers_up))


# ----------------------------------------------------------------------------- figures


@dataclass(frozen=True, slots=True)
class SwarmRun:
    """N machines fetching the file at once with one tool, from the origin and, in warm,
    from a machine that holds it; what it took and what it cost."""

    scenario: str
    tool: str  # "lanpeer" or "curl"
    machines: int
    size: int
    lan_bits: int
    origin_bits: int
    holder_bits: int  # the holder's upload, 0 when nobody holds the file
    walls: list[float]  # each machine's finish, seconds from the common start
    own_seconds: list[float]  # each get's own clock (the daemon's download); [] for curl
    startup: list[float]  # each get's whole command less its own clock; [] for curl
    origin_bytes: int  # nginx's count
    said_origin_bytes: int  # the origin bytes the gets report; 0 for curl
    passed_on: dict[str, int]  # bytes each fetching machine gave the others
    holder_served: int  # bytes the holder gave them (warm)
    digests_ok: int  # outputs whose size and SHA-256 are the file's
    window: float  # seconds of the CPU window: from the first start to the last exit
    busy: float  # machine CPU seconds in the window, all cores
    client_cpus: list[float]  # each get's or curl's own CPU seconds
    daemon_cpu: float
    daemon_hwm_mib: float  # the daemons' peak RSS, all together
    nginx_cpu: float
    tracker_cpu: float

    @property
    def last(self) -> float:
        return max(self.walls)

    @property
    def client_cpu(self) -> float:
        return sum(self.client_cpus)

    @property
    def server_bits(self) -> int:
        return self.origin_bits + self.holder_bits

    @property
    def terms(self) -> tuple[float, ...]:
        return t_min_terms(
            self.size * 8, self.server_bits, self.lan_bits, self.machines, self.machines * self.lan_bits
        )

    @property
    def t_min(self) -> float:
        return max(self.terms)

    @property
    def bound(self) -> str:
        """The name of the term that sets T_min."""
        return TERM_NAMES[self.terms.index(self.t_min)]

    @property
    def time_ratio(self) -> float:
        return self.last / self.t_min

    @property
    def origin_copies(self) -> float:
        return self.origin_bytes / self.size

    @property
    def origin_only(self) -> float:
        """What fetching straight from the origin costs at least: N*S/u_origin."""
        return self.machines * self.size * 8 / self.origin_bits


@dataclass(frozen=True, slots=True)
class Figures:
    cores: int
    mem_available_mib: float
    load_average: float
    tools: str
    config: SwarmConfig
    cold: SwarmRun | None = None
    curl: SwarmRun | None = None
    warm: SwarmRun | None = None
    warm_prefetch_seconds: float = 0.0
    scaling: list[SwarmRun] = field(default_factory=list)


# ----------------------------------------------------------------------------- the scenarios


@dataclass(slots=True)
class Bench:
    config: SwarmConfig
    tools: Tools
    lab: Lab
    services: Services
    runner: Runner
    workdir: Path
    origin: Origin
    tracker_proc: Proc | None = None
    tracker: str = ""
    gates: int = 0

    def set_rates(self, hosts: Sequence[str], rate: str) -> None:
        for host in hosts:
            self.lab.set_rate(host, up=rate, down=rate)

    def fresh_tracker(self) -> None:
        """A tracker that knows nothing: the last one stopped and its database removed."""
        if self.tracker_proc is not None:
            self.services.stop(self.tracker_proc)
        for leftover in self.workdir.glob("tracker.db*"):
            leftover.unlink()
        self.tracker = self.services.start_tracker(heartbeat_interval=1.0)
        self.tracker_proc = self.services.procs[-1]  # start_tracker's process

    def start_daemons(self, hosts: Sequence[str], tag: str) -> dict[str, AgentProc]:
        """A fresh daemon on each host (a new state directory and agent id, an empty share)."""
        progress(f"{tag}: starting {len(hosts)} agent daemons")
        agents = {}
        for host in hosts:
            short = f"{tag[:2]}{host.removeprefix('host')}"
            agents[host] = self.services.start_agent(
                host,
                share=fresh_dir(self.workdir / f"{short}s"),
                state_dir=fresh_dir(self.workdir / short),
                tracker=self.tracker,
                name=f"agent-{tag}-{host}",
            )
        return agents

    def stop_all(self, procs: Sequence[Proc]) -> None:
        """SIGTERM to all at once, then waits for each; Services.stop ends those still
        running after STOP_TIMEOUT (SIGTERM again, then SIGKILL)."""
        for proc in procs:
            if proc.process.poll() is None:
                proc.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in procs:
            with suppress(subprocess.TimeoutExpired):
                proc.process.wait(max(0.0, deadline - time.monotonic()))
            self.services.stop(proc)

    def origin_bytes_settled(self, data: DataFile) -> int:
        """The origin's body bytes for the file since the mark, once nginx's log stops growing."""
        deadline = time.monotonic() + LOG_SETTLE_LIMIT
        seen = self.origin.body_bytes(data.url_path)
        while time.monotonic() < deadline:
            time.sleep(LOG_SETTLE_SECONDS)
            now = self.origin.body_bytes(data.url_path)
            if now == seen:
                break
            seen = now
        return seen

    def start_together(self, commands: Sequence[tuple[str, str, list[str]]]) -> list[Timed]:
        """Starts (host, name, argv) commands at one moment. Spawning a process in a
        namespace takes tens of milliseconds on a busy machine, most of a second for 16, so
        each is spawned held at a gate (two FIFOs), and all are let go with one write once
        every one is waiting. Each Timed starts at that write: what the command does from
        there, its own start-up included, is timed; the spawning is not."""
        self.gates += 1
        ready, go = self.workdir / f"gate{self.gates}.ready", self.workdir / f"gate{self.gates}.go"
        os.mkfifo(ready)
        os.mkfifo(go)
        # Opened read-write, neither open blocks, and the shells' opens do not either.
        ready_fd = os.open(ready, os.O_RDWR | os.O_NONBLOCK)
        go_fd = os.open(go, os.O_RDWR)
        try:
            runs = []
            for host, name, argv in commands:
                label = f"g{self.gates}-{name}-{host}"
                out_path = self.workdir / f"{label}.out"
                with out_path.open("wb") as out:
                    wrapped = ["sh", "-c", GATE_SCRIPT, "gate", str(ready), str(go), *argv]
                    proc = self.services.start(host, label, wrapped, stdout=out)
                runs.append(Timed(host, name, 0.0, proc=proc, out_path=out_path))
            self._wait_ready(ready_fd, runs)
            started = time.monotonic()
            os.write(go_fd, b"\n" * len(runs))
        finally:
            os.close(ready_fd)
            os.close(go_fd)
        for run in runs:
            run.started = started
        return runs

    @staticmethod
    def _wait_ready(ready_fd: int, runs: Sequence[Timed]) -> None:
        deadline = time.monotonic() + GATE_TIMEOUT
        count = 0
        while count < len(runs):
            for run in runs:
                assert run.proc is not None
                if run.proc.process.poll() is not None:
                    raise BenchError(
                        f"{run.name} on {run.host} exited with status {run.proc.process.returncode} "
                        f"before the start; its log ends:\n{run.proc.tail()}"
                    )
            if time.monotonic() > deadline:
                raise BenchError(f"{len(runs) - count} of {len(runs)} commands did not reach the start gate")
            if select.select([ready_fd], [], [], 0.1)[0]:
                count += len(os.read(ready_fd, 4096))

    # ------------------------------------------------------------------------- lanpeer

    def lanpeer(
        self, scenario: str, data: DataFile, hosts: Sequence[str], lan: str, *, warm: bool = False
    ) -> tuple[SwarmRun, float]:
        """`lanpeer-agent get URL` through each host's daemon, all at once; with `warm`, a
        holder (the host after the last) fetches and publishes the file first. The run's
        figures, and the seconds of the holder's fetch."""
        url = self.origin.url(data)
        lan_bits, origin_bits = parse_rate(lan) or 0, parse_rate(ORIGIN_RATE) or 0
        self.fresh_tracker()
        self.set_rates(hosts, lan)
        holders: dict[str, AgentProc] = {}
        prefetch = 0.0
        holder_bits = 0
        if warm:
            holder = f"host{len(hosts) + 1}"
            self.set_rates([holder], lan)
            self.lab.set_rate(ORIGIN, up=SETUP_ORIGIN, down=SETUP_ORIGIN)
            holders = self.start_daemons([holder], f"{scenario}-holder")
            agent = holders[holder]
            out = agent.share / data.path.name
            progress(f"{scenario}: {holder} fetches the file through its daemon, which then shares it")
            pre = self.runner.run(
                holder,
                "prefetch",
                self.services.get_argv("--json", "--state-dir", str(agent.state_dir), url, "-o", str(out)),
                transfer_timeout(data.bits / min(lan_bits, parse_rate(SETUP_ORIGIN) or lan_bits)),
            )
            if not _output_ok(pre, data, out):
                raise BenchError(f"the holder's fetch on {holder} did not give the file")
            self.services.wait_for_holders(self.tracker, url, 1, timeout=60)
            prefetch = pre.wall
            holder_bits = lan_bits
        self.lab.set_rate(ORIGIN, up=ORIGIN_RATE, down=ORIGIN_RATE)
        agents = self.start_daemons(hosts, scenario)
        ids = {_agent_id(a): host for host, a in (agents | holders).items()}
        outs = {h: fresh_dir(self.workdir / f"{scenario}-out-{h}") / data.path.name for h in hosts}

        worst = len(hosts) * data.bits / origin_bits  # every machine from the origin alone
        progress(
            f"{scenario}: {len(hosts)} machines at {lan} fetch {_mib(data.size)} at once through their "
            f"daemons (origin at {ORIGIN_RATE}{', one holder' if warm else ''})"
        )
        self.origin.mark()
        assert self.tracker_proc is not None
        pids = {f"daemon {h}": a.proc.pid for h, a in (agents | holders).items()}
        cpu = CpuWindow(pids | {"nginx": self.origin.proc.pid, "tracker": self.tracker_proc.pid})
        runs = self.start_together(
            [
                (
                    h,
                    "get",
                    self.services.get_argv(
                        "--json", "--state-dir", str(agents[h].state_dir), url, "-o", str(outs[h])
                    ),
                )
                for h in hosts
            ]
        )
        self.runner.wait(runs, transfer_timeout(worst))
        window, busy, per = cpu.close()

        summaries = [r.json() for r in runs]
        said_origin = sum(int(s.get("bytes_from_origin", 0)) for s in summaries)
        given = {host: 0 for host in ids.values()}
        for summary in summaries:
            for source, count in dict(summary.get("bytes_by_source", {})).items():
                if source in ids:
                    given[ids[source]] += int(count)
        own = [float(s.get("seconds", 0.0)) for s in summaries]
        digests_ok = sum(_output_ok(r, data, outs[r.host]) for r in runs)
        hwm_kib = sum(read_status_kib(a.proc.pid, "VmHWM") for a in (agents | holders).values())
        progress(f"{scenario}: stopping the daemons; counting the origin's bytes")
        self.stop_all([a.proc for a in (agents | holders).values()])
        figures = replace(
            self.measured(scenario, "lanpeer", data, lan, runs, outs, digests_ok, window, busy, per["nginx"]),
            holder_bits=holder_bits,
            own_seconds=own,
            startup=[r.wall - o for r, o in zip(runs, own, strict=True)],
            said_origin_bytes=said_origin,
            passed_on={h: given[h] for h in hosts},
            holder_served=sum(given[h] for h in holders),
            daemon_cpu=sum(v for k, v in per.items() if k.startswith("daemon ")),
            daemon_hwm_mib=hwm_kib / 1024,
            tracker_cpu=per["tracker"],
        )
        progress(
            f"{scenario}: last finisher {figures.last:.1f} s = {figures.time_ratio:.2f} x T_min; "
            f"origin {figures.origin_copies:.2f} copies"
        )
        return figures, prefetch

    # ------------------------------------------------------------------------- curl

    def curl(self, scenario: str, data: DataFile, hosts: Sequence[str], lan: str) -> SwarmRun:
        """`curl URL` on each host, all at once, from the origin."""
        url = self.origin.url(data)
        origin_bits = parse_rate(ORIGIN_RATE) or 0
        self.set_rates(hosts, lan)
        self.lab.set_rate(ORIGIN, up=ORIGIN_RATE, down=ORIGIN_RATE)
        outs = {h: fresh_dir(self.workdir / f"{scenario}-curl-{h}") / data.path.name for h in hosts}
        progress(f"{scenario}: {len(hosts)} curls from the origin at once (origin at {ORIGIN_RATE})")
        self.origin.mark()
        cpu = CpuWindow({"nginx": self.origin.proc.pid})
        runs = self.start_together(
            [(h, "curl", [self.tools.curl, "-sS", "-f", "-o", str(outs[h]), url]) for h in hosts]
        )
        self.runner.wait(runs, transfer_timeout(len(hosts) * data.bits / origin_bits))
        window, busy, per = cpu.close()
        digests_ok = sum(_file_ok(outs[h], data) for h in hosts)
        return self.measured(scenario, "curl", data, lan, runs, outs, digests_ok, window, busy, per["nginx"])

    # ------------------------------------------------------------------------- both

    def measured(
        self,
        scenario: str,
        tool: str,
        data: DataFile,
        lan: str,
        runs: Sequence[Timed],
        outs: dict[str, Path],
        digests_ok: int,
        window: float,
        busy: float,
        nginx_cpu: float,
    ) -> SwarmRun:
        """What every run measures, once its commands (and daemons) are done: the origin's
        bytes, when nginx's log has settled, and each machine's finish; its outputs removed.
        What only lanpeer measures is left at 0, for it to fill in."""
        origin_bytes = self.origin_bytes_settled(data)
        for out in outs.values():
            out.unlink(missing_ok=True)
        start = min(r.started for r in runs)
        return SwarmRun(
            scenario=scenario,
            tool=tool,
            machines=len(runs),
            size=data.size,
            lan_bits=parse_rate(lan) or 0,
            origin_bits=parse_rate(ORIGIN_RATE) or 0,
            holder_bits=0,
            walls=[r.ended - start for r in runs],
            own_seconds=[],
            startup=[],
            origin_bytes=origin_bytes,
            said_origin_bytes=0,
            passed_on={},
            holder_served=0,
            digests_ok=digests_ok,
            window=window,
            busy=busy,
            client_cpus=[r.cpu_seconds for r in runs],
            daemon_cpu=0.0,
            daemon_hwm_mib=0.0,
            nginx_cpu=nginx_cpu,
            tracker_cpu=0.0,
        )


def _agent_id(agent: AgentProc) -> str:
    return (agent.state_dir / "agent-id").read_text().strip()


def _file_ok(out: Path, data: DataFile) -> bool:
    return out.is_file() and out.stat().st_size == data.size and sha256_of(out) == data.sha256


def _output_ok(run: Timed, data: DataFile, out: Path) -> bool:
    """The get said it wrote the file, and the file on disk is it."""
    summary = run.json()
    said = summary.get("sha256") == data.sha256 and summary.get("size") == data.size
    if not said:
        progress(f"get on {run.host} reported {summary.get('sha256')} ({summary.get('size')} bytes)")
    ok = _file_ok(out, data)
    if not ok:
        progress(f"the output on {run.host} is not the file")
    return said and ok


# ----------------------------------------------------------------------------- report


def _mib(size: int) -> str:
    return f"{size / MiB:,.0f} MiB"


def _terms(run: SwarmRun) -> str:
    return ", ".join(f"{v:.2f}" for v in run.terms)


def _finish(run: SwarmRun) -> str:
    return f"{run.last:.1f} s (first {min(run.walls):.1f} s)"


def _passed_on(run: SwarmRun) -> str:
    values = sorted(run.passed_on.values(), reverse=True)
    return f"{sum(values) / MiB:,.0f} MiB in all; each " + ", ".join(f"{v / MiB:.0f}" for v in values)


def _cpu(run: SwarmRun, cores: int) -> Row:
    w = run.window
    if run.tool == "curl":
        parts = f"{run.client_cpu / w:.2f}; {run.nginx_cpu / w:.2f}"
        name = f"curls; nginx; machine busy (of {cores} cores)"
    else:
        parts = (
            f"{run.client_cpu / w:.2f}; {run.daemon_cpu / w:.2f}; {run.nginx_cpu / w:.2f}; "
            f"{run.tracker_cpu / w:.2f}"
        )
        name = f"gets; daemons; nginx; tracker; machine busy (of {cores} cores)"
    return Row(f"{run.scenario}:   CPU, cores: {name}", f"{parts}; {run.busy / w:.2f}")


def _digests(run: SwarmRun, name: str, label: str) -> Row:
    return Row(
        f"{name}:   outputs with the file's SHA-256",
        f"{run.digests_ok} of {run.machines}",
        "all",
        run.digests_ok == run.machines,
        f"{label}_digests",
    )


def _lanpeer_rows(run: SwarmRun, max_time: float, max_copies: float, cores: int) -> list[Row]:
    s = run.scenario
    lan = format_rate(run.lan_bits)
    servers = f"origin {format_rate(run.origin_bits)}"
    if run.holder_bits:
        servers = f"{servers} + holder {format_rate(run.holder_bits)}"
    n = run.machines
    out = [
        Row(f"{s}: {n} machines at {lan} get {_mib(run.size)} at once: last finisher", _finish(run)),
        Row(
            f"{s}:   T_min: u_s = {servers}, d_min = {lan}, u_i = {lan}",
            f"max({_terms(run)}) = {run.t_min:.2f} s ({run.bound})",
        ),
        Row(
            f"{s}:   last finisher / T_min",
            f"{run.time_ratio:.2f}x",
            f"<= {max_time:g}x",
            run.time_ratio <= max_time,
            f"{s}_time_ratio",
        ),
        Row(
            f"{s}:   origin bytes / S (nginx's log)",
            f"{run.origin_copies:.2f}",
            f"<= {max_copies:g}",
            run.origin_copies <= max_copies,
            f"{s}_origin_copies",
        ),
        _digests(run, s, s),
        Row(f"{s}:   origin bytes / S as the gets count them", f"{run.said_origin_bytes / run.size:.2f}"),
        Row(
            f"{s}:   get's own clock (in the daemon): slowest; median",
            f"{max(run.own_seconds):.1f}; {statistics.median(run.own_seconds):.1f} s",
        ),
        Row(f"{s}:   whole command less get's own clock: median; max", _startup(run)),
        Row(f"{s}:   MiB the machines passed on (as the gets count them)", _passed_on(run)),
    ]
    if run.holder_bits:
        out.append(Row(f"{s}:   MiB the holder gave them", f"{run.holder_served / MiB:,.0f}"))
    return [*out, _cpu(run, cores)]


def _startup(run: SwarmRun) -> str:
    return f"{statistics.median(run.startup):.2f}; {max(run.startup):.2f} s"


def _curl_rows(run: SwarmRun, t_min: float, label: str, cores: int) -> list[Row]:
    s = run.scenario
    return [
        Row(f"{s}: {run.machines} curls from the origin at once: last finisher", _finish(run)),
        Row(f"{s}:   last finisher / T_min ({t_min:.2f} s)", f"{run.last / t_min:.2f}x"),
        Row(
            f"{s}:   / the origin's own bound, N*S/u_s ({run.origin_only:.1f} s)",
            f"{run.last / run.origin_only:.2f}x",
        ),
        Row(f"{s}:   origin bytes / S (nginx's log)", f"{run.origin_copies:.2f}"),
        _digests(run, s, label),
        _cpu(run, cores),
    ]


def _scaling_rows(runs: Sequence[SwarmRun], cores: int) -> list[Row]:
    out: list[Row] = []
    for run in runs:
        n = f"scaling N={run.machines}"
        out += [
            Row(
                f"{n}: last finisher / T_min ({run.t_min:.2f} s, {run.bound})",
                f"{run.time_ratio:.2f}x ({run.last:.1f} s; get's clock {max(run.own_seconds):.1f} s)",
            ),
            Row(
                f"{n}:   origin bytes / S (nginx's log; as the gets count them)",
                f"{run.origin_copies:.2f} ({run.said_origin_bytes / run.size:.2f})",
            ),
            Row(
                f"{n}:   CPU, cores: gets; daemons; machine busy (of {cores})",
                f"{run.client_cpu / run.window:.2f}; {run.daemon_cpu / run.window:.2f}; "
                f"{run.busy / run.window:.2f}",
            ),
            Row(f"{n}:   whole command less get's own clock: median; max", _startup(run)),
            _digests(run, n, f"scaling_n{run.machines}"),
        ]
    return out


def rows(f: Figures) -> list[Row]:
    out: list[Row] = []
    if f.cold is not None:
        out += _lanpeer_rows(f.cold, COLD_MAX_TIME, COLD_MAX_COPIES, f.cores)
    if f.curl is not None:
        t_min = f.cold.t_min if f.cold is not None else f.curl.t_min
        out += _curl_rows(f.curl, t_min, "curl", f.cores)
        if f.cold is not None:
            out.append(
                Row("cold: lanpeer's speed-up over curl (last finisher)", f"{f.curl.last / f.cold.last:.1f}x")
            )
    if f.warm is not None:
        out += _lanpeer_rows(f.warm, WARM_MAX_TIME, WARM_MAX_COPIES, f.cores)
        out.append(
            Row(
                f"warm:   the holder's own fetch before the run (origin at {SETUP_ORIGIN})",
                f"{f.warm_prefetch_seconds:.1f} s",
            )
        )
        if f.curl is not None:
            out.append(
                Row(
                    f"warm: lanpeer's speed-up over the {f.curl.machines} curls (last finisher)",
                    f"{f.curl.last / f.warm.last:.1f}x",
                )
            )
    out += _scaling_rows(f.scaling, f.cores)
    return out


def print_report(f: Figures, table: Sequence[Row]) -> None:
    cfg = f.config
    print("lanpeer swarm benchmark on the lab LAN: figures measured in the same run, on the same file")
    print(
        f"machine: {f.cores} cores, {f.mem_available_mib:,.0f} MiB memory available, load average "
        f"{f.load_average:.2f} at the start; Linux {platform.release()}, "
        f"Python {platform.python_version()}; {f.tools}"
    )
    print(
        f"lab: {cfg.lab_hosts} machines, an origin (nginx, sendfile) at {ORIGIN_RATE} and a tracker at "
        f"{TRACKER_LINK} in network namespaces on one bridge, tc tbf on both ends of each link; rates "
        f"are nominal: TCP payload is at most {PAYLOAD_SHARE:.3f} of a link's rate"
    )
    print(
        f"file: {cfg.size_mib} MiB of random bytes; T_min = max(S/u_s, S/d_min, N*S/(u_s + sum u_i)) "
        "(Kumar & Ross); times are whole `get` commands through each machine's daemon (start-up "
        "included), all let go at one moment from a start gate, to the last exit; each run has a fresh "
        "tracker and fresh daemons; 'machine busy' counts every process on the machine, others' included"
    )
    if f.warm is not None:
        print(
            f"warm: {f.warm.machines} machines fetch; a {f.warm.machines + 1}th holds the file and counts "
            "as a server: u_s = the origin's upload + the holder's"
        )
    print()
    print_table(table)
    print()
    for run in [r for r in (f.cold, f.curl, f.warm) if r is not None] + list(f.scaling):
        label = f"{run.scenario}{f' N={run.machines}' if run.scenario == 'scaling' else ''}, {run.tool}"
        print(
            f"{label}: finish times s: "
            + ", ".join(f"{v:.1f}" for v in sorted(run.walls))
            + f"; CPU s per {'get' if run.tool == 'lanpeer' else run.tool}: median "
            f"{statistics.median(run.client_cpus):.2f}, max {max(run.client_cpus):.2f}"
            + (f"; daemons' peak RSS {run.daemon_hwm_mib:,.0f} MiB in all" if run.tool == "lanpeer" else "")
        )
        busy = run.busy / run.window
        if busy >= CPU_BOUND_SHARE * f.cores:
            print(
                f"{label}: the machine was busy {busy:.2f} of {f.cores} cores: CPU, not the links, "
                "may have limited this figure (every machine, nginx and the tracker share them)"
            )


def save_plot(f: Figures, path: Path) -> str:
    """Left: cold and warm, the time of lanpeer and curl against T_min and the target.
    Right: scaling, time / T_min and the origin's copies against N. A note when matplotlib
    is missing."""
    plt = pyplot()
    if plt is None:
        return NO_MATPLOTLIB
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    groups = [(r, COLD_MAX_TIME) for r in (f.cold,) if r is not None]
    groups += [(r, WARM_MAX_TIME) for r in (f.warm,) if r is not None]
    tallest = 0.0
    for i, (run, target) in enumerate(groups):
        bars = [("lanpeer get", run.last, "tab:blue")]
        if f.curl is not None:
            bars.append(("curl from the origin", f.curl.last, "tab:gray"))
        for j, (tool, seconds, color) in enumerate(bars):
            x = i + (j - (len(bars) - 1) / 2) * 0.35
            left.bar(x, seconds, width=0.33, color=color, label=tool if i == 0 else None)
            left.text(x, seconds, f"{seconds:.1f} s\n{seconds / run.t_min:.2f}x", ha="center", va="bottom")
            tallest = max(tallest, seconds)
        span = (i - 0.4, i + 0.4)
        left.hlines(run.t_min, *span, color="black", label="T_min" if i == 0 else None)
        left.hlines(
            target * run.t_min,
            *span,
            color="tab:green",
            linestyle="--",
            label="target (x T_min)" if i == 0 else None,
        )
    if groups:
        left.set_xticks(
            range(len(groups)),
            [
                f"{r.scenario}: {r.machines} machines{' + 1 holder' if r.holder_bits else ''}\n"
                f"T_min {r.t_min:.1f} s ({r.bound})"
                for r, _ in groups
            ],
        )
        left.set_yscale("log")
        left.set_ylim(0.5 * min(r.t_min for r, _ in groups), 6 * tallest)
        left.set_ylabel("seconds to the last finisher (ratio: x T_min)")
        first = groups[0][0]
        left.set_title(
            f"{_mib(first.size)} to each machine at {format_rate(first.lan_bits)}, "
            f"origin {format_rate(first.origin_bits)}"
        )
        left.legend(loc="upper center", ncol=2, fontsize=9)
    if f.scaling:
        ns = [r.machines for r in f.scaling]
        times = [r.time_ratio for r in f.scaling]
        copies = [r.origin_copies for r in f.scaling]
        right.plot(ns, times, "o-", color="tab:blue", label="last finisher / T_min")
        right.plot(ns, copies, "s-", color="tab:orange", label="origin bytes / S")
        right.plot(ns, ns, ":", color="tab:gray", label="origin bytes / S with curl (N)")
        right.axhline(COLD_MAX_TIME, color="tab:blue", linestyle="--", linewidth=1, label="cold targets")
        right.axhline(COLD_MAX_COPIES, color="tab:orange", linestyle="--", linewidth=1)
        for n, t, c in zip(ns, times, copies, strict=True):
            right.annotate(f"{t:.2f}", (n, t), textcoords="offset points", xytext=(0, 6), ha="center")
            right.annotate(f"{c:.2f}", (n, c), textcoords="offset points", xytext=(0, -14), ha="center")
        right.set_xscale("log", base=2)
        right.set_xticks(ns, [str(n) for n in ns])
        right.set_ylim(0, 1.15 * max([*times, *ns, COLD_MAX_TIME]))
        right.set_xlabel("machines fetching at once (N)")
        first = f.scaling[0]
        right.set_title(
            f"scaling, cold: {_mib(first.size)} at {format_rate(first.lan_bits)}, origin "
            f"{format_rate(first.origin_bits)} (T_min = {first.bound})"
        )
        right.legend(loc="upper left", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot saved to {path}"


# ----------------------------------------------------------------------------- main


def run(config: SwarmConfig) -> Figures:
    load_average, memory = os.getloadavg()[0], mem_available_mib()
    with lab_run(config.prefix, "lps-", keep=config.keep, keep_lab=config.keep_lab) as (tools, lab, workdir):
        assert tools is not None
        figures = Figures(os.cpu_count() or 1, memory, load_average, tools.versions, config)
        www = workdir / "www"
        www.mkdir()
        progress(f"writing {config.size_mib} MiB of random bytes under {workdir}")
        data = write_random_file(www / "swarm.bin", config.size_mib * MiB)
        hosts = config.lab_hosts
        progress(f"lab {config.prefix}: {hosts} machines, an origin and a tracker")
        lab.up(hosts, lan=LAN, origin_rate=ORIGIN_RATE, tracker_rate=TRACKER_LINK)
        with Services(lab, workdir) as services, running_nginx(tools, services, lab, workdir, www) as origin:
            bench = Bench(config, tools, lab, services, Runner(services, workdir), workdir, origin)
            machines = [f"host{i}" for i in range(1, MACHINES + 1)]
            if "cold" in config.scenarios:
                cold, _ = bench.lanpeer("cold", data, machines, LAN)
                figures = _with(figures, cold=cold)
            if config.curl and {"cold", "warm"} & set(config.scenarios):
                figures = _with(figures, curl=bench.curl("cold", data, machines, LAN))
            if "warm" in config.scenarios:
                warm, prefetch = bench.lanpeer("warm", data, machines, LAN, warm=True)
                figures = _with(figures, warm=warm, warm_prefetch_seconds=prefetch)
            if "scaling" in config.scenarios:
                for n in config.ns:
                    hosts_n = [f"host{i}" for i in range(1, n + 1)]
                    scaled, _ = bench.lanpeer("scaling", data, hosts_n, SCALING_LAN)
                    figures = _with(figures, scaling=[*figures.scaling, scaled])
    return figures


def _with(f: Figures, **changes: Any) -> Figures:
    return replace(f, **changes)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of numbers, e.g. 2,4,8") from None
    if not values or not all(1 <= v <= MAX_MACHINES for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give numbers from 1 to {MAX_MACHINES}")
    return tuple(sorted(set(values)))


def parse_args(argv: Sequence[str] | None) -> SwarmConfig:
    parser = argparse.ArgumentParser(
        prog="scripts/bench/swarm",
        description="Benchmark the swarm on the lab LAN: machines fetching one file at once, against "
        "the theoretical minimum distribution time and against curl from the origin.",
        epilog="Exit status: 0 when every target is met, 3 when one is missed, 1 when the run failed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--only", default=",".join(SCENARIOS), metavar="LIST", help="the scenarios to run, e.g. cold,warm")
    add("--size", type=positive_int, default=SIZE_MIB, metavar="MiB", help="the file's size; rates stay")
    add(
        "--ns",
        type=_int_list,
        default=",".join(str(n) for n in SCALING_NS),
        metavar="LIST",
        help="the machine counts of the scaling scenario",
    )
    add("--no-curl", action="store_true", help="skip the curls from the origin (cold and warm)")
    add("--prefix", default="lps", help="the lab's namespace prefix")
    add("--plot", type=Path, default=RESULTS / "swarm.png", metavar="PNG", help="where to save the plot")
    add("--no-plot", action="store_true", help="save no plot")
    add(
        "--results",
        type=Path,
        default=RESULTS / "swarm.json",
        metavar="JSON",
        help="where to write the figures and targets",
    )
    add("--no-results", action="store_true", help="write no JSON file")
    add("--keep", action="store_true", help="keep the work directory's logs (not the data) for a look")
    add(
        "--keep-lab",
        action="store_true",
        help="leave the lab's namespaces up (its processes stopped); remove them with scripts/lab down",
    )
    args = parser.parse_args(argv)
    scenarios = tuple(s for s in SCENARIOS if s in {x.strip() for x in args.only.split(",")})
    unknown = {x.strip() for x in args.only.split(",") if x.strip()} - set(SCENARIOS)
    if unknown or not scenarios:
        parser.error(f"--only: scenarios are {', '.join(SCENARIOS)}")
    return SwarmConfig(
        scenarios=scenarios,
        size_mib=args.size,
        ns=args.ns,
        curl=not args.no_curl,
        prefix=args.prefix,
        plot=None if args.no_plot else args.plot,
        results=None if args.no_results else args.results,
        keep=args.keep,
        keep_lab=args.keep_lab,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    started = time.monotonic()
    figures = run_or_exit(run, config)
    table = rows(figures)
    print_report(figures, table)
    save_results(config.results, as_json(figures, table, default=str))
    if (plot := config.plot) is not None:
        try_plot(lambda: save_plot(figures, plot))
    print(f"run time: {time.monotonic() - started:.0f} s")
    return exit_status(table)


if __name__ == "__main__":
    sys.exit(main())
