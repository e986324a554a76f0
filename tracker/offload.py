"""The cluster's origin offload: how many of the bytes agents fetched came from peers.

Each heartbeat carries what the agent has fetched since it started. The tally adds up,
per agent, the increase since its previous report; a report below the previous one
means the agent restarted, and counts whole. The totals live in memory and start from
zero with the tracker, like any Prometheus counter.

An agent's first report after the tracker starts counts whole too, since the tracker
cannot tell what of it came before. An agent that restarts and fetches more than it
had before between two heartbeats is counted short by what it had; heartbeats are a
few seconds apart, so that takes a restart within seconds of a large download.

The values are the agents' word: they are bounded on the wire (see MAX_REPORTED_FETCH),
and the totals stop at the largest uint64 rather than overflow the admin API's fields.
"""

from __future__ import annotations

from tracker.model import MAX_UINT64, Fetched


class OffloadTally:
    def __init__(self) -> None:
        self._last: dict[str, Fetched] = {}
        self._totals = Fetched()

    @property
    def totals(self) -> Fetched:
        return self._totals

    def report(self, agent_id: str, fetched: Fetched) -> Fetched:
        """Counts a heartbeat's figures; returns the increase that was counted."""
        last = self._last.get(agent_id, Fetched())
        restarted = fetched.from_peers < last.from_peers or fetched.from_origin < last.from_origin
        increase = (
            fetched
            if restarted
            else Fetched(fetched.from_peers - last.from_peers, fetched.from_origin - last.from_origin)
        )
        self._last[agent_id] = fetched
        self._totals = Fetched(
            min(MAX_UINT64, self._totals.from_peers + increase.from_peers),
            min(MAX_UINT64, self._totals.from_origin + increase.from_origin),
        )
        return increase

    def forget(self, agent_id: str) -> None:
        """Drops an agent that left: its next report, after a restart, counts whole."""
        self._last.pop(agent_id, None)
