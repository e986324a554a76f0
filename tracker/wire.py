"""Conversions between the lanpeer.v1 protobuf messages and the plain values in
tracker.model, in both directions. The service decodes requests and encodes replies
with these; the client does the reverse. Nothing past this module sees protobuf.

Decoding validates: a malformed message raises InvalidArgument naming the field.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

from lanpeer.v1 import admin_pb2, common_pb2, tracker_pb2
from tracker.errors import InvalidArgument
from tracker.model import (
    HASH_LEN,
    MAX_PIECE_COUNT,
    MAX_REPORTED_FETCH,
    AgentInfo,
    AgentStatus,
    Announce,
    ContentDetails,
    ContentMatch,
    ContentQuery,
    DigestQuery,
    Fetched,
    FilePage,
    FileSummary,
    HeartbeatAction,
    HolderState,
    HolderView,
    Holding,
    Load,
    Manifest,
    NameQuery,
    SourceQuery,
    SourceRef,
    Stats,
    SwarmMember,
    SwarmView,
    UrlQuery,
    Validator,
    check_sha256,
)

# A full snapshot of 20,000 holdings is about 3 MiB, a manifest of the largest content
# 2.2 MiB; a message far past that is not one a real agent sends. Replies may be larger:
# a Locate can hand out a thousand holders with their piece bitmaps.
MAX_RECEIVE_BYTES = 8 * 1024 * 1024
MAX_SEND_BYTES = 32 * 1024 * 1024
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
    ("grpc.max_send_message_length", MAX_SEND_BYTES),
)
# Clients also keep their connections to themselves (gRPC otherwise shares them between
# channels to the same address, and with them a failed connection's back-off), and try a
# tracker that went away again within seconds rather than gRPC's default two minutes.
CLIENT_CHANNEL_OPTIONS = (
    *CHANNEL_OPTIONS,
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
)

# The most holdings or removals one SyncInventory may carry. Agents with more send a
# full snapshot of the first batch and deltas for the rest.
MAX_SYNC_ENTRIES = 20_000


def _prefixed(where: str, exc: InvalidArgument) -> InvalidArgument:
    return InvalidArgument(f"{where}: {exc}")


# ------------------------------------------------------------------- content


def manifest_to_pb(manifest: Manifest) -> common_pb2.Manifest:
    hashes = manifest.piece_hashes
    return common_pb2.Manifest(
        sha256=manifest.sha256,
        size=manifest.size,
        piece_size=manifest.piece_size,
        piece_sha256s=[hashes[i : i + HASH_LEN] for i in range(0, len(hashes), HASH_LEN)],
    )


def manifest_from_pb(pb: common_pb2.Manifest) -> Manifest:
    if len(pb.piece_sha256s) > MAX_PIECE_COUNT:
        raise InvalidArgument(f"manifest.piece_sha256s: more than {MAX_PIECE_COUNT} pieces")
    for i, digest in enumerate(pb.piece_sha256s):
        if len(digest) != HASH_LEN:
            raise InvalidArgument(f"manifest.piece_sha256s[{i}]: {len(digest)} bytes, not {HASH_LEN}")
    return Manifest(pb.sha256, pb.size, pb.piece_size, b"".join(pb.piece_sha256s))


def source_to_pb(source: SourceRef) -> common_pb2.SourceRef:
    v = source.validator
    return common_pb2.SourceRef(
        url=source.url,
        validator=common_pb2.Validator(
            etag=v.etag, last_modified=v.last_modified, content_length=v.content_length
        ),
    )


def source_from_pb(pb: common_pb2.SourceRef) -> SourceRef:
    if not pb.HasField("validator"):
        raise InvalidArgument("source.validator: missing")
    v = pb.validator
    return SourceRef(pb.url, Validator(v.etag, v.last_modified, v.content_length))


def query_to_pb(query: ContentQuery) -> common_pb2.ContentQuery:
    if isinstance(query, DigestQuery):
        return common_pb2.ContentQuery(sha256=query.sha256)
    if isinstance(query, SourceQuery):
        return common_pb2.ContentQuery(source=source_to_pb(query.source))
    if isinstance(query, UrlQuery):
        return common_pb2.ContentQuery(url=query.url)
    return common_pb2.ContentQuery(name=query.name)


def query_from_pb(pb: common_pb2.ContentQuery) -> ContentQuery:
    kind = pb.WhichOneof("query")
    if kind == "sha256":
        return DigestQuery(pb.sha256)
    if kind == "source":
        return SourceQuery(source_from_pb(pb.source))
    if kind == "name":
        return NameQuery(pb.name)
    if kind == "url":
        return UrlQuery(pb.url)
    raise InvalidArgument("query: give a sha256, a source, a name or a url")


def holding_to_pb(holding: Holding) -> tracker_pb2.Holding:
    pb = tracker_pb2.Holding(
        sha256=holding.sha256, size=holding.size, name=holding.name, complete=holding.complete
    )
    if not holding.complete:
        pb.pieces.bitmap = holding.bitmap
    return pb


def holding_from_pb(pb: tracker_pb2.Holding) -> Holding:
    return Holding(pb.sha256, pb.size, pb.name, pb.complete, pb.pieces.bitmap)


def load_to_pb(load: Load) -> tracker_pb2.Load:
    return tracker_pb2.Load(active_uploads=load.active_uploads, active_downloads=load.active_downloads)


def load_from_pb(pb: tracker_pb2.Load) -> Load:
    return Load(pb.active_uploads, pb.active_downloads)


def fetched_from_pb(pb: tracker_pb2.HeartbeatRequest) -> Fetched:
    reported = (("bytes_from_peers", pb.bytes_from_peers), ("bytes_from_origin", pb.bytes_from_origin))
    for what, value in reported:
        if value > MAX_REPORTED_FETCH:
            raise InvalidArgument(f"{what}: {value} is more than an agent can have fetched")
    return Fetched(pb.bytes_from_peers, pb.bytes_from_origin)


# ------------------------------------------------------------------- TrackerService


def agent_info_from_pb(pb: tracker_pb2.RegisterRequest) -> AgentInfo:
    return AgentInfo(pb.agent_id, pb.hostname, pb.base_url, pb.version)


def holdings_from_pb(entries: Sequence[tracker_pb2.Holding]) -> list[Holding]:
    if len(entries) > MAX_SYNC_ENTRIES:
        raise InvalidArgument(
            f"holdings: {len(entries)} entries in one message; send at most {MAX_SYNC_ENTRIES}"
        )
    holdings = []
    for i, entry in enumerate(entries):
        try:
            holdings.append(holding_from_pb(entry))
        except InvalidArgument as exc:
            raise _prefixed(f"holdings[{i}]", exc) from None
    return holdings


def removed_from_pb(digests: Sequence[str]) -> list[str]:
    if len(digests) > MAX_SYNC_ENTRIES:
        raise InvalidArgument(
            f"removed_sha256s: {len(digests)} entries in one message; send at most {MAX_SYNC_ENTRIES}"
        )
    return [check_sha256(d, f"removed_sha256s[{i}]") for i, d in enumerate(digests)]


_ACTIONS = {
    HeartbeatAction.NONE: tracker_pb2.HEARTBEAT_ACTION_NONE,
    HeartbeatAction.RESYNC: tracker_pb2.HEARTBEAT_ACTION_RESYNC,
    HeartbeatAction.REGISTER: tracker_pb2.HEARTBEAT_ACTION_REGISTER,
}
_ACTIONS_BACK = {v: k for k, v in _ACTIONS.items()}


def action_to_pb(action: HeartbeatAction) -> tracker_pb2.HeartbeatAction:
    return _ACTIONS[action]


def action_from_pb(value: tracker_pb2.HeartbeatAction) -> HeartbeatAction:
    try:
        return _ACTIONS_BACK[value]
    except KeyError:
        raise InvalidArgument(f"heartbeat action {value} is unknown") from None


def holder_to_pb(view: HolderView) -> tracker_pb2.Holder:
    pb = tracker_pb2.Holder(
        agent_id=view.agent.agent_id,
        hostname=view.agent.hostname,
        base_url=view.agent.base_url,
        complete=view.holding.complete,
    )
    if view.load.active_uploads or view.load.active_downloads:
        pb.load.active_uploads = view.load.active_uploads
        pb.load.active_downloads = view.load.active_downloads
    if not view.holding.complete:
        pb.pieces.bitmap = view.holding.bitmap
    return pb


def holder_from_pb(pb: tracker_pb2.Holder, sha256: str, size: int, name: str) -> HolderView:
    return HolderView(
        _agent_info(pb.agent_id, pb.hostname, pb.base_url),
        _holding(sha256, size, name, pb.complete, pb.pieces.bitmap),
        load_from_pb(pb.load),
    )


# A client decodes the same few agents and files over and over; validating each once is
# enough, since the values are immutable.
@functools.lru_cache(maxsize=4096)
def _agent_info(agent_id: str, hostname: str, base_url: str) -> AgentInfo:
    return AgentInfo(agent_id, hostname, base_url, "")


@functools.lru_cache(maxsize=1024)
def _holding(sha256: str, size: int, name: str, complete: bool, bitmap: bytes) -> Holding:
    return Holding(sha256, size, name, complete, bitmap)


def match_to_pb(match: ContentMatch) -> tracker_pb2.ContentMatch:
    pb = tracker_pb2.ContentMatch(
        sha256=match.sha256,
        size=match.size,
        names=match.names,
        holders=[holder_to_pb(h) for h in match.holders],
    )
    if match.manifest is not None:
        pb.manifest.CopyFrom(manifest_to_pb(match.manifest))
    return pb


def match_from_pb(pb: tracker_pb2.ContentMatch) -> ContentMatch:
    name = pb.names[0] if pb.names else ""
    return ContentMatch(
        sha256=pb.sha256,
        size=pb.size,
        manifest=manifest_from_pb(pb.manifest) if pb.HasField("manifest") else None,
        names=tuple(pb.names),
        holders=tuple(holder_from_pb(h, pb.sha256, pb.size, name) for h in pb.holders),
    )


def announce_to_pb(a: Announce) -> tracker_pb2.AnnounceRequest:
    return tracker_pb2.AnnounceRequest(
        agent_id=a.agent_id,
        swarm_id=a.swarm_id,
        size=a.size,
        piece_size=a.piece_size,
        have=common_pb2.PieceSet(bitmap=a.have),
        hashes=_piece_hashes_to_pb(a.hashes),
        hashes_known=common_pb2.PieceSet(bitmap=a.hashes_known),
        seed_claims=sorted(a.seed_claims),
        want_seed=a.want_seed,
        complete=a.complete,
        leaving=a.leaving,
    )


def announce_from_pb(pb: tracker_pb2.AnnounceRequest) -> Announce:
    for what, entries in (("hashes", pb.hashes), ("seed_claims", pb.seed_claims)):
        if len(entries) > MAX_PIECE_COUNT:
            raise InvalidArgument(f"{what}: {len(entries)} entries, more than {MAX_PIECE_COUNT} pieces")
    a = Announce(
        agent_id=pb.agent_id,
        swarm_id=pb.swarm_id,
        size=pb.size,
        piece_size=pb.piece_size,
        have=pb.have.bitmap,
        hashes=_piece_hashes_from_pb(pb.hashes),
        hashes_known=pb.hashes_known.bitmap,
        seed_claims=frozenset(pb.seed_claims),
        want_seed=pb.want_seed,
        complete=pb.complete,
        leaving=pb.leaving,
    )
    if len(pb.seed_claims) > a.piece_count:
        raise InvalidArgument(f"seed_claims: {len(pb.seed_claims)} entries for {a.piece_count} pieces")
    return a


def _piece_hashes_to_pb(hashes: Mapping[int, bytes]) -> list[tracker_pb2.PieceHash]:
    return [tracker_pb2.PieceHash(index=i, sha256=digest) for i, digest in sorted(hashes.items())]


def _piece_hashes_from_pb(entries: Sequence[tracker_pb2.PieceHash]) -> dict[int, bytes]:
    hashes: dict[int, bytes] = {}
    for i, entry in enumerate(entries):
        if entry.index in hashes:
            raise InvalidArgument(f"hashes[{i}]: piece {entry.index} appears twice")
        hashes[entry.index] = entry.sha256
    return hashes


def swarm_view_to_pb(view: SwarmView) -> tracker_pb2.AnnounceResponse:
    return tracker_pb2.AnnounceResponse(
        members=[
            tracker_pb2.SwarmMember(
                agent_id=m.agent_id,
                base_url=m.base_url,
                complete=m.have is None,
                have=None if m.have is None else common_pb2.PieceSet(bitmap=m.have),
            )
            for m in view.members
        ],
        hashes=_piece_hashes_to_pb(view.hashes),
        hashes_known=common_pb2.PieceSet(bitmap=view.hashes_known),
        seed_granted=view.seed_granted,
        seed_claimed=common_pb2.PieceSet(bitmap=view.seed_claimed),
        hash_conflicts=view.hash_conflicts,
        interval_ms=max(1, round(view.interval * 1000)),
    )


def swarm_view_from_pb(pb: tracker_pb2.AnnounceResponse) -> SwarmView:
    return SwarmView(
        members=tuple(
            SwarmMember(m.agent_id, m.base_url, None if m.complete else m.have.bitmap) for m in pb.members
        ),
        hashes={entry.index: entry.sha256 for entry in pb.hashes},
        hashes_known=pb.hashes_known.bitmap,
        seed_granted=tuple(pb.seed_granted),
        seed_claimed=pb.seed_claimed.bitmap,
        hash_conflicts=tuple(pb.hash_conflicts),
        interval=pb.interval_ms / 1000,
    )


# ------------------------------------------------------------------- TrackerAdminService


def agent_status_to_pb(status: AgentStatus) -> admin_pb2.AgentStatus:
    info = status.agent
    pb = admin_pb2.AgentStatus(
        agent_id=info.agent_id,
        hostname=info.hostname,
        base_url=info.base_url,
        version=info.version,
        live=status.live,
        files=status.files,
        bytes_held=status.bytes_held,
        load=load_to_pb(status.load),
        bad_source_reports=status.bad_source_reports,
        banned=status.banned,
    )
    if status.last_seen_age is not None:
        pb.last_seen_age_seconds = status.last_seen_age
    return pb


def agent_status_from_pb(pb: admin_pb2.AgentStatus) -> AgentStatus:
    return AgentStatus(
        agent=AgentInfo(pb.agent_id, pb.hostname, pb.base_url, pb.version),
        live=pb.live,
        last_seen_age=pb.last_seen_age_seconds if pb.HasField("last_seen_age_seconds") else None,
        files=pb.files,
        bytes_held=pb.bytes_held,
        load=load_from_pb(pb.load),
        bad_source_reports=pb.bad_source_reports,
        banned=pb.banned,
    )


def file_page_to_pb(page: FilePage) -> admin_pb2.ListFilesResponse:
    return admin_pb2.ListFilesResponse(
        files=[
            admin_pb2.FileSummary(
                sha256=f.sha256,
                size=f.size,
                names=f.names,
                live_holders=f.live_holders,
                holders=f.holders,
                has_manifest=f.has_manifest,
                sources=[source_to_pb(s) for s in f.sources],
            )
            for f in page.files
        ],
        next_page_token=page.next_page_token,
    )


def file_page_from_pb(pb: admin_pb2.ListFilesResponse) -> FilePage:
    files = tuple(
        FileSummary(
            sha256=f.sha256,
            size=f.size,
            names=tuple(f.names),
            live_holders=f.live_holders,
            holders=f.holders,
            has_manifest=f.has_manifest,
            sources=tuple(source_from_pb(s) for s in f.sources),
        )
        for f in pb.files
    )
    return FilePage(files, pb.next_page_token)


_STATES = {
    HolderState.LIVE: admin_pb2.HOLDER_STATE_LIVE,
    HolderState.DEAD: admin_pb2.HOLDER_STATE_DEAD,
    HolderState.BAD: admin_pb2.HOLDER_STATE_BAD,
}
_STATES_BACK = {v: k for k, v in _STATES.items()}


def details_to_pb(details: ContentDetails) -> admin_pb2.ContentDetails:
    pb = admin_pb2.ContentDetails(
        sha256=details.sha256,
        size=details.size,
        names=details.names,
        holders=[
            admin_pb2.HolderStatus(holder=holder_to_pb(view), state=_STATES[state])
            for view, state in details.holders
        ],
        sources=[source_to_pb(s) for s in details.sources],
    )
    if details.manifest is not None:
        pb.manifest.CopyFrom(manifest_to_pb(details.manifest))
    return pb


def details_from_pb(pb: admin_pb2.ContentDetails) -> ContentDetails:
    name = pb.names[0] if pb.names else ""
    return ContentDetails(
        sha256=pb.sha256,
        size=pb.size,
        manifest=manifest_from_pb(pb.manifest) if pb.HasField("manifest") else None,
        names=tuple(pb.names),
        holders=tuple(
            (
                holder_from_pb(h.holder, pb.sha256, pb.size, name),
                _STATES_BACK.get(h.state, HolderState.DEAD),
            )
            for h in pb.holders
        ),
        sources=tuple(source_from_pb(s) for s in pb.sources),
    )


def stats_to_pb(stats: Stats) -> admin_pb2.GetStatsResponse:
    return admin_pb2.GetStatsResponse(
        live_agents=stats.live_agents,
        dead_agents=stats.dead_agents,
        banned_agents=stats.banned_agents,
        distinct_files=stats.distinct_files,
        holdings=stats.holdings,
        bytes_held=stats.bytes_held,
        manifests=stats.manifests,
        sources=stats.sources,
        bad_source_reports=stats.bad_source_reports,
        swarms=stats.swarms,
        swarm_members=stats.swarm_members,
        bytes_from_peers=stats.fetched.from_peers,
        bytes_from_origin=stats.fetched.from_origin,
    )


def stats_from_pb(pb: admin_pb2.GetStatsResponse) -> Stats:
    return Stats(
        live_agents=pb.live_agents,
        dead_agents=pb.dead_agents,
        banned_agents=pb.banned_agents,
        distinct_files=pb.distinct_files,
        holdings=pb.holdings,
        bytes_held=pb.bytes_held,
        manifests=pb.manifests,
        sources=pb.sources,
        bad_source_reports=pb.bad_source_reports,
        swarms=pb.swarms,
        swarm_members=pb.swarm_members,
        fetched=Fetched(pb.bytes_from_peers, pb.bytes_from_origin),
    )
