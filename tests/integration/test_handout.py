"""The order in which Locate hands out holders, and how many."""

from __future__ import annotations

import pytest

from tests.integration.helpers import holder_ids, make_blob
from tracker.errors import InvalidArgument, TrackerError
from tracker.model import DigestQuery

DATASET = make_blob("dataset.tar", 4096)
UPLOADS = {"busy": 7, "idle": 0, "light": 1, "medium": 3}


@pytest.fixture
def loaded_holders(tracker, clients):
    """Four agents hold the dataset; each has told the tracker its active uploads."""
    for agent_id, uploads in UPLOADS.items():
        agent = clients.agent(tracker, agent_id).join(DATASET.whole())
        agent.beat(uploads=uploads)
    return clients.agent_api(tracker)


def test_least_loaded_holders_come_first(loaded_holders):
    for _ in range(5):
        assert holder_ids(loaded_holders, DATASET.sha256) == ["idle", "light", "medium", "busy"]


def test_each_holder_comes_with_the_load_it_reported(loaded_holders):
    (match,) = loaded_holders.locate(DigestQuery(DATASET.sha256))
    assert {h.agent.agent_id: h.load.active_uploads for h in match.holders} == UPLOADS


def test_the_least_loaded_policy_can_be_named(loaded_holders):
    ids = holder_ids(loaded_holders, DATASET.sha256, policy="least-loaded")
    assert ids == ["idle", "light", "medium", "busy"]


def test_the_random_policy_is_accepted_and_hands_out_every_holder(loaded_holders):
    orders = {tuple(holder_ids(loaded_holders, DATASET.sha256, policy="random")) for _ in range(20)}
    assert all(sorted(order) == sorted(UPLOADS) for order in orders)
    assert len(orders) > 1, "twenty shuffles of four holders all came out the same"


def test_an_unknown_policy_name_is_an_invalid_argument(loaded_holders):
    with pytest.raises(InvalidArgument, match="fastest-first"):
        loaded_holders.locate(DigestQuery(DATASET.sha256), policy="fastest-first")


def test_max_holders_caps_the_list_keeping_the_least_loaded(loaded_holders):
    assert holder_ids(loaded_holders, DATASET.sha256, max_holders=2) == ["idle", "light"]
    assert holder_ids(loaded_holders, DATASET.sha256, max_holders=1) == ["idle"]


def test_a_lighter_load_moves_a_holder_forward(tracker, clients, loaded_holders):
    busy = clients.agent(tracker, "busy")
    busy.generation = 1
    busy.beat(uploads=0)
    ids = holder_ids(loaded_holders, DATASET.sha256)
    assert sorted(ids[:2]) == ["busy", "idle"]
    assert ids[2:] == ["light", "medium"]


def test_default_caps_the_list_at_fifty_holders(tracker, clients):
    for i in range(55):
        clients.agent(tracker, f"agent-{i:02d}").join(DATASET.whole())
    asker = clients.agent_api(tracker)
    assert len(holder_ids(asker, DATASET.sha256)) == 50
    assert len(holder_ids(asker, DATASET.sha256, max_holders=1000)) == 55


def test_a_tracker_whose_default_policy_is_random_starts(trackers, clients):
    tracker = trackers.start(handout_policy="random")
    clients.agent(tracker, "alpha").join(DATASET.whole())
    assert holder_ids(clients.agent_api(tracker), DATASET.sha256) == ["alpha"]


def test_an_unknown_default_policy_is_an_error_at_start_up(trackers):
    with pytest.raises(TrackerError, match="fastest-first"):
        trackers.start(handout_policy="fastest-first")
