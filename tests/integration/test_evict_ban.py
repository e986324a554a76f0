"""Evicting and banning agents through the admin API."""

from __future__ import annotations

import pytest

from tests.integration.helpers import holder_ids, make_blob
from tracker.errors import NotFound, PermissionDenied
from tracker.model import HeartbeatAction

DATASET = make_blob("dataset.tar", 5000)
IMAGE = make_blob("image.iso", 7000)


def test_evict_withdraws_the_holdings_and_the_next_heartbeat_says_register(tracker, clients, admin):
    doomed = clients.agent(tracker, "doomed").join(DATASET.whole(), IMAGE.whole())
    clients.agent(tracker, "other").join(DATASET.whole())
    asker = clients.agent_api(tracker)

    assert admin.evict("doomed") == 2

    assert holder_ids(asker, DATASET.sha256) == ["other"]
    assert holder_ids(asker, IMAGE.sha256) == []
    assert [a.agent.agent_id for a in admin.agents()] == ["other"]
    assert admin.stats().holdings == 1
    assert doomed.beat() is HeartbeatAction.REGISTER


def test_an_evicted_agent_may_register_again(tracker, clients, admin):
    agent = clients.agent(tracker, "agent").join(DATASET.whole())
    admin.evict("agent")
    agent.join(DATASET.whole())
    assert holder_ids(clients.agent_api(tracker), DATASET.sha256) == ["agent"]


def test_evict_with_ban_refuses_registration_until_unbanned(tracker, clients, admin):
    rogue = clients.agent(tracker, "rogue").join(DATASET.whole())

    assert admin.evict("rogue", ban=True) == 1

    assert rogue.beat() is HeartbeatAction.REGISTER
    with pytest.raises(PermissionDenied, match="rogue"):
        rogue.register()
    assert holder_ids(clients.agent_api(tracker), DATASET.sha256) == []
    assert admin.stats().banned_agents == 1

    admin.unban("rogue")

    rogue.join(DATASET.whole())
    assert holder_ids(clients.agent_api(tracker), DATASET.sha256) == ["rogue"]
    assert admin.stats().banned_agents == 0


def test_an_agent_never_seen_may_be_banned_ahead_of_time(tracker, clients, admin):
    assert admin.evict("future-rogue", ban=True) == 0
    with pytest.raises(PermissionDenied):
        clients.agent(tracker, "future-rogue").register()


def test_a_banned_agent_is_listed_as_banned(tracker, clients, admin):
    clients.agent(tracker, "rogue").join(DATASET.whole())
    admin.evict("rogue", ban=True)

    banned = [a.agent.agent_id for a in admin.agents() if a.banned]

    assert banned == ["rogue"], "ListAgents must show a banned agent, so an admin can find whom to unban"


def test_evicting_an_unknown_agent_is_not_found(tracker, admin):
    with pytest.raises(NotFound, match="stranger"):
        admin.evict("stranger")


def test_unbanning_an_agent_that_is_not_banned_is_not_found(tracker, clients, admin):
    clients.agent(tracker, "agent").join()
    with pytest.raises(NotFound, match="agent"):
        admin.unban("agent")
