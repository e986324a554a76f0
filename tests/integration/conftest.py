"""Fixtures that run the real tracker over real gRPC on 127.0.0.1, port 0, with a temporary
SQLite database, and the clients that talk to it. Everything started here is stopped here,
and every test is checked for threads and child processes it left behind."""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.config import AgentConfig
from agent.daemon import Daemon
from lanpeer.v1 import admin_pb2_grpc, tracker_pb2_grpc
from tests.integration.helpers import Agent, agent_info
from tests.integration.origin import Origin, start_origin
from tracker.client import AdminClient, TrackerClient
from tracker.server import TrackerConfig, TrackerServer

CLIENT_TIMEOUT = 5.0
LEAK_GRACE_SECONDS = 5.0

_call_failed = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_call_failed] = True
    return report


def _child_pids() -> set[int]:
    pids: set[int] = set()
    for children in Path("/proc/self/task").glob("*/children"):
        # A thread may end between the glob and the read.
        with contextlib.suppress(OSError):
            pids.update(int(pid) for pid in children.read_text().split())
    return pids


@pytest.fixture(autouse=True)
def leaves_no_thread_or_process(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails a test that leaves a thread or a child process running. Being autouse, it is
    set up before, and torn down after, every other fixture of the test."""
    threads_before = set(threading.enumerate())
    children_before = _child_pids()
    yield
    if request.node.stash.get(_call_failed, False):
        # A failed test's frames (and the servers they reference) live on in its traceback.
        return
    # TrackerServer.stop() leaves its idle RPC worker threads until the server object is
    # collected (test_stop_ends_every_thread_the_tracker_started shows it); the fixtures
    # below hold the only reference to each server and drop it, so a collection ends them.
    gc.collect()
    deadline = time.monotonic() + LEAK_GRACE_SECONDS
    next_collection = time.monotonic() + 0.5
    while True:
        threads = [t.name for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        children = sorted(_child_pids() - children_before)
        if not threads and not children:
            return
        now = time.monotonic()
        if now > deadline:
            pytest.fail(f"the test left threads {threads} and child processes {children} behind")
        if now > next_collection:
            gc.collect()
            next_collection = now + 0.5
        time.sleep(0.01)


# ----------------------------------------------------------------------------- trackers


@dataclass(frozen=True)
class Tracker:
    """A running in-process tracker, as the tests see it. The fixture alone holds the
    TrackerServer, so nothing of it outlives the test."""

    address: str
    config: TrackerConfig
    # HOST:PORT of its metrics endpoint, when config.metrics_listen asks for one.
    metrics_address: str | None = None

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])


class Trackers:
    """Starts in-process trackers on one database; stops whatever is still running at the end."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self._running: dict[Tracker, TrackerServer] = {}

    def config(self, **overrides: Any) -> TrackerConfig:
        settings: dict[str, Any] = {"db": self.db, "listen": "127.0.0.1:0", **overrides}
        return TrackerConfig(**settings)

    def start(self, **overrides: Any) -> Tracker:
        return self.start_with(self.config(**overrides))

    def start_with(self, config: TrackerConfig) -> Tracker:
        server = TrackerServer(config)
        handle = Tracker(server.address, config, server.metrics_address)
        self._running[handle] = server
        server.start()
        return handle

    def stop(self, tracker: Tracker) -> None:
        self._running.pop(tracker).stop()

    def restart(self, tracker: Tracker) -> Tracker:
        """Stops `tracker` and starts a new one with its configuration and database; the
        port may differ."""
        self.stop(tracker)
        return self.start_with(tracker.config)

    def close(self) -> None:
        for tracker in list(self._running):
            self.stop(tracker)


@pytest.fixture
def trackers(tmp_path: Path) -> Iterator[Trackers]:
    factory = Trackers(tmp_path / "state" / "tracker.db")
    yield factory
    factory.close()


@pytest.fixture
def tracker(trackers: Trackers) -> Tracker:
    return trackers.start()


# ----------------------------------------------------------------------------- clients


@dataclass
class RawStubs:
    tracker: Any
    admin: Any


class Clients:
    """Typed and raw clients; every channel is closed at the end of the test."""

    def __init__(self) -> None:
        self._closers: list[Any] = []

    def agent_api(self, server: Tracker | str, **kwargs: Any) -> TrackerClient:
        kwargs.setdefault("timeout", CLIENT_TIMEOUT)
        client = TrackerClient(_target(server), **kwargs)
        self._closers.append(client)
        return client

    def admin_api(self, server: Tracker | str, **kwargs: Any) -> AdminClient:
        kwargs.setdefault("timeout", CLIENT_TIMEOUT)
        client = AdminClient(_target(server), **kwargs)
        self._closers.append(client)
        return client

    def agent(self, server: Tracker | str, agent_id: str, **kwargs: Any) -> Agent:
        return Agent(self.agent_api(server, **kwargs), agent_info(agent_id))

    def raw(self, server: Tracker | str) -> RawStubs:
        """The generated stubs on a plain channel with gRPC's default options, to send what
        the typed client never would."""
        channel = grpc.insecure_channel(_target(server))
        self._closers.append(channel)
        return RawStubs(
            tracker=tracker_pb2_grpc.TrackerServiceStub(channel),  # type: ignore[no-untyped-call]
            admin=admin_pb2_grpc.TrackerAdminServiceStub(channel),  # type: ignore[no-untyped-call]
        )

    def close(self) -> None:
        while self._closers:
            self._closers.pop().close()


def _target(server: Tracker | str) -> str:
    return server if isinstance(server, str) else server.address


@pytest.fixture
def clients() -> Iterator[Clients]:
    made = Clients()
    yield made
    made.close()


@pytest.fixture
def admin(clients: Clients, tracker: Tracker) -> AdminClient:
    return clients.admin_api(tracker)


# ----------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path


def _self_signed(directory: Path) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "cert.pem", directory / "key.pem")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(files.key),
            "-out",
            str(files.cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
        env={**os.environ, "RANDFILE": str(directory / ".rnd")},
    )
    return files


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    return _self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def other_tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """Another self-signed certificate: a CA the tracker's certificate does not chain to."""
    return _self_signed(tmp_path_factory.mktemp("other-tls"))


# ----------------------------------------------------------------------------- agents and origins


@pytest.fixture
def share(tmp_path: Path) -> Path:
    root = tmp_path / "share"
    root.mkdir()
    return root


@pytest.fixture
def daemons() -> Iterator[Callable[..., Daemon]]:
    """Starts in-process agent daemons; each gets a short state directory of its own (its
    unix socket path must stay under the kernel's 108 bytes)."""
    started: list[Daemon] = []
    with tempfile.TemporaryDirectory(prefix="lp-", dir="/tmp") as states:

        def start(**settings: Any) -> Daemon:
            settings.setdefault("state_dir", Path(states) / f"a{len(started)}")
            settings.setdefault("listen", "127.0.0.1:0")
            settings.setdefault("rescan_interval", 0.2)
            daemon = Daemon(AgentConfig(**settings))
            daemon.start()
            started.append(daemon)
            return daemon

        yield start
        for daemon in started:
            daemon.stop(grace=1.0)


@pytest.fixture
def origin() -> Iterator[Origin]:
    with start_origin() as running:
        yield running


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]
