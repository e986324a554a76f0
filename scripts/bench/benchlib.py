"""What the benchmarks in scripts/bench share: child processes that die with the benchmark
and are stopped with SIGTERM then SIGKILL, figures read from /proc, tools run and found,
progress lines, argument types, the table of figures against their targets, and matplotlib
for the plots.

The benchmarks run as `python scripts/bench/X_bench.py`, which puts this directory on the
module path, so they `import benchlib`.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

MiB = 1024 * 1024
WRITE_CHUNK = 16 * MiB
NGINX_PACKAGES = ("nginx-light", "nginx-core", "nginx")
NO_MATPLOTLIB = "no plot: matplotlib is not installed (.venv/bin/pip install matplotlib to get one)"

_PR_SET_PDEATHSIG = 1


class BenchError(Exception):
    """The run failed: its figures would mean nothing."""


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- arguments


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


# ----------------------------------------------------------------------------- processes


def die_with_parent() -> None:
    """Runs in a child before exec (or at a worker's start): the kernel sends it SIGTERM
    should the benchmark die without stopping it."""
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def stop(process: subprocess.Popen[bytes], timeout: float, complaint: str) -> None:
    """Stops a child with SIGTERM, then with SIGKILL (printing `complaint`) should it not
    exit within `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            print(complaint, file=sys.stderr)
            process.kill()
            process.wait()


def reap(processes: Sequence[BaseProcess], *, grace: float) -> None:
    """Waits up to `grace` seconds for the processes to exit, then ends the others."""
    deadline = time.monotonic() + grace
    for process in processes:
        if process.pid is not None:
            process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join(5.0)
        if process.is_alive():
            process.kill()
            process.join()


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(empty)"
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})"


# ----------------------------------------------------------------------------- tools


def run_command(command: Sequence[str], timeout: float, env: dict[str, str] | None = None) -> str:
    """Runs a command to completion; its stdout, or BenchError with its stderr."""
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{command[0]} did not finish within {timeout:g} s") from None
    if done.returncode != 0:
        raise BenchError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


def which(name: str) -> str | None:
    # nginx lives in /usr/sbin, which is not on every user's PATH.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def nginx_package() -> str:
    """The first nginx flavour this distribution offers."""
    for package in NGINX_PACKAGES:
        match = re.search(r"Candidate: (\S+)", run_command(["apt-cache", "policy", package], 60.0))
        if match and match.group(1) != "(none)":
            return package
    raise BenchError(f"apt offers none of {', '.join(NGINX_PACKAGES)}")


# ----------------------------------------------------------------------------- files


def write_random_file(path: Path, size: int, on_chunk: Callable[[int, bytes], None] | None = None) -> None:
    """Random bytes, written to disk (fsync) and left in the page cache; on_chunk(offset,
    chunk) sees each chunk written."""
    written = 0
    with path.open("wb") as f:
        while written < size:
            chunk = os.urandom(min(WRITE_CHUNK, size - written))
            f.write(chunk)
            if on_chunk is not None:
                on_chunk(written, chunk)
            written += len(chunk)
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------- /proc


def read_status_kib(pid: int, key: str) -> int:
    """A field of /proc/PID/status in KiB, such as VmHWM (peak RSS) or VmRSS."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    raise BenchError(f"/proc/{pid}/status has no {key}")


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time a process has used so far."""
    # The fields after the parenthesised command name start at field 3 of proc_pid_stat(5);
    # utime and stime are fields 14 and 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time spent on anything but idling, all cores together (proc(5): /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = values[:7]
    steal = values[7] if len(values) > 7 else 0
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


# ----------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True)
class Row:
    figure: str
    measured: str
    # Rows with a target name it, and say whether it was met under a stable key.
    target: str = ""
    met: bool | None = None
    key: str = ""


_VERDICTS = {None: "", True: "PASS", False: "MISS"}


def print_table(table: Sequence[Row]) -> None:
    """The figures, their targets and PASS or MISS, in aligned columns."""
    lines = [("figure", "measured", "target", "result")]
    lines += [(r.figure, r.measured, r.target, _VERDICTS[r.met]) for r in table]
    widths = [max(len(line[column]) for line in lines) for column in range(3)]
    for figure, measured, target, verdict in lines:
        print(f"{figure:<{widths[0]}}  {measured:>{widths[1]}}  {target:<{widths[2]}}  {verdict}".rstrip())


def exit_status(table: Sequence[Row]) -> int:
    """0 when every target is met, 3 when one is missed."""
    return 0 if all(row.met is not False for row in table) else 3


def as_json(
    figures: Any, table: Sequence[Row], *, measured: bool = True, default: Callable[[Any], Any] | None = None
) -> str:
    """The figures (a dataclass, floats rounded) and each target with whether it was met."""
    targets = {
        r.key: {**({"measured": r.measured} if measured else {}), "target": r.target, "met": r.met}
        for r in table
        if r.key
    }
    return json.dumps({"figures": rounded(asdict(figures)), "targets": targets}, indent=2, default=default)


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v) for v in value]
    return value


def pyplot() -> Any:
    """matplotlib.pyplot, drawing to files only (the Agg backend); None when matplotlib is
    not installed."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:
        return None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")
