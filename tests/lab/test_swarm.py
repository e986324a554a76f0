"""lanpeer on the lab: machines with capped links fetch a file from the machine that already
holds it, and the origin serves about one copy in all."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scripts.lablib import Lab
from scripts.lablib.services import Services
from tests.lab.conftest import lab_skip_reason

REASON = lab_skip_reason()
pytestmark = [pytest.mark.skipif(REASON is not None, reason=REASON or "")]

MiB = 1024 * 1024
SIZE = 16 * MiB
# Scaled so that each transfer takes a few seconds: 16 MiB is 134 Mbit, 3.5 s from the
# origin, 1.4 s for two copies through host1's upload. (With a LAN slower than about 100
# Mbit/s, pieces from the one holder take over the planner's 2 s "slow" threshold and
# the origin is sent duplicates: the origin then serves up to 1.3 copies; see the get
# benchmark's scenario 3.)
LAN = "200mbit"
ORIGIN_RATE = "40mbit"
GET_TIMEOUT = 60.0


def origin_bytes(stats: Path, path: str) -> int:
    counts: dict[str, Any] = json.loads(stats.read_text())
    return int(counts["bytes"].get(path, 0))


def serve_at_origin(s: Services, workdir: Path, name: str, content: bytes) -> tuple[str, Path]:
    """Puts `content` on the lab's origin as /name; its URL, and the origin's counts file."""
    www = workdir / "www"
    www.mkdir()
    (www / name).write_bytes(content)
    base, stats = s.start_python_origin(www)
    return f"{base}/{name}", stats


def test_machines_fetch_from_the_first_one_and_the_origin_serves_about_one_copy(
    make_lab: Callable[..., Lab], services: Callable[[Lab], Services], workdir: Path
) -> None:
    lab = make_lab(3, lan=LAN, origin_rate=ORIGIN_RATE)
    s = services(lab)
    content = os.urandom(SIZE)
    digest = hashlib.sha256(content).hexdigest()
    url, stats = serve_at_origin(s, workdir, "dataset.tar", content)
    tracker = s.start_tracker()

    # host1 fetches from the origin through its daemon, which then serves the file and
    # tells the tracker which digest the URL is.
    share = workdir / "share1"
    share.mkdir()
    first = s.start_agent("host1", share=share, state_dir=workdir / "h1", tracker=tracker)
    done = s.run(
        "host1",
        s.get_argv("--json", "--state-dir", str(first.state_dir), url, "-o", str(share / "dataset.tar")),
        timeout=GET_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["bytes_from_origin"] == SIZE
    assert (share / "dataset.tar").read_bytes() == content
    s.wait_for_holders(tracker, url, 1)
    first_copy = origin_bytes(stats, "/dataset.tar")
    assert first_copy == SIZE

    # host2 and host3 fetch it at once.
    started = time.monotonic()
    gets = {}
    for host in ("host2", "host3"):
        out = workdir / host / "dataset.tar"
        out.parent.mkdir()
        argv = s.get_argv("--json", "--no-daemon", "--tracker", tracker, url, "-o", str(out))
        gets[host] = (s.start(host, f"get-{host}", argv, stdout=subprocess.PIPE), out)
    summaries = {}
    for host, (proc, out) in gets.items():
        stdout, _ = proc.process.communicate(timeout=GET_TIMEOUT)
        assert proc.process.returncode == 0, proc.tail()
        summaries[host] = json.loads(stdout)
        assert out.read_bytes() == content
    elapsed = time.monotonic() - started

    for host, summary in summaries.items():
        assert summary["sha256"] == digest, host
        assert summary["bytes_from_peers"] > 0, (host, summary)
        assert summary["bytes_from_peers"] + summary["bytes_from_origin"] >= SIZE
    served = origin_bytes(stats, "/dataset.tar")
    from_origin = sum(summary["bytes_from_origin"] for summary in summaries.values())
    # The origin gave host1 its copy and the other two only the odd slow piece at most.
    assert served >= first_copy + from_origin
    assert served <= 1.25 * SIZE, (served, summaries)
    # Two copies through host1's upload take 1.4 s at best; from the origin alone (40
    # Mbit/s) they would take 6.7 s.
    assert elapsed < 6.7, elapsed


def test_a_download_adds_up_the_uploads_of_the_holders(
    make_lab: Callable[..., Lab], services: Callable[[Lab], Services], workdir: Path
) -> None:
    # Two holders whose uploads are capped at 40 Mbit/s each; the downloader's link is faster.
    lab = make_lab(3, lan="200mbit", rates={"host1": ("40mbit", "200mbit"), "host2": ("40mbit", "200mbit")})
    s = services(lab)
    content = os.urandom(SIZE)
    digest = hashlib.sha256(content).hexdigest()
    share = workdir / "share"
    share.mkdir()
    (share / "data.bin").write_bytes(content)
    tracker = s.start_tracker()
    holders = [
        s.start_agent(host, share=share, state_dir=workdir / host, tracker=tracker)
        for host in ("host1", "host2")
    ]
    s.wait_for_holders(tracker, f"sha256:{digest}", 2)

    out = workdir / "out.bin"
    started = time.monotonic()
    done = s.run(
        "host3",
        s.get_argv("--json", "--no-daemon", "--tracker", tracker, f"sha256:{digest}", "-o", str(out)),
        timeout=GET_TIMEOUT,
    )
    wall = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert out.read_bytes() == content
    # End-game duplicates of the last pieces count too, whichever copy landed first.
    assert SIZE <= summary["bytes_from_peers"] <= 1.25 * SIZE
    assert summary["bytes_from_origin"] == 0
    ids = {status["agent_id"] for a in holders if (status := s.agent_status(a)) is not None}
    assert set(summary["bytes_by_source"]) == ids  # Both holders gave part of it.
    # Together they give 80 Mbit/s (76.5 of it TCP payload): 1.75 s for 16 MiB, where one
    # alone would take 3.5 s. With only 16 pieces on 8 connections the start and the
    # end-game weigh much (55 to 62 Mbit/s is measured), so the test asks for clearly
    # more than one holder's cap; scripts/bench/get measures the rate on a large file.
    rate = SIZE * 8 / summary["seconds"] / 1e6
    assert rate >= 1.25 * 40, (rate, summary)
    assert wall < 4.0, wall


def test_four_machines_fetching_a_new_file_at_once_pay_the_origin_about_one_copy(
    make_lab: Callable[..., Lab], services: Callable[[Lab], Services], workdir: Path
) -> None:
    lab = make_lab(4, lan=LAN, origin_rate=ORIGIN_RATE)
    s = services(lab)
    content = os.urandom(SIZE)
    digest = hashlib.sha256(content).hexdigest()
    url, stats = serve_at_origin(s, workdir, "release.tar", content)
    tracker = s.start_tracker()
    hosts = ("host1", "host2", "host3", "host4")
    agents = {}
    for host in hosts:
        share = workdir / f"share-{host}"
        share.mkdir()
        agents[host] = s.start_agent(host, share=share, state_dir=workdir / host, tracker=tracker)

    started = time.monotonic()
    gets = {}
    for host in hosts:
        out = workdir / f"out-{host}" / "release.tar"
        out.parent.mkdir()
        argv = s.get_argv("--json", "--state-dir", str(agents[host].state_dir), url, "-o", str(out))
        gets[host] = (s.start(host, f"get-{host}", argv, stdout=subprocess.PIPE), out)
    summaries = {}
    for host, (proc, out) in gets.items():
        stdout, _ = proc.process.communicate(timeout=GET_TIMEOUT)
        assert proc.process.returncode == 0, proc.tail()
        summaries[host] = json.loads(stdout)
        assert out.read_bytes() == content
    elapsed = time.monotonic() - started

    assert all(summary["sha256"] == digest for summary in summaries.values())
    served = origin_bytes(stats, "/release.tar")
    assert served <= 1.1 * SIZE, (served, summaries)
    assert sum(summary["bytes_from_peers"] for summary in summaries.values()) >= 2.9 * SIZE
    # One copy through the origin's 40 Mbit/s takes 3.5 s; four would take 14 s.
    assert elapsed < 7.0, elapsed
