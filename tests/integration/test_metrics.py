"""Metrics on loopback: the agents' /metrics and the tracker's endpoint parse as Prometheus
text, and their counters move by the right amounts when files flow; the tracker sums the
agents' reports into the cluster's origin offload, which `lanpeer-tracker stats` shows."""

from __future__ import annotations

import hashlib
import http.client
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.daemon import Daemon
from agent.job import GetRequest, Summary
from lanpeer.v1 import tracker_pb2
from tests.integration.conftest import Tracker, Trackers
from tests.integration.helpers import eventually
from tests.integration.origin import MiB, Origin
from tests.integration.test_admin_cli import admin_cli, cli, json_of
from tests.integration.test_swarm import Fetch, random_bytes
from tracker.errors import TrackerError
from tracker.model import MAX_UINT64, DigestQuery, Fetched
from tracker.server import TrackerServer

SIZE = 6 * MiB
TOKEN = "s3cret-cluster-token"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Page = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def request(address: str, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> Reply:
    """One HTTP request to HOST:PORT (or http://HOST:PORT)."""
    host, port = address.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, dict(response.getheaders()), response.read())
    finally:
        conn.close()


def scrape(address: str) -> Page:
    response = request(address, "/metrics")
    assert response.status == 200, response.body
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.body.decode())
        for s in family.samples
    }


def value(page: Page, name: str, **labels: str) -> float:
    return page[(name, tuple(sorted(labels.items())))]


def moved(before: Page, after: Page, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def locate_calls(page: Page) -> float:
    return sum(v for (name, _), v in page.items() if name == "lanpeer_tracker_locate_requests_total")


@pytest.fixture
def cluster(trackers: Trackers) -> Tracker:
    tracker = trackers.start(heartbeat_interval=0.2, metrics_listen="127.0.0.1:0")
    assert tracker.metrics_address is not None
    return tracker


@pytest.fixture
def machine(cluster: Tracker, daemons: Callable[..., Daemon], tmp_path: Path) -> Callable[..., Daemon]:
    """Starts a daemon with a share of its own (holding `files`) on the cluster's tracker."""

    def start(files: dict[str, bytes] | None = None) -> Daemon:
        share = tmp_path / f"share{len(list(tmp_path.glob('share*')))}"
        share.mkdir()
        for name, content in (files or {}).items():
            (share / name).write_bytes(content)
        return daemons(shares=(share,), tracker=cluster.address)

    return start


def fetch(daemon: Daemon, request: GetRequest) -> Summary:
    assert request.output is not None
    request.output.parent.mkdir(parents=True, exist_ok=True)
    return daemon.fetch(request, lambda p: None, threading.Event())


def assert_stats_show(cluster: Tracker, total: Fetched) -> None:
    """`lanpeer-tracker stats` shows the offload, and its JSON has the figures."""
    assert total.offload is not None
    shown = admin_cli(cluster, "stats")
    assert shown.returncode == 0, shown.stderr
    (line,) = [line for line in shown.stdout.splitlines() if line.startswith("origin offload")]
    assert f"{total.offload * 100:.1f} % (" in line
    assert "fetched came from peers" in line
    stats = json_of(admin_cli(cluster, "stats", "--json"))
    assert stats["bytes_from_peers"] == total.from_peers
    assert stats["bytes_from_origin"] == total.from_origin
    assert stats["origin_offload"] == round(total.offload, 4)


def test_downloads_move_the_agents_and_the_trackers_counters(
    cluster: Tracker, machine: Callable[..., Daemon], origin: Origin, tmp_path: Path, clients: Any
) -> None:
    content = random_bytes(SIZE, 1)
    # Slow enough for a scrape to catch the first download under way.
    origin.add("/data.bin", content, delay_per_mib=1.0)
    url = origin.url("/data.bin")
    first, second = machine(), machine()
    assert cluster.metrics_address is not None
    tracker_before = scrape(cluster.metrics_address)
    first_before, second_before = scrape(first.base_url), scrape(second.base_url)

    # From the origin alone: the figures move as the pieces arrive, not only at the end.
    running = Fetch(first, url, tmp_path / "one" / "data.bin")
    (tmp_path / "one").mkdir()
    running.start()

    def under_way() -> bool:
        page = scrape(first.base_url)
        return (
            0 < value(page, "lanpeer_agent_fetched_bytes_total", source="origin") < SIZE
            and value(page, "lanpeer_agent_downloads_active") == 1
        )

    eventually(under_way, what="a scrape to see the download under way")
    one = running.result()
    first_after = scrape(first.base_url)
    assert moved(first_before, first_after, "lanpeer_agent_fetched_bytes_total", source="origin") == (
        origin.bytes_served("/data.bin")
    )
    assert one.bytes_from_origin == origin.bytes_served("/data.bin") >= SIZE
    assert value(first_after, "lanpeer_agent_fetched_bytes_total", source="peer") == 0
    assert value(first_after, "lanpeer_agent_downloads_active") == 0
    eventually(lambda: first.inventory.shared() == (1, SIZE), what="the fetched file to be shared")
    page = scrape(first.base_url)
    assert value(page, "lanpeer_agent_shared_files") == 1
    assert value(page, "lanpeer_agent_shared_bytes") == SIZE

    # From the first machine: what it served is what the second got from peers.
    origin_before = origin.bytes_served("/data.bin")
    two = fetch(second, GetRequest(source=url, output=tmp_path / "two" / "data.bin"))
    assert (tmp_path / "two" / "data.bin").read_bytes() == content
    first_end, second_end = scrape(first.base_url), scrape(second.base_url)
    from_peers = moved(second_before, second_end, "lanpeer_agent_fetched_bytes_total", source="peer")
    from_origin = moved(second_before, second_end, "lanpeer_agent_fetched_bytes_total", source="origin")
    assert from_peers == two.bytes_from_peers > 0
    assert from_origin == two.bytes_from_origin == origin.bytes_served("/data.bin") - origin_before
    assert moved(first_before, first_end, "lanpeer_agent_served_bytes_total") == from_peers
    assert value(second_end, "lanpeer_agent_served_bytes_total") == 0
    assert value(second_end, "lanpeer_agent_piece_hash_failures_total", source="peer") == 0

    # The tracker: both gets asked where the file is, and the heartbeats bring the offload.
    tracker_after = scrape(cluster.metrics_address)
    assert locate_calls(tracker_after) - locate_calls(tracker_before) >= 2
    assert value(tracker_after, "lanpeer_tracker_locate_seconds_count") == locate_calls(tracker_after)
    assert moved(tracker_before, tracker_after, "lanpeer_tracker_announces_total") >= 2
    assert value(tracker_after, "lanpeer_tracker_agents", state="live") == 2
    total = Fetched(int(from_peers), int(one.bytes_from_origin + from_origin))
    admin = clients.admin_api(cluster)
    eventually(lambda: admin.stats().fetched == total, what="the heartbeats to bring the figures")
    tracker_end = scrape(cluster.metrics_address)
    assert value(tracker_end, "lanpeer_tracker_fetched_bytes_total", source="peer") == total.from_peers
    assert value(tracker_end, "lanpeer_tracker_fetched_bytes_total", source="origin") == total.from_origin
    assert value(tracker_end, "lanpeer_tracker_origin_offload_ratio") == pytest.approx(total.offload)

    assert_stats_show(cluster, total)


def test_a_corrupt_piece_from_a_peer_is_counted_as_a_hash_failure(
    cluster: Tracker, machine: Callable[..., Daemon], origin: Origin, tmp_path: Path, clients: Any
) -> None:
    content = random_bytes(SIZE, 2)
    digest = hashlib.sha256(content).hexdigest()
    origin.add("/data.bin", content)
    liar = machine({"data.bin": content})
    client = clients.agent_api(cluster)

    def located() -> bool:
        matches = client.locate(DigestQuery(digest))
        return bool(matches and matches[0].manifest is not None and matches[0].holders)

    eventually(located, what="the liar's copy and its manifest to reach the tracker")
    # Its disk rots piece 1 behind the inventory's back: same size, same mtime.
    path = next(iter(liar.inventory.roots)) / "data.bin"
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(MiB)
        f.write(b"\0" * 4096)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    victim = machine()
    assert cluster.metrics_address is not None
    tracker_before = scrape(cluster.metrics_address)
    liar_before, victim_before = scrape(liar.base_url), scrape(victim.base_url)

    summary = fetch(
        victim, GetRequest(source=origin.url("/data.bin"), sha256=digest, output=tmp_path / "v.bin")
    )

    assert (tmp_path / "v.bin").read_bytes() == content
    assert summary.pieces_refetched == 1
    victim_after, liar_after = scrape(victim.base_url), scrape(liar.base_url)
    assert moved(victim_before, victim_after, "lanpeer_agent_piece_hash_failures_total", source="peer") == 1
    assert value(victim_after, "lanpeer_agent_piece_hash_failures_total", source="origin") == 0
    from_peers = moved(victim_before, victim_after, "lanpeer_agent_fetched_bytes_total", source="peer")
    from_origin = moved(victim_before, victim_after, "lanpeer_agent_fetched_bytes_total", source="origin")
    assert from_peers == summary.bytes_from_peers
    assert from_origin == summary.bytes_from_origin == origin.bytes_served("/data.bin") > 0
    # The liar sent the bad piece too; it counts as served, not as fetched.
    assert moved(liar_before, liar_after, "lanpeer_agent_served_bytes_total") == from_peers + MiB
    tracker_after = scrape(cluster.metrics_address)
    assert moved(tracker_before, tracker_after, "lanpeer_tracker_bad_source_reports_total") == 1


def test_metrics_need_no_token_and_show_no_file(
    daemons: Callable[..., Daemon], share: Path, origin: Origin
) -> None:
    content = b"secret plans" * 1000
    (share / "plans.txt").write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    daemon = daemons(shares=(share,), token=TOKEN)
    eventually(lambda: daemon.inventory.shared()[0] == 1, what="the file to be hashed")

    assert request(daemon.base_url, f"/v1/blobs/{digest}").status == 401
    page = request(daemon.base_url, "/metrics")
    assert page.status == 200
    assert page.headers["Content-Type"] == METRICS_TYPE
    text = page.body.decode()
    assert digest not in text and "plans" not in text and TOKEN not in text
    assert value(scrape(daemon.base_url), "lanpeer_agent_shared_bytes") == len(content)
    head = request(daemon.base_url, "/metrics", "HEAD")
    assert head.status == 200 and head.body == b""
    assert int(head.headers["Content-Length"]) > 0
    assert request(daemon.base_url, "/metrics", "POST").status == 405
    # Scrapes are not uploads.
    page_after = scrape(daemon.base_url)
    assert value(page_after, "lanpeer_agent_served_bytes_total") == 0
    assert value(page_after, "lanpeer_agent_uploads_active") == 0
    assert value(page_after, "lanpeer_agent_tracker_connected") == 0


def test_a_hostile_heartbeat_is_refused_and_changes_no_total(cluster: Tracker, clients: Any) -> None:
    clients.agent(cluster, "alpha").join()
    raw = clients.raw(cluster)
    with pytest.raises(grpc.RpcError) as refused:
        raw.tracker.Heartbeat(
            tracker_pb2.HeartbeatRequest(agent_id="alpha", bytes_from_peers=MAX_UINT64, bytes_from_origin=1)
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bytes_from_peers" in refused.value.details()
    raw.tracker.Heartbeat(
        tracker_pb2.HeartbeatRequest(agent_id="alpha", bytes_from_peers=5, bytes_from_origin=15)
    )
    assert clients.admin_api(cluster).stats().fetched == Fetched(5, 15)
    assert cluster.metrics_address is not None
    assert value(scrape(cluster.metrics_address), "lanpeer_tracker_origin_offload_ratio") == 0.25


def test_a_busy_metrics_port_is_a_one_line_error(trackers: Trackers, busy_port: int, tmp_path: Path) -> None:
    with pytest.raises(
        TrackerError, match=f"cannot serve metrics on 127.0.0.1:{busy_port}: the address is in use"
    ):
        TrackerServer(trackers.config(metrics_listen=f"127.0.0.1:{busy_port}"))
    # The tracker's own port was given back: another tracker on the database starts.
    trackers.start()

    done = cli(
        "run",
        "--no-mdns",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        f"127.0.0.1:{busy_port}",
        "--db",
        str(tmp_path / "t.db"),
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("lanpeer-tracker:")]
    assert errors == [
        f"lanpeer-tracker: cannot serve metrics on 127.0.0.1:{busy_port}: the address is in use"
    ]
    assert "Traceback" not in done.stderr


def test_a_tracker_serves_no_metrics_unless_asked(tracker: Tracker) -> None:
    assert tracker.metrics_address is None
