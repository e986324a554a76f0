"""Benchmarks `lanpeer-agent get` on the lab LAN (scripts/lab), each figure a ratio measured
in the same run: against curl and aria2c from the same origin, and against the theoretical
minimum distribution time of DESIGN.md, T_min = max(S/u_s, S/d_min, N*S/(u_s + sum u_i)).

It builds a lab of 8 machines, an origin (nginx, sendfile) and a tracker in network
namespaces, with links capped by tc tbf, writes random files under /tmp, and measures:

1. one machine (1 Gbit/s link) fetching a 256 MiB file held by 4 peers whose uploads are
   capped at 100 Mbit/s each: target >= 0.9 x the 400 Mbit/s they give together;
2. one machine fetching from the origin alone (200 Mbit/s) with `get`, `curl` and
   `aria2c -x8 -s8`, in alternating order: target `get` >= 0.95 x the faster of the two;
3. 8 machines at 200 Mbit/s, the origin at 50 Mbit/s: one machine fetches a 128 MiB file
   through its daemon (which then serves it and tells the tracker what the URL is), then
   the other 7 fetch it at once with `get --tracker`; then 7 curls from the origin at once.
   Reported: the time to the last finisher, the origin's bytes / the file size, the CPU
   every process used, and each time's ratio to its T_min;
4. the peak RSS of `get` fetching a 1 GiB file from the origin: target <= 150 MB.

Rates are nominal link rates (tc's): TCP/IP headers take 66 of each 1514-byte frame, so
at most 95.6% of a link's rate is payload, and a figure of 0.956 x the link is the most
any tool can show. Times are wall-clock times of whole commands (start-up included).

Run it as `scripts/bench/get` (root; it uses .venv/bin/python); `--help` lists the options.
A quick run: `scripts/bench/get --scale 0.25`. When nginx, curl or aria2c is missing, it
installs them with apt-get. A PNG plot is saved when matplotlib is importable.

Exit status: 0 when every target is met, 3 when one is missed, 1 when the run failed (a
process did not start, a download failed or gave wrong bytes, or the lab could not be built).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import benchlib
from benchlib import (
    NO_MATPLOTLIB,
    BenchError,
    Row,
    as_json,
    exit_on_sigterm,
    exit_status,
    machine_busy_seconds,
    mem_available_mib,
    nginx_package,
    print_table,
    progress,
    pyplot,
    run_command,
    which,
)

from scripts.lablib import ORIGIN, Lab, LabError, format_rate, parse_rate
from scripts.lablib.services import Proc, Services

ROOT = Path(__file__).resolve().parents[2]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# The scenarios, as the issue gives them.
S1_PEERS = 4
S1_PEER_UP = "100mbit"
S1_LINK = "1gbit"
S1_MIB = 256
S2_ORIGIN = "200mbit"
S2_LINK = "1gbit"
S2_MIB = 256
S3_HOSTS = 8
S3_LAN = "200mbit"
S3_ORIGIN = "50mbit"
S3_MIB = 128
S4_ORIGIN = "1gbit"
S4_MIB = 1024
LAB_HOSTS = 8
TRACKER_LINK = "1gbit"

# The targets.
S1_MIN_RATIO = 0.9
S2_MIN_RATIO = 0.95
S4_MAX_RSS_MB = 150.0  # 10^6 bytes, as the issue writes it

# The share of a link's rate that TCP payload can use: 1448 of each 1514 bytes (MSS with
# timestamps, of a full Ethernet frame, which is what tbf counts).
PAYLOAD_SHARE = 1448 / 1514
# Above this share of all cores busy, the report says the machine's CPU was the limit.
CPU_BOUND_SHARE = 0.85

# Time limits, so that no run hangs: a transfer may take this many times its T_min, plus slack.
TIME_FACTOR = 6.0
TIME_SLACK = 60.0
APT_TIMEOUT = 600.0
POLL_SECONDS = 0.02
HTTP_PORT = 80

_LOG_LINE = re.compile(r"^(\S+) (\S+) (\d{3}) (\d+)")


@dataclass(frozen=True, slots=True)
class BenchConfig:
    scale: float
    rounds: int
    scenarios: tuple[int, ...]
    prefix: str
    plot: Path | None
    keep: bool = False

    def mib(self, base: int) -> int:
        return max(16, round(base * self.scale))


# ----------------------------------------------------------------------------- tools


@dataclass(frozen=True, slots=True)
class Tools:
    nginx: str
    curl: str
    aria2c: str
    versions: str


def ensure_tools() -> Tools:
    """Finds nginx, curl and aria2c, installing what is missing with apt-get."""
    wanted = {"nginx": "nginx", "curl": "curl", "aria2c": "aria2"}
    missing = [name for name in wanted if which(name) is None]
    if missing:
        _install([wanted[name] for name in missing])
    paths = {name: which(name) for name in wanted}
    absent = [name for name, path in paths.items() if path is None]
    if absent:
        raise BenchError(f"{', '.join(absent)} still missing after apt-get install")
    nginx, curl, aria2c = (str(paths[name]) for name in wanted)
    nginx_v = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10, check=False)
    curl_v = run_command([curl, "--version"], 10.0).split()
    aria_v = run_command([aria2c, "--version"], 10.0).split()
    versions = (
        f"{nginx_v.stderr.strip().rpartition(' ')[2]}, curl {curl_v[1] if len(curl_v) > 1 else '?'}, "
        f"aria2c {aria_v[2] if len(aria_v) > 2 else '?'}"
    )
    return Tools(nginx, curl, aria2c, versions)


def _install(packages: list[str]) -> None:
    if shutil.which("apt-get") is None:
        raise BenchError(f"{', '.join(packages)} missing, and there is no apt-get to install them with")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    progress(f"{', '.join(packages)} missing: apt-get update")
    run_command(["apt-get", "update", "-qq"], APT_TIMEOUT, env=env)
    if "nginx" in packages:
        packages = [p for p in packages if p != "nginx"] + [nginx_package()]
    progress(f"apt-get install {' '.join(packages)}")
    run_command(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], APT_TIMEOUT, env=env
    )
    if any(p.startswith("nginx") for p in packages):
        # Debian's package starts a system nginx on port 80; the benchmark never uses it.
        subprocess.run(
            ["service", "nginx", "stop"],
            capture_output=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )


# ----------------------------------------------------------------------------- files


@dataclass(frozen=True, slots=True)
class DataFile:
    path: Path
    size: int
    sha256: str

    @property
    def url_path(self) -> str:
        return f"/{self.path.name}"

    @property
    def bits(self) -> int:
        return self.size * 8


def write_random_file(path: Path, size: int) -> DataFile:
    digest = hashlib.sha256()
    benchlib.write_random_file(path, size, lambda _offset, chunk: digest.update(chunk))
    return DataFile(path, size, digest.hexdigest())


def sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fresh_dir(path: Path) -> Path:
    """An empty directory at path, whatever was there removed."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# ----------------------------------------------------------------------------- CPU and memory


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process; 0 once it is gone."""
    try:
        return benchlib.cpu_seconds(pid)
    except OSError:
        return 0.0


def read_status_kib(pid: int, key: str) -> int:
    """A field of /proc/PID/status in KiB; 0 once the process is gone."""
    try:
        return benchlib.read_status_kib(pid, key)
    except (OSError, ValueError, IndexError, BenchError):
        return 0


class CpuWindow:
    """The CPU time of the whole machine and of some long-running processes over a window."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.started = time.monotonic()
        self._busy = machine_busy_seconds()
        self._cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}

    def close(self) -> tuple[float, float, dict[str, float]]:
        """Seconds, machine busy seconds, and each process's CPU seconds over the window."""
        seconds = time.monotonic() - self.started
        busy = machine_busy_seconds() - self._busy
        return seconds, busy, {name: cpu_seconds(pid) - self._cpu[name] for name, pid in self.pids.items()}


# ----------------------------------------------------------------------------- timed commands


@dataclass(slots=True)
class Timed:
    """A command run to its end: wall time, status, output, CPU and memory from wait4()."""

    host: str
    name: str
    started: float
    ended: float = 0.0
    returncode: int | None = None
    cpu_seconds: float = 0.0
    maxrss_kib: int = 0
    hwm_kib: int = 0
    stdout: str = ""
    proc: Proc | None = field(default=None, repr=False)
    out_path: Path | None = field(default=None, repr=False)

    @property
    def wall(self) -> float:
        return self.ended - self.started

    def json(self) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads(self.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise BenchError(
                f"{self.name} on {self.host} printed no JSON summary: {self.stdout[-300:]!r}"
            ) from None
        return doc


class Runner:
    """Starts commands in the lab and waits for them with wait4(), which gives each one's
    CPU time and peak RSS; polls VmHWM meanwhile when asked. Everything runs on the main
    thread, which the children's PR_SET_PDEATHSIG is tied to."""

    def __init__(self, services: Services, workdir: Path) -> None:
        self.services = services
        self.workdir = workdir
        self._count = 0

    def start(self, host: str, name: str, argv: Sequence[str]) -> Timed:
        self._count += 1
        label = f"{self._count:03d}-{name}-{host}"
        out_path = self.workdir / f"{label}.out"
        with out_path.open("wb") as out:
            started = time.monotonic()
            proc = self.services.start(host, label, argv, stdout=out)
        return Timed(host, name, started, proc=proc, out_path=out_path)

    def wait(self, runs: Sequence[Timed], timeout: float, *, watch_memory: bool = False) -> None:
        deadline = time.monotonic() + timeout
        pending = [r for r in runs if r.returncode is None]
        while pending:
            for run in list(pending):
                assert run.proc is not None
                if watch_memory:
                    run.hwm_kib = max(run.hwm_kib, read_status_kib(run.proc.pid, "VmHWM"))
                pid, status, usage = os.wait4(run.proc.pid, os.WNOHANG)
                if pid == 0:
                    continue
                run.ended = time.monotonic()
                run.returncode = os.waitstatus_to_exitcode(status)
                run.proc.process.returncode = run.returncode
                run.cpu_seconds = usage.ru_utime + usage.ru_stime
                run.maxrss_kib = usage.ru_maxrss
                assert run.out_path is not None
                run.stdout = run.out_path.read_text(errors="replace")
                pending.remove(run)
            if pending and time.monotonic() > deadline:
                names = ", ".join(f"{r.name} on {r.host}" for r in pending)
                raise BenchError(f"{names} did not finish within {timeout:.0f} s")
            if pending:
                time.sleep(POLL_SECONDS)
        for run in runs:
            if run.returncode != 0:
                assert run.proc is not None
                raise BenchError(
                    f"{run.name} on {run.host} failed with status {run.returncode}; "
                    f"its log ends:\n{run.proc.tail()}"
                )

    def run(
        self, host: str, name: str, argv: Sequence[str], timeout: float, *, watch_memory: bool = False
    ) -> Timed:
        timed = self.start(host, name, argv)
        self.wait([timed], timeout, watch_memory=watch_memory)
        return timed


def transfer_timeout(t_min: float) -> float:
    return TIME_FACTOR * t_min + TIME_SLACK


# ----------------------------------------------------------------------------- the lab


@contextmanager
def lab_run(
    prefix: str, workdir_prefix: str, *, keep: bool, keep_lab: bool, tools: bool = True
) -> Iterator[tuple[Tools | None, Lab, Path]]:
    """What a run on the lab needs: root, the tools (nginx, curl, aria2c; None without
    `tools`), the lab `prefix` with nothing left of an earlier run (for the caller to bring
    up), and a work directory under /tmp. On the way out, failed or not: the lab taken down
    (its namespaces left up with keep_lab), and the work directory removed (its logs kept
    with keep)."""
    if os.geteuid() != 0:
        raise BenchError("the lab needs root (network namespaces and tc)")
    found = ensure_tools() if tools else None
    lab = Lab(prefix)
    if lab.state_path.exists() or lab.leftovers():
        progress(f"lab {prefix} is left over from an earlier run: taking it down")
        lab.down()
    workdir = Path(tempfile.mkdtemp(prefix=workdir_prefix, dir="/tmp"))
    try:
        yield found, lab, workdir
    finally:
        progress("cleaning up: stopping processes" + ("" if keep_lab else ", taking the lab down"))
        try:
            if keep_lab:
                progress(f"lab left up: scripts/lab status --prefix {prefix}; remove it with down")
            else:
                lab.down()
        finally:
            if keep:
                for data in workdir.rglob("*.bin"):
                    data.unlink()
                progress(f"logs kept in {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        if not keep_lab and (left := lab.leftovers()):
            print(f"bench: namespaces left after down: {', '.join(left)}", file=sys.stderr)


Config = TypeVar("Config")
Measured = TypeVar("Measured")


def run_or_exit(run: Callable[[Config], Measured], config: Config) -> Measured:
    """Runs a lab benchmark with SIGTERM as a clean exit: a failure is one line on stderr
    and exit status 1, an interruption status 130."""
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        return run(config)
    except (BenchError, LabError, OSError, subprocess.SubprocessError) as exc:
        print(f"bench: failed: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def save_results(path: Path | None, text: str) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        print(f"figures saved to {path}")


def try_plot(save: Callable[[], str]) -> None:
    """Saves a plot, and says where; the plot is a bonus, so a failure of it fails nothing."""
    try:
        print(save())
    except Exception as exc:
        print(f"no plot: {type(exc).__name__}: {exc}")


# ----------------------------------------------------------------------------- the origin


@dataclass(slots=True)
class Origin:
    proc: Proc
    access_log: Path
    base_url: str
    _offset: int = 0

    def mark(self) -> None:
        """Counts from here on."""
        self._offset = self.access_log.stat().st_size if self.access_log.exists() else 0

    def body_bytes(self, url_path: str) -> int:
        """Body bytes of GETs of url_path logged since the mark. nginx logs a request when
        it ends, so call this once the clients have finished."""
        total = 0
        with self.access_log.open("rb") as f:
            f.seek(self._offset)
            for line in f.read().decode(errors="replace").splitlines():
                match = _LOG_LINE.match(line.strip())
                if match and match.group(1) == "GET" and match.group(2) == url_path:
                    total += int(match.group(4))
        return total

    def url(self, data: DataFile) -> str:
        return f"{self.base_url}{data.url_path}"


@contextmanager
def running_nginx(tools: Tools, services: Services, lab: Lab, workdir: Path, root: Path) -> Iterator[Origin]:
    """nginx on the origin host serving `root` with sendfile, in one process (no master),
    logging each request's method, path, status and body bytes."""
    home = workdir / "nginx"
    home.mkdir()
    address = lab.address_of(ORIGIN)
    temp = "".join(
        f"    {kind}_temp_path {home / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    access_log = home / "access.log"
    conf = home / "nginx.conf"
    conf.write_text(
        "user root;\ndaemon off;\nmaster_process off;\nworker_processes 1;\n"
        f"pid {home / 'nginx.pid'};\nerror_log {home / 'error.log'} warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        # The first four fields are what is counted; the rest are for a look at the timing.
        "    log_format bench '$request_method $uri $status $body_bytes_sent "
        "$msec $request_time $http_range';\n"
        f"    access_log {access_log} bench;\n"
        "    sendfile on;\n    keepalive_requests 100000;\n"
        "    default_type application/octet-stream;\n"
        f"{temp}"
        f"    server {{\n        listen {address}:{HTTP_PORT};\n        root {root};\n"
        "        location / { }\n    }\n}\n"
    )
    proc = services.start(
        ORIGIN, "nginx", [tools.nginx, "-p", str(home), "-c", str(conf), "-e", str(home / "error.log")]
    )
    try:
        services.wait_listening(proc, address, HTTP_PORT)
        yield Origin(proc, access_log, f"http://{address}")
    finally:
        services.stop(proc)


# ----------------------------------------------------------------------------- T_min


def t_min(size_bits: int, server_up: float, d_min: float, n: int, peers_up: float = 0.0) -> float:
    """Kumar & Ross: the least time to give a file of size_bits to n machines, from
    sources uploading server_up in all, to machines downloading at least d_min, which
    upload peers_up in all while they download (0: they never pass pieces on)."""
    return max(size_bits / server_up, size_bits / d_min, n * size_bits / (server_up + peers_up))


def mbit(bits: float, seconds: float) -> float:
    return bits / seconds / 1e6


# ----------------------------------------------------------------------------- figures


@dataclass(frozen=True, slots=True)
class S1Figures:
    size: int
    peer_up_bits: int
    link_bits: int
    walls: list[float]
    get_seconds: list[float]
    bytes_by_source: list[dict[str, int]]
    get_cores: list[float]
    peer_cpu_seconds: list[float]
    machine_cores: list[float]

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def t_min(self) -> float:
        return t_min(self.size * 8, S1_PEERS * self.peer_up_bits, self.link_bits, 1)


@dataclass(frozen=True, slots=True)
class S2Figures:
    size: int
    origin_bits: int
    walls: dict[str, list[float]]
    get_cores: list[float]

    def wall(self, tool: str) -> float:
        return statistics.median(self.walls[tool])

    @property
    def t_min(self) -> float:
        return self.size * 8 / self.origin_bits


@dataclass(frozen=True, slots=True)
class S3Figures:
    size: int
    machines: int
    lan_bits: int
    origin_bits: int
    prefetch_seconds: float
    get_walls: list[float]
    get_origin_bytes: int
    get_summaries: list[dict[str, Any]]
    get_cpu: list[float]
    holder_cpu: float
    holder_bytes_served: int
    nginx_cpu_get: float
    tracker_cpu: float
    window_get: float
    busy_get: float
    curl_walls: list[float]
    curl_origin_bytes: int
    nginx_cpu_curl: float
    window_curl: float
    busy_curl: float

    @property
    def get_last(self) -> float:
        return max(self.get_walls)

    @property
    def curl_last(self) -> float:
        return max(self.curl_walls)

    @property
    def t_min_swarm(self) -> float:
        """With the holder and the origin as sources and every machine passing pieces on."""
        sources = self.origin_bits + self.lan_bits
        return t_min(self.size * 8, sources, self.lan_bits, self.machines, self.machines * self.lan_bits)

    @property
    def t_min_no_resharing(self) -> float:
        """With the holder and the origin as the only sources (machines pass nothing on
        while they download, which is how lanpeer works today)."""
        return t_min(self.size * 8, self.origin_bits + self.lan_bits, self.lan_bits, self.machines)

    @property
    def t_holder_only(self) -> float:
        """With the holder as the only source: what peers-first comes to when the holder
        can serve every piece in time and the origin is left alone."""
        return t_min(self.size * 8, self.lan_bits, self.lan_bits, self.machines)

    @property
    def t_min_origin(self) -> float:
        """From the origin alone: N*S/u_s."""
        return t_min(self.size * 8, self.origin_bits, self.lan_bits, self.machines)


@dataclass(frozen=True, slots=True)
class S4Figures:
    size: int
    origin_bits: int
    wall: float
    hwm_kib: int
    maxrss_kib: int
    cpu_seconds: float

    @property
    def peak_mb(self) -> float:
        return max(self.hwm_kib, self.maxrss_kib) * 1024 / 1e6


@dataclass(frozen=True, slots=True)
class Figures:
    cores: int
    mem_available_mib: float
    load_average: float
    tools: str
    config: BenchConfig
    s1: S1Figures | None = None
    s2: S2Figures | None = None
    s3: S3Figures | None = None
    s4: S4Figures | None = None


# ----------------------------------------------------------------------------- the scenarios


@dataclass(slots=True)
class Bench:
    config: BenchConfig
    tools: Tools
    lab: Lab
    services: Services
    runner: Runner
    workdir: Path
    tracker: str
    origin: Origin
    tracker_pid: int

    def get(self, *args: str) -> list[str]:
        return self.services.get_argv(*args)

    def set_rates(self, rates: dict[str, tuple[str, str]]) -> None:
        for host, (up, down) in rates.items():
            self.lab.set_rate(host, up=up, down=down)

    # ------------------------------------------------------------------------- 1

    def scenario1(self, data: DataFile) -> S1Figures:
        peers = [f"host{i}" for i in range(1, S1_PEERS + 1)]
        receiver = f"host{S1_PEERS + 1}"
        self.set_rates({h: (S1_PEER_UP, S1_LINK) for h in peers} | {receiver: (S1_LINK, S1_LINK)})
        share = fresh_dir(self.workdir / "s1-share")
        os.link(data.path, share / data.path.name)
        progress(f"1: {S1_PEERS} peers share {data.size // MiB} MiB; waiting for the tracker to list them")
        agents = [
            self.services.start_agent(h, share=share, state_dir=self.workdir / f"s1{h}", tracker=self.tracker)
            for h in peers
        ]
        self.services.wait_for_holders(self.tracker, f"sha256:{data.sha256}", S1_PEERS, timeout=120)
        figures = S1Figures(
            data.size, parse_rate(S1_PEER_UP) or 0, parse_rate(S1_LINK) or 0, [], [], [], [], [], []
        )
        limit = transfer_timeout(t_min(data.bits, S1_PEERS * figures.peer_up_bits, figures.link_bits, 1))
        for r in range(self.config.rounds):
            out = fresh_dir(self.workdir / f"s1-{receiver}") / data.path.name
            progress(f"1: round {r + 1}: {receiver} fetches sha256:{data.sha256[:12]} from the peers")
            cpu = CpuWindow({a.proc.host: a.proc.pid for a in agents})
            timed = self.runner.run(
                receiver,
                "get",
                self.get(
                    "--json",
                    "--no-daemon",
                    "--tracker",
                    self.tracker,
                    f"sha256:{data.sha256}",
                    "-o",
                    str(out),
                ),
                limit,
            )
            seconds, busy, per_peer = cpu.close()
            summary = timed.json()
            check_download(summary, data, out)
            figures.walls.append(timed.wall)
            figures.get_seconds.append(float(summary["seconds"]))
            figures.bytes_by_source.append(dict(summary.get("bytes_by_source", {})))
            figures.get_cores.append(timed.cpu_seconds / timed.wall)
            figures.peer_cpu_seconds.append(sum(per_peer.values()))
            figures.machine_cores.append(busy / seconds)
            out.unlink()
        for agent in agents:
            self.services.stop(agent.proc)
        return figures

    # ------------------------------------------------------------------------- 2

    def scenario2(self, data: DataFile) -> S2Figures:
        host = "host6"
        self.set_rates({ORIGIN: (S2_ORIGIN, S2_ORIGIN), host: (S2_LINK, S2_LINK)})
        origin_bits = parse_rate(S2_ORIGIN) or 0
        limit = transfer_timeout(data.bits / origin_bits)
        url = self.origin.url(data)
        walls: dict[str, list[float]] = {"get": [], "curl": [], "aria2c": []}
        get_cores: list[float] = []
        order = ["get", "curl", "aria2c"]
        for r in range(self.config.rounds):
            for tool in order[r % 3 :] + order[: r % 3]:
                outdir = fresh_dir(self.workdir / f"s2-{host}")
                out = outdir / data.path.name
                progress(f"2: round {r + 1}: {tool} from the origin at {S2_ORIGIN}")
                if tool == "get":
                    timed = self.runner.run(
                        host, tool, self.get("--json", "--no-daemon", url, "-o", str(out)), limit
                    )
                    check_download(timed.json(), data, out)
                    get_cores.append(timed.cpu_seconds / timed.wall)
                elif tool == "curl":
                    timed = self.runner.run(
                        host, tool, [self.tools.curl, "-sS", "-f", "-o", str(out), url], limit
                    )
                else:
                    argv = [
                        self.tools.aria2c,
                        "-x8",
                        "-s8",
                        "-q",
                        "--file-allocation=falloc",
                        "--allow-overwrite=true",
                        "--auto-file-renaming=false",
                        "-d",
                        str(outdir),
                        "-o",
                        out.name,
                        url,
                    ]
                    timed = self.runner.run(host, tool, argv, limit)
                if tool != "get" and (out.stat().st_size != data.size or sha256_of(out) != data.sha256):
                    raise BenchError(f"{tool} wrote a file that is not the origin's")
                walls[tool].append(timed.wall)
                out.unlink()
        return S2Figures(data.size, origin_bits, walls, get_cores)

    # ------------------------------------------------------------------------- 3

    def scenario3(self, data: DataFile) -> S3Figures:
        hosts = [f"host{i}" for i in range(1, S3_HOSTS + 1)]
        holder, fetchers = hosts[0], hosts[1:]
        lan_bits, origin_bits = parse_rate(S3_LAN) or 0, parse_rate(S3_ORIGIN) or 0
        self.set_rates({h: (S3_LAN, S3_LAN) for h in hosts})
        # The holder's own first fetch is set-up, not the figure: the origin runs fast for it.
        self.set_rates({ORIGIN: (S4_ORIGIN, S4_ORIGIN)})
        share = fresh_dir(self.workdir / "s3-share")
        agent = self.services.start_agent(
            holder, share=share, state_dir=self.workdir / "s3h", tracker=self.tracker
        )
        url = self.origin.url(data)
        progress(f"3: {holder} fetches {data.size // MiB} MiB through its daemon, which then shares it")
        pre = self.runner.run(
            holder,
            "get-via-daemon",
            self.get("--json", "--state-dir", str(agent.state_dir), url, "-o", str(share / data.path.name)),
            transfer_timeout(data.bits / lan_bits),
        )
        check_download(pre.json(), data, share / data.path.name)
        self.services.wait_for_holders(self.tracker, url, 1, timeout=60)
        self.set_rates({ORIGIN: (S3_ORIGIN, S3_ORIGIN)})
        status = self.services.agent_status(agent) or {}
        served_before = int(status.get("bytes_served", 0))

        progress(f"3: {len(fetchers)} machines fetch it at once with get --tracker (origin at {S3_ORIGIN})")
        no_resharing = t_min(data.bits, origin_bits + lan_bits, lan_bits, len(fetchers))
        self.origin.mark()
        cpu = CpuWindow(
            {"holder": agent.proc.pid, "nginx": self.origin.proc.pid, "tracker": self.tracker_pid}
        )
        outs = {h: fresh_dir(self.workdir / f"s3-{h}") / data.path.name for h in fetchers}
        runs = [
            self.runner.start(
                h,
                "get",
                self.get("--json", "--no-daemon", "--tracker", self.tracker, url, "-o", str(outs[h])),
            )
            for h in fetchers
        ]
        self.runner.wait(runs, transfer_timeout(no_resharing))
        window_get, busy_get, per = cpu.close()
        get_origin_bytes = self.origin.body_bytes(data.url_path)
        summaries = [r.json() for r in runs]
        for r, summary in zip(runs, summaries, strict=True):
            check_download(summary, data, outs[r.host])
            outs[r.host].unlink()
        status = self.services.agent_status(agent) or {}
        holder_served = int(status.get("bytes_served", 0)) - served_before
        start = min(r.started for r in runs)
        get_walls = [r.ended - start for r in runs]

        progress(f"3: {len(fetchers)} curls from the origin at once (origin at {S3_ORIGIN})")
        self.origin.mark()
        cpu_curl = CpuWindow({"nginx": self.origin.proc.pid})
        curls = [
            self.runner.start(h, "curl", [self.tools.curl, "-sS", "-f", "-o", str(outs[h]), url])
            for h in fetchers
        ]
        self.runner.wait(curls, transfer_timeout(len(fetchers) * data.bits / origin_bits))
        window_curl, busy_curl, per_curl = cpu_curl.close()
        curl_origin_bytes = self.origin.body_bytes(data.url_path)
        for h in fetchers:
            if outs[h].stat().st_size != data.size:
                raise BenchError(f"curl on {h} wrote {outs[h].stat().st_size} bytes, not {data.size}")
            outs[h].unlink()
        start = min(r.started for r in curls)
        self.services.stop(agent.proc)
        return S3Figures(
            size=data.size,
            machines=len(fetchers),
            lan_bits=lan_bits,
            origin_bits=origin_bits,
            prefetch_seconds=pre.wall,
            get_walls=get_walls,
            get_origin_bytes=get_origin_bytes,
            get_summaries=summaries,
            get_cpu=[r.cpu_seconds for r in runs],
            holder_cpu=per["holder"],
            holder_bytes_served=holder_served,
            nginx_cpu_get=per["nginx"],
            tracker_cpu=per["tracker"],
            window_get=window_get,
            busy_get=busy_get,
            curl_walls=[r.ended - start for r in curls],
            curl_origin_bytes=curl_origin_bytes,
            nginx_cpu_curl=per_curl["nginx"],
            window_curl=window_curl,
            busy_curl=busy_curl,
        )

    # ------------------------------------------------------------------------- 4

    def scenario4(self, data: DataFile) -> S4Figures:
        host = "host7"
        self.set_rates({ORIGIN: (S4_ORIGIN, S4_ORIGIN), host: (S4_ORIGIN, S4_ORIGIN)})
        origin_bits = parse_rate(S4_ORIGIN) or 0
        out = fresh_dir(self.workdir / f"s4-{host}") / data.path.name
        progress(f"4: get of {data.size // MiB} MiB from the origin at {S4_ORIGIN}, watching its memory")
        timed = self.runner.run(
            host,
            "get",
            self.get("--json", "--no-daemon", self.origin.url(data), "-o", str(out)),
            transfer_timeout(data.bits / origin_bits),
            watch_memory=True,
        )
        check_download(timed.json(), data, out)
        out.unlink()
        return S4Figures(
            data.size, origin_bits, timed.wall, timed.hwm_kib, timed.maxrss_kib, timed.cpu_seconds
        )


def check_download(summary: dict[str, Any], data: DataFile, out: Path) -> None:
    """`get` verified every piece and the whole digest; this checks it said so, and the size."""
    if summary.get("sha256") != data.sha256 or summary.get("size") != data.size:
        raise BenchError(
            f"get reported {summary.get('sha256')} ({summary.get('size')} bytes), not {data.sha256}"
        )
    if out.stat().st_size != data.size:
        raise BenchError(f"{out} holds {out.stat().st_size} bytes, not {data.size}")


# ----------------------------------------------------------------------------- report


def rows(f: Figures) -> list[Row]:
    out: list[Row] = []
    if f.s1 is not None:
        out += _s1_rows(f.s1)
    if f.s2 is not None:
        out += _s2_rows(f.s2)
    if f.s3 is not None:
        out += _s3_rows(f.s3, f.cores)
    if f.s4 is not None:
        out += _s4_rows(f.s4)
    return out


def _mib(size: int) -> str:
    return f"{size / MiB:,.0f} MiB"


def _s1_rows(s: S1Figures) -> list[Row]:
    together = S1_PEERS * s.peer_up_bits
    rate = mbit(s.size * 8, s.wall)
    own = mbit(s.size * 8, statistics.median(s.get_seconds))
    target = S1_MIN_RATIO * together / 1e6
    per_peer = ", ".join(f"{v / MiB:.0f}" for v in sorted(s.bytes_by_source[-1].values(), reverse=True))
    return [
        Row(
            f"1: {_mib(s.size)} from {S1_PEERS} peers at {format_rate(s.peer_up_bits)} up: rate",
            f"{rate:,.0f} Mbit/s",
            f">= {target:,.0f} Mbit/s",
            rate >= target,
            "s1_rate",
        ),
        Row("1: rate / the peers' 400 Mbit/s", f"{rate * 1e6 / together:.3f}x", f">= {S1_MIN_RATIO:g}x"),
        Row("1: rate by get's own clock (no start-up)", f"{own:,.0f} Mbit/s ({own * 1e6 / together:.3f}x)"),
        Row(f"1: time / T_min (S/400 Mbit/s = {s.t_min:.2f} s)", f"{s.wall:.2f} s = {s.wall / s.t_min:.2f}x"),
        Row("1: MiB from each peer (last round)", per_peer or "?"),
        Row(
            "1: CPU: get; 4 peer daemons; machine",
            f"{statistics.median(s.get_cores):.2f}; {statistics.median(s.peer_cpu_seconds) / s.wall:.2f}; "
            f"{statistics.median(s.machine_cores):.2f} cores",
        ),
    ]


def _s2_rows(s: S2Figures) -> list[Row]:
    rates = {tool: mbit(s.size * 8, s.wall(tool)) for tool in s.walls}
    best_tool = max(("curl", "aria2c"), key=lambda t: rates[t])
    ratio = rates["get"] / rates[best_tool]
    return [
        Row(
            f"2: {_mib(s.size)} from the origin at {format_rate(s.origin_bits)}: get / curl / aria2c -x8",
            " / ".join(f"{rates[t]:,.0f}" for t in ("get", "curl", "aria2c")) + " Mbit/s",
        ),
        Row(
            f"2: get / the faster ({best_tool})",
            f"{ratio:.3f}x",
            f">= {S2_MIN_RATIO:g}x",
            ratio >= S2_MIN_RATIO,
            "s2_ratio",
        ),
        Row(
            f"2: time / T_min (S/u_s = {s.t_min:.2f} s): get; curl; aria2c",
            "; ".join(f"{s.wall(t) / s.t_min:.2f}x" for t in ("get", "curl", "aria2c")),
        ),
        Row("2: CPU of get", f"{statistics.median(s.get_cores):.2f} cores"),
    ]


def _s3_rows(s: S3Figures, cores: int) -> list[Row]:
    n = s.machines
    speedup = s.curl_last / s.get_last
    peers = sum(int(x["bytes_from_peers"]) for x in s.get_summaries)
    said_origin = sum(int(x["bytes_from_origin"]) for x in s.get_summaries)
    busy = s.busy_get / s.window_get
    gets_cores = sum(s.get_cpu) / s.window_get
    rows_ = [
        Row(
            f"3: {n} machines get {_mib(s.size)} at once: last finisher",
            f"{s.get_last:.1f} s (first {min(s.get_walls):.1f} s)",
        ),
        Row(
            f"3:   / T_min with re-sharing ({s.t_min_swarm:.2f} s)",
            f"{s.get_last / s.t_min_swarm:.2f}x",
        ),
        Row(
            f"3:   / T_min without re-sharing, N*S/(u_o+u_h) ({s.t_min_no_resharing:.2f} s)",
            f"{s.get_last / s.t_min_no_resharing:.2f}x",
        ),
        Row(
            f"3:   / the holder's upload alone, N*S/u_h ({s.t_holder_only:.2f} s)",
            f"{s.get_last / s.t_holder_only:.2f}x",
        ),
        Row("3:   origin bytes / file size", f"{s.get_origin_bytes / s.size:.2f}"),
        Row(
            "3:   bytes from the holder / from the origin (as get counts them)",
            f"{peers / MiB:,.0f} / {said_origin / MiB:,.0f} MiB; "
            f"the holder served {s.holder_bytes_served / MiB:,.0f} MiB",
        ),
        Row(f"3: {n} curls from the origin at once: last finisher", f"{s.curl_last:.1f} s"),
        Row(
            f"3:   / T_min from the origin, N*S/u_o ({s.t_min_origin:.1f} s)",
            f"{s.curl_last / s.t_min_origin:.2f}x",
        ),
        Row("3:   origin bytes / file size", f"{s.curl_origin_bytes / s.size:.2f}"),
        Row("3: lanpeer's speed-up over curl (last finisher)", f"{speedup:.1f}x"),
        Row(
            "3: CPU during the gets: 7 gets; holder; nginx; tracker",
            f"{gets_cores:.2f}; {s.holder_cpu / s.window_get:.2f}; {s.nginx_cpu_get / s.window_get:.2f}; "
            f"{s.tracker_cpu / s.window_get:.2f} cores",
        ),
        Row(
            "3: machine busy during the gets; the curls",
            f"{busy:.2f}; {s.busy_curl / s.window_curl:.2f} of {cores} cores",
        ),
    ]
    return rows_


def _s4_rows(s: S4Figures) -> list[Row]:
    return [
        Row(
            f"4: peak RSS of get, {_mib(s.size)} from the origin",
            f"{s.peak_mb:,.0f} MB (VmHWM {s.hwm_kib / 1024:,.0f} MiB, wait4 {s.maxrss_kib / 1024:,.0f} MiB)",
            f"<= {S4_MAX_RSS_MB:g} MB",
            s.peak_mb <= S4_MAX_RSS_MB,
            "s4_peak_rss_mb",
        ),
        Row(
            f"4: rate at {format_rate(s.origin_bits)}; CPU of get",
            f"{mbit(s.size * 8, s.wall):,.0f} Mbit/s; {s.cpu_seconds / s.wall:.2f} cores",
        ),
    ]


def print_report(f: Figures, table: Sequence[Row]) -> None:
    cfg = f.config
    print("lanpeer get benchmark on the lab LAN: figures as ratios measured in the same run")
    print(
        f"machine: {f.cores} cores, {f.mem_available_mib:,.0f} MiB memory available, load average "
        f"{f.load_average:.2f} at the start; Linux {platform.release()}, "
        f"Python {platform.python_version()}; {f.tools}"
    )
    print(
        f"lab: {LAB_HOSTS} machines, an origin (nginx, sendfile) and a tracker in network namespaces on one "
        "bridge, tc tbf on both ends of each link; rates are nominal: TCP payload is at most "
        f"{PAYLOAD_SHARE:.3f} of a link's rate"
    )
    print(
        f"scale {cfg.scale:g}, {cfg.rounds} round{'s' if cfg.rounds != 1 else ''} of 1 and 2 (median); "
        "times are whole commands (start-up included), to the last finisher in 3; get runs with its "
        "defaults (16 connections, 4 per source, peers-first)"
    )
    print()
    print_table(table)
    print()
    if f.s1 is not None:
        print("rounds, 1: get wall s: " + ", ".join(f"{v:.2f}" for v in f.s1.walls))
    if f.s2 is not None:
        for tool, walls in f.s2.walls.items():
            print(f"rounds, 2: {tool} wall s: " + ", ".join(f"{v:.2f}" for v in walls))
    if f.s3 is not None:
        s3 = f.s3
        print("3: get finish times s:  " + ", ".join(f"{v:.1f}" for v in sorted(s3.get_walls)))
        print("3: curl finish times s: " + ", ".join(f"{v:.1f}" for v in sorted(s3.curl_walls)))
        print(
            "3: origin bytes per get (as it counts them), MiB: "
            + ", ".join(f"{int(x['bytes_from_origin']) / MiB:.0f}" for x in s3.get_summaries)
        )
        print("3: CPU seconds per get: " + ", ".join(f"{v:.2f}" for v in s3.get_cpu))
        busy = s3.busy_get / s3.window_get
        if busy >= CPU_BOUND_SHARE * f.cores:
            print(
                f"3: the machine was busy {busy:.2f} of {f.cores} cores during the gets: CPU, not the links, "
                "limited this figure (all 8 agents, nginx and the tracker share 2 cores)"
            )
        else:
            print(
                f"3: the machine was busy {busy:.2f} of {f.cores} cores during the gets: the links, not the "
                "CPU, set the pace"
            )


def save_plot(f: Figures, path: Path) -> str:
    """A PNG of each tool's time against T_min per scenario, and of scenario 3's finish
    times; a note when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return NO_MATPLOTLIB
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    bars: list[tuple[str, float]] = []
    if f.s1 is not None:
        bars.append(("1: get, 4 peers", f.s1.wall / f.s1.t_min))
    if f.s2 is not None:
        bars += [(f"2: {t}", f.s2.wall(t) / f.s2.t_min) for t in ("get", "curl", "aria2c")]
    if f.s3 is not None:
        bars += [
            ("3: 7 gets", f.s3.get_last / f.s3.t_min_swarm),
            ("3: 7 curls", f.s3.curl_last / f.s3.t_min_swarm),
        ]
    if bars:
        names, values = zip(*bars, strict=True)
        colors = ["tab:blue" if "get" in n else "tab:gray" for n in names]
        left.bar(names, values, color=colors)
        left.axhline(1.0, color="black", linewidth=1, linestyle="--")
        left.set_ylabel("time / T_min (1 = the theoretical minimum)")
        left.set_yscale("log")
        left.tick_params(axis="x", rotation=30)
        for i, v in enumerate(values):
            left.text(i, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
        left.set_title("Time against the theoretical minimum")
    if f.s3 is not None:
        s3 = f.s3
        ranks = range(1, s3.machines + 1)
        right.step(sorted(s3.get_walls), ranks, where="post", label="lanpeer get --tracker")
        right.step(sorted(s3.curl_walls), ranks, where="post", label="curl from the origin")
        right.axvline(s3.t_min_swarm, color="black", linestyle="--", label="T_min with re-sharing")
        right.axvline(s3.t_min_no_resharing, color="tab:green", linestyle=":", label="T_min, no re-sharing")
        right.set_xlabel("seconds")
        right.set_ylabel("machines finished")
        right.set_title(
            f"3: {s3.machines} machines fetch {_mib(s3.size)} (origin {format_rate(s3.origin_bits)})"
        )
        right.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot saved to {path}"


# ----------------------------------------------------------------------------- main


def run(config: BenchConfig) -> Figures:
    load_average, memory = os.getloadavg()[0], mem_available_mib()
    with lab_run(config.prefix, "lpg-", keep=config.keep, keep_lab=False) as (tools, lab, workdir):
        assert tools is not None
        figures = Figures(os.cpu_count() or 1, memory, load_average, tools.versions, config)
        www = workdir / "www"
        www.mkdir()
        sizes = {
            "big": config.mib(max(S1_MIB, S2_MIB)) if {1, 2} & set(config.scenarios) else 0,
            "s3": config.mib(S3_MIB) if 3 in config.scenarios else 0,
            "s4": config.mib(S4_MIB) if 4 in config.scenarios else 0,
        }
        progress(f"writing {sum(sizes.values()):,} MiB of random files under {workdir}")
        files = {
            name: write_random_file(www / f"{name}.bin", mib * MiB) for name, mib in sizes.items() if mib
        }
        progress(f"lab {config.prefix}: {LAB_HOSTS} machines, an origin and a tracker")
        lab.up(LAB_HOSTS, lan=S3_LAN, origin_rate=S3_ORIGIN, tracker_rate=TRACKER_LINK)
        with Services(lab, workdir) as services:
            tracker = services.start_tracker(heartbeat_interval=1.0)
            tracker_pid = services.procs[-1].pid  # start_tracker's process
            with running_nginx(tools, services, lab, workdir, www) as origin:
                bench = Bench(
                    config,
                    tools,
                    lab,
                    services,
                    Runner(services, workdir),
                    workdir,
                    tracker,
                    origin,
                    tracker_pid,
                )
                if 1 in config.scenarios:
                    figures = _with(figures, s1=bench.scenario1(files["big"]))
                if 2 in config.scenarios:
                    figures = _with(figures, s2=bench.scenario2(files["big"]))
                if 3 in config.scenarios:
                    figures = _with(figures, s3=bench.scenario3(files["s3"]))
                if 4 in config.scenarios:
                    figures = _with(figures, s4=bench.scenario4(files["s4"]))
    return figures


def _with(f: Figures, **changes: Any) -> Figures:
    return replace(f, **changes)


def parse_args(argv: Sequence[str] | None) -> tuple[BenchConfig, bool]:
    parser = argparse.ArgumentParser(
        prog="scripts/bench/get",
        description="Benchmark lanpeer-agent get on the lab LAN, side by side with curl and aria2c, and "
        "against the theoretical minimum distribution time.",
        epilog="Exit status: 0 when every target is met, 3 when one is missed, 1 when the run failed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--scale",
        type=float,
        default=1.0,
        metavar="F",
        help="file sizes times F (256, 128 and 1024 MiB at 1; at least 16 MiB each); rates stay",
    )
    add("--rounds", type=int, default=1, metavar="R", help="rounds of scenarios 1 and 2 (the median counts)")
    add("--only", default="1,2,3,4", metavar="LIST", help="the scenarios to run, e.g. 1,3")
    add("--prefix", default="lpb", help="the lab's namespace prefix")
    add(
        "--plot",
        type=Path,
        default=Path("/tmp/lanpeer-get-bench.png"),
        metavar="PNG",
        help="where to save the plot",
    )
    add("--no-plot", action="store_true", help="save no plot")
    add("--keep", action="store_true", help="keep the work directory's logs (not the data) for a look")
    add("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    try:
        scenarios = tuple(sorted({int(x) for x in args.only.split(",") if x.strip()}))
    except ValueError:
        parser.error(f"--only {args.only!r}: a list of scenario numbers, e.g. 1,3")
    if not scenarios or not set(scenarios) <= {1, 2, 3, 4}:
        parser.error("--only: scenarios are 1, 2, 3 and 4")
    if not 0 < args.scale <= 16:
        parser.error("--scale: from above 0 to 16")
    if args.rounds < 1:
        parser.error("--rounds: at least 1")
    config = BenchConfig(
        args.scale, args.rounds, scenarios, args.prefix, None if args.no_plot else args.plot, args.keep
    )
    return config, args.json


def main(argv: Sequence[str] | None = None) -> int:
    config, want_json = parse_args(argv)
    started = time.monotonic()
    figures = run_or_exit(run, config)
    table = rows(figures)
    print_report(figures, table)
    if (plot := config.plot) is not None:
        try_plot(lambda: save_plot(figures, plot))
    print(f"run time: {time.monotonic() - started:.0f} s")
    if want_json:
        print(as_json(figures, table, default=str))
    return exit_status(table)


if __name__ == "__main__":
    sys.exit(main())
