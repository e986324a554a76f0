"""Benchmarks the agent's serving and hashing, each figure measured side by side with a
reference tool in the same run.

It makes a temporary directory under /tmp, fills it with random files, starts real
`lanpeer-agent run` processes on 127.0.0.1 port 0 (no tracker), and measures:

1. one stream of the whole 1 GiB file with curl, from the agent and from nginx (sendfile)
   serving the same file, in alternating rounds after a warm-up of each;
2. 32 concurrent readers of random 4 MiB ranges on keep-alive connections, each body
   checked against the file's bytes on disk, and the agent's peak memory meanwhile;
3. the agent's first scan of a tree of large files against `openssl dgst -sha256` over the
   same files, in alternating rounds, and the agent's peak memory while it hashes;
4. the agent's scan of 10,000 small files after a restart (all manifests from the hash
   cache) and a rescan in which nothing changed;
5. sanity: a full download's sha256sum, a Range request, a HEAD, an unknown digest.

Run it as `scripts/bench/serve`, which uses .venv/bin/python; `--help` lists the options.
A quick run: `scripts/bench/serve --size-mib 256 --small-files 2000`. When nginx or curl
or openssl is missing, it installs them with apt-get (as root).

Exit status: 0 when every target is met, 3 when one is missed, 1 when the run failed (a
process did not start, a tool failed, or the agent served bytes that are not the file's).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import multiprocessing
import os
import platform
import queue
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
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
    machine_busy_seconds,
    mem_available_mib,
    nginx_package,
    positive_float,
    positive_int,
    print_table,
    progress,
    read_status_kib,
    reap,
    run_command,
    stop,
    tail,
    which,
    write_random_file,
)

from agent.hashcache import HashCache
from agent.inventory import Inventory

ROOT = Path(__file__).resolve().parents[2]
AGENT_COMMAND = ROOT / ".venv" / "bin" / "lanpeer-agent"

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# The targets.
STREAM_MIN_RATIO = 0.7
READER_MAX_ERRORS = 0
SCAN_MIN_RATIO = 0.8
RESCAN_MAX_SECONDS = 2.0
AGENT_MAX_RSS_MB = 200.0  # 10^6 bytes, as the issue writes it
AGENT_MAX_RSS_MIB = AGENT_MAX_RSS_MB * 1e6 / MiB
# "Flat in the file sizes": the peak while hashing 4 files of S/4 may exceed the peak
# while hashing 4 files of S/16 by this much at most.
RSS_FLAT_MAX_GROWTH_MIB = 16.0

# Above this much CPU used by other processes during the scans, the report warns that the
# scan ratio is not the agent's own.
CONTENDED_CORES = 0.2

# The scan time is read from the log's millisecond timestamps (from the line saying the
# agent serves, right after which its first scan starts, to the scan line); it must agree
# with the "in S s" of the scan line, which has one decimal, to within this.
SCAN_CLOCK_SLACK = 0.15

# Time limits, so that no run hangs.
AGENT_START_TIMEOUT = 30.0
AGENT_STOP_TIMEOUT = 15.0
NGINX_START_TIMEOUT = 10.0
TOOL_TIMEOUT = 300.0
SCAN_SECONDS_PER_GIB = 120.0
SMALL_SCAN_TIMEOUT = 300.0
BARRIER_TIMEOUT = 60.0
READER_SLACK = 60.0
REQUEST_TIMEOUT = 30.0
APT_TIMEOUT = 600.0

RSS_POLL_SECONDS = 0.1
LOG_POLL_SECONDS = 0.02
SCAN_FILES = 4
# Nested directories of the small files: 16 x 16 leaves.
SMALL_FANOUT = 16
SMALL_MIN_BYTES = 1 * KiB
SMALL_MAX_BYTES = 4 * KiB
# Reader threads are spread over this many processes, so the clients are not held back
# by one interpreter's lock.
READER_PROCESSES = 4

_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
_SERVING = re.compile(r"serving .* at http://127\.0\.0\.1:(\d+)")
_SCAN = re.compile(
    r"scan: ([\d,]+) files? \(([\d,]+) hashed, ([\d,]+) from the cache, ([\d,]+) withdrawn\) in ([0-9.]+) s"
)
_OPENSSL_LINE = re.compile(r"^\S+\((.+)\)= ([0-9a-f]{64})$")

J = TypeVar("J")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class BenchConfig:
    size_mib: int
    rounds: int
    readers: int
    reader_seconds: float
    range_mib: int
    max_uploads: int
    verify: str
    small_files: int
    flatness: bool

    @property
    def size(self) -> int:
        return self.size_mib * MiB

    @property
    def scan_file_size(self) -> int:
        return self.size // SCAN_FILES

    @property
    def flat_file_size(self) -> int:
        return self.size // (4 * SCAN_FILES)


# ----------------------------------------------------------------------------- tools


@dataclass(frozen=True, slots=True)
class Tools:
    nginx: str
    curl: str
    openssl: str
    versions: str


def ensure_tools() -> Tools:
    """Finds nginx, curl and openssl, installing what is missing with apt-get."""
    wanted = ("nginx", "curl", "openssl")
    missing = [name for name in wanted if which(name) is None]
    if missing:
        _install(missing)
    paths = [which(name) for name in wanted]
    absent = [name for name, path in zip(wanted, paths, strict=True) if path is None]
    if absent:
        raise BenchError(f"{', '.join(absent)} still missing after apt-get install")
    nginx, curl, openssl = (str(path) for path in paths)
    return Tools(nginx, curl, openssl, _versions(nginx, curl, openssl))


def _install(missing: Sequence[str]) -> None:
    if os.geteuid() != 0:
        raise BenchError(
            f"{', '.join(missing)} missing; install them (apt-get install nginx-light curl openssl)"
        )
    if shutil.which("apt-get") is None:
        raise BenchError(f"{', '.join(missing)} missing, and there is no apt-get to install them with")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    progress(f"{', '.join(missing)} missing: apt-get update")
    run_command(["apt-get", "update", "-qq"], APT_TIMEOUT, env=env)
    packages = [name for name in missing if name != "nginx"]
    if "nginx" in missing:
        packages.append(nginx_package())
    progress(f"apt-get install {' '.join(packages)}")
    run_command(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], APT_TIMEOUT, env=env
    )
    if "nginx" in missing:
        _stop_system_nginx()


def _stop_system_nginx() -> None:
    """Debian's package starts a system nginx on port 80 at install: the benchmark never
    uses it, so it stops the one its own install just started."""
    if shutil.which("service"):
        subprocess.run(
            ["service", "nginx", "stop"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
    try:
        pid = int(Path("/run/nginx.pid").read_text().split()[0])
        if Path(f"/proc/{pid}/comm").read_text().strip() != "nginx":
            return
    except (OSError, ValueError, IndexError):
        return
    progress(f"stopping the system nginx (pid {pid}) the install started")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def _versions(nginx: str, curl: str, openssl: str) -> str:
    nginx_v = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10, check=False)
    curl_v = run_command([curl, "--version"], 10.0).split("\n", 1)[0].split()
    openssl_v = run_command([openssl, "version"], 10.0).split()
    return (
        f"{nginx_v.stderr.strip().rpartition(' ')[2]}, curl {curl_v[1] if len(curl_v) > 1 else '?'}, "
        f"OpenSSL {openssl_v[1] if len(openssl_v) > 1 else '?'}"
    )


# ----------------------------------------------------------------------------- the files


@dataclass(frozen=True, slots=True)
class StreamFile:
    path: Path
    size: int
    sha256: str
    second_half_sha256: str

    @property
    def half(self) -> int:
        return self.size // 2


@dataclass(frozen=True, slots=True)
class Data:
    stream: StreamFile
    scan_tree: Path
    flat_tree: Path | None
    small_tree: Path


def space_needed(config: BenchConfig) -> int:
    flat = config.size // 4 if config.flatness else 0
    # A small file takes a 4 KiB block and an inode; the state dirs and logs are small.
    return 2 * config.size + flat + config.small_files * 8 * KiB + 256 * MiB


def check_machine(config: BenchConfig, workdir: Path) -> None:
    need = space_needed(config)
    free = shutil.disk_usage(workdir).free
    if free < need:
        raise BenchError(f"{workdir} has {free / MiB:,.0f} MiB free; the run needs {need / MiB:,.0f} MiB")
    available = mem_available_mib()
    if available * MiB < need + 1 * GiB:
        progress(
            f"warning: {available:,.0f} MiB of memory available; the files ({need / MiB:,.0f} MiB) may "
            "not all stay in the page cache, and figures may then include disk reads"
        )


def write_stream_file(path: Path, size: int) -> StreamFile:
    """The file to serve, with the digests of its whole and of its second half."""
    whole, second = hashlib.sha256(), hashlib.sha256()
    half = size // 2

    def digest(offset: int, chunk: bytes) -> None:
        whole.update(chunk)
        skip = max(0, half - offset)
        if skip < len(chunk):
            second.update(memoryview(chunk)[skip:])

    write_random_file(path, size, digest)
    return StreamFile(path, size, whole.hexdigest(), second.hexdigest())


def write_tree(root: Path, files: int, size: int) -> None:
    root.mkdir()
    for i in range(files):
        write_random_file(root / f"part-{i}.bin", size)


def write_small_files(root: Path, count: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    for i in range(count):
        directory = root / f"{i % SMALL_FANOUT:02x}" / f"{i // SMALL_FANOUT % SMALL_FANOUT:x}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{i:06d}.bin").write_bytes(os.urandom(rng.randint(SMALL_MIN_BYTES, SMALL_MAX_BYTES)))


def make_data(workdir: Path, config: BenchConfig) -> Data:
    started = time.monotonic()
    progress(f"writing {space_needed(config) / MiB:,.0f} MiB of random files under {workdir}")
    (workdir / "stream").mkdir()
    stream = write_stream_file(workdir / "stream" / "big.bin", config.size)
    write_tree(workdir / "scan", SCAN_FILES, config.scan_file_size)
    flat_tree = None
    if config.flatness:
        flat_tree = workdir / "scan-flat"
        write_tree(flat_tree, SCAN_FILES, config.flat_file_size)
    write_small_files(workdir / "small", config.small_files)
    os.sync()  # No writeback competes with what is measured next.
    progress(f"files written in {time.monotonic() - started:.1f} s")
    return Data(stream, workdir / "scan", flat_tree, workdir / "small")


# ----------------------------------------------------------------------------- memory


def reset_peak_rss(pid: int) -> bool:
    """Sets the process's VmHWM back to its current RSS (proc(5): clear_refs, value 5)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class OthersMeter:
    """The CPU time the machine spent on other processes over a window: all busy time in
    /proc/stat less that of this process, its waited-for children, and the processes named."""

    def __init__(self) -> None:
        self._clock = time.monotonic()
        self._busy = machine_busy_seconds()
        self._own = _own_cpu_seconds()

    def cores(self, measured_cpu: float = 0.0) -> float:
        """Other processes' CPU use since the start, in cores; measured_cpu is the CPU time of
        the processes measured in the window that are not waited-for children."""
        seconds = time.monotonic() - self._clock
        others = machine_busy_seconds() - self._busy - (_own_cpu_seconds() - self._own) - measured_cpu
        return max(0.0, others / seconds) if seconds > 0 else 0.0


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class RssSampler:
    """Polls a process's VmRSS every RSS_POLL_SECONDS and keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._next = 0.0

    def sample(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + RSS_POLL_SECONDS
        # A process that is gone has its exit noticed elsewhere.
        with suppress(OSError, BenchError):
            self.peak_kib = max(self.peak_kib, read_status_kib(self.pid, "VmRSS"))

    def peak_mib(self, hwm_valid: bool) -> float:
        """The peak seen, raised to VmHWM when that counts from the same moment."""
        peak = self.peak_kib
        if hwm_valid:
            with suppress(OSError, BenchError):
                peak = max(peak, read_status_kib(self.pid, "VmHWM"))
        return peak / 1024


# ----------------------------------------------------------------------------- the agent


class LogReader:
    """The complete lines a process has added to its log file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self._unread: list[str] = []

    def new_lines(self) -> list[str]:
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        lines, self._unread = self._unread + [line.decode(errors="replace") for line in complete], []
        return lines

    def unread(self, lines: list[str]) -> None:
        """Gives lines back, to be returned first by the next new_lines()."""
        self._unread = lines + self._unread


def log_time(line: str) -> datetime | None:
    match = _TIMESTAMP.match(line)
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f") if match else None


@dataclass(slots=True)
class Agent:
    process: subprocess.Popen[bytes]
    log: LogReader
    port: int
    # time.monotonic() just before the process was started.
    started: float
    # The log's timestamp of the line saying it serves: its first scan starts right after.
    serving_at: datetime
    # Started with the process: what else the machine runs while the agent works.
    others: OthersMeter

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, digest: str) -> str:
        return f"http://127.0.0.1:{self.port}/v1/blobs/{digest}"


@dataclass(frozen=True, slots=True)
class ScanLine:
    files: int
    hashed: int
    from_cache: int
    withdrawn: int
    # The "in S s" of the log line (one decimal).
    logged_seconds: float
    # From the timestamp of the "serving" line to that of the scan line (milliseconds).
    log_seconds: float
    # From starting the process to reading the scan line.
    wall_seconds: float
    peak_rss_mib: float
    # CPU the machine gave to other processes from the agent's start to the scan line, in cores.
    other_cores: float


@contextmanager
def running_agent(
    name: str,
    workdir: Path,
    share: Path,
    state_dir: Path,
    *,
    max_uploads: int | None = None,
    rescan_interval: float = 3600.0,
) -> Iterator[Agent]:
    """A lanpeer-agent child process with no tracker, stopped with SIGTERM on the way out."""
    if not AGENT_COMMAND.exists():
        raise BenchError(f"{AGENT_COMMAND} is missing; run scripts/test once to create .venv")
    log_path = workdir / f"agent-{name}.log"
    command = [
        str(AGENT_COMMAND),
        "run",
        "--share",
        str(share),
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        str(state_dir),
        "--rescan-interval",
        f"{rescan_interval:g}",
        "--no-mdns",
    ]
    if max_uploads is not None:
        command += ["--max-uploads", str(max_uploads)]
    # No token from the environment: the agent serves without one, as the figures assume.
    env = {key: value for key, value in os.environ.items() if not key.startswith("LANPEER_")}
    others = OthersMeter()
    started = time.monotonic()
    # The benchmark runs no thread of its own when it starts a child, so preexec_fn is safe.
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )
    try:
        yield _wait_for_serving(process, LogReader(log_path), started, others)
    except Exception:
        print(f"bench: the log of agent {name} ends:\n{tail(log_path)}", file=sys.stderr)
        raise
    finally:
        stop(process, AGENT_STOP_TIMEOUT, f"bench: agent {name} ignored SIGTERM; killing it")


def _wait_for_serving(
    process: subprocess.Popen[bytes], log: LogReader, started: float, others: OthersMeter
) -> Agent:
    deadline = time.monotonic() + AGENT_START_TIMEOUT
    while time.monotonic() < deadline:
        lines = log.new_lines()
        for i, line in enumerate(lines):
            match = _SERVING.search(line)
            at = log_time(line)
            if match and at is not None:
                # The scan line may already follow in the same read: keep it for wait_for_scan.
                log.unread(lines[i + 1 :])
                return Agent(process, log, int(match.group(1)), started, at, others)
        if process.poll() is not None:
            raise BenchError(f"the agent exited with status {process.returncode} before serving")
        time.sleep(LOG_POLL_SECONDS)
    raise BenchError(f"the agent did not say it was serving within {AGENT_START_TIMEOUT:g} s")


def wait_for_scan(agent: Agent, timeout: float) -> ScanLine:
    """Waits for the agent's next `scan:` log line, sampling its memory meanwhile."""
    sampler = RssSampler(agent.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sampler.sample()
        for line in agent.log.new_lines():
            match = _SCAN.search(line)
            at = log_time(line)
            if (match is None or at is None) and " scan: " in line:
                raise BenchError(f"the agent logged a scan line the benchmark cannot read: {line!r}")
            if match and at is not None:
                seen = time.monotonic()
                files, hashed, cached, withdrawn = (int(match.group(i).replace(",", "")) for i in range(1, 5))
                logged, between = float(match.group(5)), (at - agent.serving_at).total_seconds()
                if abs(between - logged) > SCAN_CLOCK_SLACK:
                    raise BenchError(
                        f"the agent's scan took {logged} s by its log line but {between:.3f} s between its "
                        "serving and scan lines: does the scan no longer start right after it serves?"
                    )
                return ScanLine(
                    files=files,
                    hashed=hashed,
                    from_cache=cached,
                    withdrawn=withdrawn,
                    logged_seconds=logged,
                    log_seconds=between,
                    wall_seconds=seen - agent.started,
                    # VmHWM counts from the start of the process, which is what is wanted here.
                    peak_rss_mib=sampler.peak_mib(hwm_valid=True),
                    other_cores=agent.others.cores(cpu_seconds(agent.pid)),
                )
        if agent.process.poll() is not None:
            raise BenchError(f"the agent exited with status {agent.process.returncode} before its scan")
        time.sleep(LOG_POLL_SECONDS)
    raise BenchError(f"the agent did not finish its scan within {timeout:g} s")


def scan_timeout(total_bytes: int) -> float:
    return max(60.0, SCAN_SECONDS_PER_GIB * total_bytes / GiB)


def head_status(port: int, digest: str) -> tuple[int, str | None]:
    """The status of a HEAD of the blob, and its Content-Length."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        conn.request("HEAD", f"/v1/blobs/{digest}")
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Content-Length")
    finally:
        conn.close()


# ----------------------------------------------------------------------------- nginx


@dataclass(frozen=True, slots=True)
class Nginx:
    pid: int
    url: str


@contextmanager
def running_nginx(tools: Tools, workdir: Path, root: Path) -> Iterator[Nginx]:
    """nginx serving `root` on 127.0.0.1 with sendfile, in one process (no master), so that
    its CPU time is that of one process and it dies with the benchmark. tcp_nopush is left
    off, its default: on loopback it halves nginx's rate of one stream."""
    home = workdir / "nginx"
    home.mkdir()
    port = free_port()
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "".join(
        f"    {kind}_temp_path {home / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = home / "nginx.conf"
    conf.write_text(
        f"{user}daemon off;\nmaster_process off;\nworker_processes 1;\npid {home / 'nginx.pid'};\n"
        f"error_log {home / 'error.log'} warn;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"    access_log {home / 'access.log'};\n"
        "    sendfile on;\n    keepalive_requests 100000;\n"
        "    default_type application/octet-stream;\n"
        f"{temp}"
        f"    server {{\n        listen 127.0.0.1:{port};\n        root {root};\n"
        "        location / { }\n    }\n}\n"
    )
    command = [tools.nginx, "-p", str(home), "-c", str(conf), "-e", str(home / "error.log")]
    with (home / "stderr.log").open("wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )
    try:
        _wait_for_port(process, port)
        yield Nginx(process.pid, f"http://127.0.0.1:{port}")
    except Exception:
        print(f"bench: nginx's error log ends:\n{tail(home / 'error.log')}", file=sys.stderr)
        print(f"bench: nginx's stderr ends:\n{tail(home / 'stderr.log')}", file=sys.stderr)
        raise
    finally:
        stop(process, AGENT_STOP_TIMEOUT, "bench: nginx ignored SIGTERM; killing it")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + NGINX_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"nginx exited with status {process.returncode} at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nginx did not listen on 127.0.0.1:{port} within {NGINX_START_TIMEOUT:g} s")


# ----------------------------------------------------------------------------- curl


def curl_rate(tools: Tools, url: str, size: int) -> float:
    """Downloads `url` whole to /dev/null; curl's average rate in MiB/s."""
    out = run_command(
        [
            tools.curl,
            "-s",
            "--max-time",
            f"{TOOL_TIMEOUT:g}",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download} %{speed_download}",
            url,
        ],
        TOOL_TIMEOUT + 10,
    )
    status, received, speed = out.split()
    if status != "200" or int(received) != size:
        raise BenchError(f"curl {url}: status {status}, {received} bytes; expected 200 and {size} bytes")
    return float(speed) / MiB


@dataclass(frozen=True, slots=True)
class Fetched:
    status: int
    headers: dict[str, str]
    sha256: str


def curl_sha256(tools: Tools, url: str, workdir: Path, extra: Sequence[str] = ()) -> Fetched:
    """Fetches `url` with curl piped into sha256sum."""
    header_file = workdir / "curl-headers.txt"
    curl = subprocess.Popen(
        [tools.curl, "-s", "--max-time", f"{TOOL_TIMEOUT:g}", "-D", str(header_file), *extra, url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        preexec_fn=die_with_parent,  # noqa: PLW1509
    )
    try:
        assert curl.stdout is not None
        digest = subprocess.run(
            ["sha256sum"], stdin=curl.stdout, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=True
        ).stdout.split()[0]
        curl.stdout.close()
        if curl.wait(TOOL_TIMEOUT) != 0:
            raise BenchError(f"curl {url} failed with status {curl.returncode}")
    finally:
        if curl.poll() is None:
            curl.kill()
            curl.wait()
    return Fetched(*_parse_head(header_file.read_text(errors="replace")), digest)


def curl_head(tools: Tools, url: str) -> tuple[int, dict[str, str]]:
    return _parse_head(run_command([tools.curl, "-s", "--max-time", "60", "-I", url], 70.0))


def _parse_head(text: str) -> tuple[int, dict[str, str]]:
    lines = text.replace("\r", "").strip().split("\n")
    if not lines or not lines[0].startswith("HTTP/"):
        raise BenchError(f"not an HTTP response head: {text[:200]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers


def curl_status(tools: Tools, url: str) -> int:
    return int(
        run_command(
            [tools.curl, "-s", "--max-time", "60", "-o", "/dev/null", "-w", "%{http_code}", url], 70.0
        )
    )


# ----------------------------------------------------------------------------- 6: sanity


@dataclass(frozen=True, slots=True)
class Checks:
    full_status: int
    full_sha256_ok: bool
    range_status: int
    range_content_range_ok: bool
    range_sha256_ok: bool
    head_status: int
    head_length_ok: bool
    unknown_status: int


def sanity_checks(tools: Tools, agent: Agent, stream: StreamFile, workdir: Path) -> Checks:
    url = agent.url(stream.sha256)
    full = curl_sha256(tools, url, workdir)
    if full.sha256 != stream.sha256:
        raise BenchError(
            f"the agent served bytes whose sha256sum is {full.sha256}, not the file's {stream.sha256}"
        )
    part = curl_sha256(tools, url, workdir, ["-H", f"Range: bytes={stream.half}-"])
    if part.status == 206 and part.sha256 != stream.second_half_sha256:
        raise BenchError("the agent served a second half whose sha256sum is not the file's")
    head, head_headers = curl_head(tools, url)
    return Checks(
        full_status=full.status,
        full_sha256_ok=True,
        range_status=part.status,
        range_content_range_ok=part.headers.get("content-range")
        == f"bytes {stream.half}-{stream.size - 1}/{stream.size}",
        range_sha256_ok=part.sha256 == stream.second_half_sha256,
        head_status=head,
        head_length_ok=head_headers.get("content-length") == str(stream.size),
        unknown_status=curl_status(tools, agent.url("0" * 64)),
    )


# ----------------------------------------------------------------------------- 1: one stream


@dataclass(frozen=True, slots=True)
class StreamFigures:
    agent_mibps: list[float]
    nginx_mibps: list[float]
    # CPU seconds the server used per GiB sent, over the timed rounds.
    agent_cpu_per_gib: float
    nginx_cpu_per_gib: float

    @property
    def agent_median(self) -> float:
        return statistics.median(self.agent_mibps)

    @property
    def nginx_median(self) -> float:
        return statistics.median(self.nginx_mibps)


def measure_stream(
    tools: Tools, agent: Agent, nginx: Nginx, stream: StreamFile, rounds: int
) -> StreamFigures:
    agent_url, nginx_url = agent.url(stream.sha256), f"{nginx.url}/{stream.path.name}"
    curl_rate(tools, agent_url, stream.size)
    curl_rate(tools, nginx_url, stream.size)
    agent_rates: list[float] = []
    nginx_rates: list[float] = []
    agent_cpu = nginx_cpu = 0.0
    for _ in range(rounds):
        before = cpu_seconds(agent.pid)
        agent_rates.append(curl_rate(tools, agent_url, stream.size))
        agent_cpu += cpu_seconds(agent.pid) - before
        before = cpu_seconds(nginx.pid)
        nginx_rates.append(curl_rate(tools, nginx_url, stream.size))
        nginx_cpu += cpu_seconds(nginx.pid) - before
    gib = rounds * stream.size / GiB
    return StreamFigures(agent_rates, nginx_rates, agent_cpu / gib, nginx_cpu / gib)


# ----------------------------------------------------------------------------- 2: range readers


@dataclass(frozen=True, slots=True)
class ReaderJob:
    port: int
    digest: str
    path: str
    size: int
    range_bytes: int
    threads: int
    seconds: float
    seed: int
    verify: str


@dataclass(slots=True)
class _ThreadTally:
    requests: int = 0
    bytes: int = 0
    errors: int = 0
    rejected: int = 0
    samples: list[str] = field(default_factory=list)

    def fail(self, what: str) -> None:
        self.errors += 1
        if len(self.samples) < 3:
            self.samples.append(what)


@dataclass(frozen=True, slots=True)
class ReaderReport:
    # time.monotonic() readings: CLOCK_MONOTONIC, comparable across the processes.
    start: float
    end: float
    requests: int
    bytes: int
    errors: int
    rejected: int
    samples: list[str]


def reader_worker(job: ReaderJob, barrier: Barrier) -> ReaderReport:
    """Runs job.threads readers, each on its own keep-alive connection, for job.seconds."""
    fd = os.open(job.path, os.O_RDONLY | os.O_CLOEXEC)
    stuck = 0
    try:
        go = threading.Event()
        tallies = [_ThreadTally() for _ in range(job.threads)]
        connections = [
            http.client.HTTPConnection("127.0.0.1", job.port, timeout=REQUEST_TIMEOUT) for _ in tallies
        ]
        for conn, tally in zip(connections, tallies, strict=True):
            try:
                conn.connect()
            except OSError as exc:
                tally.fail(f"connect: {exc}")
        threads = [
            threading.Thread(
                target=_read_ranges, args=(job, fd, conn, tally, go, job.seed * 1000 + i), daemon=True
            )
            for i, (conn, tally) in enumerate(zip(connections, tallies, strict=True))
        ]
        for thread in threads:
            thread.start()
        barrier.wait(BARRIER_TIMEOUT)
        start = time.monotonic()
        go.set()
        for thread in threads:
            thread.join(job.seconds + READER_SLACK)
        end = time.monotonic()
        # A reader stuck in a request counts as an error; its daemon thread ends with the process.
        stuck = sum(thread.is_alive() for thread in threads)
    finally:
        if not stuck:  # A stuck reader may still read the file.
            os.close(fd)
    return ReaderReport(
        start=start,
        end=end,
        requests=sum(t.requests for t in tallies),
        bytes=sum(t.bytes for t in tallies),
        errors=sum(t.errors for t in tallies) + stuck,
        rejected=sum(t.rejected for t in tallies),
        samples=[s for t in tallies for s in t.samples],
    )


def _read_ranges(
    job: ReaderJob,
    fd: int,
    conn: http.client.HTTPConnection,
    tally: _ThreadTally,
    go: threading.Event,
    seed: int,
) -> None:
    rng = random.Random(seed)
    body = bytearray(job.range_bytes)
    disk = bytearray(job.range_bytes)
    path = f"/v1/blobs/{job.digest}"
    go.wait()
    deadline = time.monotonic() + job.seconds
    while time.monotonic() < deadline:
        first = rng.randrange(0, job.size - job.range_bytes + 1)
        last = first + job.range_bytes - 1
        try:
            conn.request("GET", path, headers={"Range": f"bytes={first}-{last}"})
            response = conn.getresponse()
            content_range = response.getheader("Content-Range")
            if response.status != 206 or content_range != f"bytes {first}-{last}/{job.size}":
                response.read()
                if response.status == 503:
                    tally.rejected += 1
                else:
                    tally.fail(f"status {response.status}, Content-Range {content_range}")
                continue
            if not _read_exactly(response, body):
                tally.fail(f"short body for bytes {first}-{last}")
                conn.close()
                continue
            if os.preadv(fd, [disk], first) != len(disk) or not _same(body, disk, job.verify):
                tally.fail(f"bytes {first}-{last} differ from the file's")
                continue
            tally.requests += 1
            tally.bytes += len(body)
        except Exception as exc:  # Anything that goes wrong is an error to count, not a crash.
            tally.fail(f"{type(exc).__name__}: {exc}")
            conn.close()  # http.client reconnects on the next request.
    conn.close()


def _read_exactly(response: http.client.HTTPResponse, buffer: bytearray) -> bool:
    view = memoryview(buffer)
    got = 0
    while got < len(buffer):
        n = response.readinto(view[got:])
        if not n:
            return False
        got += n
    return True


def _same(body: bytearray, disk: bytearray, verify: str) -> bool:
    if verify == "bytes":
        return body == disk
    return hashlib.sha256(body).digest() == hashlib.sha256(disk).digest()


@dataclass(frozen=True, slots=True)
class ReaderFigures:
    mibps: float
    requests: int
    errors: int
    rejected: int
    samples: list[str]
    peak_rss_mib: float
    seconds: float
    # The agent's CPU time over the phase, in cores.
    agent_cores: float


def measure_readers(config: BenchConfig, agent: Agent, stream: StreamFile) -> ReaderFigures:
    processes = min(READER_PROCESSES, config.readers)
    jobs = [
        ReaderJob(
            port=agent.port,
            digest=stream.sha256,
            path=str(stream.path),
            size=stream.size,
            range_bytes=min(config.range_mib * MiB, stream.size),
            threads=len(range(p, config.readers, processes)),
            seconds=config.reader_seconds,
            seed=p + 1,
            verify=config.verify,
        )
        for p in range(processes)
    ]
    sampler = RssSampler(agent.pid)
    hwm_valid = reset_peak_rss(agent.pid)
    cpu_before = cpu_seconds(agent.pid)
    reports = run_in_processes(
        reader_worker, jobs, config.reader_seconds + READER_SLACK + BARRIER_TIMEOUT, sampler.sample
    )
    # The agent is idle while the clients start and stop, so its CPU time over the phase
    # is that of the timed window.
    seconds = max(r.end for r in reports) - min(r.start for r in reports)
    agent_cores = (cpu_seconds(agent.pid) - cpu_before) / seconds
    return ReaderFigures(
        mibps=sum(r.bytes for r in reports) / MiB / seconds,
        requests=sum(r.requests for r in reports),
        errors=sum(r.errors for r in reports),
        rejected=sum(r.rejected for r in reports),
        samples=[s for r in reports for s in r.samples][:5],
        peak_rss_mib=sampler.peak_mib(hwm_valid),
        seconds=seconds,
        agent_cores=agent_cores,
    )


def run_in_processes(
    worker: Callable[[J, Barrier], R], jobs: Sequence[J], timeout: float, tick: Callable[[], None]
) -> list[R]:
    """Runs worker(job, barrier) for each job in a process of its own and returns the results
    in job order, calling tick() about every RSS_POLL_SECONDS meanwhile. A worker waits at
    the barrier once it is ready, so the timed parts of all workers start together."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(jobs))
    results: multiprocessing.Queue[tuple[int, Any, str | None]] = context.Queue()
    processes = [
        context.Process(target=_process_main, args=(worker, job, barrier, results, slot), daemon=True)
        for slot, job in enumerate(jobs)
    ]
    try:
        for process in processes:
            process.start()
        collected = _collect(results, processes, timeout, tick)
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
) -> None:
    die_with_parent()
    try:
        results.put((slot, worker(job, barrier), None))
    except Exception:
        barrier.abort()
        results.put((slot, None, traceback.format_exc()))


def _collect(
    results: multiprocessing.Queue[tuple[int, Any, str | None]],
    processes: Sequence[BaseProcess],
    timeout: float,
    tick: Callable[[], None],
) -> list[Any]:
    deadline = time.monotonic() + timeout
    collected: dict[int, Any] = {}
    while len(collected) < len(processes):
        tick()
        if time.monotonic() > deadline:
            raise BenchError(f"the client processes did not finish within {timeout:g} s")
        try:
            slot, result, error = results.get(timeout=RSS_POLL_SECONDS)
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in processes):
                raise BenchError("a client process died") from None
            continue
        if error is not None:
            raise BenchError(f"a client process failed:\n{error}")
        collected[slot] = result
    return [collected[slot] for slot in range(len(processes))]


def _no_tick() -> None:
    pass


# ----------------------------------------------------------------------------- 3: scan vs openssl


@dataclass(frozen=True, slots=True)
class ScanFigures:
    files: int
    file_bytes: int
    openssl_seconds: list[float]
    # SHA-256 of each file in 1 MiB reads on one thread of this process: the hash's own
    # speed, since `openssl dgst` reads in 8 KiB pieces.
    hashlib_seconds: list[float]
    # From the agent's log timestamps, the "in S s" of its scan line, and wall clock.
    agent_seconds: list[float]
    agent_logged_seconds: list[float]
    agent_wall_seconds: list[float]
    peak_rss_mib: float
    # The CPU other processes of the machine used meanwhile, in cores.
    openssl_other_cores: list[float]
    agent_other_cores: list[float]

    @property
    def total_mib(self) -> float:
        return self.files * self.file_bytes / MiB

    @property
    def openssl_median(self) -> float:
        return statistics.median(self.openssl_seconds)

    @property
    def agent_median(self) -> float:
        return statistics.median(self.agent_seconds)

    @property
    def hashlib_median(self) -> float:
        return statistics.median(self.hashlib_seconds)


def openssl_digests(tools: Tools, files: Sequence[Path]) -> tuple[dict[str, str], float, float]:
    """`openssl dgst -sha256` over the files: each file's digest, the wall time, and the
    cores other processes used meanwhile."""
    others = OthersMeter()
    started = time.perf_counter()
    out = run_command([tools.openssl, "dgst", "-sha256", *map(str, files)], TOOL_TIMEOUT)
    seconds = time.perf_counter() - started
    other_cores = others.cores()
    digests = {}
    for line in out.splitlines():
        match = _OPENSSL_LINE.match(line.strip())
        if match:
            digests[match.group(1)] = match.group(2)
    if len(digests) != len(files):
        raise BenchError(f"openssl printed {len(digests)} digests for {len(files)} files")
    return digests, seconds, other_cores


def hashlib_seconds(files: Sequence[Path], reference: dict[str, str]) -> float:
    """Hashes the files one after the other in 1 MiB reads; the wall time."""
    buffer = bytearray(1 * MiB)
    view = memoryview(buffer)
    started = time.perf_counter()
    digests = {}
    for path in files:
        digest = hashlib.sha256()
        with path.open("rb", buffering=0) as f:
            while n := f.readinto(buffer):
                digest.update(view[:n])
        digests[str(path)] = digest.hexdigest()
    seconds = time.perf_counter() - started
    if digests != reference:
        raise BenchError("hashlib and openssl disagree on the digests of the scanned files")
    return seconds


def measure_scan(tools: Tools, workdir: Path, tree: Path, rounds: int) -> ScanFigures:
    files = sorted(tree.iterdir())
    file_bytes = files[0].stat().st_size
    # An untimed pass reads the files once, so that both sides find them in the page cache.
    reference, _, _ = openssl_digests(tools, files)
    openssl: list[float] = []
    openssl_others: list[float] = []
    hashlib_runs: list[float] = []
    lines: list[ScanLine] = []
    for r in range(rounds):
        digests, seconds, other_cores = openssl_digests(tools, files)
        if digests != reference:
            raise BenchError("openssl gave two different digests for the same file")
        openssl.append(seconds)
        openssl_others.append(other_cores)
        hashlib_runs.append(hashlib_seconds(files, reference))
        name = f"{tree.name}-{r + 1}"
        with running_agent(name, workdir, tree, workdir / f"state-{name}") as agent:
            line = wait_for_scan(agent, scan_timeout(len(files) * file_bytes))
            if line.hashed != len(files):
                raise BenchError(f"the agent hashed {line.hashed} of the {len(files)} files of {tree}")
            for path, digest in reference.items():
                status, _ = head_status(agent.port, digest)
                if status != 200:
                    raise BenchError(f"the agent does not hold {path} under openssl's digest ({status})")
        lines.append(line)
    return ScanFigures(
        files=len(files),
        file_bytes=file_bytes,
        openssl_seconds=openssl,
        hashlib_seconds=hashlib_runs,
        agent_seconds=[line.log_seconds for line in lines],
        agent_logged_seconds=[line.logged_seconds for line in lines],
        agent_wall_seconds=[line.wall_seconds for line in lines],
        peak_rss_mib=max(line.peak_rss_mib for line in lines),
        openssl_other_cores=openssl_others,
        agent_other_cores=[line.other_cores for line in lines],
    )


# ----------------------------------------------------------------------------- 4: small files


@dataclass(frozen=True, slots=True)
class RescanJob:
    share: str
    state_dir: str


@dataclass(frozen=True, slots=True)
class RescanReport:
    first_seconds: float
    first_hashed: int
    first_from_cache: int
    second_seconds: float
    second_hashed: int
    second_files: int


def rescan_worker(job: RescanJob, barrier: Barrier) -> RescanReport:
    """Times Inventory.scan() twice on the agent's hash cache: the first finds every
    manifest in the cache (as a restarted agent does), the second finds nothing changed."""
    barrier.wait(BARRIER_TIMEOUT)
    cache = HashCache(Path(job.state_dir) / "hashcache.db")
    try:
        inventory = Inventory([Path(job.share)], cache, rescan_interval=3600.0)
        first = inventory.scan()
        second = inventory.scan()
    finally:
        cache.close()
    return RescanReport(
        first.seconds, first.hashed, first.from_cache, second.seconds, second.hashed, second.files
    )


@dataclass(frozen=True, slots=True)
class SmallFigures:
    files: int
    first_scan_seconds: float
    first_peak_rss_mib: float
    restart_scan_seconds: float
    restart_logged_seconds: float
    restart_hashed: int
    restart_from_cache: int
    restart_peak_rss_mib: float
    direct_restart_seconds: float
    direct_unchanged_seconds: float
    direct_unchanged_hashed: int


def measure_small(workdir: Path, tree: Path, count: int) -> SmallFigures:
    state = workdir / "state-small"
    with running_agent("small-1", workdir, tree, state) as agent:
        first = wait_for_scan(agent, SMALL_SCAN_TIMEOUT)
    if first.files != count or first.hashed != count:
        raise BenchError(f"the agent's first scan found {first.files} files and hashed {first.hashed}")
    with running_agent("small-2", workdir, tree, state) as agent:
        restart = wait_for_scan(agent, SMALL_SCAN_TIMEOUT)
    (direct,) = run_in_processes(
        rescan_worker, [RescanJob(str(tree), str(state))], SMALL_SCAN_TIMEOUT, _no_tick
    )
    if direct.second_files != count:
        raise BenchError(f"Inventory.scan() found {direct.second_files} of the {count} small files")
    return SmallFigures(
        files=count,
        first_scan_seconds=first.log_seconds,
        first_peak_rss_mib=first.peak_rss_mib,
        restart_scan_seconds=restart.log_seconds,
        restart_logged_seconds=restart.logged_seconds,
        restart_hashed=restart.hashed,
        restart_from_cache=restart.from_cache,
        restart_peak_rss_mib=restart.peak_rss_mib,
        direct_restart_seconds=direct.first_seconds,
        direct_unchanged_seconds=direct.second_seconds,
        direct_unchanged_hashed=direct.second_hashed,
    )


# ----------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True)
class Figures:
    cores: int
    mem_available_mib: float
    # The 1-minute load average when the run started: other work on a shared machine.
    load_average: float
    tools: str
    config: BenchConfig
    checks: Checks
    stream: StreamFigures
    readers: ReaderFigures
    scan: ScanFigures
    flat: ScanFigures | None
    small: SmallFigures


def _rss_row(figure: str, mib: float, key: str) -> Row:
    return Row(
        figure,
        f"{mib:,.0f} MiB",
        f"<= {AGENT_MAX_RSS_MB:g} MB ({AGENT_MAX_RSS_MIB:.0f} MiB)",
        mib <= AGENT_MAX_RSS_MIB,
        key,
    )


def rows(f: Figures) -> list[Row]:
    return [*_sanity_rows(f), *_serving_rows(f), *_scan_rows(f), *_small_rows(f)]


def _sanity_rows(f: Figures) -> list[Row]:
    c = f.checks
    return [
        Row(
            "GET whole blob: status, sha256sum",
            f"{c.full_status}, equal",
            "200, equal",
            c.full_status == 200,
            "full_download",
        ),
        Row(
            "GET Range: bytes=half-: status, body",
            f"{c.range_status}, {'equal' if c.range_sha256_ok else 'differs'}",
            "206, equal",
            c.range_status == 206 and c.range_sha256_ok and c.range_content_range_ok,
            "range_request",
        ),
        Row(
            "HEAD blob: status, Content-Length",
            f"{c.head_status}, {'right' if c.head_length_ok else 'wrong'}",
            "200, right",
            c.head_status == 200 and c.head_length_ok,
            "head_request",
        ),
        Row(
            "GET unknown digest: status",
            str(c.unknown_status),
            "404",
            c.unknown_status == 404,
            "unknown_blob",
        ),
    ]


def _serving_rows(f: Figures) -> list[Row]:
    s, r, cfg = f.stream, f.readers, f.config
    ratio = s.agent_median / s.nginx_median
    errors_target = f"<= {READER_MAX_ERRORS}"
    counted_errors = r.errors + (r.rejected if cfg.max_uploads >= cfg.readers else 0)
    return [
        Row(f"1 stream of {cfg.size_mib} MiB from the agent (median)", f"{s.agent_median:,.0f} MiB/s"),
        Row(f"1 stream of {cfg.size_mib} MiB from nginx (median)", f"{s.nginx_median:,.0f} MiB/s"),
        Row(
            "server CPU per GiB sent: agent; nginx",
            f"{s.agent_cpu_per_gib:.2f} s; {s.nginx_cpu_per_gib:.2f} s",
        ),
        Row(
            "1 stream: agent / nginx",
            f"{ratio:.2f}x",
            f">= {STREAM_MIN_RATIO:g}x",
            ratio >= STREAM_MIN_RATIO,
            "stream_ratio",
        ),
        Row(f"{cfg.readers} readers of {cfg.range_mib} MiB ranges: total", f"{r.mibps:,.0f} MiB/s"),
        Row(f"{cfg.readers} readers: requests verified", f"{r.requests:,}"),
        Row(f"{cfg.readers} readers: agent CPU", f"{r.agent_cores:.2f} of {f.cores} cores"),
        Row(f"{cfg.readers} readers: 503 (max-uploads {cfg.max_uploads})", f"{r.rejected:,}"),
        Row(
            f"{cfg.readers} readers: errors",
            f"{counted_errors:,}",
            errors_target,
            counted_errors <= READER_MAX_ERRORS,
            "reader_errors",
        ),
        _rss_row(f"agent peak RSS, {cfg.readers} readers", r.peak_rss_mib, "readers_peak_rss_mib"),
    ]


def _scan_rows(f: Figures) -> list[Row]:
    sc = f.scan
    size = f"{sc.files}x{sc.file_bytes // MiB} MiB"
    openssl_rate = sc.total_mib / sc.openssl_median
    agent_rate = sc.total_mib / sc.agent_median
    ratio = agent_rate / openssl_rate
    hashlib_rate = sc.total_mib / sc.hashlib_median
    out = [
        Row(
            f"openssl dgst -sha256, {size} (median)", f"{sc.openssl_median:.2f} s = {openssl_rate:,.0f} MiB/s"
        ),
        Row(
            f"hashlib sha256, 1 MiB reads, 1 thread, {size} (median)",
            f"{sc.hashlib_median:.2f} s = {hashlib_rate:,.0f} MiB/s",
        ),
        Row(f"agent first scan, {size} (median)", f"{sc.agent_median:.2f} s = {agent_rate:,.0f} MiB/s"),
        Row(
            "scan throughput: agent / openssl",
            f"{ratio:.2f}x",
            f">= {SCAN_MIN_RATIO:g}x",
            ratio >= SCAN_MIN_RATIO,
            "scan_ratio",
        ),
        Row("scan throughput: agent / hashlib, 1 thread", f"{agent_rate / hashlib_rate:.2f}x"),
        Row(
            "agent scan: logged 'in S s'; start to log line",
            f"{statistics.median(sc.agent_logged_seconds):.1f} s; "
            f"{statistics.median(sc.agent_wall_seconds):.2f} s",
        ),
        Row(
            "other processes' CPU during openssl; the agent",
            f"{statistics.median(sc.openssl_other_cores):.2f}; "
            f"{statistics.median(sc.agent_other_cores):.2f} cores",
        ),
        _rss_row(f"agent peak RSS, scan of {size}", sc.peak_rss_mib, "scan_peak_rss_mib"),
    ]
    if f.flat is not None:
        fl = f.flat
        flat_size = f"{fl.files}x{fl.file_bytes // MiB} MiB"
        growth = sc.peak_rss_mib - fl.peak_rss_mib
        out += [
            _rss_row(f"agent peak RSS, scan of {flat_size}", fl.peak_rss_mib, "flat_scan_peak_rss_mib"),
            Row(
                f"peak RSS growth, {flat_size} -> {size}",
                f"{growth:+,.1f} MiB",
                f"<= {RSS_FLAT_MAX_GROWTH_MIB:g} MiB",
                growth <= RSS_FLAT_MAX_GROWTH_MIB,
                "scan_rss_growth_mib",
            ),
        ]
    return out


def _small_rows(f: Figures) -> list[Row]:
    sm = f.small
    n = f"{sm.files:,}"
    # What each file the agent knows costs it in memory, and where that meets the target.
    base = f.scan.peak_rss_mib
    per_file_kib = max(0.0, sm.first_peak_rss_mib - base) * 1024 / sm.files
    at_limit = (AGENT_MAX_RSS_MIB - base) * 1024 / per_file_kib if per_file_kib > 0 else float("inf")
    return [
        Row(f"agent first scan, {n} small files (all hashed)", f"{sm.first_scan_seconds:.2f} s"),
        Row(
            "after a restart: hashed, from the cache",
            f"{sm.restart_hashed:,}, {sm.restart_from_cache:,}",
            f"0, {n}",
            sm.restart_hashed == 0 and sm.restart_from_cache == sm.files,
            "restart_from_cache",
        ),
        Row(
            f"agent scan after a restart, {n} files",
            f"{sm.restart_scan_seconds:.2f} s",
            f"<= {RESCAN_MAX_SECONDS:g} s",
            sm.restart_scan_seconds <= RESCAN_MAX_SECONDS,
            "restart_scan_seconds",
        ),
        Row(f"Inventory.scan() after a restart, {n} files", f"{sm.direct_restart_seconds:.2f} s"),
        Row(
            f"Inventory.scan() with nothing changed, {n} files",
            f"{sm.direct_unchanged_seconds:.2f} s",
            f"<= {RESCAN_MAX_SECONDS:g} s",
            sm.direct_unchanged_seconds <= RESCAN_MAX_SECONDS and sm.direct_unchanged_hashed == 0,
            "unchanged_rescan_seconds",
        ),
        _rss_row(f"agent peak RSS, first scan of {n} files", sm.first_peak_rss_mib, "small_peak_rss_mib"),
        _rss_row(f"agent peak RSS, restart with {n} files", sm.restart_peak_rss_mib, "restart_peak_rss_mib"),
        Row(
            "agent RSS per shared file (vs 4 large files)",
            f"{per_file_kib:.1f} KiB: {AGENT_MAX_RSS_MB:g} MB at ~{at_limit:,.0f} files",
        ),
    ]


def _rounds(n: int) -> str:
    return f"{n} round" if n == 1 else f"{n} rounds"


def print_report(f: Figures, table: Sequence[Row]) -> None:
    cfg = f.config
    print("lanpeer agent benchmark: serving and hashing, side by side with nginx, curl and openssl")
    print(
        f"machine: {f.cores} cores, {f.mem_available_mib:,.0f} MiB memory available, "
        f"load average {f.load_average:.2f} at the start; "
        f"Linux {platform.release()}, Python {platform.python_version()}; {f.tools}"
    )
    print(
        f"stream: {cfg.size_mib} MiB of random bytes, curl -o /dev/null, {_rounds(cfg.rounds)}, alternating, "
        "after a warm-up of each; nginx in one process (master_process off), sendfile on"
    )
    print(
        f"readers: {cfg.readers} threads in {min(READER_PROCESSES, cfg.readers)} processes x "
        f"{cfg.reader_seconds:g} s ({f.readers.seconds:.1f} s measured), keep-alive, every body checked "
        f"({cfg.verify}) against the file, so the rate is bounded by the clients' checking too; "
        f"the agent started with --max-uploads {cfg.max_uploads} (default 16)"
    )
    print(
        f"scan: a fresh agent (empty hash cache) per round, {_rounds(cfg.rounds)} alternating with openssl; "
        "files in the page cache; scan time from the agent's log timestamps"
    )
    print(
        f"small files: {cfg.small_files:,} files of 1-4 KiB in {SMALL_FANOUT * SMALL_FANOUT} directories; "
        "the unchanged rescan is Inventory.scan() run directly (the agent logs no scan that changed nothing)"
    )
    print()
    print_table(table)
    print()
    print("rounds, agent stream MiB/s: " + ", ".join(f"{v:,.0f}" for v in f.stream.agent_mibps))
    print("rounds, nginx stream MiB/s: " + ", ".join(f"{v:,.0f}" for v in f.stream.nginx_mibps))
    print("rounds, openssl s:          " + ", ".join(f"{v:.2f}" for v in f.scan.openssl_seconds))
    print("rounds, hashlib s:          " + ", ".join(f"{v:.2f}" for v in f.scan.hashlib_seconds))
    print("rounds, agent scan s:       " + ", ".join(f"{v:.2f}" for v in f.scan.agent_seconds))
    print(
        "rounds, other processes' cores during openssl; the agent: "
        + ", ".join(
            f"{a:.2f}; {b:.2f}"
            for a, b in zip(f.scan.openssl_other_cores, f.scan.agent_other_cores, strict=True)
        )
    )
    busy = max(statistics.median(f.scan.openssl_other_cores), statistics.median(f.scan.agent_other_cores))
    if busy > CONTENDED_CORES:
        print(
            f"warning: other processes used up to {busy:.2f} cores during the scans. The agent hashes every "
            "byte twice (file and piece digests) on two threads, so it needs both cores to itself to match "
            "openssl's one thread; rerun on a quiet machine for the scan ratio."
        )
    for sample in f.readers.samples:
        print(f"reader error: {sample}")


# ----------------------------------------------------------------------------- main


def run(config: BenchConfig) -> Figures:
    load_average, memory = os.getloadavg()[0], mem_available_mib()
    tools = ensure_tools()
    with tempfile.TemporaryDirectory(prefix="lanpeer-serve-bench-", dir="/tmp") as tmp:
        workdir = Path(tmp)
        check_machine(config, workdir)
        data = make_data(workdir, config)
        stream = data.stream
        with (
            running_nginx(tools, workdir, stream.path.parent) as nginx,
            running_agent(
                "serve", workdir, stream.path.parent, workdir / "state-serve", max_uploads=config.max_uploads
            ) as agent,
        ):
            progress(f"agent {agent.pid} on port {agent.port} hashes the {config.size_mib} MiB file")
            wait_for_scan(agent, scan_timeout(config.size))
            progress("sanity: GET, Range, HEAD, unknown digest")
            checks = sanity_checks(tools, agent, stream, workdir)
            progress(f"one stream: {config.rounds} rounds agent/nginx")
            streams = measure_stream(tools, agent, nginx, stream, config.rounds)
            progress(f"{config.readers} range readers for {config.reader_seconds:g} s")
            readers = measure_readers(config, agent, stream)
        progress(f"scan: {config.rounds} rounds openssl/agent")
        scan = measure_scan(tools, workdir, data.scan_tree, config.rounds)
        flat = None
        if data.flat_tree is not None:
            progress("scan of the smaller files, for the memory figure")
            flat = measure_scan(tools, workdir, data.flat_tree, 1)
        progress(f"{config.small_files:,} small files: first scan, restart, unchanged rescan")
        small = measure_small(workdir, data.small_tree, config.small_files)
        progress("cleaning up")
    return Figures(
        cores=os.cpu_count() or 1,
        mem_available_mib=memory,
        load_average=load_average,
        tools=tools.versions,
        config=config,
        checks=checks,
        stream=streams,
        readers=readers,
        scan=scan,
        flat=flat,
        small=small,
    )


def parse_args(argv: Sequence[str] | None) -> tuple[BenchConfig, bool]:
    parser = argparse.ArgumentParser(
        prog="scripts/bench/serve",
        description="Benchmark the agent's serving and hashing, side by side with nginx, curl and openssl.",
        epilog="Exit status: 0 when every target is met, 3 when one is missed, 1 when the run failed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--size-mib",
        type=positive_int,
        default=1024,
        metavar="N",
        help="the streamed file; the scan tree is 4 files of N/4 MiB (and 4 of N/16 MiB); a multiple of 16",
    )
    add("--rounds", type=positive_int, default=3, metavar="R", help="alternating rounds of stream and scan")
    add("--readers", type=positive_int, default=32, metavar="C", help="concurrent range readers")
    add("--reader-seconds", type=positive_float, default=5.0, metavar="S", help="range readers phase length")
    add("--range-mib", type=positive_int, default=4, metavar="M", help="size of each range read")
    add("--max-uploads", type=positive_int, default=64, metavar="U", help="the agent's --max-uploads")
    add(
        "--verify",
        choices=("sha256", "bytes"),
        default="sha256",
        help="how readers check each body against the file: sha256 of both, or a byte comparison",
    )
    add("--small-files", type=positive_int, default=10_000, metavar="F", help="small files for the rescan")
    add("--no-flatness", action="store_true", help="skip the scan of 4 files of N/16 MiB")
    add("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    if args.size_mib % 16:
        parser.error("--size-mib must be a multiple of 16")
    if args.range_mib > args.size_mib:
        parser.error("--range-mib must be at most --size-mib")
    config = BenchConfig(
        size_mib=args.size_mib,
        rounds=args.rounds,
        readers=args.readers,
        reader_seconds=args.reader_seconds,
        range_mib=args.range_mib,
        max_uploads=args.max_uploads,
        verify=args.verify,
        small_files=args.small_files,
        flatness=not args.no_flatness,
    )
    return config, args.json


def main(argv: Sequence[str] | None = None) -> int:
    config, want_json = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        figures = run(config)
    except (BenchError, OSError, subprocess.SubprocessError) as exc:
        print(f"bench: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    table = rows(figures)
    print_report(figures, table)
    if want_json:
        print(as_json(figures, table))
    return exit_status(table)


if __name__ == "__main__":
    sys.exit(main())
