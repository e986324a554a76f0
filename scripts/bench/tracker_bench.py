"""Benchmarks a real tracker through its gRPC API.

It starts `lanpeer-tracker run` on 127.0.0.1 port 0, has simulated agents register and
send a full inventory snapshot each (1,000 agents x 1,000 files by default), has several
client processes call Locate for a while, then reads the tracker's peak memory, and prints
each figure next to its target.

Run it as `scripts/bench/tracker`, which uses .venv/bin/python; `--help` lists the options.
A quick run: `scripts/bench/tracker --agents 50 --locate-seconds 2`.

Exit status: 0 when every target is met, 3 when one is missed, 1 when the run failed (the
tracker did not start, a call failed, or the index did not hold what the agents sent).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import multiprocessing
import os
import queue
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, TypeVar

from benchlib import (
    BenchError,
    Row,
    as_json,
    cpu_seconds,
    die_with_parent,
    exit_on_sigterm,
    exit_status,
    positive_float,
    positive_int,
    print_table,
    progress,
    read_status_kib,
    reap,
    stop,
    tail,
)

from tracker.client import AdminClient, TrackerClient
from tracker.errors import TrackerError
from tracker.model import AgentInfo, DigestQuery, Holding
from tracker.wire import MAX_SYNC_ENTRIES

ROOT = Path(__file__).resolve().parents[2]
TRACKER_COMMAND = ROOT / ".venv" / "bin" / "lanpeer-tracker"

# The simulated agents never heartbeat, so the interval must keep them live for the whole
# run (the tracker counts an agent dead after three missed beats).
HEARTBEAT_INTERVAL = 60.0
LOCATE_MAX_HOLDERS = 20
# How many agents fit the base URLs 10.0.{i // 250}.{i % 250}.
MAX_AGENTS = 256 * 250

# Time limits, so that no run hangs.
TRACKER_START_TIMEOUT = 30.0
TRACKER_STOP_TIMEOUT = 15.0
CALL_TIMEOUT = 60.0
BARRIER_TIMEOUT = 120.0
SYNC_TIMEOUT = 900.0
LOCATE_SLACK = 120.0

# The targets.
SYNC_SECONDS_PER_MILLION = 60.0
LOCATE_MIN_PER_SECOND = 2000.0
LOCATE_MAX_P99_MS = 10.0
TRACKER_MAX_RSS_MIB = 1024.0

MiB = 1024 * 1024
GiB = 1024 * MiB

# Realistic fake files: a name pattern and a size range, chosen by file number.
_FILE_KINDS: tuple[tuple[str, int, int], ...] = (
    ("ubuntu-24.04-desktop-amd64-{k:05d}.iso", 3 * GiB, 6 * GiB),
    ("imagenet-train-{k:05d}.tar", 100 * MiB, 2 * GiB),
    ("checkpoint-step{k:05d}.safetensors", 1 * GiB, 16 * GiB),
    ("build-cache-{k:05d}.tar.zst", 10 * MiB, 500 * MiB),
    ("scan-{k:05d}.nii.gz", 50 * MiB, 800 * MiB),
    ("linux-6.{k}.tar.xz", 130 * MiB, 150 * MiB),
)

_LISTENING = re.compile(r"tracker listening on 127\.0\.0\.1:(\d+) \(plaintext\)")

J = TypeVar("J")
R = TypeVar("R")


# The tracker runs as a lab would run it, with both tokens, so every call pays for the check.
CLUSTER_TOKEN = "bench-cluster-token"
ADMIN_TOKEN = "bench-admin-token"


@dataclass(frozen=True, slots=True)
class BenchConfig:
    agents: int
    files_per_agent: int
    pool: int
    locate_seconds: float
    clients: int
    sync_processes: int
    # Tracker on core 0, clients on the others: the tracker's own figures, as if its
    # clients ran on other machines (they do, in a lab), at the price of one core.
    pin: bool = False

    @property
    def holdings(self) -> int:
        return self.agents * self.files_per_agent


# ----------------------------------------------------------------------------- fake content


def pool_digests(pool: int) -> list[str]:
    return [hashlib.sha256(f"file-{k}".encode()).hexdigest() for k in range(pool)]


def fake_holding(k: int, digest: str) -> Holding:
    """File number k, with a name and a size drawn deterministically from k."""
    pattern, low, high = _FILE_KINDS[k % len(_FILE_KINDS)]
    size = round(math.exp(random.Random(k).uniform(math.log(low), math.log(high))))
    return Holding(digest, size, pattern.format(k=k))


def agent_info(i: int) -> AgentInfo:
    agent_id = f"bench-{i + 1:04d}"
    return AgentInfo(agent_id, f"{agent_id}.lab", f"http://10.0.{i // 250}.{i % 250}:7071", "bench")


def agent_files(i: int, config: BenchConfig) -> list[int]:
    """The numbers of the files agent i holds."""
    return random.Random(i).sample(range(config.pool), config.files_per_agent)


def held_digests(config: BenchConfig) -> list[str]:
    """The digests at least one agent holds: the ones a Locate should find."""
    digests = pool_digests(config.pool)
    held: set[int] = set()
    for i in range(config.agents):
        held.update(agent_files(i, config))
    return [digests[k] for k in sorted(held)]


# ----------------------------------------------------------------------------- the tracker


@dataclass(frozen=True, slots=True)
class Tracker:
    pid: int
    target: str


@dataclass(frozen=True, slots=True)
class Memory:
    peak_mib: float
    current_mib: float


@contextmanager
def running_tracker(workdir: Path, *, pin: bool) -> Iterator[Tracker]:
    """A lanpeer-tracker child process, stopped with SIGTERM on the way out."""
    if not TRACKER_COMMAND.exists():
        raise BenchError(f"{TRACKER_COMMAND} is missing; run scripts/test once to create .venv")
    log_path = workdir / "tracker.log"
    command = [
        str(TRACKER_COMMAND),
        "run",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--db",
        str(workdir / "tracker.db"),
        "--heartbeat-interval",
        f"{HEARTBEAT_INTERVAL:g}",
        "--no-mdns",
    ]
    # The benchmark has started no thread yet, so preexec_fn is safe here.
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "LANPEER_TOKEN": CLUSTER_TOKEN, "LANPEER_ADMIN_TOKEN": ADMIN_TOKEN},
            stdout=log,
            stderr=log,
            preexec_fn=_pinned_to_core_zero if pin else die_with_parent,  # noqa: PLW1509
        )
    try:
        port = _wait_for_port(process, log_path)
        yield Tracker(process.pid, f"127.0.0.1:{port}")
    except Exception:
        print(f"the tracker's log ends:\n{tail(log_path)}", file=sys.stderr)
        raise
    finally:
        stop(process, TRACKER_STOP_TIMEOUT, "the tracker ignored SIGTERM; killing it")


def _pinned_to_core_zero() -> None:
    die_with_parent()
    os.sched_setaffinity(0, {0})


def client_cores(pin: bool) -> frozenset[int] | None:
    cores = os.sched_getaffinity(0)
    return frozenset(cores - {0}) if pin and len(cores) > 1 else None


def _wait_for_port(process: subprocess.Popen[bytes], log_path: Path) -> int:
    deadline = time.monotonic() + TRACKER_START_TIMEOUT
    while time.monotonic() < deadline:
        match = _LISTENING.search(log_path.read_text(errors="replace"))
        if match:
            return int(match.group(1))
        if process.poll() is not None:
            raise BenchError(f"the tracker exited with status {process.returncode} before listening")
        time.sleep(0.05)
    raise BenchError(f"the tracker did not say it was listening within {TRACKER_START_TIMEOUT:g} s")


def read_memory(pid: int) -> Memory:
    """The peak (VmHWM) and current (VmRSS) resident set of a process."""
    return Memory(
        peak_mib=read_status_kib(pid, "VmHWM") / 1024, current_mib=read_status_kib(pid, "VmRSS") / 1024
    )


# ----------------------------------------------------------------------------- client processes


def run_in_processes(
    worker: Callable[[J, Barrier], R], jobs: Sequence[J], timeout: float, cores: frozenset[int] | None
) -> list[R]:
    """Runs worker(job, barrier) for each job in a process of its own, and returns the
    results in job order. A worker waits at the barrier once it is ready, so the timed
    parts of all workers start together."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(jobs))
    results: multiprocessing.Queue[tuple[int, Any, str | None]] = context.Queue()
    processes = [
        context.Process(target=_process_main, args=(worker, job, barrier, results, slot, cores))
        for slot, job in enumerate(jobs)
    ]
    for process in processes:
        process.start()
    try:
        collected = _collect(results, processes, timeout)
    except BaseException:
        reap(processes, grace=0.0)
        raise
    reap(processes, grace=10.0)
    return collected


def _process_main(
    worker: Callable[[J, Barrier], R],
    job: J,
    barrier: Barrier,
    results: multiprocessing.Queue[tuple[int, Any, str | None]],
    slot: int,
    cores: frozenset[int] | None,
) -> None:
    if cores:
        os.sched_setaffinity(0, cores)
    try:
        results.put((slot, worker(job, barrier), None))
    except Exception:
        barrier.abort()
        results.put((slot, None, traceback.format_exc()))


def _collect(
    results: multiprocessing.Queue[tuple[int, Any, str | None]],
    processes: Sequence[BaseProcess],
    timeout: float,
) -> list[Any]:
    deadline = time.monotonic() + timeout
    collected: dict[int, Any] = {}
    while len(collected) < len(processes):
        if time.monotonic() > deadline:
            raise BenchError(f"the client processes did not finish within {timeout:g} s")
        try:
            slot, result, error = results.get(timeout=1.0)
        except queue.Empty:
            crashed = [p.name for p in processes if p.exitcode not in (None, 0)]
            if crashed:
                raise BenchError(f"client processes died: {', '.join(crashed)}") from None
            continue
        if error is not None:
            raise BenchError(f"client process {slot} failed:\n{error}")
        collected[slot] = result
    return [collected[slot] for slot in range(len(processes))]


def _warm_up(client: TrackerClient, digest: str) -> None:
    """One untimed call, so that connecting is not part of any figure."""
    client.locate(DigestQuery(digest), max_holders=1)


# ----------------------------------------------------------------------------- sync phase


@dataclass(frozen=True, slots=True)
class SyncJob:
    target: str
    config: BenchConfig
    agents: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SyncReport:
    # time.monotonic() readings: CLOCK_MONOTONIC, comparable across the processes.
    start: float
    end: float
    holdings: int


@dataclass(frozen=True, slots=True)
class SyncFigures:
    seconds: float
    holdings_per_second: float
    tracker_cpu_seconds: float


def sync_worker(job: SyncJob, barrier: Barrier) -> SyncReport:
    """Registers each of the job's agents and sends its full snapshot."""
    files = [fake_holding(k, digest) for k, digest in enumerate(pool_digests(job.config.pool))]
    plan = [(agent_info(i), [files[k] for k in agent_files(i, job.config)]) for i in job.agents]
    with TrackerClient(job.target, token=CLUSTER_TOKEN, timeout=CALL_TIMEOUT) as client:
        _warm_up(client, files[0].sha256)
        barrier.wait(BARRIER_TIMEOUT)
        start = time.monotonic()
        for info, holdings in plan:
            client.register(info)
            result = client.sync(info.agent_id, generation=1, full=True, holdings=holdings)
            if result.resync_needed:
                raise BenchError(f"the tracker asked {info.agent_id} to resync its first snapshot")
        end = time.monotonic()
    return SyncReport(start, end, sum(len(holdings) for _, holdings in plan))


def run_sync(config: BenchConfig, tracker: Tracker) -> SyncFigures:
    workers = config.sync_processes
    jobs = [SyncJob(tracker.target, config, tuple(range(w, config.agents, workers))) for w in range(workers)]
    cpu_before = cpu_seconds(tracker.pid)
    reports = run_in_processes(sync_worker, jobs, SYNC_TIMEOUT, client_cores(config.pin))
    cpu = cpu_seconds(tracker.pid) - cpu_before
    seconds = max(r.end for r in reports) - min(r.start for r in reports)
    return SyncFigures(seconds, sum(r.holdings for r in reports) / seconds, cpu)


def verify_index(config: BenchConfig, target: str) -> None:
    with AdminClient(target, token=ADMIN_TOKEN, timeout=CALL_TIMEOUT) as admin:
        stats = admin.stats()
    if stats.holdings != config.holdings or stats.live_agents != config.agents:
        raise BenchError(
            f"the tracker holds {stats.holdings:,} holdings of {stats.live_agents:,} live agents; "
            f"{config.holdings:,} of {config.agents:,} were sent"
        )


# ----------------------------------------------------------------------------- locate phase


@dataclass(frozen=True, slots=True)
class LocateJob:
    target: str
    digests: tuple[str, ...]
    seconds: float
    seed: int


@dataclass(frozen=True, slots=True)
class LocateReport:
    start: float
    end: float
    # Seconds per call, measured with time.perf_counter.
    latencies: list[float]
    # Calls that found no holder, though every digest asked for is held.
    empty: int


@dataclass(frozen=True, slots=True)
class LocateFigures:
    calls: int
    per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    tracker_cpu_ms_per_call: float


def locate_worker(job: LocateJob, barrier: Barrier) -> LocateReport:
    """Calls Locate for random held digests, one call at a time, for job.seconds."""
    rng = random.Random(job.seed)
    queries = [DigestQuery(digest) for digest in job.digests]
    latencies: list[float] = []
    empty = 0
    with TrackerClient(job.target, token=CLUSTER_TOKEN, timeout=CALL_TIMEOUT) as client:
        _warm_up(client, job.digests[0])
        barrier.wait(BARRIER_TIMEOUT)
        start = time.monotonic()
        deadline = time.perf_counter() + job.seconds
        while time.perf_counter() < deadline:
            query = rng.choice(queries)
            before = time.perf_counter()
            matches = client.locate(query, max_holders=LOCATE_MAX_HOLDERS)
            latencies.append(time.perf_counter() - before)
            if not matches or not matches[0].holders:
                empty += 1
        end = time.monotonic()
    return LocateReport(start, end, latencies, empty)


def run_locate(config: BenchConfig, tracker: Tracker) -> LocateFigures:
    digests = tuple(held_digests(config))
    jobs = [LocateJob(tracker.target, digests, config.locate_seconds, seed) for seed in range(config.clients)]
    cpu_before = cpu_seconds(tracker.pid)
    reports = run_in_processes(
        locate_worker, jobs, config.locate_seconds + LOCATE_SLACK, client_cores(config.pin)
    )
    cpu = cpu_seconds(tracker.pid) - cpu_before
    latencies = sorted(latency for r in reports for latency in r.latencies)
    empty = sum(r.empty for r in reports)
    if empty:
        raise BenchError(f"{empty:,} of {len(latencies):,} Locate calls found no holder of a held file")
    seconds = max(r.end for r in reports) - min(r.start for r in reports)
    return LocateFigures(
        calls=len(latencies),
        per_second=len(latencies) / seconds,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        max_ms=latencies[-1] * 1000,
        tracker_cpu_ms_per_call=cpu / len(latencies) * 1000,
    )


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of values sorted in ascending order."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


# ----------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True)
class Figures:
    cores: int
    pinned: bool
    agents: int
    files_per_agent: int
    pool: int
    holdings: int
    sync_processes: int
    sync_seconds: float
    sync_holdings_per_second: float
    sync_tracker_cpu_seconds: float
    locate_clients: int
    locate_seconds: float
    locate_max_holders: int
    locate_calls: int
    locate_per_second: float
    locate_p50_ms: float
    locate_p99_ms: float
    locate_max_ms: float
    locate_tracker_cpu_ms_per_call: float
    tracker_peak_rss_mib: float
    tracker_rss_mib: float


def sync_target_seconds(holdings: int) -> float:
    return SYNC_SECONDS_PER_MILLION * holdings / 1_000_000


def rows(f: Figures) -> list[Row]:
    sync_target = sync_target_seconds(f.holdings)
    tracker_cores = f.locate_tracker_cpu_ms_per_call / 1000 * f.locate_per_second
    return [
        Row(
            f"sync of {f.holdings:,} holdings",
            f"{f.sync_seconds:.1f} s",
            f"<= {sync_target:g} s",
            f.sync_seconds <= sync_target,
            "sync_seconds",
        ),
        Row("sync rate", f"{f.sync_holdings_per_second:,.0f} holdings/s"),
        Row("tracker CPU time during the sync", f"{f.sync_tracker_cpu_seconds:.1f} s"),
        Row(
            "Locate throughput",
            f"{f.locate_per_second:,.0f} calls/s",
            f">= {LOCATE_MIN_PER_SECOND:,.0f} calls/s",
            f.locate_per_second >= LOCATE_MIN_PER_SECOND,
            "locate_per_second",
        ),
        Row("Locate latency p50", f"{f.locate_p50_ms:.2f} ms"),
        Row(
            "Locate latency p99",
            f"{f.locate_p99_ms:.2f} ms",
            f"<= {LOCATE_MAX_P99_MS:g} ms",
            f.locate_p99_ms <= LOCATE_MAX_P99_MS,
            "locate_p99_ms",
        ),
        Row("Locate latency max", f"{f.locate_max_ms:.2f} ms"),
        Row("tracker CPU time per Locate", f"{f.locate_tracker_cpu_ms_per_call:.2f} ms"),
        Row("tracker CPU load during Locate", f"{tracker_cores:.2f} of {f.cores} cores"),
        Row(
            "tracker peak RSS (VmHWM)",
            f"{f.tracker_peak_rss_mib:,.0f} MiB",
            f"<= {TRACKER_MAX_RSS_MIB:,.0f} MiB",
            f.tracker_peak_rss_mib <= TRACKER_MAX_RSS_MIB,
            "tracker_peak_rss_mib",
        ),
        Row("tracker RSS at the end (VmRSS)", f"{f.tracker_rss_mib:,.0f} MiB"),
    ]


def print_report(f: Figures, table: Sequence[Row]) -> None:
    print(
        f"lanpeer tracker benchmark: {f.agents:,} agents x {f.files_per_agent:,} files = "
        f"{f.holdings:,} holdings, from a pool of {f.pool:,} files "
        f"(~{f.holdings / f.pool:.3g} holders each)"
    )
    print(
        f"sync: {f.sync_processes} client processes; Locate: {f.locate_clients} client processes "
        f"x {f.locate_seconds:g} s, {f.locate_calls:,} calls, max_holders={f.locate_max_holders}"
    )
    if f.pinned:
        print(f"machine: {f.cores} cores; the tracker pinned to core 0, the clients to the others")
    else:
        print(f"machine: {f.cores} cores, shared by the tracker and all client processes")
    print()
    print_table(table)


# ----------------------------------------------------------------------------- main


def run(config: BenchConfig) -> Figures:
    with (
        tempfile.TemporaryDirectory(prefix="lanpeer-bench-") as workdir,
        running_tracker(Path(workdir), pin=config.pin) as tracker,
    ):
        progress(f"tracker {tracker.pid} listening on {tracker.target}")
        progress(f"sync: {config.agents:,} agents send {config.holdings:,} holdings")
        sync = run_sync(config, tracker)
        verify_index(config, tracker.target)
        progress(f"Locate: {config.clients} clients for {config.locate_seconds:g} s")
        locate = run_locate(config, tracker)
        memory = read_memory(tracker.pid)
    return Figures(
        cores=os.cpu_count() or 1,
        pinned=client_cores(config.pin) is not None,
        agents=config.agents,
        files_per_agent=config.files_per_agent,
        pool=config.pool,
        holdings=config.holdings,
        sync_processes=config.sync_processes,
        sync_seconds=sync.seconds,
        sync_holdings_per_second=sync.holdings_per_second,
        sync_tracker_cpu_seconds=sync.tracker_cpu_seconds,
        locate_clients=config.clients,
        locate_seconds=config.locate_seconds,
        locate_max_holders=LOCATE_MAX_HOLDERS,
        locate_calls=locate.calls,
        locate_per_second=locate.per_second,
        locate_p50_ms=locate.p50_ms,
        locate_p99_ms=locate.p99_ms,
        locate_max_ms=locate.max_ms,
        locate_tracker_cpu_ms_per_call=locate.tracker_cpu_ms_per_call,
        tracker_peak_rss_mib=memory.peak_mib,
        tracker_rss_mib=memory.current_mib,
    )


def parse_args(argv: Sequence[str] | None) -> tuple[BenchConfig, bool]:
    parser = argparse.ArgumentParser(
        prog="scripts/bench/tracker",
        description="Benchmark a real tracker through its gRPC API: inventory sync, Locate, memory.",
        epilog="Exit status: 0 when every target is met, 3 when one is missed, 1 when the run failed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--agents", type=positive_int, default=1000, metavar="N", help="simulated agents")
    add("--files-per-agent", type=positive_int, default=1000, metavar="M", help="holdings per agent")
    add("--pool", type=positive_int, default=20_000, metavar="P", help="distinct files to draw from")
    add("--locate-seconds", type=positive_float, default=10.0, metavar="S", help="Locate phase length")
    add("--clients", type=positive_int, default=8, metavar="C", help="Locate client processes")
    add("--sync-processes", type=positive_int, default=4, metavar="W", help="sync client processes")
    add("--pin", action="store_true", help="pin the tracker to core 0 and the clients to the others")
    add("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    if args.files_per_agent > min(args.pool, MAX_SYNC_ENTRIES):
        parser.error(f"--files-per-agent must be at most --pool and at most {MAX_SYNC_ENTRIES:,}")
    if args.agents > MAX_AGENTS:
        parser.error(f"--agents must be at most {MAX_AGENTS:,}")
    config = BenchConfig(
        agents=args.agents,
        files_per_agent=args.files_per_agent,
        pool=args.pool,
        locate_seconds=args.locate_seconds,
        clients=args.clients,
        sync_processes=min(args.sync_processes, args.agents),
        pin=args.pin,
    )
    return config, args.json


def main(argv: Sequence[str] | None = None) -> int:
    config, want_json = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        figures = run(config)
    except (BenchError, TrackerError, OSError) as exc:
        print(f"bench: failed: {exc}", file=sys.stderr)
        return 1
    table = rows(figures)
    print_report(figures, table)
    if want_json:
        print(as_json(figures, table, measured=False))
    return exit_status(table)


if __name__ == "__main__":
    sys.exit(main())
