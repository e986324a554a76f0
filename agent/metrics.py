"""The agent's Prometheus metrics, served by the range server at GET /metrics.

Nothing is counted here: at each scrape a collector reads the figures the daemon's parts
already keep (the range server, the inventory, the downloads' traffic), so serving files
pays nothing for metrics between scrapes. Each daemon has a registry of its own, so that
daemons in one process (as in the tests) never mix their figures. The figures are
counts only: no file name, digest, URL or token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.traffic import TrafficTotals
from tracker.metrics import by_label


@dataclass(frozen=True, slots=True)
class AgentFigures:
    """One reading of what the daemon's parts count."""

    served_bytes: int
    active_uploads: int
    max_uploads: int
    uploads_refused: int
    active_downloads: int
    traffic: TrafficTotals
    # Distinct contents served, and their bytes.
    shared_files: int
    shared_bytes: int
    hashing_backlog_files: int
    hashing_backlog_bytes: int
    hashed_files: int
    hashed_bytes: int
    tracker_connected: bool


class AgentCollector(Collector):
    def __init__(self, figures: Callable[[], AgentFigures]) -> None:
        self._figures = figures

    def collect(self) -> Iterator[Metric]:
        f = self._figures()
        for name, text, value in (
            ("lanpeer_agent_served_bytes", "File bytes sent to peers since the start.", f.served_bytes),
            (
                "lanpeer_agent_uploads_refused",
                "Requests for file bytes turned away with 503 because every upload slot was taken.",
                f.uploads_refused,
            ),
            ("lanpeer_agent_hashed_files", "Files hashed since the agent started.", f.hashed_files),
            ("lanpeer_agent_hashed_bytes", "Bytes hashed since the agent started.", f.hashed_bytes),
        ):
            yield CounterMetricFamily(name, text, value=value)
        yield by_label(
            CounterMetricFamily,
            "lanpeer_agent_fetched_bytes",
            "Bytes of verified pieces the agent's downloads fetched, by source: peer or origin.",
            "source",
            {"peer": f.traffic.bytes_from_peers, "origin": f.traffic.bytes_from_origin},
        )
        yield by_label(
            CounterMetricFamily,
            "lanpeer_agent_piece_hash_failures",
            "Pieces that failed their hash check, by source: peer or origin.",
            "source",
            {"peer": f.traffic.peer_hash_failures, "origin": f.traffic.origin_hash_failures},
        )
        for name, text, value in (
            ("lanpeer_agent_uploads_active", "Responses with file bytes under way.", f.active_uploads),
            ("lanpeer_agent_upload_slots", "The most uploads served at once.", f.max_uploads),
            ("lanpeer_agent_downloads_active", "Downloads the daemon is running.", f.active_downloads),
            ("lanpeer_agent_shared_files", "Distinct contents the agent serves.", f.shared_files),
            ("lanpeer_agent_shared_bytes", "Bytes of the contents the agent serves.", f.shared_bytes),
            (
                "lanpeer_agent_hashing_backlog_files",
                "Files the scan under way has yet to hash before serving them.",
                f.hashing_backlog_files,
            ),
            (
                "lanpeer_agent_hashing_backlog_bytes",
                "Bytes of the files the scan under way has yet to hash.",
                f.hashing_backlog_bytes,
            ),
            (
                "lanpeer_agent_tracker_connected",
                "1 while the agent is registered with a reachable tracker, else 0.",
                int(f.tracker_connected),
            ),
        ):
            yield GaugeMetricFamily(name, text, value=value)


class AgentMetrics:
    """The daemon's registry, and its rendering as Prometheus text."""

    def __init__(self, figures: Callable[[], AgentFigures]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(AgentCollector(figures))

    def render(self) -> bytes:
        return generate_latest(self.registry)
