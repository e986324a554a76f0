"""Liveness: an agent that stops heartbeating stops being handed out. These are the only
tests that sleep, on a tracker with a short heartbeat interval."""

from __future__ import annotations

import time

import pytest

from tests.integration.helpers import holder_ids, make_blob
from tracker.model import HeartbeatAction

INTERVAL = 0.2
# One that misses three beats is dead; wait three and a half.
EXPIRY = 3.5 * INTERVAL

DATASET = make_blob("dataset.tar", 4096)


@pytest.fixture
def fast_tracker(trackers):
    return trackers.start(heartbeat_interval=INTERVAL)


def keep_beating(agent, seconds: float) -> None:
    """Heartbeats `agent` every half interval for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert agent.beat() is HeartbeatAction.NONE
        time.sleep(INTERVAL / 2)
    assert agent.beat() is HeartbeatAction.NONE


def test_a_silent_agent_is_no_longer_handed_out_and_shows_as_dead(fast_tracker, clients):
    steady = clients.agent(fast_tracker, "steady").join(DATASET.whole())
    silent = clients.agent(fast_tracker, "silent").join(DATASET.whole())
    asker = clients.agent_api(fast_tracker)
    admin = clients.admin_api(fast_tracker)
    assert sorted(holder_ids(asker, DATASET.sha256)) == ["silent", "steady"]

    keep_beating(steady, EXPIRY)

    assert holder_ids(asker, DATASET.sha256) == ["steady"]
    live = {a.agent.agent_id: a.live for a in admin.agents()}
    assert live == {"steady": True, "silent": False}
    stats = admin.stats()
    assert (stats.live_agents, stats.dead_agents) == (1, 1)
    files = {f.sha256: f for f in admin.files()}
    assert (files[DATASET.sha256].live_holders, files[DATASET.sha256].holders) == (1, 2)

    # It comes back with its next heartbeat: its holdings were kept.
    assert silent.beat() is HeartbeatAction.NONE
    assert sorted(holder_ids(asker, DATASET.sha256)) == ["silent", "steady"]


def test_an_agent_beating_at_the_interval_the_tracker_gave_it_stays_live(fast_tracker, clients):
    agent = clients.agent(fast_tracker, "obedient")
    interval = agent.register()
    agent.full_sync(DATASET.whole())
    assert agent.beat() is HeartbeatAction.NONE

    # The agent beats again only after `interval`; until then it must count as live.
    time.sleep(interval * 0.9)

    (status,) = clients.admin_api(fast_tracker).agents()
    assert status.live, (
        f"the tracker told the agent to beat every {interval:g} s but declared it dead after "
        f"{interval * 0.9:.2f} s of silence (configured interval {INTERVAL} s)"
    )
