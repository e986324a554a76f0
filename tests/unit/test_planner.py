"""The download planner, driven by events and a fake clock."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from agent.planner import (
    Assignment,
    Failure,
    NoSourceLeft,
    Planner,
    Policy,
    RetryBudget,
    Source,
    SourceKind,
)

MiB = 1 << 20


def peer(name: str, connections: int = 2, pieces: set[int] | None = None, count: int = 8) -> Source:
    if pieces is None:
        return Source(name, SourceKind.PEER, connections)
    value = sum(1 << (7 - i % 8) << (8 * (len_ - 1 - i // 8)) for i in pieces for len_ in [(count + 7) // 8])
    return Source(name, SourceKind.PEER, connections, value.to_bytes((count + 7) // 8, "big"))


ORIGIN = Source("origin", SourceKind.ORIGIN, 2)


def planner(pieces: int = 8, connections: int = 8, **kwargs: object) -> Planner:
    return Planner([MiB] * pieces, connections=connections, rng=random.Random(3), **kwargs)  # type: ignore[arg-type]


def run(p: Planner, speed: dict[str, float], *, until: float = 1000.0) -> float:
    """Completes every assignment after size * speed[source] seconds; returns the finish time."""
    now = 0.0
    running: dict[int, tuple[float, Assignment]] = {}
    while not p.finished:
        for a in p.assign(now):
            running[a.id] = (now + speed[a.source], a)
        assert running, "nothing to do but not finished"
        finish, a = min(running.values(), key=lambda item: item[0])
        now = finish
        del running[a.id]
        outcome = p.done(a.id, now)
        for superseded in outcome.superseded:
            running.pop(superseded, None)
            p.failed(superseded, now, Failure.BUSY, retry_after=0)  # Cancelled: frees its slot.
        assert now < until
    return now


def test_every_piece_is_fetched_once_from_peers_and_never_from_the_origin():
    p = planner()
    p.add_source(peer("a"))
    p.add_source(peer("b"))
    p.add_source(ORIGIN)
    run(p, {"a": 1.0, "b": 1.0, "origin": 1.0})
    totals = p.bytes_by_kind()
    assert totals[SourceKind.PEER] == 8 * MiB
    assert totals[SourceKind.ORIGIN] == 0


def test_fast_sources_do_more_work():
    p = planner(pieces=40)
    p.add_source(peer("fast"))
    p.add_source(peer("slow"))
    run(p, {"fast": 1.0, "slow": 4.0})
    # The fast peer takes about four pieces for each of the slow one's.
    assert p.pieces_from("fast") >= 3 * p.pieces_from("slow")


def test_origin_only_gets_the_pieces_no_peer_holds():
    p = planner(pieces=8)
    p.add_source(peer("partial", pieces={0, 1, 2, 3}))
    p.add_source(ORIGIN)
    run(p, {"partial": 1.0, "origin": 1.0})
    totals = p.bytes_by_kind()
    assert totals[SourceKind.ORIGIN] == 4 * MiB
    assert totals[SourceKind.PEER] == 4 * MiB


def test_fastest_policy_uses_the_origin_like_a_peer():
    p = planner(pieces=16, policy=Policy.FASTEST)
    p.add_source(peer("a"))
    p.add_source(ORIGIN)
    run(p, {"a": 1.0, "origin": 1.0})
    assert p.bytes_by_kind()[SourceKind.ORIGIN] > 0


def test_rarest_pieces_first():
    p = planner(pieces=8, connections=1)
    p.add_source(peer("everything", connections=1))
    p.add_source(peer("common", connections=1, pieces={0, 1, 2, 3, 4, 5}))
    p.add_source(peer("also", connections=1, pieces={0, 1, 2, 3, 4, 5}))
    (first,) = p.assign(0.0)
    assert first.piece in (6, 7)  # Held by one source only.


def test_connection_limits_hold():
    p = planner(pieces=20, connections=5)
    p.add_source(peer("a", connections=2))
    p.add_source(peer("b", connections=2))
    p.add_source(ORIGIN)
    made = p.assign(0.0)
    by_source = Counter(a.source for a in made)
    assert by_source["a"] == 2 and by_source["b"] == 2
    assert len(made) == 4  # The origin is not needed: every piece has a peer.
    assert p.assign(0.0) == []


def test_busy_peer_waits_for_retry_after_then_comes_back():
    p = planner(pieces=2, connections=1)
    p.add_source(peer("a", connections=1))
    (a,) = p.assign(0.0)
    p.failed(a.id, 0.0, Failure.BUSY, retry_after=5.0)
    assert p.assign(1.0) == []
    assert p.next_deadline(1.0) == 5.0
    (again,) = p.assign(5.0)
    assert again.piece == a.piece or not p.finished


def test_failing_peer_backs_off_then_is_dropped_and_the_origin_covers():
    p = planner(pieces=1, connections=2, budget=RetryBudget(attempts=3, delay=1.0))
    p.add_source(peer("flaky", connections=1))
    p.add_source(ORIGIN)
    now = 0.0
    delays = []
    while True:
        (a,) = p.assign(now)
        if a.source == "origin":
            break
        outcome = p.failed(a.id, now, Failure.UNREACHABLE)
        if outcome.dropped:
            break
        deadline = p.next_deadline(now)
        assert deadline is not None
        delays.append(deadline - now)
        now = deadline
    assert delays == [2.0, 4.0]
    assert "flaky" in p.dropped()
    (a,) = p.assign(now)
    assert a.source == "origin"  # No peer holds the piece any more.


def test_corrupt_bytes_drop_the_source_and_the_piece_is_fetched_again():
    p = planner(pieces=1, connections=2)
    p.add_source(peer("liar", connections=1))
    p.add_source(peer("honest", connections=1))
    (a,) = p.assign(0.0)
    outcome = p.failed(a.id, 0.0, Failure.CORRUPT)
    assert outcome.dropped == a.source
    assert p.refetched == 1
    (b,) = p.assign(0.0)
    assert b.source != a.source
    assert b.piece == a.piece
    p.done(b.id, 1.0)
    assert p.finished


def test_slow_piece_is_duplicated_and_the_first_copy_wins():
    p = planner(pieces=4, connections=4, min_slow_seconds=1.0, slow_factor=2.0)
    p.add_source(peer("stalled", connections=1))
    p.add_source(peer("quick", connections=3))
    first = p.assign(0.0)
    stalled = next(a for a in first if a.source == "stalled")
    for a in first:
        if a.source == "quick":
            p.done(a.id, 1.0)
    # The stalled piece has been in flight for 5 s; pieces take 1 s: it is slow.
    dup = [a for a in p.assign(5.0) if a.piece == stalled.piece]
    assert dup and dup[0].duplicate and dup[0].source == "quick"
    outcome = p.done(dup[0].id, 6.0)
    assert outcome.superseded == (stalled.id,)
    assert p.finished
    assert p.done(stalled.id, 9.0).superseded == ()  # The late copy changes nothing.


def test_origin_duplicates_only_slow_pieces_under_peers_first():
    p = planner(pieces=1, connections=4, min_slow_seconds=2.0)
    p.add_source(peer("a", connections=1))
    p.add_source(ORIGIN)
    (a,) = p.assign(0.0)
    assert p.assign(1.0) == []  # Not slow yet: the origin stays idle.
    (dup,) = p.assign(3.0)
    assert (dup.source, dup.piece, dup.duplicate) == ("origin", a.piece, True)


def test_resumed_pieces_are_not_fetched_again():
    p = planner(pieces=4, have={0, 2})
    p.add_source(peer("a", connections=4))
    assert sorted(a.piece for a in p.assign(0.0)) == [1, 3]


def test_no_source_for_a_piece_is_reported():
    p = planner(pieces=4)
    p.add_source(peer("partial", pieces={0, 1}, count=4))
    for a in p.assign(0.0):
        p.done(a.id, 1.0)
    with pytest.raises(NoSourceLeft, match="2 pieces"):
        p.check_stuck()


def test_many_random_runs_finish_with_every_piece_exactly_counted():
    for seed in range(20):
        rng = random.Random(seed)
        p = Planner([MiB] * 30, connections=6, rng=rng, min_slow_seconds=0.5)
        speeds = {}
        for i in range(4):
            name = f"p{i}"
            held = {piece for piece in range(30) if rng.random() < 0.6}
            p.add_source(peer(name, connections=2, pieces=held, count=30))
            speeds[name] = rng.uniform(0.2, 3.0)
        p.add_source(ORIGIN)
        speeds["origin"] = 1.0
        run(p, speeds)
        assert p.pieces_done() == 30


# ----------------------------------------------------------------------------- swarms


def test_a_growing_bitmap_makes_its_new_pieces_available():
    p = planner(pieces=8, hashes_known=True)
    p.add_source(peer("a", pieces=set(), count=8))
    assert p.assign(0.0) == []
    p.update_source("a", peer("a", pieces={2, 5}, count=8).bitmap)
    assert sorted(a.piece for a in p.assign(0.0)) == [2, 5]
    assert p.unavailable(range(8)) == {0, 1, 3, 4, 6, 7}


def test_a_peer_piece_waits_for_its_hash():
    p = planner(pieces=4, hashes_known=False)
    p.add_source(peer("a", pieces={0, 1, 2, 3}, count=4))
    assert p.assign(0.0) == []
    p.learn_hash(3)
    assert [a.piece for a in p.assign(0.0)] == [3]


def test_a_restricted_origin_gives_only_the_granted_pieces_and_no_duplicates():
    p = planner(pieces=8, min_slow_seconds=0.1)
    p.add_source(ORIGIN)
    p.restrict_seeds(())
    assert p.assign(0.0) == []
    assert p.seed_wanted(queue=4) == 4
    p.restrict_seeds({6, 1})
    assert [a.piece for a in p.assign(0.0)] == [1, 6]
    assert p.seed_pending() == {1, 6}
    assert p.seed_wanted(queue=4) == 2
    # Slow pieces are not duplicated: another machine may be fetching any piece.
    assert p.assign(100.0) == []


def test_no_origin_piece_is_wanted_that_a_peer_has():
    p = planner(pieces=4)
    p.add_source(ORIGIN)
    p.add_source(peer("a", pieces={0, 1, 2}, count=4))
    p.restrict_seeds(())
    assert p.seed_wanted(queue=8) == 1


def test_a_piece_a_partial_holder_lacks_after_all_is_asked_for_elsewhere():
    p = planner(pieces=2)
    p.add_source(peer("a", pieces={0}, count=2))
    (a,) = p.assign(0.0)
    p.failed(a.id, 0.0, Failure.NOT_HELD)
    assert p.unavailable(range(2)) == {0, 1}
    assert p.dropped() == {}
    p.update_source("a", peer("a", pieces={0, 1}, count=2).bitmap)
    assert sorted(x.piece for x in p.assign(0.0)) == [0, 1]


def test_a_dropped_peer_that_grows_adds_nothing():
    p = planner(pieces=2)
    p.add_source(peer("a", pieces={0}, count=2))
    (a,) = p.assign(0.0)
    p.failed(a.id, 0.0, Failure.CORRUPT)
    p.update_source("a", None)
    assert p.unavailable(range(2)) == {0, 1}


def test_pieces_nobody_has_yet_are_awaited_while_a_swarm_works():
    p = planner(pieces=2)
    p.add_source(peer("a", pieces={0}, count=2))
    p.check_stuck(more_may_come=True)
    with pytest.raises(NoSourceLeft):
        p.check_stuck()


def test_a_busy_peer_keeps_the_connections_it_serves_and_grows_back():
    p = planner(pieces=8)
    p.add_source(peer("a", connections=4))
    flights = p.assign(0.0)
    assert len(flights) == 4
    p.failed(flights[0].id, 0.0, Failure.BUSY, retry_after=5.0)
    # Three still served: no new connection, but no wait either.
    assert p.assign(0.1) == []
    p.done(flights[1].id, 0.2)
    assert len(p.assign(0.2)) == 2  # limit 3 + 1 = 4, two running
    p.failed(flights[2].id, 0.3, Failure.BUSY, retry_after=5.0)
    assert p.dropped() == {}


def test_a_busy_peer_serving_us_nothing_is_waited_for():
    p = planner(pieces=2)
    p.add_source(peer("a", connections=1))
    (a,) = p.assign(0.0)
    p.failed(a.id, 0.0, Failure.BUSY, retry_after=1.5)
    assert p.assign(1.0) == []
    assert len(p.assign(1.5)) == 1


def test_restricted_seeds_give_granted_pieces_once_and_peers_pass_them_on():
    p = planner(pieces=4)
    p.add_source(peer("holder"))  # every piece: a seed
    p.add_source(peer("member", pieces={3}, count=4))
    p.restrict_seeds({0, 3})
    flights = {a.source: a.piece for a in p.assign(0.0)}
    # Piece 3 comes from the member that has it, not from the seed.
    assert flights == {"holder": 0, "member": 3}
    # Pieces 1 and 2: only the seed has them, and they are not granted yet.
    assert p.seed_wanted(queue=4) == 2


def test_one_connection_to_each_seed_while_others_fetch_from_them():
    p = planner(pieces=8)
    p.add_source(Source("origin", SourceKind.ORIGIN, 4))
    p.restrict_seeds(range(8))
    p.limit_seed_connections(1)
    assert len(p.assign(0.0)) == 1
    p.limit_seed_connections(None)
    assert len(p.assign(0.0)) == 3


def test_a_long_seed_queue_is_trimmed_when_others_come():
    p = planner(pieces=8)
    p.add_source(Source("origin", SourceKind.ORIGIN, 1))
    p.restrict_seeds(range(8))
    (a,) = p.assign(0.0)
    p.trim_seed_queue(2)
    assert p.seed_pending() == {a.piece, 1, 2}


def test_a_restriction_of_the_origin_alone_leaves_complete_peers_as_they_are():
    p = planner(pieces=4)
    p.add_source(peer("holder", connections=4))
    p.add_source(Source("origin", SourceKind.ORIGIN, 1))
    p.restrict_seeds(set(), origin_only=True)
    assert {a.source for a in p.assign(0.0)} == {"holder"}
    assert len(p.assign(0.0)) == 0
