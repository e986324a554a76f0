"""Benchmarks zero-configuration cluster formation on the lab LAN (scripts/lab): how long N
agent daemons take to be registered at a tracker they find over mDNS, against the same
daemons given the tracker's address, and how long they take to follow the tracker when it
moves to another machine. Every figure is measured side by side in one run, each repeated.

It builds one lab (N machines for the agents, the `tracker` host, two more machines for the
tracker to move to, and `origin`, where the benchmark's own poller runs), and in each repeat:

formation   a tracker on `tracker`, then N daemons started at one moment, timed from that
            moment to the poll that finds all N registered and live at the tracker:
            (a) given `--tracker ADDRESS` (the baseline; this tracker does not advertise),
            (b) found over mDNS with `--cluster`, (c) over mDNS with no cluster given.
            Each has a fresh tracker and fresh daemons; the tracker is listening (and
            advertised, in b and c) before the daemons start. Ratios b/a and c/a are taken
            within each repeat. For context, before (a): one daemon started alone, timed to
            "serving" in its log and to its registration.
move        after (b), the N daemons registered over mDNS: the tracker is stopped with
            SIGTERM (it says goodbye over mDNS) and a new one (same cluster, fresh
            database) started on another machine, timed from its start to the poll that
            finds all N registered with it. Then, at a random moment within a heartbeat
            interval, that tracker is killed with SIGKILL (no goodbye: its advert stays in
            the daemons' caches) and a new one started on a third machine, timed the same way.

The order of a, b and c rotates from one repeat to the next. Each timed start is released
from a start gate (spawning a process in a namespace is not timed); the daemons' own start-up
is timed. Registration is polled from `origin` with the admin client every 0.1 s
(`lanpeer-tracker agents`), so times are to the next 0.1 s. The phases (serving, found over
mDNS, registered; the tracker listening and advertised; a crash noticed) come from the
processes' JSON logs, whose clock is the same machine's.

Each tracker runs in a UTS namespace of its own with the lab host's name, so that trackers on
different machines advertise different instance names, as real machines do (with one host
name for all, a new tracker would replace the old one's advert under the same name).

Run it as `scripts/bench/discovery` (root; it uses .venv/bin/python); `--help` lists the
options. A quick run: `scripts/bench/discovery --agents 2 --repeat 1 --heartbeat-interval 1`.
The figures go to scripts/bench/results/discovery.json.

Exit status: 0 when every measurement finished, 3 when agents failed to register within the
time allowed in some measurement (a failed formation or follow: the figures say which), 1
when the run failed (a process did not start, or the lab could not be built).
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import platform
import random
import re
import select
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zeroconf
from benchlib import (
    BenchError,
    as_json,
    machine_busy_seconds,
    mem_available_mib,
    positive_float,
    positive_int,
    progress,
)
from get_bench import fresh_dir, lab_run, run_or_exit, save_results
from swarm_bench import GATE_SCRIPT, GATE_TIMEOUT

from agent.daemon import FOLLOW_CHECK_SECONDS, SETTLE_SECONDS
from agent.reporter import Backoff
from scripts.lablib import ORIGIN, TRACKER, Lab
from scripts.lablib.lab import DEFAULT_LAN
from scripts.lablib.services import AGENT_PORT, HOSTNAME_SCRIPT, STOP_TIMEOUT, TRACKER_PORT, Proc, Services
from tracker.server import DEFAULT_HEARTBEAT_INTERVAL

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "scripts" / "bench" / "results"

AGENTS = 8
REPEAT = 3
MAX_AGENTS = 64
CLUSTER = "bench"
POLL_SECONDS = 0.1
# How long N daemons may take to register (a formation), and a follow beyond the heartbeat
# intervals it may need.
FORMATION_LIMIT = 60.0
MOVE_SLACK = 60.0
# The poller's and a tracker's own start-up (imports, listening, advertising) is set-up.
READY_LIMIT = 60.0
PAUSE_SECONDS = 1.0

# Each figure, as the table and the JSON name it.
FORMATION_A = "formation_tracker"
FORMATION_B = "formation_cluster"
FORMATION_C = "formation_any"
ALONE = "agent_alone"
MOVE_GOODBYE = "move_goodbye"
MOVE_CRASH = "move_crash"
MEASUREMENTS = (ALONE, FORMATION_A, FORMATION_B, FORMATION_C, MOVE_GOODBYE, MOVE_CRASH)
STEPS = ("tracker", "cluster", "any")

# Runs on `origin`: polls the tracker's agent list every `every` seconds and prints JSON lines
# with CLOCK_MONOTONIC times (one clock for every namespace): ready, answered (the tracker's
# first answer), live (agents newly seen registered and live) and all (N seen), then exits.
# Until the tracker first answers, each try has a fresh channel: a channel that failed waits
# out gRPC's reconnect backoff, which would hide a tracker that has just started.
POLLER = r"""
import json, sys, time
from tracker.client import AdminClient
from tracker.errors import TrackerError

target, want, every, ignore_present = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"

def say(event, **fields):
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)

say("ready")
client, ignored, seen = None, None, set()
while True:
    tick = time.monotonic()
    if client is None:
        client = AdminClient(target, timeout=2.0)
    try:
        live = {a.agent.agent_id for a in client.agents() if a.live}
    except TrackerError:
        live = None
        if ignored is None:
            client.close()
            client = None
    if live is not None:
        if ignored is None:
            ignored = live if ignore_present else set()
            say("answered", ignored=len(ignored))
        new = live - ignored - seen
        if new:
            seen |= new
            say("live", agents=sorted(new), count=len(seen))
        if len(seen) >= want:
            say("all")
            break
    time.sleep(max(0.0, every - (time.monotonic() - tick)))
"""


# What the JSON logs say, by message.
SERVING = re.compile(r"agent \S+ serving ")
FOUND = re.compile(r"found the tracker of cluster \S+ at (\S+) over mDNS")
REGISTERED = re.compile(r"registered with the tracker at (\S+) as ")
AWAY = re.compile(r"cannot reach the tracker at (\S+?):? ")
LISTENING = re.compile(r"tracker listening on ")
ADVERTISING = re.compile(r"advertising the tracker over mDNS as ")


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    agents: int
    repeat: int
    heartbeat_interval: float
    prefix: str
    results: Path | None
    keep: bool = False
    keep_lab: bool = False


# ----------------------------------------------------------------------------- figures


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed measurement. `seconds` is from the release to the poll that found every
    agent registered and live (None: not within `limit`); `phases` are seconds from the
    release read from the logs (`_last`: the last agent's, `_median`: the median agent's)."""

    repeat: int
    seconds: float | None
    registered: int
    agents: int
    limit: float
    busy_cores: float  # the machine's CPU use from the release to the end, all cores
    phases: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True, slots=True)
class Summary:
    median: float | None
    min: float | None
    max: float | None
    values: list[float]
    failed: int


@dataclass(frozen=True, slots=True)
class Figures:
    cores: int
    mem_available_mib: float
    load_average: float
    machine: str
    lan: str
    config: DiscoveryConfig
    settle_seconds: float
    follow_check_seconds: float
    reporter_backoff: str
    samples: dict[str, list[Sample]]
    summary: dict[str, Summary]


def summarize(values: Sequence[float | None]) -> Summary:
    done = [v for v in values if v is not None]
    if not done:
        return Summary(None, None, None, [], len(values))
    return Summary(statistics.median(done), min(done), max(done), done, len(values) - len(done))


def summaries(samples: dict[str, list[Sample]]) -> dict[str, Summary]:
    out = {name: summarize([s.seconds for s in runs]) for name, runs in samples.items()}
    out["agent_alone_serving"] = summarize([s.phases.get("serving_last") for s in samples[ALONE]])
    by_repeat = {s.repeat: s.seconds for s in samples[FORMATION_A]}
    for name, key in ((FORMATION_B, "ratio_cluster_vs_tracker"), (FORMATION_C, "ratio_any_vs_tracker")):
        ratios: list[float | None] = []
        for s in samples[name]:
            base = by_repeat.get(s.repeat)
            ratios.append(s.seconds / base if s.seconds is not None and base else None)
        out[key] = summarize(ratios)
    return out


# ----------------------------------------------------------------------------- logs


def log_events(path: Path, since_wall: float) -> list[tuple[float, str, str]]:
    """(seconds after `since_wall`, level, message) of each JSON log line from then on."""
    events = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            entry = json.loads(line)
            stamp, _, millis = entry["time"].rstrip("Z").partition(".")
            wall = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")) + int(millis or 0) / 1000
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        # Log times are whole milliseconds, truncated: an event in the release's millisecond counts.
        if wall >= since_wall - 0.001:
            events.append((wall - since_wall, str(entry.get("level", "")), str(entry.get("message", ""))))
    return events


def first(
    events: Sequence[tuple[float, str, str]], pattern: re.Pattern[str], target: str | None = None
) -> float | None:
    """The time of the first event matching `pattern` (whose first group is `target`, when given)."""
    for seconds, _, message in events:
        match = pattern.search(message)
        if match and (target is None or match.group(1) == target):
            return max(0.0, seconds)
    return None


def spread(phases: dict[str, float], name: str, times: Sequence[float | None]) -> None:
    """The last and the median agent's time of a phase, when every agent logged it."""
    if times and all(t is not None for t in times):
        done = [t for t in times if t is not None]
        phases[f"{name}_last"] = max(done)
        phases[f"{name}_median"] = statistics.median(done)


# ----------------------------------------------------------------------------- the lab


# ----------------------------------------------------------------------------- the run


@dataclass(slots=True)
class Released:
    """Processes let go at one moment: `mono` on CLOCK_MONOTONIC, `wall` on the wall clock."""

    procs: list[Proc]
    mono: float
    wall: float
    busy: float


@dataclass(slots=True)
class Poller:
    proc: Proc
    out: Path
    target: str

    def events(self) -> list[dict[str, Any]]:
        found = []
        with suppress(OSError):
            for line in self.out.read_text(errors="replace").splitlines():
                with suppress(ValueError):
                    found.append(json.loads(line))
        return found

    def when(self, event: str) -> float | None:
        return next((e["t"] for e in self.events() if e.get("event") == event), None)


@dataclass(slots=True)
class Bench:
    config: DiscoveryConfig
    lab: Lab
    services: Services
    workdir: Path
    rng: random.Random
    count: int = 0
    samples: dict[str, list[Sample]] = field(default_factory=lambda: {name: [] for name in MEASUREMENTS})

    @property
    def machines(self) -> list[str]:
        return [f"host{i}" for i in range(1, self.config.agents + 1)]

    @property
    def move_hosts(self) -> tuple[str, str]:
        """Where the tracker moves to: the two machines after the agents'."""
        n = self.config.agents
        return f"host{n + 1}", f"host{n + 2}"

    def label(self, name: str) -> str:
        self.count += 1
        return f"{self.count:03d}-{name}"

    # ------------------------------------------------------------------------- processes

    def release(self, commands: Sequence[tuple[str, str, list[str]]]) -> Released:
        """Starts (host, name, argv) commands at one moment: each is spawned held at a gate
        (two FIFOs, as swarm_bench does) and all are let go with one write once every one
        waits, so that spawning them is not timed."""
        ready, go = self.workdir / f"gate{self.count}.ready", self.workdir / f"gate{self.count}.go"
        self.count += 1
        os.mkfifo(ready)
        os.mkfifo(go)
        ready_fd = os.open(ready, os.O_RDWR | os.O_NONBLOCK)
        go_fd = os.open(go, os.O_RDWR)
        try:
            procs = [
                self.services.start(host, name, ["sh", "-c", GATE_SCRIPT, "gate", str(ready), str(go), *argv])
                for host, name, argv in commands
            ]
            deadline = time.monotonic() + GATE_TIMEOUT
            waiting = 0
            while waiting < len(procs):
                for proc in procs:
                    if proc.process.poll() is not None:
                        raise BenchError(
                            f"{proc.name} on {proc.host} exited with status {proc.process.returncode} "
                            f"before the start; its log ends:\n{proc.tail()}"
                        )
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"{len(procs) - waiting} of {len(procs)} commands did not reach the gate"
                    )
                if select.select([ready_fd], [], [], 0.1)[0]:
                    waiting += len(os.read(ready_fd, 4096))
            busy, mono, wall = machine_busy_seconds(), time.monotonic(), time.time()
            os.write(go_fd, b"\n" * len(procs))
        finally:
            os.close(ready_fd)
            os.close(go_fd)
            ready.unlink()
            go.unlink()
        return Released(procs, mono, wall, busy)

    def stop_all(self, procs: Sequence[Proc]) -> None:
        """SIGTERM to all at once, then waits for each (Services.stop kills the slow ones)."""
        for proc in procs:
            if proc.process.poll() is None:
                proc.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in procs:
            with suppress(subprocess.TimeoutExpired):
                proc.process.wait(max(0.0, deadline - time.monotonic()))
            self.services.stop(proc)

    def agent_argv(self, host: str, tag: str, how: str, tracker: str) -> list[str]:
        """`lanpeer-agent run` with a fresh state directory (a new agent id) and an empty
        share; `how`: "tracker" (given the address), "cluster" or "any" (found over mDNS)."""
        short = f"{tag}{host.removeprefix('host')}"
        argv = [
            "run",
            "--share",
            str(fresh_dir(self.workdir / f"{short}s")),
            "--listen",
            f"0.0.0.0:{AGENT_PORT}",
            "--state-dir",
            str(fresh_dir(self.workdir / short)),
            "--log-level",
            "info",
            "--log-format",
            "json",
        ]
        if how == "tracker":
            argv += ["--tracker", tracker]
        elif how == "cluster":
            argv += ["--cluster", CLUSTER]
        return self.services.lanpeer("agent", *argv)

    def tracker_argv(self, host: str, name: str, *, mdns: bool) -> tuple[str, list[str]]:
        """The tracker's address and `lanpeer-tracker run` on `host` with a fresh database,
        in a UTS namespace named after the lab host."""
        address = f"{self.lab.address_of(host)}:{TRACKER_PORT}"
        argv = self.services.lanpeer(
            "tracker",
            "run",
            "--listen",
            address,
            "--db",
            str(self.workdir / f"{name}.db"),
            "--heartbeat-interval",
            f"{self.config.heartbeat_interval:g}",
            "--log-level",
            "info",
            "--log-format",
            "json",
            *(["--cluster", CLUSTER] if mdns else ["--no-mdns"]),
        )
        return address, ["unshare", "--uts", "--", "sh", "-c", HOSTNAME_SCRIPT, "sh", f"lab-{host}", *argv]

    def poller(self, target: str, want: int, *, ignore_present: bool = False) -> Poller:
        """The poller on `origin`, once it is ready to poll (its imports are set-up)."""
        name = self.label("poller")
        out = self.workdir / f"{name}.out"
        argv = [
            self.services.python,
            "-c",
            POLLER,
            target,
            str(want),
            f"{POLL_SECONDS:g}",
            "1" if ignore_present else "0",
        ]
        with out.open("wb") as stdout:
            proc = self.services.start(ORIGIN, name, argv, stdout=stdout)
        poller = Poller(proc, out, target)
        self.wait_for(poller, "ready")
        return poller

    def wait_for(self, poller: Poller, event: str, limit: float = READY_LIMIT) -> float:
        deadline = time.monotonic() + limit
        while (seen := poller.when(event)) is None:
            if poller.proc.process.poll() is not None:
                raise BenchError(
                    f"the poller exited ({poller.proc.process.returncode}): {poller.proc.tail()}"
                )
            if time.monotonic() > deadline:
                raise BenchError(f"the poller saw no {event!r} from {poller.target} within {limit:g} s")
            time.sleep(0.05)
        return float(seen)

    def start_tracker(self, host: str, name: str, *, mdns: bool) -> tuple[str, Proc]:
        """A tracker, untimed: returns once it answers (and, with mDNS, has advertised)."""
        address, argv = self.tracker_argv(host, name, mdns=mdns)
        probe = self.poller(address, 1)
        released = self.release([(host, name, argv)])
        proc = released.procs[0]
        try:
            self.wait_for(probe, "answered")
            deadline = time.monotonic() + READY_LIMIT
            while mdns and first(log_events(proc.log, released.wall), ADVERTISING) is None:
                if proc.process.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"tracker {name} did not advertise itself; its log ends:\n{proc.tail()}")
                time.sleep(0.05)
        finally:
            self.services.stop(probe.proc)
        return address, proc

    def measure(
        self, poller: Poller, released: Released, want: int, limit: float
    ) -> tuple[float | None, float, int]:
        """Waits for the poller to see `want` agents: the seconds from the release (None when
        not within `limit`), the machine's busy cores meanwhile and how many it saw."""
        try:
            poller.proc.process.wait(limit)
        except subprocess.TimeoutExpired:
            self.services.stop(poller.proc)
        ended = time.monotonic()
        busy = (machine_busy_seconds() - released.busy) / max(ended - released.mono, 1e-3)
        events = poller.events()
        seen = max((int(e["count"]) for e in events if e.get("event") == "live"), default=0)
        done = poller.when("all")
        return (None if done is None else done - released.mono), busy, min(seen, want)

    def record(self, name: str, sample: Sample) -> None:
        self.samples[name].append(sample)
        shown = "FAILED" if sample.seconds is None else f"{sample.seconds:.2f} s"
        progress(
            f"  {name}: {shown} ({sample.registered}/{sample.agents} registered"
            f"{'; ' + sample.note if sample.note else ''})"
        )

    def agent_phases(
        self, procs: Sequence[Proc], since: float, target: str, *, found: bool, serving: bool = True
    ) -> dict[str, float]:
        phases: dict[str, float] = {}
        logs = [log_events(p.log, since) for p in procs]
        if serving:
            spread(phases, "serving", [first(e, SERVING) for e in logs])
        if found:
            spread(phases, "found", [first(e, FOUND, target) for e in logs])
        spread(phases, "registered", [first(e, REGISTERED, target) for e in logs])
        return phases

    def missing(self, procs: Sequence[Proc], since: float, target: str) -> str:
        """Which agents never logged a registration with `target`, and how each log ends."""
        late = [p for p in procs if first(log_events(p.log, since), REGISTERED, target) is None]
        for proc in late:
            progress(f"  {proc.name} did not register with {target}; its log ends:\n{proc.tail(8)}")
        return "not registered: " + ", ".join(p.host for p in late) if late else ""

    # ------------------------------------------------------------------------- steps

    def formation(self, repeat: int, how: str) -> None:
        """A tracker on `tracker` and N fresh daemons started together: one formation
        sample; after (b), the moves. Stops them all."""
        n = self.config.agents
        name = {"tracker": FORMATION_A, "cluster": FORMATION_B, "any": FORMATION_C}[how]
        tag = f"r{repeat}{how[0]}"
        tracker, tracker_proc = self.start_tracker(
            TRACKER, self.label(f"{tag}-tracker"), mdns=how != "tracker"
        )
        if how == "tracker":
            self.alone(repeat, tracker, tag)
        poller = self.poller(tracker, n, ignore_present=True)
        self.wait_for(poller, "answered")
        commands = [
            (h, self.label(f"{tag}-agent-{h}"), self.agent_argv(h, tag, how, tracker)) for h in self.machines
        ]
        released = self.release(commands)
        seconds, busy, seen = self.measure(poller, released, n, FORMATION_LIMIT)
        phases = self.agent_phases(released.procs, released.wall, tracker, found=how != "tracker")
        note = "" if seconds is not None else self.missing(released.procs, released.wall, tracker)
        self.record(name, Sample(repeat, seconds, seen, n, FORMATION_LIMIT, busy, phases, note))
        if how != "cluster":
            self.stop_all([*released.procs, tracker_proc])
            return
        self.moves(repeat, released.procs, tracker_proc, complete=seconds is not None)

    def alone(self, repeat: int, tracker: str, tag: str) -> None:
        """One daemon started alone, given the tracker: to "serving", and to registered."""
        host = self.machines[0]
        poller = self.poller(tracker, 1, ignore_present=True)
        self.wait_for(poller, "answered")
        released = self.release(
            [(host, self.label(f"{tag}-alone"), self.agent_argv(host, f"{tag}x", "tracker", tracker))]
        )
        seconds, busy, seen = self.measure(poller, released, 1, FORMATION_LIMIT)
        phases = self.agent_phases(released.procs, released.wall, tracker, found=False)
        self.record(ALONE, Sample(repeat, seconds, seen, 1, FORMATION_LIMIT, busy, phases))
        self.stop_all(released.procs)

    def moves(self, repeat: int, agents: list[Proc], old: Proc, *, complete: bool) -> None:
        """The tracker stopped with a goodbye and started on another machine; then killed
        and started on a third. Stops the agents and the last tracker."""
        n = self.config.agents
        limit = 3 * self.config.heartbeat_interval + MOVE_SLACK
        second, third = self.move_hosts
        last = old
        try:
            if not complete:
                note = "skipped: the formation before it failed"
                self.record(MOVE_GOODBYE, Sample(repeat, None, 0, n, limit, 0.0, {}, note))
                self.record(MOVE_CRASH, Sample(repeat, None, 0, n, limit, 0.0, {}, note))
                return
            progress(f"  stopping the tracker (SIGTERM) and starting one on {second}")
            address, argv = self.tracker_argv(second, self.label(f"r{repeat}-move-{second}"), mdns=True)
            poller = self.poller(address, n)
            self.services.stop(old)
            ok, last = self.move(repeat, MOVE_GOODBYE, agents, poller, second, argv, limit, {})
            if not ok:
                self.record(
                    MOVE_CRASH,
                    Sample(repeat, None, 0, n, limit, 0.0, {}, "skipped: the move before it failed"),
                )
                return
            delay = self.rng.uniform(0.0, self.config.heartbeat_interval)
            progress(f"  killing the tracker (SIGKILL) in {delay:.1f} s and starting one on {third}")
            address, argv = self.tracker_argv(third, self.label(f"r{repeat}-move-{third}"), mdns=True)
            poller = self.poller(address, n)
            time.sleep(delay)
            killed = time.time()
            last.process.send_signal(signal.SIGKILL)
            last.process.wait()
            extra = {"kill_delay": delay, "killed_at": killed}
            _, last = self.move(repeat, MOVE_CRASH, agents, poller, third, argv, limit, extra)
        finally:
            self.stop_all([*agents, last])

    def move(
        self,
        repeat: int,
        name: str,
        agents: list[Proc],
        poller: Poller,
        host: str,
        argv: list[str],
        limit: float,
        extra: dict[str, float],
    ) -> tuple[bool, Proc]:
        n = self.config.agents
        released = self.release([(host, self.label(f"r{repeat}-tracker-{host}"), argv)])
        tracker = released.procs[0]
        seconds, busy, seen = self.measure(poller, released, n, limit)
        phases = self.agent_phases(agents, released.wall, poller.target, found=True, serving=False)
        answered = poller.when("answered")
        if answered is not None:
            phases["tracker_answered"] = answered - released.mono
        if (listening := first(log_events(tracker.log, released.wall), LISTENING)) is not None:
            phases["tracker_listening"] = listening
        if "killed_at" in extra:
            # When each agent found the old tracker gone (its first failed call after the
            # kill), from the kill: its next heartbeat.
            killed_at = extra["killed_at"]
            spread(phases, "noticed_after_kill", [first(log_events(p.log, killed_at), AWAY) for p in agents])
            phases["kill_delay"] = extra["kill_delay"]
            phases["kill_to_start"] = released.wall - killed_at
        note = "" if seconds is not None else self.missing(agents, released.wall, poller.target)
        self.record(name, Sample(repeat, seconds, seen, n, limit, busy, phases, note))
        return seconds is not None, tracker

    def run_repeat(self, repeat: int) -> None:
        order = STEPS[repeat % len(STEPS) :] + STEPS[: repeat % len(STEPS)]
        progress(f"repeat {repeat + 1} of {self.config.repeat}: {', '.join(order)}")
        for how in order:
            self.formation(repeat, how)
            time.sleep(PAUSE_SECONDS)


# ----------------------------------------------------------------------------- report

# The phases in the order they happen.
PHASES = (
    "kill_delay",
    "kill_to_start",
    "noticed_after_kill",
    "serving",
    "tracker_listening",
    "tracker_answered",
    "found",
    "registered",
)

LABELS = {
    "agent_alone_serving": "one agent alone: start to 'serving' (log)",
    ALONE: "one agent alone, --tracker: start to registered",
    FORMATION_A: "(a) formation, --tracker ADDRESS",
    FORMATION_B: "(b) formation, mDNS --cluster",
    "ratio_cluster_vs_tracker": "    (b) / (a)",
    FORMATION_C: "(c) formation, mDNS, no cluster",
    "ratio_any_vs_tracker": "    (c) / (a)",
    MOVE_GOODBYE: "move: SIGTERM (goodbye), new tracker start to all registered",
    MOVE_CRASH: "move: SIGKILL (no goodbye), new tracker start to all registered",
}


def _range(s: Summary, unit: str) -> tuple[str, str]:
    if s.median is None or s.min is None or s.max is None:
        return "failed", ""

    def fmt(value: float) -> str:
        return f"{value:.2f}x" if unit == "x" else f"{value:.2f} s"

    return fmt(s.median), f"{fmt(s.min)} to {fmt(s.max)}" if len(s.values) > 1 else ""


def print_report(f: Figures) -> None:
    cfg = f.config
    print("lanpeer discovery benchmark on the lab LAN: figures measured side by side in one run")
    print(
        f"machine: {f.cores} cores, {f.mem_available_mib:,.0f} MiB memory available, load average "
        f"{f.load_average:.2f} at the start; {f.machine}"
    )
    print(
        f"lab: {cfg.agents} agent machines, the tracker's and 2 more for it to move to, links at {f.lan}; "
        f"tracker heartbeat interval {cfg.heartbeat_interval:g} s; agent settle time {f.settle_seconds:g} s, "
        f"follow check every {f.follow_check_seconds:g} s, reporter backoff {f.reporter_backoff}; "
        "each tracker has its host name"
    )
    print(
        f"times: from the start (all at once, from a gate) to the poll (every {POLL_SECONDS:g} s) that found "
        f"every agent registered and live; median of {cfg.repeat}, min to max"
    )
    print()
    lines = [("figure", "median", "min to max", "runs")]
    for key, label in LABELS.items():
        s = f.summary[key]
        median, span = _range(s, "x" if key.startswith("ratio") else "s")
        runs = f"{len(s.values)}" + (f" ({s.failed} failed)" if s.failed else "")
        lines.append((label, median, span, runs))
    widths = [max(len(line[c]) for line in lines) for c in range(3)]
    for label, median, span, runs in lines:
        print(f"{label:<{widths[0]}}  {median:>{widths[1]}}  {span:<{widths[2]}}  {runs}".rstrip())
    print()
    print("phases, median over the runs of the last agent's time (s from the start, from the logs):")
    for name in (FORMATION_A, FORMATION_B, FORMATION_C, MOVE_GOODBYE, MOVE_CRASH):
        keys = [k for k in PHASES if any(f"{k}_last" in s.phases or k in s.phases for s in f.samples[name])]
        parts = []
        for key in keys:
            values = [s.phases.get(f"{key}_last", s.phases.get(key)) for s in f.samples[name]]
            done = [v for v in values if v is not None]
            parts.append(f"{key} {statistics.median(done):.2f}")
        busy = statistics.median([s.busy_cores for s in f.samples[name]]) if f.samples[name] else 0.0
        print(f"  {name}: {', '.join(parts) or '-'}; machine busy {busy:.2f} of {f.cores} cores")
    for name, taken in f.samples.items():
        for sample in taken:
            if sample.note:
                print(f"  {name}, repeat {sample.repeat + 1}: {sample.note}")


def machine_description() -> str:
    model = ""
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return (
        f"{model or platform.machine()}; Linux {platform.release()}, Python {platform.python_version()}, "
        f"zeroconf {zeroconf.__version__}"
    )


def run(config: DiscoveryConfig) -> Figures:
    load_average, memory = os.getloadavg()[0], mem_available_mib()
    with lab_run(config.prefix, "lpd-", keep=config.keep, keep_lab=config.keep_lab, tools=False) as (
        _,
        lab,
        workdir,
    ):
        hosts = config.agents + 2
        progress(
            f"lab {config.prefix}: {hosts} machines ({config.agents} for agents), an origin and a tracker"
        )
        lab.up(hosts)
        with Services(lab, workdir) as services:
            bench = Bench(config, lab, services, workdir, random.Random())
            for repeat in range(config.repeat):
                bench.run_repeat(repeat)
            samples = bench.samples
    initial = Backoff()
    return Figures(
        cores=os.cpu_count() or 1,
        mem_available_mib=memory,
        load_average=load_average,
        machine=machine_description(),
        lan=DEFAULT_LAN,
        config=config,
        settle_seconds=SETTLE_SECONDS,
        follow_check_seconds=FOLLOW_CHECK_SECONDS,
        reporter_backoff=f"{initial.delay:g} s doubling to {initial.maximum:g} s, ±20%",
        samples=samples,
        summary=summaries(samples),
    )


def parse_args(argv: Sequence[str] | None) -> DiscoveryConfig:
    parser = argparse.ArgumentParser(
        prog="scripts/bench/discovery",
        description="Benchmark zero-configuration cluster formation on the lab LAN (root): the time N agent "
        "daemons started at once take to be registered at a tracker given by address, found over mDNS with "
        "--cluster, and found over mDNS with no cluster; and the time they take to follow the tracker to "
        "another machine after it stops (SIGTERM: it says goodbye) and after it is killed (SIGKILL). Each "
        "figure is measured --repeat times in one run; the median, min and max are printed and saved.",
        epilog="Exit status: 0 when every measurement finished, 3 when agents failed to register in time in "
        "some measurement (the table says which), 1 when the run failed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--agents", type=positive_int, default=AGENTS, metavar="N", help="agent daemons, one per lab machine")
    add("--repeat", type=positive_int, default=REPEAT, metavar="R", help="times each figure is measured")
    add(
        "--heartbeat-interval",
        type=positive_float,
        default=DEFAULT_HEARTBEAT_INTERVAL,
        metavar="SECONDS",
        help="the trackers' --heartbeat-interval, which bounds how soon agents notice a killed tracker",
    )
    add("--prefix", default="lpd", help="the lab's namespace prefix")
    add(
        "--results",
        type=Path,
        default=RESULTS / "discovery.json",
        metavar="JSON",
        help="where to write the figures",
    )
    add("--no-results", action="store_true", help="write no JSON file")
    add("--keep", action="store_true", help="keep the work directory's logs for a look")
    add(
        "--keep-lab",
        action="store_true",
        help="leave the lab's namespaces up (its processes stopped); remove them with scripts/lab down",
    )
    args = parser.parse_args(argv)
    if args.agents > MAX_AGENTS:
        parser.error(f"--agents: at most {MAX_AGENTS}")
    return DiscoveryConfig(
        agents=args.agents,
        repeat=args.repeat,
        heartbeat_interval=args.heartbeat_interval,
        prefix=args.prefix,
        results=None if args.no_results else args.results,
        keep=args.keep,
        keep_lab=args.keep_lab,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    started = time.monotonic()
    figures = run_or_exit(run, config)
    print_report(figures)
    save_results(config.results, as_json(figures, [], default=str))
    print(f"run time: {time.monotonic() - started:.0f} s")
    failed = any(s.failed for s in figures.summary.values())
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
