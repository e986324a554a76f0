"""`scripts/demo`, the README's first command, run small: it tells who served what, and
whether it succeeds, fails or is interrupted, it leaves no process, port or scratch
directory behind."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo"
SIZE_MIB = 16
RUN_TIMEOUT = 90
TiB = 1024**4


def demo_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANPEER_")}
    env["NO_COLOR"] = "1"
    return env


def scratch_of(output: str) -> Path:
    match = re.search(r"^scratch directory (/\S+) ", output, re.MULTILINE)
    assert match, output
    return Path(match.group(1))


def leftovers(scratch: Path, output: str) -> list[str]:
    """What the demo left behind: its scratch directory, a process started with a path in
    it, or a port it printed that still accepts connections."""
    found = []
    if scratch.exists():
        found.append(f"{scratch} still exists")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(scratch) in cmdline:
            found.append(f"process {proc.name} still runs: {cmdline}")
    for port in sorted({int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", output)}):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                found.append(f"127.0.0.1:{port} still accepts connections")
    return found


def demo_complaints(stderr: str) -> list[str]:
    """The demo's own lines on stderr, but for setting up .venv."""
    return [
        line
        for line in stderr.splitlines()
        if line.startswith("demo:") and not line.startswith(("demo: creating", "demo: installing"))
    ]


def test_the_demo_tells_who_served_what_and_cleans_up() -> None:
    result = subprocess.run(
        [str(DEMO), "--size-mib", str(SIZE_MIB)],
        capture_output=True,
        text=True,
        env=demo_env(),
        timeout=RUN_TIMEOUT,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert demo_complaints(result.stderr) == []
    assert "\033[" not in out  # No colours when not on a terminal.

    # What it started.
    assert re.search(r"^  origin   http://127\.0\.0\.1:\d+/release\.tar  16\.0 MiB", out, re.M)
    assert re.search(r"^  tracker  127\.0\.0\.1:\d+ ", out, re.M)
    for n in range(1, 5):
        assert re.search(rf"^  agent {n}  http://127\.0\.0\.1:\d+  id ", out, re.M), out

    # Agent 1 from the origin, then the others from their peers.
    assert re.search(
        r"^   agent 1  16\.0 MiB in [\d.]+ s \([\d.]+ MiB/s\): peers 0 B, origin 16\.0 MiB "
        r"\(100% from the origin\)",
        out,
        re.M,
    ), out
    assert re.search(r"lists agent 1 as a holder", out)
    assert "2. agents 2, 3 and 4 fetch it at once" in out
    for n in (2, 3, 4):
        assert re.search(
            rf"^   agent {n}  16\.0 MiB in [\d.]+ s \([\d.]+ MiB/s\): peers 16\.0 MiB, origin 0 B "
            r"\(0% from the origin\)",
            out,
            re.M,
        ), out

    # Who served what: a row per agent with its fetch time, and the origin's one copy.
    for n in range(1, 5):
        assert re.search(rf"^  agent {n}\s+[\d.]+ s\s+[\d.]+ MiB/s\s", out, re.M), out
    assert re.search(r"^  origin\s+16\.0 MiB\s+1\.00$", out, re.M), out
    assert "the origin served 1.00 copies for 4 machines" in out
    assert "the agents served 3.00 copies to each other" in out
    assert re.search(r"every copy checked: sha256:[0-9a-f]{64}$", out, re.M)

    # The tracker's view: one file, held by all four.
    assert re.search(r"^  [0-9a-f]{16}\s+16\.0 MiB\s+4/4\s+yes\s+release\.tar$", out, re.M), out

    scratch = scratch_of(out)
    # What an administrator sees: the offload the agents reported, and both metrics pages.
    assert re.search(
        r"^  origin offload\s+75\.0 % \(48\.0 MiB of 64\.0 MiB fetched came from peers\)$", out, re.M
    )
    assert re.search(
        r"^    lanpeer_agent_fetched_bytes_total\{source=\"origin\"\} 1\.6777216e\+07$", out, re.M
    )
    assert re.search(r"^    lanpeer_tracker_origin_offload_ratio 0\.75$", out, re.M), out
    assert "Stopped the agents, the tracker and the origin in" in out
    assert f"and removed {scratch}." in out
    assert leftovers(scratch, out) == []


@pytest.mark.parametrize(
    ("signum", "when"),
    [(signal.SIGINT, "2. agents"), (signal.SIGTERM, "  tracker")],
    ids=["sigint-while-fetching", "sigterm-while-starting"],
)
def test_an_interrupted_demo_stops_everything(signum: signal.Signals, when: str) -> None:
    # Capped uploads keep step 2 going for seconds, so the signal lands while its gets are
    # started or run, even on a busy machine.
    demo = subprocess.Popen(
        [str(DEMO), "--size-mib", str(SIZE_MIB), "--upload-limit", "4MB/s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=demo_env(),
    )
    try:
        assert demo.stdout is not None
        lines = []
        for line in demo.stdout:
            lines.append(line)
            if line.startswith(when):
                break
        demo.send_signal(signum)
        rest, err = demo.communicate(timeout=RUN_TIMEOUT)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    out = "".join(lines) + rest
    assert demo.returncode == 128 + signum, out + err
    assert f"demo: interrupted ({signum.name}); stopping everything" in err
    scratch = scratch_of(out)
    assert "demo: stopped the agents, the tracker and the origin in" in err
    assert leftovers(scratch, out) == []


def test_the_demo_says_in_one_line_when_the_disk_is_too_small() -> None:
    base = Path(tempfile.gettempdir())
    if shutil.disk_usage(base).free >= TiB + 64 * 1024**2:
        pytest.skip("this machine has room for a TiB")
    before = set(base.glob("lpdemo-*"))
    result = subprocess.run(
        [str(DEMO), "--size-mib", "65536", "--agents", "16"],
        capture_output=True,
        text=True,
        env=demo_env(),
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert result.returncode == 1
    complaints = demo_complaints(result.stderr)
    assert complaints[0].startswith("demo: ")
    assert (
        "free, and the demo needs 1024.1 GiB (16 copies of the file); try a smaller --size-mib"
        in complaints[0]
    )
    assert set(base.glob("lpdemo-*")) <= before
