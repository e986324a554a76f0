"""The lanpeer demo: a LAN of four machines on 127.0.0.1, and a tarball they all want.

It starts an origin web server with a generated tarball, a tracker and four agents (each a
real `lanpeer-agent run` with its own shared directory and state directory, given no
tracker address: each finds the tracker over mDNS, on loopback only). Agent 1
fetches the tarball from the origin through its daemon; then agents 2, 3 and 4 fetch it at
once through theirs, from the machines that already hold it. At the end it tells who served
what: the origin's bytes against the file's size, each agent's uploads, and the time of
each fetch.

Run it as `scripts/demo`, which sets up .venv first when needed; `--help` lists the
options. Everything lives in one scratch directory under /tmp, removed at the end; the
processes it starts are stopped with SIGTERM at the end, on failure and on Ctrl-C, and die
with it should it be killed (PR_SET_PDEATHSIG).

Exit status: 0 when every fetch succeeded, 1 when something failed (one line saying what,
and the end of the failing component's log), 128 + the signal's number when interrupted.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, TextIO
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
AGENT = VENV_BIN / "lanpeer-agent"
TRACKER = VENV_BIN / "lanpeer-tracker"

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
FILE_NAME = "release.tar"
MEMBER_NAME = "release/payload.bin"
MTIME = 1_700_000_000
LAST_MODIFIED = "Tue, 14 Nov 2023 22:13:20 GMT"
# The origin writes its bodies in chunks of this size, so what it counts as served is
# never more than one chunk ahead of what the client took.
SEND_CHUNK = 256 * KiB

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
COMMAND_TIMEOUT = 30.0
TRACKER_UPDATE_TIMEOUT = 20.0
# A fetch may take this long, plus a second for every SLOWEST_RATE bytes.
FETCH_BASE_TIMEOUT = 60.0
SLOWEST_RATE = 1 * MiB
POLL = 0.05
HEARTBEAT_SECONDS = 2.0
LOG_TAIL_LINES = 20
# The control socket's path (state dir + "/agent.sock") must fit the 108 bytes of sun_path.
MAX_SCRATCH_PATH = 60

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)

TRACKER_LISTENING = re.compile(r"tracker listening on 127\.0\.0\.1:(\d+)")
TRACKER_METRICS = re.compile(r"metrics at (http://127\.0\.0\.1:\d+/metrics)")
AGENT_SERVING = re.compile(r"serving .* at (http://127\.0\.0\.1:\d+)")
AGENT_REGISTERED = re.compile(r"registered with the tracker at \S+ as (\S+) \(")
# mDNS stays on loopback: the demo never sends to the LAN.
MDNS_INTERFACE = "127.0.0.1"


class DemoFailed(Exception):
    """Something failed: `str()` says what in one line; `log` is the failing part's log."""

    def __init__(self, message: str, log: str = "", log_name: str = "") -> None:
        super().__init__(message)
        self.log = log
        self.log_name = log_name


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ----------------------------------------------------------------------------- output


class Style:
    """ANSI colours on a terminal (unless NO_COLOR is set); plain text otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.enabled = stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"

    def _wrap(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def green(self, text: str) -> str:
        return self._wrap("32", text)

    def yellow(self, text: str) -> str:
        return self._wrap("33", text)

    def red(self, text: str) -> str:
        return self._wrap("31", text)

    def cyan(self, text: str) -> str:
        return self._wrap("36", text)


def size_text(n: float) -> str:
    if n < KiB:
        return f"{int(n)} B"
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    raise AssertionError("unreachable")


def joined(words: Sequence[str]) -> str:
    """ "1", "1 and 2", "1, 2 and 3"."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return [line(headers), *(line(row) for row in rows)]


# ----------------------------------------------------------------------------- the tarball


class Tarball:
    """A tar archive of one member of generated bytes, `size` bytes in all, never held whole
    in memory: each MiB is one random block, made different from every other MiB by its
    number, so every piece of the file has its own digest. `tar tvf` lists it."""

    def __init__(self, size: int) -> None:
        if size < MiB or size % MiB:
            raise ValueError("the size is a whole number of MiB, at least 1")
        self.size = size
        seed = secrets.token_bytes(8)
        self._seed = seed
        info = tarfile.TarInfo(MEMBER_NAME)
        # A header, the member, and the two zero blocks that end an archive.
        info.size = size - 3 * 512
        info.mtime = MTIME
        info.mode = 0o644
        self._header = info.tobuf(format=tarfile.USTAR_FORMAT)
        self._member_end = 512 + info.size
        self._block = os.urandom(MiB)
        self.etag = f'"{seed.hex()}-{size}"'

    def chunk(self, index: int) -> bytes:
        """MiB number `index` of the file (the last one may be short)."""
        data = bytearray(self._block)
        data[512:528] = struct.pack(">Q", index) + self._seed
        start = index * MiB
        if index == 0:
            data[:512] = self._header
        end = min(start + MiB, self.size)
        if end > self._member_end:
            cut = max(0, self._member_end - start)
            data[cut:] = bytes(MiB - cut)
        return bytes(data[: end - start])

    def sha256(self) -> str:
        h = hashlib.sha256()
        for index in range((self.size + MiB - 1) // MiB):
            h.update(self.chunk(index))
        return h.hexdigest()


# ----------------------------------------------------------------------------- the origin


class Unsatisfiable(Exception):
    pass


_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """One range of RFC 9110 (`a-b`, `a-`, `-n`) as (first, last); None when the header is
    one the origin ignores (several ranges, or malformed): the whole file is sent."""
    match = _RANGE.fullmatch(value)
    if match is None or not any(match.groups()):
        return None
    first, last = match.groups()
    if not first:
        suffix = int(last)
        if suffix == 0:
            raise Unsatisfiable
        return max(0, size - suffix), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if end < start:
        return None
    if start >= size:
        raise Unsatisfiable
    return start, min(end, size - 1)


class Origin:
    """A small web server on 127.0.0.1 serving the tarball at /release.tar, with ranges,
    HEAD, a strong ETag and If-Range, as a release server would; it counts what it sends."""

    def __init__(self, tarball: Tarball) -> None:
        self.tarball = tarball
        self.path = f"/{FILE_NAME}"
        self._lock = threading.Lock()
        self._served = 0
        self._requests = 0
        self._open: set[socket.socket] = set()
        self._server = _OriginServer(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="origin", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.path}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def bytes_served(self) -> int:
        with self._lock:
            return self._served

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        with self._lock:
            still_open = list(self._open)
        for sock in still_open:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._server.server_close()

    def _counted(self, sent: int = 0, request: bool = False) -> None:
        with self._lock:
            self._served += sent
            self._requests += request

    def _connected(self, sock: socket.socket, is_open: bool) -> None:
        with self._lock:
            if is_open:
                self._open.add(sock)
            else:
                self._open.discard(sock)


class _OriginServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        super().__init__(("127.0.0.1", 0), _OriginHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.origin._connected(request, True)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.origin._connected(request, False)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # A client that went away is no error.
            super().handle_error(request, client_address)


class _OriginHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lanpeer-demo-origin/1"
    disable_nagle_algorithm = True
    timeout = 30
    server: _OriginServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _reply(self, status: int, head: bool, extra: Sequence[tuple[str, str]] = ()) -> None:
        body = f"{status} {self.responses[status][0]}\n".encode()
        self.send_response(status)
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        origin = self.server.origin
        tarball = origin.tarball
        origin._counted(request=True)
        if urlsplit(self.path).path != origin.path:
            self._reply(404, head)
            return
        size = tarball.size
        status, first, last = 200, 0, size - 1
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if wanted is not None and not head and (if_range is None or if_range.strip() == tarball.etag):
            try:
                asked = parse_range(wanted, size)
            except Unsatisfiable:
                self._reply(416, head, [("Content-Range", f"bytes */{size}")])
                return
            if asked is not None:
                status, (first, last) = 206, asked
        self.send_response(status)
        self.send_header("Content-Type", "application/x-tar")
        self.send_header("Content-Length", str(last - first + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", tarball.etag)
        self.send_header("Last-Modified", LAST_MODIFIED)
        if status == 206:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        if head:
            return
        cached: tuple[int, bytes] = (-1, b"")
        position = first
        while position <= last:
            index = position // MiB
            if cached[0] != index:
                cached = (index, tarball.chunk(index))
            offset = position - index * MiB
            count = min(last + 1 - position, SEND_CHUNK - position % SEND_CHUNK)
            try:
                self.wfile.write(cached[1][offset : offset + count])
            except OSError:
                self.close_connection = True
                return
            origin._counted(sent=count)
            position += count


# ----------------------------------------------------------------------------- processes


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGTERM when the demo dies, however it dies."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


def clean_env() -> dict[str, str]:
    """The demo's own tokens only: none from the caller's environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANPEER_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


def last_error(path: Path) -> str:
    """The last line of a log that is not a log record: a command's one-line error."""
    lines = [line.strip() for line in tail(path, 200).splitlines() if line.strip()]
    errors = [
        line for line in lines if not LOG_RECORD.match(line) and not line.startswith(("Traceback", " "))
    ]
    return errors[-1] if errors else ""


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass(eq=False)
class Child:
    """A process the demo started: its output goes to files in the scratch directory."""

    name: str
    argv: list[str]
    log: Path
    stdout: Path | None = None
    process: subprocess.Popen[bytes] = field(init=False)
    started: float = field(init=False)
    ended: float | None = field(default=None, init=False)
    signalled: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        with self.log.open("wb") as log:
            out = self.stdout.open("wb") if self.stdout is not None else None
            try:
                self.started = time.monotonic()
                # The children live in their own session, so a Ctrl-C reaches the demo only,
                # and the demo stops them in order. The only threads the demo runs while it
                # starts a child are the origin's, which take no lock a child could need.
                self.process = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out if out is not None else log,
                    stderr=log,
                    env=clean_env(),
                    start_new_session=True,
                    preexec_fn=_die_with_parent,  # noqa: PLW1509
                )
            finally:
                if out is not None:
                    out.close()

    def running(self) -> bool:
        if self.process.poll() is None:
            return True
        if self.ended is None:
            self.ended = time.monotonic()
        return False

    @property
    def seconds(self) -> float:
        return (self.ended if self.ended is not None else time.monotonic()) - self.started

    def failed(self, what: str) -> DemoFailed:
        return DemoFailed(what, tail(self.log), self.name)

    def wait_for(self, pattern: re.Pattern[str], what: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            match = pattern.search(self.log.read_text(errors="replace"))
            if match:
                return match
            if not self.running():
                why = last_error(self.log)
                raise self.failed(
                    f"{self.name} exited with status {self.process.returncode} before it could {what}"
                    + (f": {why}" if why else "")
                )
            if time.monotonic() > deadline:
                raise self.failed(f"{self.name} did not {what} within {timeout:.0f} s")
            time.sleep(POLL)

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") if self.stdout is not None else ""

    def terminate(self) -> None:
        if self.running():
            self.process.send_signal(signal.SIGTERM)
            self.signalled = True

    def reap(self, timeout: float) -> str | None:
        """Waits for the process after terminate(); kills it past `timeout`. Says what went
        wrong, if anything (a process that had ended before is no news)."""
        if not self.signalled:
            return None
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return f"{self.name} ignored SIGTERM for {timeout:.0f} s and was killed"
        if code not in (0, -signal.SIGTERM):
            return f"{self.name} exited with status {code} when stopped"
        return None


def run_command(name: str, argv: list[str], timeout: float = COMMAND_TIMEOUT) -> str:
    """A short command's stdout; a failure is a DemoFailed with its stderr."""
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DemoFailed(f"{name} did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise DemoFailed(f"{name} failed with status {done.returncode}: {first}", done.stderr, name)
    return done.stdout


# ----------------------------------------------------------------------------- the demo


@dataclass(eq=False)
class Agent:
    number: int
    root: Path
    child: Child | None = None
    url: str = ""
    agent_id: str = ""
    fetch: dict[str, Any] = field(default_factory=dict)
    fetch_seconds: float = 0.0
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"agent {self.number}"

    @property
    def share(self) -> Path:
        return self.root / "share"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def target(self) -> Path:
        return self.share / FILE_NAME


SCRATCH_PREFIX = "lpdemo-"
PID_FILE = "demo.pid"


def scratch_dir() -> tuple[Path, list[Path]]:
    """A new scratch directory, short enough for the agents' control sockets; and the
    ones that demos killed with SIGKILL left behind, now removed."""
    base = Path(tempfile.gettempdir())
    if len(str(base)) > MAX_SCRATCH_PATH - 20:
        base = Path("/tmp")
    removed = []
    for old in base.glob(SCRATCH_PREFIX + "*"):
        try:
            pid = int((old / PID_FILE).read_text())
            if old.stat().st_uid != os.getuid() or Path(f"/proc/{pid}").exists():
                continue
        except (OSError, ValueError):
            continue
        shutil.rmtree(old, ignore_errors=True)
        removed.append(old)
    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=base))
    (scratch / PID_FILE).write_text(f"{os.getpid()}\n")
    return scratch, removed


class Demo:
    def __init__(self, size_mib: int, agents: int, out: TextIO, upload_limit: str | None = None) -> None:
        self.size = size_mib * MiB
        self.upload_limit = upload_limit
        self.agent_count = agents
        self.out = out
        self.style = Style(out)
        self.scratch: Path | None = None
        self.origin: Origin | None = None
        self.tracker: Child | None = None
        self.tracker_address = ""
        # A cluster of this run's own: other demos and tests may advertise on loopback too.
        self.cluster = f"demo-{secrets.token_hex(4)}"
        self.agents: list[Agent] = []
        self.gets: list[Child] = []
        self.stop_seconds = 0.0
        self.admin_args: list[str] = []

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def step(self, text: str) -> None:
        self.say()
        self.say(self.style.bold(text))

    # ------------------------------------------------------------------------- the story

    def run(self) -> None:
        for tool in (AGENT, TRACKER):
            if not os.access(tool, os.X_OK):
                raise DemoFailed(f"{tool} is missing; run scripts/demo, which installs lanpeer into .venv")
        self.scratch, removed = scratch_dir()
        (self.scratch / "logs").mkdir()
        needed = self.size * self.agent_count + 64 * MiB
        free = shutil.disk_usage(self.scratch).free
        if free < needed:
            raise DemoFailed(
                f"{self.scratch.parent} has {size_text(free)} free, and the demo needs {size_text(needed)} "
                f"({self.agent_count} copies of the file); try a smaller --size-mib"
            )
        s = self.style
        self.say(
            s.bold("lanpeer demo")
            + f": an origin, a tracker and {self.agent_count} agents on 127.0.0.1, "
            + f"sharing a {size_text(self.size)} tarball"
            + (f", each agent uploading at most {self.upload_limit}" if self.upload_limit else "")
        )
        self.say(s.dim(f"scratch directory {self.scratch} (logs in {self.scratch / 'logs'})"))
        for old in removed:
            self.say(s.dim(f"(removed {old}, left by a demo that was killed)"))
        digest = self.start_everything()
        first, rest = self.agents[0], self.agents[1:]

        self.step(f"1. {first.name} fetches {FILE_NAME}: nobody holds it yet, so it comes from the origin")
        self.fetch([first], digest)
        waited = self.wait_until_tracker_lists(first, digest)
        self.say(
            s.dim(
                f"   the tracker now maps the URL to sha256:{digest[:16]}… and lists {first.name} "
                f"as a holder ({waited:.1f} s after the fetch ended)"
            )
        )

        if len(rest) == 1:
            self.step(f"2. {rest[0].name} fetches it, from the machine that holds it")
        else:
            numbers = joined([str(a.number) for a in rest])
            self.step(f"2. agents {numbers} fetch it at once, from the machines that hold it")
        self.fetch(rest, digest)

        self.report(digest)

    def start_everything(self) -> str:
        assert self.scratch is not None
        s = self.style
        self.step("Starting")
        began = time.monotonic()
        tarball = Tarball(self.size)
        digest = tarball.sha256()
        try:
            self.origin = Origin(tarball)
        except OSError as exc:
            raise DemoFailed(f"the origin cannot listen on 127.0.0.1: {exc.strerror or exc}") from None
        self.origin.start()
        self.say(
            f"  {s.cyan('origin ')}  {self.origin.url}  {size_text(self.size)}, "
            f"sha256:{digest[:16]}…, ETag {tarball.etag}"
        )

        cluster_token = self.scratch / "cluster.token"
        admin_token = self.scratch / "admin.token"
        for path in (cluster_token, admin_token):
            path.write_text(secrets.token_urlsafe(24) + "\n")
            path.chmod(0o600)
        self.admin_args = ["--admin-token-file", str(admin_token)]

        self.tracker = Child(
            "the tracker",
            [
                str(TRACKER),
                "run",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--db",
                str(self.scratch / "tracker.db"),
                "--token-file",
                str(cluster_token),
                "--admin-token-file",
                str(admin_token),
                # Agents report every 2 s instead of 10: the demo's agents come and go quickly.
                "--heartbeat-interval",
                str(HEARTBEAT_SECONDS),
                "--cluster",
                self.cluster,
                "--mdns-interface",
                MDNS_INTERFACE,
            ],
            self.scratch / "logs" / "tracker.log",
        )
        port = self.tracker.wait_for(TRACKER_LISTENING, "listen").group(1)
        self.tracker_address = f"127.0.0.1:{port}"
        self.say(
            f"  {s.cyan('tracker')}  {self.tracker_address}  (cluster and admin tokens in {self.scratch}; "
            f"advertised over mDNS on loopback as cluster {self.cluster})"
        )

        # Held back while the agents start, so that each one is recorded for the clean-up
        # before an interruption is raised (as for the gets).
        with signals_held():
            for number in range(1, self.agent_count + 1):
                agent = Agent(number, self.scratch / f"a{number}")
                agent.share.mkdir(parents=True)
                self.agents.append(agent)
                agent.child = Child(
                    agent.name,
                    [
                        str(AGENT),
                        "run",
                        "--share",
                        str(agent.share),
                        # No --tracker: the agent finds it over mDNS.
                        "--cluster",
                        self.cluster,
                        "--mdns-interface",
                        MDNS_INTERFACE,
                        "--listen",
                        "127.0.0.1:0",
                        "--state-dir",
                        str(agent.state),
                        "--token-file",
                        str(cluster_token),
                        *(["--upload-limit", self.upload_limit] if self.upload_limit else []),
                    ],
                    self.scratch / "logs" / f"agent{number}.log",
                )
        for agent in self.agents:
            assert agent.child is not None
            agent.url = agent.child.wait_for(AGENT_SERVING, "serve").group(1)
            agent.agent_id = agent.child.wait_for(AGENT_REGISTERED, "register with the tracker").group(1)
            self.say(
                f"  {s.cyan(agent.name)}  {agent.url}  id {agent.agent_id}, shares {agent.share}, "
                f"state in {agent.state}, found the tracker over mDNS"
            )
        self.say(s.dim(f"  (all up in {time.monotonic() - began:.1f} s)"))
        return digest

    def fetch(self, agents: Sequence[Agent], digest: str) -> None:
        """`lanpeer-agent get` for each agent, all at once, each through its own daemon."""
        assert self.scratch is not None and self.origin is not None
        s = self.style
        timeout = FETCH_BASE_TIMEOUT + self.size / SLOWEST_RATE
        logs = self.scratch / "logs"
        children = []
        with signals_held():
            for agent in agents:
                child = Child(
                    f"{agent.name}'s get",
                    [
                        str(AGENT),
                        "get",
                        "--state-dir",
                        str(agent.state),
                        self.origin.url,
                        "-o",
                        str(agent.target),
                        "--json",
                    ],
                    logs / f"get{agent.number}.err",
                    stdout=logs / f"get{agent.number}.json",
                )
                children.append(child)
                self.gets.append(child)
        example = agents[0]
        self.say(
            s.dim(
                f"   $ lanpeer-agent get --state-dir {example.state} {self.origin.url} "
                f"-o {example.target} --json"
            )
        )
        if len(agents) > 1:
            others = joined([str(a.number) for a in agents[1:]])
            self.say(s.dim(f"   (and the same for agent{'s' if len(agents) > 2 else ''} {others}, at once)"))
        deadline = time.monotonic() + timeout
        pending = dict(zip(children, agents, strict=True))
        while pending:
            for child, agent in list(pending.items()):
                if child.running():
                    continue
                del pending[child]
                self.gets.remove(child)
                if child.process.returncode != 0:
                    raise DemoFailed(
                        f"{child.name} failed with status {child.process.returncode}: "
                        f"{last_error(child.log) or 'no message'}",
                        tail(agent.child.log) if agent.child else "",
                        agent.name,
                    )
                self.fetched(agent, child, digest)
            if pending and time.monotonic() > deadline:
                late = next(iter(pending))
                raise late.failed(f"{late.name} did not finish within {timeout:.0f} s")
            time.sleep(POLL)

    def fetched(self, agent: Agent, child: Child, digest: str) -> None:
        s = self.style
        try:
            summary: dict[str, Any] = json.loads(child.output())
        except ValueError:
            raise DemoFailed(f"{child.name} printed no JSON summary: {child.output()[:200]!r}") from None
        if summary.get("sha256") != digest:
            raise DemoFailed(
                f"{agent.name} got sha256:{summary.get('sha256')}, not the origin's sha256:{digest}"
            )
        if agent.target.stat().st_size != self.size:
            raise DemoFailed(f"{agent.target} is {agent.target.stat().st_size} bytes, not {self.size}")
        agent.fetch = summary
        agent.fetch_seconds = child.seconds
        peers, origin = int(summary["bytes_from_peers"]), int(summary["bytes_from_origin"])
        share = origin / (peers + origin) if peers + origin else 0.0
        rate = self.size / child.seconds
        share_text = f"{share:.0%} from the origin"
        share_text = (
            s.green(share_text) if share == 0 else (s.yellow(share_text) if share < 1 else share_text)
        )
        sources = summary.get("sources_used", [])
        self.say(
            f"   {s.cyan(agent.name)}  {size_text(self.size)} in {s.bold(f'{child.seconds:.1f} s')} "
            f"({size_text(rate)}/s): peers {size_text(peers)}, origin {size_text(origin)} ({share_text}); "
            f"{len(sources)} source{'s' if len(sources) != 1 else ''}"
        )

    def wait_until_tracker_lists(self, agent: Agent, digest: str) -> float:
        """Waits until the tracker maps the URL to the digest and lists `agent` as a live
        holder of it: the daemon tells the tracker on its own, soon after the fetch."""
        assert self.origin is not None
        began = time.monotonic()
        deadline = began + TRACKER_UPDATE_TIMEOUT
        while True:
            found = self.locate(self.origin.url)
            for match in found.get("matches", []):
                if match.get("sha256") != digest:
                    continue
                holders = match.get("holders", [])
                if any(h.get("agent_id") == agent.agent_id and h.get("state") == "live" for h in holders):
                    return time.monotonic() - began
            if time.monotonic() > deadline:
                raise DemoFailed(
                    f"the tracker did not list {agent.name} as a holder of {self.origin.url} "
                    f"within {TRACKER_UPDATE_TIMEOUT:.0f} s of its fetch",
                    tail(agent.child.log) if agent.child else "",
                    agent.name,
                )
            time.sleep(0.2)

    def locate(self, query: str) -> dict[str, Any]:
        argv = [str(TRACKER), "locate", "--tracker", self.tracker_address, "--json", *self.admin_args, query]
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        if done.returncode not in (0, 1):
            raise DemoFailed(
                f"lanpeer-tracker locate failed: {done.stderr.strip()}", done.stderr, "lanpeer-tracker locate"
            )
        try:
            found: dict[str, Any] = json.loads(done.stdout or "{}")
        except ValueError:
            return {}
        return found

    def statuses(self) -> None:
        """`lanpeer-agent status --json` of every agent, asked at once."""
        assert self.scratch is not None
        logs = self.scratch / "logs"
        children = [
            Child(
                f"{agent.name}'s status",
                [str(AGENT), "status", "--json", "--state-dir", str(agent.state)],
                logs / f"status{agent.number}.err",
                stdout=logs / f"status{agent.number}.json",
            )
            for agent in self.agents
        ]
        for child, agent in zip(children, self.agents, strict=True):
            try:
                child.process.wait(COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
                raise child.failed(f"{child.name} did not answer within {COMMAND_TIMEOUT:.0f} s") from None
            if child.process.returncode != 0:
                raise child.failed(f"{child.name} failed: {last_error(child.log) or 'no message'}")
            agent.status = json.loads(child.output())

    def report(self, digest: str) -> None:
        assert self.origin is not None
        s = self.style
        self.statuses()
        origin_bytes = self.origin.bytes_served
        copies = origin_bytes / self.size
        n = self.agent_count

        self.step("Who served what")
        rows: list[list[str]] = []
        for agent in self.agents:
            summary = agent.fetch
            peers, origin = int(summary["bytes_from_peers"]), int(summary["bytes_from_origin"])
            share = origin / (peers + origin) if peers + origin else 0.0
            served = int(agent.status.get("bytes_served", 0))
            rows.append(
                [
                    agent.name,
                    f"{agent.fetch_seconds:.1f} s",
                    f"{size_text(self.size / agent.fetch_seconds)}/s",
                    size_text(peers),
                    size_text(origin),
                    f"{share:.0%}",
                    size_text(served),
                    f"{served / self.size:.2f}",
                ]
            )
        rows.append(["origin", "", "", "", "", "", size_text(origin_bytes), f"{copies:.2f}"])
        headers = ["", "FETCH TIME", "RATE", "FROM PEERS", "FROM ORIGIN", "ORIGIN %", "SERVED", "COPIES"]
        for line in table(headers, rows, right=range(1, 8)):
            self.say("  " + line)
        verdict = f"the origin served {copies:.2f} copies for {n} machines"
        verdict += f" ({self.origin.requests} requests); without lanpeer it would have served {n}.00"
        self.say()
        self.say("  " + (s.green(verdict) if copies <= 1.0 + 1e-9 else s.yellow(verdict)))
        served_by_agents = sum(int(a.status.get("bytes_served", 0)) for a in self.agents)
        line = f"  the agents served {served_by_agents / self.size:.2f} copies to each other"
        if n > 2:
            line += f"; the {n - 1} fetching at once were all done in "
            line += f"{max(a.fetch_seconds for a in self.agents[1:]):.1f} s"
        self.say(line)
        self.say(s.dim(f"  every copy checked: sha256:{digest}"))

        self.step("What the tracker knows (lanpeer-tracker files)")
        files = run_command(
            "lanpeer-tracker files",
            [str(TRACKER), "files", "--tracker", self.tracker_address, *self.admin_args],
        )
        for line in files.rstrip().splitlines():
            self.say("  " + line)

        self.step("What an administrator sees: lanpeer-tracker stats, and /metrics")
        self._show_offload()
        self._show_metrics()

    def _show_offload(self) -> None:
        """The tracker's offload line, once every agent's heartbeat has reported its fetch."""
        fetched = self.size * self.agent_count
        deadline = time.monotonic() + 4 * HEARTBEAT_SECONDS
        stats_argv = [str(TRACKER), "stats", "--tracker", self.tracker_address, *self.admin_args]
        while time.monotonic() < deadline:
            reported = json.loads(run_command("lanpeer-tracker stats", [*stats_argv, "--json"]))
            if reported["bytes_from_peers"] + reported["bytes_from_origin"] >= fetched:
                break
            time.sleep(POLL)
        for line in run_command("lanpeer-tracker stats", stats_argv).splitlines():
            if line.startswith(("agents", "origin offload")):
                self.say("  " + line)

    def _show_metrics(self) -> None:
        assert self.tracker is not None
        tracker_metrics = self.tracker.wait_for(TRACKER_METRICS, "serve metrics").group(1)
        shown = (
            (f"{self.agents[0].url}/metrics", ("lanpeer_agent_served_bytes_total", "lanpeer_agent_fetched")),
            (tracker_metrics, ("lanpeer_tracker_locate_requests_total", "lanpeer_tracker_origin_offload")),
        )
        for url, prefixes in shown:
            self.say(f"  $ curl {url}")
            with urllib.request.urlopen(url, timeout=COMMAND_TIMEOUT) as answer:
                page = answer.read().decode()
            for line in page.splitlines():
                if line.startswith(prefixes):
                    self.say("    " + line)

    # ------------------------------------------------------------------------- cleanup

    def cleanup(self) -> list[str]:
        """Stops everything and removes the scratch directory; says what did not go well."""
        problems: list[str] = []
        began = time.monotonic()
        for child in self.gets:
            child.terminate()
        for child in self.gets:
            if (problem := child.reap(STOP_TIMEOUT)) is not None and child.process.returncode is None:
                problems.append(problem)
        # The agents first, so they tell the tracker they leave; then the tracker.
        children = [a.child for a in self.agents if a.child is not None]
        for child in children:
            child.terminate()
        for child in children:
            if (problem := child.reap(STOP_TIMEOUT)) is not None:
                problems.append(problem + self._log_hint(child))
        if self.tracker is not None:
            self.tracker.terminate()
            if (problem := self.tracker.reap(STOP_TIMEOUT)) is not None:
                problems.append(problem + self._log_hint(self.tracker))
        if self.origin is not None:
            self.origin.stop()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        self.stop_seconds = time.monotonic() - began
        return problems

    def _log_hint(self, child: Child) -> str:
        last = tail(child.log, 5)
        return "; its log ends:\n" + "\n".join(f"    {line}" for line in last.splitlines()) if last else ""


# ----------------------------------------------------------------------------- main


# Signals that arrived while held (see signals_held): one list per block holding them.
_HELD: list[list[int]] = []


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _HELD:
        _HELD[-1].append(signum)
        return
    raise Interrupted(signum)


@contextmanager
def signals_held() -> Iterator[None]:
    """Holds Ctrl-C and SIGTERM back until the block ends, so that a child started in it
    is always recorded for the clean-up before the interruption is raised."""
    _HELD.append([])
    try:
        yield
    finally:
        held = _HELD.pop()
        if held:
            raise Interrupted(held[0])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/demo",
        description="Show lanpeer at work on this machine: an origin web server with a generated "
        "tarball, a tracker and four agents on 127.0.0.1. One agent fetches the tarball from the "
        "origin, then the others fetch it at once from their peers, and the demo tells who served "
        "what. Everything is removed at the end.",
    )
    parser.add_argument(
        "--size-mib",
        type=int,
        default=256,
        metavar="N",
        help="the tarball's size in MiB (default: %(default)s)",
    )
    parser.add_argument(
        "--agents",
        type=int,
        default=4,
        metavar="N",
        help="how many agents (machines) take part (default: %(default)s)",
    )
    parser.add_argument(
        "--upload-limit",
        metavar="RATE",
        help="cap each agent's upload rate, as a LAN link would, e.g. 50MB/s (default: none)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.size_mib <= 64 * 1024:
        parser.error("--size-mib: give a number from 1 to 65536")
    if not 2 <= args.agents <= 16:
        parser.error("--agents: give a number from 2 to 16")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    err = Style(sys.stderr)
    demo = Demo(args.size_mib, args.agents, sys.stdout, args.upload_limit)
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for signum in handled:
        signal.signal(signum, _on_signal)
    status = 0
    try:
        demo.run()
    except DemoFailed as exc:
        status = 1
        print(err.red(f"demo: {exc}"), file=sys.stderr)
        if exc.log:
            print(f"demo: the log of {exc.log_name} ends:", file=sys.stderr)
            for line in exc.log.splitlines():
                print(f"    {line}", file=sys.stderr)
    except OSError as exc:
        status = 1
        print(err.red(f"demo: {exc}"), file=sys.stderr)
    except Interrupted as exc:
        status = 128 + exc.signum
        print(f"\ndemo: interrupted ({exc}); stopping everything", file=sys.stderr)
    finally:
        # Cleanup is bounded by STOP_TIMEOUT per process; a second Ctrl-C must not cut it short.
        for signum in handled:
            signal.signal(signum, signal.SIG_IGN)
        problems = demo.cleanup()
    for problem in problems:
        print(err.yellow(f"demo: {problem}"), file=sys.stderr)
    if problems and status == 0:
        status = 1
    if not problems and demo.scratch is not None:
        done = (
            f"Stopped the agents, the tracker and the origin in {demo.stop_seconds:.1f} s "
            f"and removed {demo.scratch}."
        )
        if status == 0:
            demo.say()
            demo.say(demo.style.dim(done))
        else:
            print(f"demo: {done[0].lower()}{done[1:]}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
