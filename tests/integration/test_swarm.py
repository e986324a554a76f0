"""Swarms on loopback: machines that fetch the same new file at once split the origin's
pieces among them and exchange the rest, so the origin serves about one copy."""

from __future__ import annotations

import hashlib
import os
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.daemon import Daemon
from agent.fetch import HttpFetcher
from agent.job import GetRequest, Progress, Summary
from agent.swarm import swarm_id_for
from tests.integration.conftest import Trackers
from tests.integration.helpers import eventually
from tests.integration.origin import MiB, Origin
from tracker.model import SourceRef

SIZE = 24 * MiB


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


class Fetch:
    """One machine's `get`, run through its daemon on a thread."""

    def __init__(self, daemon: Daemon, url: str, output: Path) -> None:
        self.daemon = daemon
        self.output = output
        self.summary: Summary | None = None
        self.error: BaseException | None = None
        self.cancelled = threading.Event()
        self.done_bytes = 0
        request = GetRequest(source=url, output=output)
        self._thread = threading.Thread(target=self._run, args=(request,), name=f"get-{output.name}")

    def start(self) -> Fetch:
        self._thread.start()
        return self

    def _run(self, request: GetRequest) -> None:
        def progress(p: Progress) -> None:
            self.done_bytes = p.done_bytes

        try:
            self.summary = self.daemon.fetch(request, progress, self.cancelled)
        except BaseException as exc:  # reported by result()
            self.error = exc

    def result(self, timeout: float = 60.0) -> Summary:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"{self.output.name} did not finish in {timeout} s"
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary

    def join(self, timeout: float = 60.0) -> None:
        self._thread.join(timeout)


Machines = Callable[[int], list[Daemon]]


@pytest.fixture
def machines(trackers: Trackers, daemons: Callable[..., Daemon], tmp_path: Path) -> tuple[str, Machines]:
    tracker = trackers.start(heartbeat_interval=1.0)

    def start(count: int) -> list[Daemon]:
        started = []
        for _ in range(count):
            share = tmp_path / f"share{len(os.listdir(tmp_path))}"
            share.mkdir()
            started.append(daemons(shares=(share,), tracker=tracker.address))
        return started

    return tracker.address, start


def fetch_all(daemons: list[Daemon], url: str, out: Path) -> list[Fetch]:
    out.mkdir(exist_ok=True)
    return [Fetch(d, url, out / f"m{i}.bin").start() for i, d in enumerate(daemons)]


def test_machines_fetching_a_new_file_at_once_pay_the_origin_about_one_copy(
    origin: Origin, machines: tuple[str, Machines], tmp_path: Path
) -> None:
    content = random_bytes(SIZE, 1)
    # Slow enough that all four join while the origin is still sending.
    origin.add("/release.tar", content, delay_per_mib=0.3)
    _, start = machines
    fleet = start(4)
    fetches = fetch_all(fleet, origin.url("/release.tar"), tmp_path / "out")
    summaries = [f.result() for f in fetches]
    for fetch in fetches:
        assert fetch.output.read_bytes() == content
    assert origin.bytes_served("/release.tar") <= 1.1 * SIZE
    from_peers = sum(s.bytes_from_peers for s in summaries)
    assert from_peers >= 2.9 * SIZE
    assert all(s.sha256 == hashlib.sha256(content).hexdigest() for s in summaries)


def test_a_machine_killed_mid_swarm_costs_the_others_only_a_retry(
    origin: Origin, machines: tuple[str, Machines], tmp_path: Path
) -> None:
    content = random_bytes(SIZE, 2)
    origin.add("/release.tar", content, delay_per_mib=0.3)
    _, start = machines
    fleet = start(4)
    fetches = fetch_all(fleet, origin.url("/release.tar"), tmp_path / "out")
    victim = fetches[0]
    eventually(lambda: victim.done_bytes >= 3 * MiB, what="the first machine to verify some pieces")
    victim.cancelled.set()
    victim.daemon.stop(grace=0.0)
    victim.join()
    for fetch in fetches[1:]:
        fetch.result()
        assert fetch.output.read_bytes() == content


def test_a_late_joiner_gets_pieces_from_machines_still_downloading(
    origin: Origin, machines: tuple[str, Machines], tmp_path: Path
) -> None:
    content = random_bytes(SIZE, 3)
    origin.add("/release.tar", content, delay_per_mib=0.5)
    _, start = machines
    first, second, late = start(3)
    early = fetch_all([first, second], origin.url("/release.tar"), tmp_path / "early")
    eventually(
        lambda: min(f.done_bytes for f in early) >= 6 * MiB, what="the first two to verify some pieces"
    )
    assert all(f.summary is None for f in early)
    joiner = Fetch(late, origin.url("/release.tar"), tmp_path / "late.bin").start()
    summary = joiner.result()
    for fetch in early:
        fetch.result()
    assert (tmp_path / "late.bin").read_bytes() == content
    assert summary.bytes_from_peers >= 6 * MiB
    assert origin.bytes_served("/release.tar") <= 1.1 * SIZE


def test_two_files_swarming_at_once_do_not_mix(
    origin: Origin, machines: tuple[str, Machines], tmp_path: Path
) -> None:
    one, two = random_bytes(16 * MiB, 4), random_bytes(16 * MiB, 5)
    origin.add("/one.iso", one, delay_per_mib=0.2)
    origin.add("/two.iso", two, delay_per_mib=0.2)
    _, start = machines
    fleet = start(3)
    fetches = fetch_all(fleet, origin.url("/one.iso"), tmp_path / "one")
    fetches += fetch_all(fleet, origin.url("/two.iso"), tmp_path / "two")
    for fetch in fetches:
        fetch.result()
    for fetch in fetches[:3]:
        assert fetch.output.read_bytes() == one
    for fetch in fetches[3:]:
        assert fetch.output.read_bytes() == two
    assert origin.bytes_served("/one.iso") <= 1.1 * len(one)
    assert origin.bytes_served("/two.iso") <= 1.1 * len(two)


def test_a_machine_serving_corrupted_pieces_is_routed_around(
    origin: Origin, machines: tuple[str, Machines], tmp_path: Path, clients: Any
) -> None:
    content = random_bytes(SIZE, 6)
    origin.add("/release.tar", content, delay_per_mib=0.5)
    tracker, start = machines
    liar, honest, other = start(3)
    url = origin.url("/release.tar")
    (tmp_path / "liar").mkdir()
    bad = Fetch(liar, url, tmp_path / "liar" / "x.bin").start()
    with HttpFetcher() as fetcher:
        validator = fetcher.probe(url).validator
    assert validator is not None
    swarm_id = swarm_id_for(SourceRef(url, validator))

    def verified_pieces() -> int:
        blob = liar.blobs.open_blob(swarm_id)
        if blob is None or blob.pieces is None:
            return 0
        blob.file.close()
        return bin(int.from_bytes(blob.pieces.bitmap, "big")).count("1")

    eventually(lambda: verified_pieces() >= 3, what="the liar to verify some pieces")
    # Its disk rots the pieces it verified: what it serves from now on is wrong.
    part = tmp_path / "liar" / "x.bin.part"
    with open(part, "r+b") as f:
        f.write(b"\0" * (3 * MiB))
    good = fetch_all([honest, other], url, tmp_path / "good")
    summaries = [fetch.result() for fetch in good]
    for fetch in good:
        assert fetch.output.read_bytes() == content
    assert sum(s.pieces_refetched for s in summaries) >= 1
    reports = {a.agent.agent_id: a.bad_source_reports for a in clients.admin_api(tracker).agents()}
    assert reports[liar.agent_id] >= 1
    assert reports[honest.agent_id] == reports[other.agent_id] == 0
    bad.cancelled.set()
    bad.join()
