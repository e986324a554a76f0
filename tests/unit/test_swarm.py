"""The pure swarms, driven by announces at explicit times."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.helpers import digest
from tracker.errors import FailedPrecondition, ResourceExhausted
from tracker.model import Announce, MiB, SwarmView, bitmap_has
from tracker.swarm import MAX_MEMBERS, MAX_SWARMS, Swarms

SWARM = digest("swarm")
PIECES = 10  # two-byte bitmaps with spare bits
SIZE = PIECES * MiB - 5
EVERY = frozenset(range(PIECES))
T = 1000.0


def bits(pieces: Iterable[int], count: int = PIECES) -> bytes:
    value = bytearray((count + 7) // 8)
    for i in pieces:
        value[i >> 3] |= 0x80 >> (i & 7)
    return bytes(value)


def pieces_of(bitmap: bytes) -> set[int]:
    return {i for i in range(len(bitmap) * 8) if bitmap_has(bitmap, i)}


def piece_hash(index: int, version: str = "") -> bytes:
    return hashlib.sha256(f"piece {index}{version}".encode()).digest()


def url(agent_id: str) -> str:
    return f"http://{agent_id}.lab:7071"


def announce(
    agent_id: str,
    *,
    have: Iterable[int] = (),
    hashes: dict[int, bytes] | None = None,
    known: Iterable[int] | None = None,
    claims: Iterable[int] = (),
    want: int = 0,
    complete: bool = False,
    leaving: bool = False,
    swarm: str = SWARM,
    size: int = SIZE,
    piece_size: int = MiB,
) -> Announce:
    return Announce(
        agent_id=agent_id,
        swarm_id=swarm,
        size=size,
        piece_size=piece_size,
        have=bits(EVERY if complete else have, -(-size // piece_size)),
        hashes=hashes or {},
        hashes_known=b"" if known is None else bits(known),
        seed_claims=frozenset(claims),
        want_seed=want,
        complete=complete,
        leaving=leaving,
    )


def join(swarms: Swarms, agent_id: str, now: float = T, **kwargs: object) -> SwarmView:
    """An announce from a registered, live agent."""
    return swarms.announce(announce(agent_id, **kwargs), now, member_url=url(agent_id))  # type: ignore[arg-type]


def observe(swarms: Swarms, now: float = T, **kwargs: object) -> SwarmView:
    return swarms.announce(announce("", **kwargs), now, member_url=None)  # type: ignore[arg-type]


def member_ids(view: SwarmView) -> list[str]:
    return [m.agent_id for m in view.members]


@pytest.fixture
def swarms() -> Swarms:
    return Swarms(rng=random.Random(7))


# ----------------------------------------------------------------------------- swarms


def test_the_first_announce_makes_the_swarm_and_fixes_its_layout(swarms):
    assert swarms.stats() == (0, 0)
    join(swarms, "a", want=1)
    assert swarms.stats() == (1, 1)

    layout = f"swarm {SWARM[:12]} is for {SIZE} bytes in pieces of {MiB}"
    with pytest.raises(FailedPrecondition, match=layout):
        join(swarms, "b", size=SIZE + MiB)
    with pytest.raises(FailedPrecondition, match=f"pieces of {MiB}"):
        join(swarms, "b", size=SIZE, piece_size=2 * MiB)
    with pytest.raises(FailedPrecondition):
        observe(swarms, size=SIZE - 1)

    assert swarms.stats() == (1, 1)
    view = join(swarms, "b")
    assert member_ids(view) == ["a"]
    assert pieces_of(view.seed_claimed) == {0}


def test_swarms_are_apart(swarms):
    join(swarms, "a", want=2)
    view = join(swarms, "b", swarm=digest("other"), size=3 * MiB, want=2)
    assert view.members == ()
    assert view.seed_granted == (0, 1)
    assert swarms.stats() == (2, 2)


def test_the_answer_carries_the_interval(swarms):
    assert join(swarms, "a").interval == 1.0
    assert join(Swarms(interval=2.5), "a").interval == 2.5


# ----------------------------------------------------------------------------- hashes


def test_the_first_hash_of_a_piece_wins_and_a_different_one_is_a_conflict(swarms):
    first = join(swarms, "a", have={0, 1}, hashes={0: piece_hash(0), 1: piece_hash(1)})
    assert first.hash_conflicts == ()

    hashes = {1: piece_hash(1, "v2"), 2: piece_hash(2), 3: piece_hash(3)}
    assert join(swarms, "b", have={1, 2, 3}, hashes=hashes).hash_conflicts == (1,)
    hashes = {1: piece_hash(1), 3: piece_hash(3, "v2")}
    assert join(swarms, "c", have={1, 3}, hashes=hashes).hash_conflicts == (3,)

    assert observe(swarms).hashes == {i: piece_hash(i) for i in range(4)}


def test_the_answer_brings_only_the_hashes_the_requester_lacks(swarms):
    join(swarms, "a", have={0, 1, 2, 9}, hashes={i: piece_hash(i) for i in (0, 1, 2, 9)})

    view = join(swarms, "b", known={0, 2})
    assert view.hashes == {1: piece_hash(1), 9: piece_hash(9)}
    assert pieces_of(view.hashes_known) == {0, 1, 2, 9}
    assert join(swarms, "b", known={0, 1, 2, 9}).hashes == {}
    assert join(swarms, "b").hashes.keys() == {0, 1, 2, 9}, "empty hashes_known means it knows none"


def test_an_observer_learns_hashes_and_conflicts_but_stores_none(swarms):
    join(swarms, "a", have={0}, hashes={0: piece_hash(0)})

    view = observe(swarms, have={0, 1}, hashes={0: piece_hash(0, "v2"), 1: piece_hash(1)})

    assert view.hash_conflicts == (0,)
    assert view.hashes == {0: piece_hash(0)}
    assert pieces_of(join(swarms, "b").hashes_known) == {0}


# ----------------------------------------------------------------------------- origin grants


def test_grants_go_lowest_first_and_never_twice(swarms):
    assert join(swarms, "a", want=3).seed_granted == (0, 1, 2)
    assert join(swarms, "b", want=2).seed_granted == (3, 4)
    view = join(swarms, "c", want=20)
    assert view.seed_granted == (5, 6, 7, 8, 9)
    assert pieces_of(view.seed_claimed) == EVERY
    assert join(swarms, "d", want=1).seed_granted == ()


def test_a_piece_some_member_has_is_never_granted(swarms):
    join(swarms, "a", have={0, 2})
    assert join(swarms, "b", have={3}, want=3).seed_granted == (1, 4, 5)


def test_claims_are_kept_only_while_reported_and_unverified(swarms):
    join(swarms, "a", want=3)  # 0, 1, 2

    view = join(swarms, "a", have={0}, claims={0, 1})

    assert pieces_of(view.seed_claimed) == {1}, "verified 0 and dropped 2: both released"
    assert join(swarms, "b", want=2).seed_granted == (2, 3)


def test_a_member_cannot_claim_what_it_was_not_granted(swarms):
    join(swarms, "a", want=1)  # 0

    view = join(swarms, "a", claims={0, 5, 6})

    assert pieces_of(view.seed_claimed) == {0}
    assert join(swarms, "b", want=3).seed_granted == (1, 2, 3)
    assert join(swarms, "c", want=3).seed_granted == (4, 5, 6)


def test_a_member_keeps_its_claims_and_gets_more(swarms):
    join(swarms, "a", want=2)
    view = join(swarms, "a", claims={0, 1}, want=2)
    assert view.seed_granted == (2, 3)
    assert pieces_of(view.seed_claimed) == {0, 1, 2, 3}


def test_leaving_releases_the_claims_and_still_answers(swarms):
    join(swarms, "a", want=3)
    join(swarms, "b", have={5})

    view = join(swarms, "a", claims={0, 1, 2}, leaving=True)

    assert member_ids(view) == ["b"]
    assert view.seed_granted == ()
    assert pieces_of(view.seed_claimed) == set()
    assert swarms.stats() == (1, 1)
    assert join(swarms, "b", have={5}, want=3).seed_granted == (0, 1, 2)


def test_a_leaving_member_is_granted_nothing(swarms):
    join(swarms, "b")
    assert join(swarms, "a", want=3, leaving=True).seed_granted == ()
    assert swarms.stats() == (1, 1)


def test_dropping_an_agent_takes_it_out_of_every_swarm(swarms):
    other = digest("other")
    join(swarms, "a", want=3)
    join(swarms, "a", swarm=other, want=1)
    join(swarms, "b", swarm=other)

    swarms.drop_agent("a", T)

    assert swarms.stats() == (1, 1)
    assert join(swarms, "b", swarm=other, want=1).seed_granted == (0,)
    view = join(swarms, "c", want=3)
    assert view.members == ()
    assert view.seed_granted == (0, 1, 2)


def test_a_complete_member_is_a_seed_whose_pieces_are_granted_once_each(swarms):
    join(swarms, "seed", complete=True)
    view = join(swarms, "b", want=4)
    assert view.seed_granted == (0, 1, 2, 3)
    assert join(swarms, "c", have={4}, want=2).seed_granted == (5, 6)
    assert [(m.agent_id, m.base_url, m.have) for m in view.members] == [("seed", url("seed"), None)]


def test_becoming_complete_releases_the_claims(swarms):
    join(swarms, "a", want=3)
    view = join(swarms, "a", complete=True, claims={0, 1, 2})
    assert pieces_of(view.seed_claimed) == set()
    assert join(swarms, "b", want=2).seed_granted == (0, 1), "to fetch from a, now a seed"


def test_pieces_a_member_no_longer_reports_can_be_granted(swarms):
    join(swarms, "a", complete=True)
    join(swarms, "b", have={1, 2})
    join(swarms, "a", have={4})
    assert join(swarms, "c", want=3).seed_granted == (0, 3, 5)
    join(swarms, "b", have={2})
    assert join(swarms, "c", claims={0, 3, 5}, want=1).seed_granted == (1,)


# ----------------------------------------------------------------------------- observers and members


def test_an_observer_sees_the_swarm_but_joins_nothing(swarms):
    join(swarms, "a", have={1}, want=2)

    view = observe(swarms, want=5)

    assert view.seed_granted == ()
    assert [(m.agent_id, m.have) for m in view.members] == [("a", bits({1}))]
    assert pieces_of(view.seed_claimed) == {0, 2}
    assert swarms.stats() == (1, 1)
    assert member_ids(join(swarms, "b")) == ["a"]


def test_an_agent_without_a_member_url_is_an_observer(swarms):
    view = swarms.announce(announce("a", want=2), T, member_url=None)
    assert view.seed_granted == ()
    assert swarms.stats() == (0, 0)


def test_an_observer_of_an_unknown_swarm_makes_none(swarms):
    view = observe(swarms, want=1)
    assert (view.members, view.hashes, view.seed_granted) == ((), {}, ())
    assert view.seed_claimed == view.hashes_known == bits(())
    assert swarms.stats() == (0, 0)
    join(swarms, "a", size=3 * MiB)  # the observer fixed no layout


def test_members_come_with_their_url_and_pieces_and_never_the_requester(swarms):
    join(swarms, "a", have={0})
    join(swarms, "b", have={1, 2})
    view = join(swarms, "c")
    assert [(m.agent_id, m.base_url, m.have) for m in view.members] == [
        ("a", url("a"), bits({0})),
        ("b", url("b"), bits({1, 2})),
    ]
    assert member_ids(join(swarms, "a", have={0, 3})) == ["b", "c"]


def test_at_most_64_members_are_listed_a_random_sample_of_them(swarms):
    for i in range(100):
        join(swarms, f"m{i:03d}")

    seen: set[str] = set()
    for _ in range(10):
        ids = member_ids(join(swarms, "m000"))
        assert len(ids) == 64
        assert len(set(ids)) == 64
        assert "m000" not in ids
        seen.update(ids)
    assert len(seen) > 64, "ten answers listed the same 64 members"
    assert len(member_ids(observe(swarms))) == 64


def test_a_swarm_of_65_lists_the_64_others(swarms):
    for i in range(65):
        join(swarms, f"m{i:03d}")
    assert sorted(member_ids(join(swarms, "m007"))) == sorted(f"m{i:03d}" for i in range(65) if i != 7)


# ----------------------------------------------------------------------------- liveness


def test_a_member_silent_for_three_intervals_is_dropped_with_its_claims(swarms):
    join(swarms, "a", want=2)
    join(swarms, "b", now=T)

    view = join(swarms, "b", now=T + 3.0)
    assert member_ids(view) == ["a"]
    assert pieces_of(view.seed_claimed) == {0, 1}

    view = join(swarms, "b", now=T + 3.01, want=2)
    assert view.members == ()
    assert view.seed_granted == (0, 1)
    assert swarms.stats() == (1, 1)


def test_staleness_follows_the_interval():
    swarms = Swarms(interval=2.0)
    join(swarms, "a")
    assert member_ids(join(swarms, "b", now=T + 6.0)) == ["a"]
    assert member_ids(join(swarms, "b", now=T + 6.1)) == []


def test_sweep_drops_silent_members_and_complete_members_whose_agent_died(swarms):
    join(swarms, "fetching", want=1)
    join(swarms, "seed", complete=True)
    live = {"fetching", "seed"}

    swarms.sweep(T + 3.0, live.__contains__)
    assert swarms.stats() == (1, 2)
    swarms.sweep(T + 3.5, live.__contains__)
    assert swarms.stats() == (1, 1), "the silent member still fetching went"
    swarms.sweep(T + 1000, live.__contains__)
    assert swarms.stats() == (1, 1), "a complete member stays while its agent is live"

    live.clear()
    swarms.sweep(T + 1001, live.__contains__)
    assert swarms.stats() == (0, 0)


def test_a_swarm_without_members_for_ten_minutes_is_forgotten(swarms):
    join(swarms, "a", have={0}, hashes={0: piece_hash(0)})
    join(swarms, "a", now=T + 1, have={0}, leaving=True)

    swarms.sweep(T + 1 + 599, lambda _: True)
    assert observe(swarms, now=T + 600).hashes == {0: piece_hash(0)}

    swarms.sweep(T + 1 + 600, lambda _: True)
    assert observe(swarms, now=T + 601).hashes == {}
    join(swarms, "b", now=T + 602, size=3 * MiB)


def test_the_ten_minutes_start_again_when_the_last_member_goes(swarms):
    join(swarms, "a", have={0}, hashes={0: piece_hash(0)})
    join(swarms, "a", have={0}, leaving=True)
    join(swarms, "b", now=T + 300)
    swarms.sweep(T + 303.5, lambda _: True)  # b went silent
    assert swarms.stats() == (0, 0)

    swarms.sweep(T + 900, lambda _: True)
    assert observe(swarms, now=T + 900).hashes == {0: piece_hash(0)}
    swarms.sweep(T + 903.5, lambda _: True)
    assert observe(swarms, now=T + 903.5).hashes == {}


def test_a_swarm_that_regains_a_member_is_kept(swarms):
    join(swarms, "a", have={0}, hashes={0: piece_hash(0)})
    join(swarms, "a", have={0}, leaving=True)
    join(swarms, "seed", now=T + 300, complete=True)
    swarms.sweep(T + 1000, lambda _: True)
    assert swarms.stats() == (1, 1)
    assert observe(swarms, now=T + 1000).hashes == {0: piece_hash(0)}


def test_leaving_a_swarm_that_does_not_exist_makes_none(swarms):
    view = join(swarms, "a", have={0}, hashes={0: piece_hash(0)}, want=1, leaving=True)
    assert view.seed_granted == ()
    assert observe(swarms).hashes == {}
    assert swarms.stats() == (0, 0)


# ----------------------------------------------------------------------------- bounds


def test_at_most_ten_thousand_swarms(swarms):
    for i in range(MAX_SWARMS):
        join(swarms, "a", swarm=f"{i:064x}")
    assert swarms.stats() == (MAX_SWARMS, MAX_SWARMS)

    with pytest.raises(ResourceExhausted, match="10000 swarms"):
        join(swarms, "a", want=1)

    assert observe(swarms).members == ()
    assert swarms.stats() == (MAX_SWARMS, MAX_SWARMS)
    assert join(swarms, "b", swarm=f"{0:064x}", want=1).seed_granted == (0,)


def test_at_most_ten_thousand_members_in_a_swarm(swarms):
    for i in range(MAX_MEMBERS):
        join(swarms, f"m{i}")

    with pytest.raises(ResourceExhausted, match="10000 members"):
        join(swarms, "late", have={0}, hashes={0: piece_hash(0)})

    assert swarms.stats() == (1, MAX_MEMBERS)
    assert observe(swarms).hashes == {}, "the refused announce changed nothing"
    assert join(swarms, "m0", want=1).seed_granted == (0,)


# ----------------------------------------------------------------------------- property

AGENTS = ("a", "b", "c")
steps = st.lists(
    st.tuples(
        st.sampled_from(AGENTS),
        st.sampled_from(["announce", "announce", "announce", "complete", "leave"]),
        st.frozensets(st.integers(0, PIECES - 1), max_size=4),  # have
        st.frozensets(st.integers(0, PIECES - 1), max_size=4),  # extra, never granted, claims
        st.booleans(),  # whether it reports its claims
        st.integers(0, 4),  # want
        st.sampled_from([0.0, 0.5, 1.0, 2.5, 3.5]),  # time since the previous step
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(steps)
def test_no_piece_is_granted_twice_or_when_some_member_has_it(script):
    """A reference model of the swarm: members' pieces, and which member each claimed piece
    is granted to. The tracker must grant exactly the lowest free pieces."""
    swarms = Swarms(rng=random.Random(0))
    now = T
    have: dict[str, frozenset[int]] = {}
    seen: dict[str, float] = {}
    complete: set[str] = set()
    owner: dict[int, str] = {}
    for agent_id, action, pieces, extra, reports, want, dt in script:
        now += dt
        for gone in [m for m in have if m not in complete and now - seen[m] > 3.0]:
            del have[gone]
            owner = {i: o for i, o in owner.items() if o != gone}
        mine = {i for i, o in owner.items() if o == agent_id}
        claims = (mine if reports else set()) | extra

        if action == "leave":
            view = join(swarms, agent_id, now, have=pieces, claims=claims, want=want, leaving=True)
            have.pop(agent_id, None)
            complete.discard(agent_id)
            owner = {i: o for i, o in owner.items() if o != agent_id}
        else:
            done = action == "complete"
            view = join(swarms, agent_id, now, have=pieces, claims=claims, want=want, complete=done)
            have[agent_id] = EVERY if done else pieces
            seen[agent_id] = now
            (complete.add if done else complete.discard)(agent_id)
            kept = (mine & claims) - have[agent_id]
            owner = {i: o for i, o in owner.items() if o != agent_id or i in kept}

        held = set().union(*(pieces for m, pieces in have.items() if m not in complete))
        free = sorted(EVERY - held - owner.keys())
        granted = set(view.seed_granted)
        assert not granted & owner.keys(), "granted a piece another member fetches"
        assert not granted & held, "granted a piece some member has"
        expected = () if action == "leave" else tuple(free[:want])
        assert view.seed_granted == expected
        owner.update(dict.fromkeys(granted, agent_id))
        assert pieces_of(view.seed_claimed) == owner.keys()
        assert sorted(member_ids(view)) == sorted(m for m in have if m != agent_id)


def test_a_complete_member_whose_agent_died_is_not_handed_out_before_the_sweep(swarms):
    join(swarms, "seed", complete=True)
    join(swarms, "gone", complete=True)
    view = swarms.announce(announce("b"), T, member_url=url("b"), is_live=lambda agent: agent != "gone")
    assert member_ids(view) == ["seed"]
    assert swarms.stats() == (1, 3), "left in place until the sweep"
