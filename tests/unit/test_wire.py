"""Decoding validates every message kind; encoding and decoding round-trip."""

from __future__ import annotations

import pytest

from lanpeer.v1 import admin_pb2, common_pb2, tracker_pb2
from tests.unit.helpers import agent, digest, manifest_for
from tracker import wire
from tracker.errors import InvalidArgument
from tracker.model import (
    MAX_PIECE_COUNT,
    AgentStatus,
    Announce,
    ContentDetails,
    ContentMatch,
    DigestQuery,
    FilePage,
    FileSummary,
    HeartbeatAction,
    HolderState,
    HolderView,
    Holding,
    Load,
    MiB,
    NameQuery,
    SourceQuery,
    SourceRef,
    Stats,
    SwarmMember,
    SwarmView,
    UrlQuery,
    Validator,
)

A = digest("a")
SRC = SourceRef("https://origin/a.tar", Validator(last_modified="Mon, 01 Jan 2024", content_length=9))


def test_manifest_round_trip_and_piece_digest_length() -> None:
    m = manifest_for(A, 5 * MiB + 3)
    assert wire.manifest_from_pb(wire.manifest_to_pb(m)) == m
    pb = wire.manifest_to_pb(m)
    pb.piece_sha256s[2] = b"\0" * 31
    with pytest.raises(InvalidArgument, match=r"piece_sha256s\[2\]: 31 bytes"):
        wire.manifest_from_pb(pb)


def test_too_many_piece_digests_are_refused_before_joining() -> None:
    pb = common_pb2.Manifest(sha256=A, size=1, piece_size=MiB, piece_sha256s=[b"\0" * 32] * 65_537)
    with pytest.raises(InvalidArgument, match="more than 65536"):
        wire.manifest_from_pb(pb)


@pytest.mark.parametrize(
    "query", [DigestQuery(A), SourceQuery(SRC), NameQuery("x.tar"), UrlQuery("http://o/x")]
)
def test_queries_round_trip(query) -> None:
    assert wire.query_from_pb(wire.query_to_pb(query)) == query


def test_empty_query_and_source_without_validator_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="give a sha256"):
        wire.query_from_pb(common_pb2.ContentQuery())
    with pytest.raises(InvalidArgument, match="validator: missing"):
        wire.query_from_pb(common_pb2.ContentQuery(source=common_pb2.SourceRef(url="http://o/x")))


def test_holdings_round_trip_and_errors_name_the_entry() -> None:
    holdings = [Holding(A, 10, "a"), Holding(digest("b"), 3 * MiB, "b", False, b"\xa0")]
    pbs = [wire.holding_to_pb(h) for h in holdings]
    assert wire.holdings_from_pb(pbs) == holdings
    pbs.append(tracker_pb2.Holding(sha256="nope", size=1))
    with pytest.raises(InvalidArgument, match=r"holdings\[2\]: holding.sha256"):
        wire.holdings_from_pb(pbs)


def test_sync_entry_limits() -> None:
    many = [tracker_pb2.Holding(sha256=A, size=1)] * (wire.MAX_SYNC_ENTRIES + 1)
    with pytest.raises(InvalidArgument, match="at most 20000"):
        wire.holdings_from_pb(many)
    with pytest.raises(InvalidArgument, match="at most 20000"):
        wire.removed_from_pb([A] * (wire.MAX_SYNC_ENTRIES + 1))
    with pytest.raises(InvalidArgument, match=r"removed_sha256s\[1\]"):
        wire.removed_from_pb([A, A.upper()])


def test_register_request_is_validated() -> None:
    info = agent("lab-01")
    pb = tracker_pb2.RegisterRequest(
        agent_id=info.agent_id, hostname=info.hostname, base_url=info.base_url, version=info.version
    )
    assert wire.agent_info_from_pb(pb) == info
    pb.base_url = "gopher://x"
    with pytest.raises(InvalidArgument, match="base_url"):
        wire.agent_info_from_pb(pb)
    pb.base_url, pb.hostname = info.base_url, "h" * 256
    with pytest.raises(InvalidArgument, match="hostname"):
        wire.agent_info_from_pb(pb)


def test_heartbeat_actions_round_trip_and_unknown_is_refused() -> None:
    for action in HeartbeatAction:
        assert wire.action_from_pb(wire.action_to_pb(action)) is action
    with pytest.raises(InvalidArgument):
        wire.action_from_pb(tracker_pb2.HEARTBEAT_ACTION_UNSPECIFIED)


def test_load_is_validated() -> None:
    with pytest.raises(InvalidArgument, match="active_uploads"):
        wire.load_from_pb(tracker_pb2.Load(active_uploads=2**31))


def test_matches_round_trip() -> None:
    m = manifest_for(A, 3 * MiB)
    view = HolderView(agent("x"), Holding(A, m.size, "a", False, b"\xc0"), Load(2, 1))
    match = ContentMatch(A, m.size, m, ("a",), (view,))
    back = wire.match_from_pb(wire.match_to_pb(match))
    assert back.manifest == m
    assert back.holders[0].holding == view.holding
    assert back.holders[0].load == view.load
    assert back.holders[0].agent.base_url == view.agent.base_url


def test_admin_replies_round_trip() -> None:
    status = AgentStatus(agent("x"), True, 1.5, 3, 300, Load(1, 0), 2, False)
    assert wire.agent_status_from_pb(wire.agent_status_to_pb(status)) == status
    never = AgentStatus(agent("y"), False, None, 0, 0, Load(), 0, True)
    assert wire.agent_status_from_pb(wire.agent_status_to_pb(never)) == never

    page = FilePage((FileSummary(A, 9, ("a",), 1, 2, True, (SRC,)),), next_page_token=A)
    assert wire.file_page_from_pb(wire.file_page_to_pb(page)) == page

    stats = Stats(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
    assert wire.stats_from_pb(wire.stats_to_pb(stats)) == stats

    view = HolderView(agent("x"), Holding(A, 9, "a"), Load())
    details = ContentDetails(A, 9, None, ("a",), ((view, HolderState.BAD),), (SRC,))
    back = wire.details_from_pb(wire.details_to_pb(details))
    assert back.holders[0][1] is HolderState.BAD
    assert back.sources == (SRC,)
    assert isinstance(wire.details_to_pb(details), admin_pb2.ContentDetails)


# ----------------------------------------------------------------------------- swarms

ANNOUNCE = Announce(
    agent_id="x",
    swarm_id=A,
    size=10 * MiB,
    piece_size=MiB,
    have=b"\x60\x00",
    hashes={1: b"\x01" * 32, 2: b"\x02" * 32},
    hashes_known=b"\x40\x00",
    seed_claims=frozenset({4, 7}),
    want_seed=3,
)


def test_announces_round_trip() -> None:
    assert wire.announce_from_pb(wire.announce_to_pb(ANNOUNCE)) == ANNOUNCE
    observer = Announce("", A, 1, MiB, b"\x80", complete=True, leaving=True)
    assert wire.announce_from_pb(wire.announce_to_pb(observer)) == observer


def test_a_piece_hashed_twice_in_an_announce_is_refused() -> None:
    pb = wire.announce_to_pb(ANNOUNCE)
    pb.hashes.add(index=1, sha256=b"\x01" * 32)
    with pytest.raises(InvalidArgument, match=r"hashes\[2\]: piece 1 appears twice"):
        wire.announce_from_pb(pb)


def test_more_seed_claims_than_pieces_are_refused() -> None:
    pb = wire.announce_to_pb(ANNOUNCE)
    pb.seed_claims[:] = list(range(10))
    assert wire.announce_from_pb(pb).seed_claims == frozenset(range(10))
    pb.seed_claims.append(0)
    with pytest.raises(InvalidArgument, match="seed_claims: 11 entries for 10 pieces"):
        wire.announce_from_pb(pb)


@pytest.mark.parametrize("field", ["hashes", "seed_claims"])
def test_oversized_announce_lists_are_refused_before_decoding(field: str) -> None:
    pb = wire.announce_to_pb(ANNOUNCE)
    if field == "hashes":
        pb.hashes.extend(tracker_pb2.PieceHash(index=0) for _ in range(MAX_PIECE_COUNT + 1))
    else:
        pb.seed_claims.extend([0] * (MAX_PIECE_COUNT + 1))
    with pytest.raises(InvalidArgument, match=f"{field}: .* more than {MAX_PIECE_COUNT}"):
        wire.announce_from_pb(pb)


def test_swarm_views_round_trip() -> None:
    view = SwarmView(
        members=(SwarmMember("y", "http://y.lab:7071", b"\x60\x00"), SwarmMember("z", "http://z:1", None)),
        hashes={0: b"\x03" * 32, 9: b"\x04" * 32},
        hashes_known=b"\x80\x40",
        seed_granted=(3, 5),
        seed_claimed=b"\x14\x00",
        hash_conflicts=(2,),
        interval=1.5,
    )
    pb = wire.swarm_view_to_pb(view)
    assert pb.interval_ms == 1500
    assert [m.complete for m in pb.members] == [False, True]
    assert not pb.members[1].HasField("have")
    assert wire.swarm_view_from_pb(pb) == view
