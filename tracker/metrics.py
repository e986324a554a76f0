"""The tracker's Prometheus metrics, in a registry of its own (one per tracker, so that
trackers in one process never share a figure).

The servicers count what only they see as it happens: Locate calls and their latency,
announces, bad-source reports. The cluster's state (agents, holdings, swarms, the
origin offload) is read from the registry's stats at scrape time, so it costs nothing
between scrapes and is never out of step with `lanpeer-tracker stats`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tracker.model import Stats

# Locate answers from memory in well under a millisecond; the upper buckets catch a
# tracker whose lock is contended.
LOCATE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def by_label(
    family: type[CounterMetricFamily | GaugeMetricFamily],
    name: str,
    documentation: str,
    label: str,
    values: Mapping[str, float],
) -> Metric:
    """A family read at scrape time with one sample per value of `label`."""
    metric = family(name, documentation, labels=[label])
    for label_value, value in values.items():
        metric.add_metric([label_value], value)
    return metric


class TrackerMetrics:
    def __init__(self, stats: Callable[[], Stats], *, timer: Callable[[], float] = time.perf_counter) -> None:
        self.registry = CollectorRegistry()
        self._timer = timer
        locates = Counter(
            "lanpeer_tracker_locate_requests",
            "Locate calls answered, by outcome: found (some content matched), not_found, error.",
            ["outcome"],
            registry=self.registry,
        )
        self._found = locates.labels("found")
        self._not_found = locates.labels("not_found")
        self._failed = locates.labels("error")
        self._locate_seconds = Histogram(
            "lanpeer_tracker_locate_seconds",
            "Time the tracker took to answer a Locate, from the decoded request to the matches.",
            buckets=LOCATE_BUCKETS,
            registry=self.registry,
        )
        self._announces = Counter(
            "lanpeer_tracker_announces", "Swarm announces answered.", registry=self.registry
        )
        self._bad_reports = Counter(
            "lanpeer_tracker_bad_source_reports",
            "Reports of holders that sent bytes which failed their hash, accepted since the tracker started.",
            registry=self.registry,
        )
        self.registry.register(ClusterCollector(stats))

    def locate_started(self) -> float:
        return self._timer()

    def locate_done(self, started: float, matches: int | None) -> None:
        """Records a Locate that began at `started`; `matches` is None when it failed."""
        self._locate_seconds.observe(self._timer() - started)
        if matches is None:
            self._failed.inc()
        elif matches:
            self._found.inc()
        else:
            self._not_found.inc()

    def announced(self) -> None:
        self._announces.inc()

    def bad_source_reported(self) -> None:
        self._bad_reports.inc()


class ClusterCollector(Collector):
    """The cluster's state, from the tracker's stats at scrape time."""

    def __init__(self, stats: Callable[[], Stats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        yield by_label(
            GaugeMetricFamily,
            "lanpeer_tracker_agents",
            "Agents the tracker knows, by state.",
            "state",
            {"live": s.live_agents, "dead": s.dead_agents, "banned": s.banned_agents},
        )
        for name, text, value in (
            ("lanpeer_tracker_files", "Distinct contents the agents hold.", s.distinct_files),
            ("lanpeer_tracker_holdings", "Contents held, counted once per agent holding each.", s.holdings),
            ("lanpeer_tracker_held_bytes", "Bytes held, counted once per agent holding them.", s.bytes_held),
            ("lanpeer_tracker_manifests", "Manifests the tracker knows.", s.manifests),
            ("lanpeer_tracker_url_mappings", "Origin URL versions mapped to content.", s.sources),
            ("lanpeer_tracker_swarms", "Swarms with at least one member.", s.swarms),
            ("lanpeer_tracker_swarm_members", "Members of all swarms.", s.swarm_members),
        ):
            yield GaugeMetricFamily(name, text, value=value)
        yield by_label(
            CounterMetricFamily,
            "lanpeer_tracker_fetched_bytes",
            "Bytes agents reported fetching since the tracker started, by source: peer or origin.",
            "source",
            {"peer": s.fetched.from_peers, "origin": s.fetched.from_origin},
        )
        offload = GaugeMetricFamily(
            "lanpeer_tracker_origin_offload_ratio",
            "The share of fetched bytes that came from peers rather than the origin; "
            "absent until some agent reports a download.",
        )
        if s.fetched.offload is not None:
            offload.add_metric([], s.fetched.offload)
        yield offload
