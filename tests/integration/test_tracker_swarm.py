"""Swarms through the real tracker: agents that fetch the same content at once announce it,
see each other, pass piece hashes along and share the origin's pieces out."""

from __future__ import annotations

import hashlib
from typing import Any

import grpc
import pytest

from lanpeer.v1 import tracker_pb2
from tests.integration.helpers import Agent, some_digest
from tracker.errors import FailedPrecondition, NotFound, PermissionDenied
from tracker.model import Announce, MiB, SwarmView, bitmap_has

SWARM = some_digest("swarm: http://origin.example/dataset.tar")
PIECES = 10
SIZE = PIECES * MiB - 100


def bits(*pieces: int, count: int = PIECES) -> bytes:
    value = bytearray((count + 7) // 8)
    for i in pieces:
        value[i >> 3] |= 0x80 >> (i & 7)
    return bytes(value)


def pieces_of(bitmap: bytes) -> set[int]:
    return {i for i in range(PIECES) if bitmap_has(bitmap, i)}


def piece_hash(index: int) -> bytes:
    return hashlib.sha256(f"piece {index}".encode()).digest()


def announce(agent: Agent | None, *pieces: int, **fields: Any) -> SwarmView:
    """An announce from `agent` holding `pieces`; from an observer, on `client`, when None."""
    client = agent.client if agent else fields.pop("client")
    size = fields.pop("size", SIZE)
    request = Announce(
        agent_id=agent.id if agent else "",
        swarm_id=fields.pop("swarm_id", SWARM),
        size=size,
        piece_size=MiB,
        have=bits(*pieces, count=-(-size // MiB)),
        **fields,
    )
    return client.announce(request)


@pytest.fixture
def alpha(tracker, clients):
    return clients.agent(tracker, "alpha").join()


@pytest.fixture
def beta(tracker, clients):
    return clients.agent(tracker, "beta").join()


def test_two_agents_in_a_swarm_see_each_other_with_their_urls_and_pieces(alpha, beta):
    first = announce(alpha, 0, 1)
    assert first.members == ()
    assert first.interval == 1.0

    view = announce(beta, 5)

    assert [(m.agent_id, m.base_url, m.have) for m in view.members] == [
        ("alpha", alpha.info.base_url, bits(0, 1))
    ]
    view = announce(alpha, 0, 1, 2)
    assert [(m.agent_id, m.base_url, m.have) for m in view.members] == [("beta", beta.info.base_url, bits(5))]


def test_piece_hashes_travel_from_one_member_to_another(alpha, beta):
    announce(alpha, 0, 3, hashes={0: piece_hash(0), 3: piece_hash(3)})

    view = announce(beta)
    assert view.hashes == {0: piece_hash(0), 3: piece_hash(3)}
    assert pieces_of(view.hashes_known) == {0, 3}
    assert announce(beta, hashes_known=view.hashes_known).hashes == {}

    clash = announce(beta, 3, hashes={3: piece_hash(99)}, hashes_known=view.hashes_known)
    assert clash.hash_conflicts == (3,)


def test_origin_grants_are_disjoint_across_members(alpha, beta):
    first = announce(alpha, want_seed=4)
    second = announce(beta, 0, want_seed=4)
    assert first.seed_granted == (0, 1, 2, 3)
    assert second.seed_granted == (4, 5, 6, 7)
    assert pieces_of(second.seed_claimed) == set(range(8))

    kept = announce(alpha, 1, seed_claims=frozenset({1, 2}), want_seed=9)
    assert kept.seed_granted == (3, 8, 9)
    assert pieces_of(kept.seed_claimed) == {2, 3, 4, 5, 6, 7, 8, 9}


def test_an_unregistered_agent_is_not_found(tracker, clients):
    stranger = clients.agent(tracker, "stranger")
    with pytest.raises(NotFound, match="agent stranger is not registered"):
        announce(stranger, want_seed=1)


def test_a_banned_agent_is_refused(alpha, admin):
    admin.evict("alpha", ban=True)
    with pytest.raises(PermissionDenied, match="alpha"):
        announce(alpha)


def test_an_observer_sees_the_swarm_without_joining_it(tracker, clients, alpha, admin):
    announce(alpha, 1, hashes={1: piece_hash(1)}, want_seed=2)

    view = announce(None, client=clients.agent_api(tracker), want_seed=3)

    assert [(m.agent_id, m.have) for m in view.members] == [("alpha", bits(1))]
    assert view.hashes == {1: piece_hash(1)}
    assert view.seed_granted == ()
    assert pieces_of(view.seed_claimed) == {0, 2}
    assert (admin.stats().swarms, admin.stats().swarm_members) == (1, 1)


def test_a_different_layout_for_a_swarm_is_a_failed_precondition(alpha, beta):
    announce(alpha)
    with pytest.raises(FailedPrecondition, match=f"swarm {SWARM[:12]} is for {SIZE} bytes"):
        announce(beta, size=SIZE + MiB)


def test_leave_takes_the_agent_out_of_its_swarms_and_releases_its_grants(alpha, beta, admin):
    announce(alpha, want_seed=3)
    announce(beta)
    assert (admin.stats().swarms, admin.stats().swarm_members) == (1, 2)

    alpha.client.leave(alpha.id)

    view = announce(beta, want_seed=3)
    assert view.members == ()
    assert view.seed_granted == (0, 1, 2)
    assert (admin.stats().swarms, admin.stats().swarm_members) == (1, 1)


def test_registering_again_or_eviction_takes_the_agent_out(alpha, beta, admin):
    announce(alpha, want_seed=1)
    announce(beta)

    alpha.register()
    assert announce(beta).members == ()
    announce(alpha, want_seed=1)
    admin.evict("alpha")
    assert announce(beta, want_seed=1).seed_granted == (0,)
    assert admin.stats().swarm_members == 1


def test_stats_count_the_swarms_with_members_and_their_members(alpha, beta, admin):
    assert (admin.stats().swarms, admin.stats().swarm_members) == (0, 0)
    announce(alpha)
    announce(beta)
    announce(alpha, swarm_id=some_digest("another swarm"), size=3 * MiB)
    assert (admin.stats().swarms, admin.stats().swarm_members) == (2, 3)

    announce(alpha, swarm_id=some_digest("another swarm"), size=3 * MiB, leaving=True)
    assert (admin.stats().swarms, admin.stats().swarm_members) == (1, 2)


def test_the_tracker_keeps_serving_after_a_malformed_announce(tracker, clients, alpha):
    stub = clients.raw(tracker).tracker
    bad = tracker_pb2.AnnounceRequest(agent_id="alpha", swarm_id=SWARM, size=SIZE, piece_size=MiB)
    with pytest.raises(grpc.RpcError) as info:
        stub.Announce(bad, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "have" in info.value.details()

    bad.have.bitmap = bits(0)
    reply = stub.Announce(bad, timeout=10)
    assert reply.interval_ms == 1000
