"""Metrics without sockets: the cluster's offload tally, the bounds on what agents report,
and the Prometheus text both collectors write."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.metrics import AgentFigures, AgentMetrics
from agent.planner import SourceKind
from agent.traffic import Traffic, TrafficTotals
from lanpeer.v1 import tracker_pb2
from tests.unit.helpers import FakeClock, agent
from tracker import wire
from tracker.cli import offload_line
from tracker.errors import InvalidArgument
from tracker.index import Index
from tracker.metrics import TrackerMetrics
from tracker.model import MAX_REPORTED_FETCH, MAX_UINT64, Fetched, Load, Stats
from tracker.offload import OffloadTally
from tracker.policy import LeastLoaded
from tracker.registry import Registry
from tracker.store import Store

GiB = 1024**3


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


# ----------------------------------------------------------------------------- the tally


def test_the_first_report_of_an_agent_counts_whole_and_later_ones_their_increase() -> None:
    tally = OffloadTally()
    assert tally.report("a", Fetched(100, 40)) == Fetched(100, 40)
    assert tally.report("a", Fetched(150, 40)) == Fetched(50, 0)
    assert tally.report("a", Fetched(150, 40)) == Fetched(0, 0)
    assert tally.totals == Fetched(150, 40)


def test_agents_are_tallied_apart_and_summed() -> None:
    tally = OffloadTally()
    tally.report("a", Fetched(100, 0))
    tally.report("b", Fetched(0, 30))
    tally.report("a", Fetched(110, 0))
    assert tally.totals == Fetched(110, 30)


@pytest.mark.parametrize("after", [Fetched(5, 50), Fetched(500, 1), Fetched(0, 0)])
def test_a_figure_below_the_last_one_is_a_restart_and_counts_whole(after: Fetched) -> None:
    tally = OffloadTally()
    tally.report("a", Fetched(100, 20))
    assert tally.report("a", after) == after
    assert tally.totals == Fetched(100 + after.from_peers, 20 + after.from_origin)
    tally.report("a", Fetched(after.from_peers + 1, after.from_origin))
    assert tally.totals == Fetched(100 + after.from_peers + 1, 20 + after.from_origin)


def test_an_agent_that_left_counts_whole_when_it_reports_again() -> None:
    tally = OffloadTally()
    tally.report("a", Fetched(100, 0))
    tally.forget("a")
    tally.forget("never-seen")
    assert tally.report("a", Fetched(30, 0)) == Fetched(30, 0)
    assert tally.totals == Fetched(130, 0)


def test_hostile_jumps_saturate_the_totals_instead_of_overflowing_uint64() -> None:
    tally = OffloadTally()
    for agent_id in ("a", "b", "c"):
        for _ in range(3):
            # Up to the largest value allowed, then back to zero: a "restart" each time.
            tally.report(agent_id, Fetched(MAX_REPORTED_FETCH, MAX_REPORTED_FETCH))
            tally.report(agent_id, Fetched(0, 0))
    assert tally.totals == Fetched(9 * MAX_REPORTED_FETCH, 9 * MAX_REPORTED_FETCH)
    huge = OffloadTally()
    for n in range(2**11 + 1):
        huge.report(f"agent{n}", Fetched(MAX_REPORTED_FETCH, 0))
    assert huge.totals == Fetched(MAX_UINT64, 0)
    # The saturated totals still encode as the admin API's uint64 fields.
    assert wire.stats_from_pb(wire.stats_to_pb(_stats(huge.totals))).fetched == huge.totals


def test_the_registry_counts_only_registered_agents_and_forgets_those_that_leave(tmp_path: Path) -> None:
    index = Index(heartbeat_interval=10.0, policy=LeastLoaded(), clock=FakeClock())
    registry = Registry(index, Store(tmp_path / "t.db"))
    try:
        registry.heartbeat("ghost", 0, Load(), Fetched(10**9, 10**9))
        assert registry.stats().fetched == Fetched()
        registry.register(agent("a"))
        registry.heartbeat("a", 0, Load(), Fetched(300, 100))
        registry.heartbeat("a", 0, Load(), Fetched(400, 100))
        registry.heartbeat("a", 0, Load())
        assert registry.stats().fetched == Fetched(400, 100)
        registry.leave("a")
        registry.register(agent("a"))
        registry.heartbeat("a", 0, Load(), Fetched(50, 0))
        assert registry.stats().fetched == Fetched(450, 100)
    finally:
        registry.close()


# ----------------------------------------------------------------------------- the wire


@pytest.mark.parametrize(
    ("peers", "origin"), [(MAX_REPORTED_FETCH + 1, 0), (0, MAX_REPORTED_FETCH + 1), (MAX_UINT64, MAX_UINT64)]
)
def test_a_heartbeat_claiming_more_than_an_agent_can_fetch_is_refused(peers: int, origin: int) -> None:
    pb = tracker_pb2.HeartbeatRequest(agent_id="a", bytes_from_peers=peers, bytes_from_origin=origin)
    with pytest.raises(InvalidArgument, match="bytes_from_"):
        wire.fetched_from_pb(pb)


def test_heartbeat_figures_decode_up_to_the_bound() -> None:
    pb = tracker_pb2.HeartbeatRequest(agent_id="a", bytes_from_peers=MAX_REPORTED_FETCH, bytes_from_origin=7)
    assert wire.fetched_from_pb(pb) == Fetched(MAX_REPORTED_FETCH, 7)
    assert wire.fetched_from_pb(tracker_pb2.HeartbeatRequest(agent_id="a")) == Fetched()


def test_fetched_rejects_negative_and_oversized_values() -> None:
    with pytest.raises(InvalidArgument):
        Fetched(-1, 0)
    with pytest.raises(InvalidArgument):
        Fetched(0, MAX_UINT64 + 1)


# ----------------------------------------------------------------------------- the stats line


def test_the_offload_line() -> None:
    assert offload_line(Fetched()) == "no downloads reported yet"
    line = offload_line(Fetched(int(11.2 * GiB), int(1.6 * GiB)))
    assert line == "87.5 % (11.2 GiB of 12.8 GiB fetched came from peers)"
    assert offload_line(Fetched(0, 5)).startswith("0.0 % (0 B of 5 B")
    assert Fetched(3, 1).offload == 0.75
    assert Fetched().offload is None


# ----------------------------------------------------------------------------- the pages


def _stats(fetched: Fetched | None = None) -> Stats:
    return Stats(
        live_agents=3,
        dead_agents=1,
        banned_agents=2,
        distinct_files=5,
        holdings=9,
        bytes_held=12345,
        manifests=4,
        sources=2,
        bad_source_reports=7,
        swarms=1,
        swarm_members=3,
        fetched=fetched or Fetched(),
    )


def test_the_tracker_page_reads_the_cluster_at_scrape_time() -> None:
    current = [_stats()]
    metrics = TrackerMetrics(lambda: current[0])
    page = samples(_render(metrics))
    assert page[("lanpeer_tracker_agents", (("state", "live"),))] == 3
    assert page[("lanpeer_tracker_agents", (("state", "dead"),))] == 1
    assert page[("lanpeer_tracker_agents", (("state", "banned"),))] == 2
    assert page[("lanpeer_tracker_files", ())] == 5
    assert page[("lanpeer_tracker_holdings", ())] == 9
    assert page[("lanpeer_tracker_held_bytes", ())] == 12345
    assert page[("lanpeer_tracker_swarm_members", ())] == 3
    assert page[("lanpeer_tracker_fetched_bytes_total", (("source", "peer"),))] == 0
    assert not any(name == "lanpeer_tracker_origin_offload_ratio" for name, _ in page), (
        "no ratio before any byte was reported"
    )
    current[0] = _stats(Fetched(300, 100))
    page = samples(_render(metrics))
    assert page[("lanpeer_tracker_fetched_bytes_total", (("source", "peer"),))] == 300
    assert page[("lanpeer_tracker_fetched_bytes_total", (("source", "origin"),))] == 100
    assert page[("lanpeer_tracker_origin_offload_ratio", ())] == 0.75


def test_locate_calls_are_counted_by_outcome_and_timed() -> None:
    clock = FakeClock()
    metrics = TrackerMetrics(_stats, timer=clock)
    for seconds, matches in ((0.0002, 1), (0.003, 0), (0.2, None), (0.0002, 2)):
        started = metrics.locate_started()
        clock.advance(seconds)
        metrics.locate_done(started, matches)
    metrics.announced()
    metrics.bad_source_reported()
    page = samples(_render(metrics))
    assert page[("lanpeer_tracker_locate_requests_total", (("outcome", "found"),))] == 2
    assert page[("lanpeer_tracker_locate_requests_total", (("outcome", "not_found"),))] == 1
    assert page[("lanpeer_tracker_locate_requests_total", (("outcome", "error"),))] == 1
    assert page[("lanpeer_tracker_locate_seconds_count", ())] == 4
    assert page[("lanpeer_tracker_locate_seconds_bucket", (("le", "0.00025"),))] == 2
    assert page[("lanpeer_tracker_locate_seconds_bucket", (("le", "0.005"),))] == 3
    assert page[("lanpeer_tracker_locate_seconds_bucket", (("le", "+Inf"),))] == 4
    assert page[("lanpeer_tracker_locate_seconds_sum", ())] == pytest.approx(0.2034)
    assert page[("lanpeer_tracker_announces_total", ())] == 1
    assert page[("lanpeer_tracker_bad_source_reports_total", ())] == 1


def test_two_trackers_in_one_process_keep_their_own_figures() -> None:
    first, second = TrackerMetrics(_stats), TrackerMetrics(_stats)
    first.announced()
    assert samples(_render(first))[("lanpeer_tracker_announces_total", ())] == 1
    assert samples(_render(second))[("lanpeer_tracker_announces_total", ())] == 0


def _render(metrics: TrackerMetrics) -> bytes:
    return generate_latest(metrics.registry)


def test_traffic_counts_bytes_and_hash_failures_by_kind_of_source() -> None:
    traffic = Traffic()
    traffic.fetched(SourceKind.PEER, 100)
    traffic.fetched(SourceKind.ORIGIN, 30)
    traffic.fetched(SourceKind.PEER, 5)
    traffic.hash_failed(SourceKind.PEER)
    assert traffic.totals() == TrafficTotals(105, 30, 1, 0)
    assert traffic.totals().fetched == Fetched(105, 30)


def test_the_agent_page_shows_each_figure_under_its_name() -> None:
    figures = AgentFigures(
        served_bytes=1000,
        active_uploads=2,
        max_uploads=16,
        uploads_refused=3,
        active_downloads=1,
        traffic=TrafficTotals(700, 300, 2, 1),
        shared_files=4,
        shared_bytes=4096,
        hashing_backlog_files=5,
        hashing_backlog_bytes=5000,
        hashed_files=6,
        hashed_bytes=6000,
        tracker_connected=True,
    )
    page = samples(AgentMetrics(lambda: figures).render())
    assert page == {
        ("lanpeer_agent_served_bytes_total", ()): 1000,
        ("lanpeer_agent_uploads_refused_total", ()): 3,
        ("lanpeer_agent_hashed_files_total", ()): 6,
        ("lanpeer_agent_hashed_bytes_total", ()): 6000,
        ("lanpeer_agent_fetched_bytes_total", (("source", "peer"),)): 700,
        ("lanpeer_agent_fetched_bytes_total", (("source", "origin"),)): 300,
        ("lanpeer_agent_piece_hash_failures_total", (("source", "peer"),)): 2,
        ("lanpeer_agent_piece_hash_failures_total", (("source", "origin"),)): 1,
        ("lanpeer_agent_uploads_active", ()): 2,
        ("lanpeer_agent_upload_slots", ()): 16,
        ("lanpeer_agent_downloads_active", ()): 1,
        ("lanpeer_agent_shared_files", ()): 4,
        ("lanpeer_agent_shared_bytes", ()): 4096,
        ("lanpeer_agent_hashing_backlog_files", ()): 5,
        ("lanpeer_agent_hashing_backlog_bytes", ()): 5000,
        ("lanpeer_agent_tracker_connected", ()): 1,
    }
