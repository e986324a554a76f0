"""The pure index, driven by events and a fake clock."""

from __future__ import annotations

import random

import pytest

from tests.unit.helpers import FakeClock, agent, digest, manifest_for, whole
from tracker.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from tracker.index import Index
from tracker.model import (
    DigestQuery,
    HeartbeatAction,
    HolderState,
    Holding,
    Load,
    MiB,
    NameQuery,
    SourceQuery,
    SourceRef,
    UrlQuery,
    Validator,
)
from tracker.policy import LeastLoaded, Shuffled

A, B = digest("a"), digest("b")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def index(clock: FakeClock) -> Index:
    return Index(heartbeat_interval=10, policy=LeastLoaded(), clock=clock, rng=random.Random(7))


def join(index: Index, agent_id: str, *holdings: Holding, generation: int = 1) -> None:
    index.register(agent(agent_id))
    index.sync(agent_id, generation=generation, full=True, holdings=holdings, removed=())
    index.heartbeat(agent_id, generation, Load())


def holder_ids(index: Index, sha256: str, **kwargs: object) -> list[str]:
    (match,) = index.locate(DigestQuery(sha256), max_holders=50, **kwargs)  # type: ignore[arg-type]
    return [h.agent.agent_id for h in match.holders]


# ----------------------------------------------------------------------------- liveness


def test_an_agent_is_live_until_three_intervals_pass_without_a_heartbeat(index, clock):
    join(index, "x", whole(A))
    clock.advance(29.9)
    assert holder_ids(index, A) == ["x"]
    clock.advance(0.2)
    assert holder_ids(index, A) == []
    assert index.heartbeat("x", 1, Load()) is HeartbeatAction.NONE
    assert holder_ids(index, A) == ["x"]


def test_a_restored_agent_is_never_live_until_it_registers_again(index):
    index.restore_agent(agent("old"))
    assert not index.is_live("old")
    assert index.heartbeat("old", 0, Load()) is HeartbeatAction.REGISTER
    assert not index.is_live("old")
    with pytest.raises(NotFound):
        index.sync("old", generation=1, full=True, holdings=[whole(A)], removed=())


def test_unknown_agents_are_told_to_register(index):
    assert index.heartbeat("ghost", 3, Load()) is HeartbeatAction.REGISTER


def test_sweep_forgets_holdings_of_long_silent_agents_but_keeps_the_agent(index, clock):
    join(index, "x", whole(A))
    clock.advance(index.forget_after + 1)
    assert index.sweep() == 1
    assert index.stats().holdings == 0
    assert [s.agent.agent_id for s in index.agents()] == ["x"]
    assert index.heartbeat("x", 1, Load()) is HeartbeatAction.RESYNC


# ----------------------------------------------------------------------------- inventory


def test_register_forgets_old_holdings_and_asks_for_a_full_snapshot(index):
    join(index, "x", whole(A))
    index.register(agent("x"))
    assert index.stats().holdings == 0
    assert index.heartbeat("x", 1, Load()) is HeartbeatAction.RESYNC


def test_delta_must_follow_the_last_generation(index):
    join(index, "x", whole(A), generation=5)
    gap = index.sync("x", generation=7, full=False, holdings=[whole(B)], removed=())
    assert gap.result.resync_needed
    assert gap.result.generation == 5
    assert index.stats().holdings == 1
    ok = index.sync("x", generation=6, full=False, holdings=[whole(B)], removed=[A])
    assert not ok.result.resync_needed
    assert holder_ids(index, B) == ["x"]
    assert index.locate(DigestQuery(A), max_holders=5) == []


def test_delta_before_any_snapshot_needs_a_resync(index):
    index.register(agent("x"))
    outcome = index.sync("x", generation=1, full=False, holdings=[whole(A)], removed=())
    assert outcome.result.resync_needed


def test_heartbeat_with_another_generation_asks_for_a_resync(index):
    join(index, "x", whole(A), generation=3)
    assert index.heartbeat("x", 2, Load()) is HeartbeatAction.RESYNC
    assert index.heartbeat("x", 3, Load()) is HeartbeatAction.NONE


def test_full_snapshot_replaces_everything(index):
    join(index, "x", whole(A, name="a.tar"), whole(B, name="b.tar"))
    index.sync("x", generation=9, full=True, holdings=[whole(B, name="renamed.tar")], removed=())
    assert index.locate(NameQuery("a.tar"), max_holders=5) == []
    assert index.locate(NameQuery("b.tar"), max_holders=5) == []
    (match,) = index.locate(NameQuery("renamed.tar"), max_holders=5)
    assert match.sha256 == B
    assert index.stats().holdings == 1


def test_invalid_entry_leaves_the_inventory_untouched(index):
    join(index, "x", whole(A))
    m = manifest_for(B, 3 * MiB)
    index.add_manifest(m)
    before = index.stats()
    bad_bitmap = Holding(B, m.size, "b", complete=False, bitmap=b"\xff")  # spare bits set
    with pytest.raises(InvalidArgument):
        index.sync("x", generation=2, full=True, holdings=[whole(digest("c")), bad_bitmap], removed=())
    assert index.stats() == before
    assert holder_ids(index, A) == ["x"]


def test_a_digest_twice_in_one_message_is_refused(index):
    index.register(agent("x"))
    with pytest.raises(InvalidArgument, match="appears twice"):
        index.sync("x", generation=1, full=True, holdings=[whole(A), whole(A)], removed=())


def test_added_and_removed_at_once_is_refused(index):
    join(index, "x", whole(A))
    with pytest.raises(InvalidArgument, match="also in holdings"):
        index.sync("x", generation=2, full=False, holdings=[whole(B)], removed=[B])


def test_partial_holding_needs_a_known_manifest_and_a_fitting_bitmap(index):
    index.register(agent("x"))
    size = 10 * MiB + 1  # 11 pieces of 1 MiB
    with pytest.raises(FailedPrecondition):
        index.sync(
            "x", generation=1, full=True, holdings=[Holding(A, size, "", False, b"\x80\x00")], removed=()
        )
    index.add_manifest(manifest_for(A, size))
    with pytest.raises(InvalidArgument, match="2 bytes"):
        index.sync("x", generation=1, full=True, holdings=[Holding(A, size, "", False, b"\x80")], removed=())
    with pytest.raises(InvalidArgument, match="past the last piece"):
        index.sync(
            "x", generation=1, full=True, holdings=[Holding(A, size, "", False, b"\x00\x10")], removed=()
        )
    index.sync("x", generation=1, full=True, holdings=[Holding(A, size, "", False, b"\xff\xe0")], removed=())
    index.heartbeat("x", 1, Load())
    (match,) = index.locate(DigestQuery(A), max_holders=5)
    (holder,) = match.holders
    assert not holder.holding.complete
    assert holder.holding.bitmap == b"\xff\xe0"
    assert index.stats().bytes_held == size  # All 11 pieces are held.


def test_sizes_must_agree_with_the_manifest_and_other_holders(index):
    join(index, "x", whole(A, size=100))
    index.register(agent("y"))
    with pytest.raises(InvalidArgument, match="other holders"):
        index.sync("y", generation=1, full=True, holdings=[whole(A, size=101)], removed=())
    with pytest.raises(InvalidArgument, match="holders report"):
        index.add_manifest(manifest_for(A, 101))
    index.add_manifest(manifest_for(B, 5))
    with pytest.raises(InvalidArgument, match="manifest"):
        index.sync("y", generation=1, full=True, holdings=[whole(B, size=6)], removed=())


# ----------------------------------------------------------------------------- hand-out


def test_least_loaded_first_then_random_among_equals(index):
    for name, uploads in (("busy", 5), ("idle1", 0), ("idle2", 0), ("mid", 2)):
        join(index, name, whole(A))
        index.heartbeat(name, 1, Load(active_uploads=uploads))
    orders = {tuple(holder_ids(index, A)) for _ in range(40)}
    assert all(order[2:] == ("mid", "busy") for order in orders)
    assert {order[:2] for order in orders} == {("idle1", "idle2"), ("idle2", "idle1")}


def test_random_policy_ignores_load(index):
    for name, uploads in (("busy", 9), ("idle", 0)):
        join(index, name, whole(A))
        index.heartbeat(name, 1, Load(active_uploads=uploads))
    firsts = {holder_ids(index, A, policy=Shuffled())[0] for _ in range(40)}
    assert firsts == {"busy", "idle"}


def test_the_requester_is_never_handed_itself_and_max_holders_caps(index):
    for name in ("a1", "a2", "a3"):
        join(index, name, whole(A))
    assert "a2" not in holder_ids(index, A, requester="a2")
    (match,) = index.locate(DigestQuery(A), max_holders=2)
    assert len(match.holders) == 2


def test_locate_by_name_lists_each_candidate(index):
    join(index, "x", whole(A, name="data.tar"))
    join(index, "y", whole(B, name="data.tar"), whole(A, name="data.tar"))
    matches = index.locate(NameQuery("data.tar"), max_holders=5)
    assert [m.sha256 for m in matches] == [A, B]  # A has more live holders.


def test_left_agents_are_not_handed_out(index):
    join(index, "x", whole(A))
    index.leave("x")
    assert index.locate(DigestQuery(A), max_holders=5) == []
    assert index.heartbeat("x", 1, Load()) is HeartbeatAction.REGISTER


# ----------------------------------------------------------------------------- content


def test_manifests_are_first_come_and_identical_republishing_is_fine(index):
    m = manifest_for(A, 2 * MiB)
    assert index.add_manifest(m)
    assert not index.add_manifest(m)
    other = manifest_for(A, 3 * MiB)
    with pytest.raises(FailedPrecondition):
        index.add_manifest(other)


def test_source_mapping_and_conflict(index):
    src = SourceRef("http://origin/x.tar", Validator('"v1"'))
    assert index.add_source(src, A)
    assert not index.add_source(src, A)
    (match,) = index.locate(SourceQuery(src), max_holders=5)
    assert match.sha256 == A
    with pytest.raises(FailedPrecondition, match="dropped"):
        index.add_source(src, B)
    assert index.locate(SourceQuery(src), max_holders=5) == []
    with pytest.raises(FailedPrecondition):
        index.add_source(src, A)


def test_a_url_query_finds_every_version(index):
    index.add_source(SourceRef("http://o/x", Validator('"1"')), A)
    index.add_source(SourceRef("http://o/x", Validator(last_modified="Mon", content_length=3)), B)
    index.add_source(SourceRef("http://o/y", Validator('"1"')), A)
    assert [d.sha256 for d in index.inspect(UrlQuery("http://o/x"))] == sorted([A, B])


# ----------------------------------------------------------------------------- bad sources


def test_a_reported_holder_is_not_handed_out_for_that_content_only(index):
    join(index, "bad", whole(A), whole(B))
    join(index, "good", whole(A))
    mark, total = index.report_bad(reporter="good", holder="bad", sha256=A, piece_index=0, reason="x")
    assert (mark.reports, total) == (1, 1)
    assert holder_ids(index, A) == ["good"]
    assert holder_ids(index, B) == ["bad"]
    (details,) = index.inspect(DigestQuery(A))
    assert dict((v.agent.agent_id, s) for v, s in details.holders) == {
        "bad": HolderState.BAD,
        "good": HolderState.LIVE,
    }
    assert index.stats().bad_source_reports == 1


def test_withdrawing_content_clears_its_bad_mark(index):
    join(index, "bad", whole(A))
    join(index, "good", whole(A))
    index.report_bad(reporter="good", holder="bad", sha256=A, piece_index=0, reason="")
    outcome = index.sync("bad", generation=2, full=False, holdings=(), removed=[A])
    assert outcome.cleared_marks == (("bad", A),)
    index.sync("bad", generation=3, full=False, holdings=[whole(A)], removed=())
    assert sorted(holder_ids(index, A)) == ["bad", "good"]


def test_bad_reports_are_checked(index):
    join(index, "x", whole(A))
    index.add_manifest(manifest_for(A, 100))
    with pytest.raises(InvalidArgument):
        index.report_bad(reporter="x", holder="x", sha256=A, piece_index=0, reason="")
    join(index, "y")
    with pytest.raises(NotFound):
        index.report_bad(reporter="y", holder="nobody", sha256=A, piece_index=0, reason="")
    with pytest.raises(NotFound):
        index.report_bad(reporter="nobody", holder="x", sha256=A, piece_index=0, reason="")
    with pytest.raises(InvalidArgument, match="piece_index"):
        index.report_bad(reporter="y", holder="x", sha256=A, piece_index=1, reason="")


# ----------------------------------------------------------------------------- admin


def test_evict_withdraws_and_ban_refuses_registration(index):
    join(index, "x", whole(A))
    join(index, "y", whole(A))
    index.report_bad(reporter="y", holder="x", sha256=A, piece_index=0, reason="")
    outcome = index.evict("x", ban=True)
    assert outcome.holdings_removed == 1
    assert outcome.cleared_marks == (("x", A),)
    assert holder_ids(index, A) == ["y"]
    with pytest.raises(PermissionDenied):
        index.register(agent("x"))
    index.unban("x")
    index.register(agent("x"))
    with pytest.raises(NotFound):
        index.unban("x")
    with pytest.raises(NotFound):
        index.evict("nobody", ban=False)


def test_a_swarm_member_is_a_registered_live_agent_not_banned(index, clock):
    join(index, "x")
    assert index.live_agent("x") == agent("x")
    with pytest.raises(NotFound, match="agent nobody is not registered"):
        index.live_agent("nobody")
    clock.advance(30.1)
    with pytest.raises(FailedPrecondition, match="agent x is not live"):
        index.live_agent("x")
    index.heartbeat("x", 1, Load())
    assert index.live_agent("x") == agent("x")
    index.evict("x", ban=True)
    with pytest.raises(PermissionDenied, match="banned"):
        index.live_agent("x")


def test_stats_and_agents_add_up(index, clock):
    join(index, "x", whole(A, size=10), whole(B, size=20))
    join(index, "y", whole(A, size=10))
    clock.advance(31)
    index.heartbeat("y", 1, Load(active_uploads=3))
    stats = index.stats()
    assert (stats.live_agents, stats.dead_agents) == (1, 1)
    assert (stats.distinct_files, stats.holdings, stats.bytes_held) == (2, 3, 40)
    by_id = {s.agent.agent_id: s for s in index.agents()}
    assert by_id["x"].live is False
    assert by_id["x"].last_seen_age == pytest.approx(31)
    assert (by_id["x"].files, by_id["x"].bytes_held) == (2, 30)
    assert by_id["y"].load.active_uploads == 3


def test_files_are_listed_in_pages(index):
    digests = sorted(digest(str(i)) for i in range(7))
    join(index, "x", *(whole(d) for d in digests))
    seen, token = [], ""
    while True:
        page = index.files(after=token, limit=3)
        seen += [f.sha256 for f in page.files]
        token = page.next_page_token
        if not token:
            break
    assert seen == digests
