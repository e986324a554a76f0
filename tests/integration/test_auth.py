"""Bearer tokens: agents present the cluster token, the admin CLI the admin token."""

from __future__ import annotations

import grpc
import pytest

from lanpeer.v1 import admin_pb2, tracker_pb2
from tests.integration.helpers import agent_info, make_blob
from tracker.errors import Unauthenticated
from tracker.model import DigestQuery

CLUSTER_TOKEN = "cluster-s3cret"
ADMIN_TOKEN = "admin-s3cret"
DATASET = make_blob("dataset.tar", 5000)


@pytest.fixture
def guarded(trackers):
    return trackers.start(cluster_token=CLUSTER_TOKEN, admin_token=ADMIN_TOKEN)


@pytest.mark.parametrize("token", [None, "wrong-token", ADMIN_TOKEN], ids=["none", "wrong", "admin-token"])
def test_the_agent_api_needs_the_cluster_token(guarded, clients, token):
    client = clients.agent_api(guarded, token=token)
    with pytest.raises(Unauthenticated):
        client.register(agent_info("alpha"))
    with pytest.raises(Unauthenticated):
        client.locate(DigestQuery(DATASET.sha256))


@pytest.mark.parametrize(
    "token", [None, "wrong-token", CLUSTER_TOKEN], ids=["none", "wrong", "cluster-token"]
)
def test_the_admin_api_needs_the_admin_token(guarded, clients, token):
    admin = clients.admin_api(guarded, token=token)
    with pytest.raises(Unauthenticated):
        admin.stats()
    with pytest.raises(Unauthenticated):
        admin.evict("alpha", ban=True)


def test_a_refused_call_changes_nothing(guarded, clients):
    with pytest.raises(Unauthenticated):
        clients.agent_api(guarded, token="wrong-token").register(agent_info("alpha"))
    with pytest.raises(Unauthenticated):
        clients.admin_api(guarded).evict("beta", ban=True)
    stats = clients.admin_api(guarded, token=ADMIN_TOKEN).stats()
    assert (stats.live_agents, stats.dead_agents, stats.banned_agents) == (0, 0, 0)


def test_the_right_tokens_work(guarded, clients):
    agent = clients.agent(guarded, "alpha", token=CLUSTER_TOKEN).join(DATASET.whole())
    (match,) = clients.agent_api(guarded, token=CLUSTER_TOKEN).locate(DigestQuery(DATASET.sha256))
    assert [h.agent.agent_id for h in match.holders] == [agent.id]
    assert clients.admin_api(guarded, token=ADMIN_TOKEN).stats().live_agents == 1


def test_an_unauthenticated_call_gets_the_grpc_status_unauthenticated(guarded, clients):
    stubs = clients.raw(guarded)
    for call, request in [
        (stubs.tracker.Register, tracker_pb2.RegisterRequest(agent_id="alpha")),
        (stubs.admin.GetStats, admin_pb2.GetStatsRequest()),
    ]:
        for metadata in [(), (("authorization", f"Basic {CLUSTER_TOKEN}"),), (("authorization", "Bearer "),)]:
            with pytest.raises(grpc.RpcError) as info:
                call(request, timeout=5, metadata=metadata)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert info.value.details()


def test_with_no_tokens_configured_everything_is_open(tracker, clients):
    clients.agent(tracker, "alpha").join(DATASET.whole())
    clients.agent(tracker, "beta", token="any-token").join(DATASET.whole())
    assert clients.admin_api(tracker).stats().live_agents == 2
    assert clients.admin_api(tracker, token="any-token").stats().holdings == 2


def test_with_only_a_cluster_token_the_admin_api_is_open(trackers, clients):
    tracker = trackers.start(cluster_token=CLUSTER_TOKEN)
    clients.agent(tracker, "alpha", token=CLUSTER_TOKEN).join()
    with pytest.raises(Unauthenticated):
        clients.agent_api(tracker).register(agent_info("beta"))
    assert clients.admin_api(tracker).stats().live_agents == 1
