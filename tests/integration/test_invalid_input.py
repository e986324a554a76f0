"""Malformed requests over the wire, sent with the raw generated stubs so that the typed
client's own checks cannot stop them. Each must get the right gRPC status with a message
naming the field, change nothing in the index, and leave the server answering."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lanpeer.v1 import admin_pb2, common_pb2, tracker_pb2
from tests.integration.helpers import Blob, make_blob, origin, snapshot, three_piece_blob
from tracker.client import AdminClient, TrackerClient
from tracker.model import DigestQuery, MiB
from tracker.wire import manifest_to_pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION

BLOB = three_piece_blob()  # alpha and beta hold it; its manifest is published
PLAIN = make_blob("plain.txt", 3000)  # alpha holds it; no manifest
NEW = make_blob("new.bin", 4000)  # nobody holds it
MAX_ENTRIES = 20_000


@dataclass
class World:
    stubs: Any
    admin: AdminClient
    client: TrackerClient

    def snapshot(self) -> Any:
        return snapshot(self.admin, self.client, (BLOB.sha256, PLAIN.sha256, NEW.sha256))

    def call(self, rpc: str, request: Any) -> grpc.RpcError:
        service, method = rpc.split(".")
        stub = self.stubs.tracker if service == "tracker" else self.stubs.admin
        with pytest.raises(grpc.RpcError) as info:
            getattr(stub, method)(request, timeout=10)
        return info.value


@pytest.fixture
def world(tracker, clients) -> World:
    alpha = clients.agent(tracker, "alpha").join(BLOB.whole(), PLAIN.whole())
    alpha.client.publish_manifest(alpha.id, BLOB.manifest)
    alpha.client.publish_source(alpha.id, origin(), BLOB.sha256)
    clients.agent(tracker, "beta").join(BLOB.whole())
    return World(clients.raw(tracker), clients.admin_api(tracker), clients.agent_api(tracker))


# ----------------------------------------------------------------------------- builders


def holding(
    sha256: str = NEW.sha256, size: int = NEW.size, name: str = "new.bin", bitmap: bytes | None = None
) -> tracker_pb2.Holding:
    pb = tracker_pb2.Holding(sha256=sha256, size=size, name=name, complete=bitmap is None)
    if bitmap is not None:
        pb.pieces.bitmap = bitmap
    return pb


def full_sync(*holdings: tracker_pb2.Holding, agent_id: str = "alpha", **kwargs: Any) -> Any:
    """A full snapshot from alpha whose first entry is valid: a half-applied one would show."""
    entries = [holding(), *holdings]
    return tracker_pb2.SyncInventoryRequest(
        agent_id=agent_id, generation=2, full=True, holdings=entries, **kwargs
    )


def delta(holdings=(), removed=()) -> Any:
    return tracker_pb2.SyncInventoryRequest(
        agent_id="alpha", generation=2, full=False, holdings=list(holdings), removed_sha256s=list(removed)
    )


def digests(count: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(count)]


def manifest_pb(blob: Blob = NEW, **changes: Any) -> common_pb2.Manifest:
    pb = manifest_to_pb(blob.manifest)
    for key, value in changes.items():
        if key == "piece_sha256s":
            del pb.piece_sha256s[:]
            pb.piece_sha256s.extend(value)
        else:
            setattr(pb, key, value)
    return pb


def publish_manifest(manifest: common_pb2.Manifest | None, agent_id: str = "alpha") -> Any:
    request = tracker_pb2.PublishManifestRequest(agent_id=agent_id)
    if manifest is not None:
        request.manifest.CopyFrom(manifest)
    return request


def source(url: str = "http://origin.example/new.bin", etag: str = '"n1"', **validator: Any) -> Any:
    return common_pb2.SourceRef(url=url, validator=common_pb2.Validator(etag=etag, **validator))


def publish_source(src: Any, sha256: str = NEW.sha256, agent_id: str = "alpha") -> Any:
    return tracker_pb2.PublishSourceRequest(agent_id=agent_id, source=src, sha256=sha256)


def locate(**query: Any) -> Any:
    options = {k: query.pop(k) for k in ("policy", "requester_agent_id", "max_holders") if k in query}
    return tracker_pb2.LocateRequest(query=common_pb2.ContentQuery(**query), **options)


def report(holder: str = "beta", reporter: str = "alpha", **kwargs: Any) -> Any:
    kwargs.setdefault("sha256", BLOB.sha256)
    return tracker_pb2.ReportBadSourceRequest(reporter_agent_id=reporter, holder_agent_id=holder, **kwargs)


def announce(**changes: Any) -> Any:
    """A valid announce from alpha, in a swarm cut as BLOB is, but for `changes`."""
    request = tracker_pb2.AnnounceRequest(
        agent_id="alpha",
        swarm_id=BLOB.sha256,
        size=BLOB.size,
        piece_size=BLOB.manifest.piece_size,
        have=common_pb2.PieceSet(bitmap=b"\x80"),
        hashes=[tracker_pb2.PieceHash(index=0, sha256=BLOB.manifest.piece_hash(0))],
        want_seed=1,
    )
    for key, value in changes.items():
        if key in ("hashes", "seed_claims"):
            getattr(request, key).extend(value)
        elif key in ("have", "hashes_known"):
            getattr(request, key).bitmap = value
        else:
            setattr(request, key, value)
    return request


def piece_hash(index: int, digest: bytes = b"\x01" * 32) -> Any:
    return tracker_pb2.PieceHash(index=index, sha256=digest)


def register(agent_id: str = "gamma", hostname: str = "gamma", base_url: str = "http://gamma:7071") -> Any:
    return tracker_pb2.RegisterRequest(agent_id=agent_id, hostname=hostname, base_url=base_url)


UPPER = BLOB.sha256.upper()
SHORT = BLOB.sha256[:63]
NOT_HEX = "g" * 64
LONG_NAME = "n" * 300
LONG_ID = "a" * 65


@dataclass(frozen=True)
class Case:
    id: str
    rpc: str
    build: Callable[[], Any]
    code: grpc.StatusCode
    # A part of the message: the field, or the agent, it names.
    says: str


CASES = [
    # Agent ids.
    Case("register: agent id ../x", "tracker.Register", lambda: register("../x"), INVALID, "agent_id"),
    Case("register: agent id of 65 chars", "tracker.Register", lambda: register(LONG_ID), INVALID,
         "agent_id"),
    Case("register: empty agent id", "tracker.Register", lambda: register(""), INVALID, "agent_id"),
    Case("register: empty hostname", "tracker.Register", lambda: register(hostname=""), INVALID, "hostname"),
    Case("register: hostname with a newline", "tracker.Register", lambda: register(hostname="a\nb"),
         INVALID, "hostname"),
    Case("register: base url not http", "tracker.Register", lambda: register(base_url="ftp://gamma/"),
         INVALID, "base_url"),
    Case("heartbeat: agent id ../x", "tracker.Heartbeat",
         lambda: tracker_pb2.HeartbeatRequest(agent_id="../x"), INVALID, "agent_id"),
    Case("heartbeat: agent id of 65 chars", "tracker.Heartbeat",
         lambda: tracker_pb2.HeartbeatRequest(agent_id=LONG_ID), INVALID, "agent_id"),
    Case("heartbeat: absurd load", "tracker.Heartbeat",
         lambda: tracker_pb2.HeartbeatRequest(
             agent_id="alpha", generation=1, load=tracker_pb2.Load(active_uploads=2**32 - 1)),
         INVALID, "active_uploads"),
    Case("leave: agent id ../x", "tracker.Leave", lambda: tracker_pb2.LeaveRequest(agent_id="../x"),
         INVALID, "agent_id"),
    Case("leave: unknown agent", "tracker.Leave", lambda: tracker_pb2.LeaveRequest(agent_id="stranger"),
         NOT_FOUND, "stranger"),
    # Inventory: the last holding is the bad one.
    Case("sync: uppercase digest", "tracker.SyncInventory", lambda: full_sync(holding(UPPER, BLOB.size)),
         INVALID, "sha256"),
    Case("sync: short digest", "tracker.SyncInventory", lambda: full_sync(holding(SHORT, BLOB.size)),
         INVALID, "sha256"),
    Case("sync: non-hex digest", "tracker.SyncInventory", lambda: full_sync(holding(NOT_HEX, BLOB.size)),
         INVALID, "sha256"),
    Case("sync: prefixed digest", "tracker.SyncInventory",
         lambda: full_sync(holding("sha256:" + BLOB.sha256, BLOB.size)), INVALID, "sha256"),
    Case("sync: 300-byte name", "tracker.SyncInventory",
         lambda: full_sync(holding(BLOB.sha256, BLOB.size, LONG_NAME)), INVALID, "name"),
    Case("sync: name with a slash", "tracker.SyncInventory",
         lambda: full_sync(holding(BLOB.sha256, BLOB.size, "etc/passwd")), INVALID, "name"),
    Case("sync: name ..", "tracker.SyncInventory", lambda: full_sync(holding(BLOB.sha256, BLOB.size, "..")),
         INVALID, "name"),
    Case("sync: size 2**63", "tracker.SyncInventory", lambda: full_sync(holding(PLAIN.sha256, 2**63)),
         INVALID, "size"),
    Case("sync: size unlike the manifest's", "tracker.SyncInventory",
         lambda: full_sync(holding(BLOB.sha256, BLOB.size + 1)), INVALID, "size"),
    Case("sync: size unlike other holders'", "tracker.SyncInventory",
         lambda: full_sync(holding(PLAIN.sha256, PLAIN.size - 1)), INVALID, "size"),
    Case("sync: complete holding with a bitmap", "tracker.SyncInventory",
         lambda: full_sync(tracker_pb2.Holding(sha256=BLOB.sha256, size=BLOB.size, complete=True,
                                               pieces=common_pb2.PieceSet(bitmap=b"\xe0"))),
         INVALID, "pieces"),
    Case("sync: bitmap of the wrong length", "tracker.SyncInventory",
         lambda: full_sync(holding(BLOB.sha256, BLOB.size, bitmap=b"\xe0\x00")), INVALID, "pieces"),
    Case("sync: empty bitmap", "tracker.SyncInventory",
         lambda: full_sync(holding(BLOB.sha256, BLOB.size, bitmap=b"")), INVALID, "pieces"),
    Case("sync: bitmap with spare bits set", "tracker.SyncInventory",
         lambda: full_sync(holding(BLOB.sha256, BLOB.size, bitmap=bytes([0b1110_0001]))), INVALID,
         "pieces"),
    Case("sync: partial holding without a manifest", "tracker.SyncInventory",
         lambda: full_sync(holding(PLAIN.sha256, PLAIN.size, bitmap=b"\x80")), PRECONDITION, "manifest"),
    Case("sync: a digest twice", "tracker.SyncInventory", lambda: full_sync(holding()), INVALID,
         "holdings[1]"),
    Case("sync: 20,001 holdings", "tracker.SyncInventory",
         lambda: tracker_pb2.SyncInventoryRequest(
             agent_id="alpha", generation=2, full=True,
             holdings=[holding(d, 1) for d in digests(MAX_ENTRIES + 1)]),
         INVALID, "holdings"),
    Case("sync: removals in a full snapshot", "tracker.SyncInventory",
         lambda: full_sync(removed_sha256s=[PLAIN.sha256]), INVALID, "removed_sha256s"),
    Case("sync: malformed removal", "tracker.SyncInventory",
         lambda: delta([holding()], [PLAIN.sha256, UPPER]), INVALID, "removed_sha256s"),
    Case("sync: removal also added", "tracker.SyncInventory",
         lambda: delta([holding(), holding(PLAIN.sha256, PLAIN.size)], [PLAIN.sha256]),
         INVALID, "removed_sha256s"),
    Case("sync: 20,001 removals", "tracker.SyncInventory", lambda: delta([], digests(MAX_ENTRIES + 1)),
         INVALID, "removed_sha256s"),
    Case("sync: unknown agent", "tracker.SyncInventory", lambda: full_sync(agent_id="stranger"),
         NOT_FOUND, "stranger"),
    Case("sync: agent id ../x", "tracker.SyncInventory", lambda: full_sync(agent_id="../x"),
         INVALID, "agent_id"),
    # Manifests.
    Case("manifest: missing", "tracker.PublishManifest", lambda: publish_manifest(None), INVALID, "manifest"),
    Case("manifest: a piece digest too few", "tracker.PublishManifest",
         lambda: publish_manifest(manifest_pb(BLOB, sha256=NEW.sha256,
                                              piece_sha256s=manifest_pb(BLOB).piece_sha256s[:2])),
         INVALID, "piece_sha256s"),
    Case("manifest: a piece digest too many", "tracker.PublishManifest",
         lambda: publish_manifest(manifest_pb(piece_sha256s=[b"\x01" * 32] * 2)), INVALID, "piece_sha256s"),
    Case("manifest: piece size not a power of two", "tracker.PublishManifest",
         lambda: publish_manifest(manifest_pb(piece_size=3 * MiB)), INVALID, "piece_size"),
    Case("manifest: piece size below 1 MiB", "tracker.PublishManifest",
         lambda: publish_manifest(manifest_pb(piece_size=512 * 1024)), INVALID, "piece_size"),
    Case("manifest: piece size 2**31", "tracker.PublishManifest",
         lambda: publish_manifest(manifest_pb(piece_size=2**31)), INVALID, "piece_size"),
    Case("manifest: piece digest of 31 bytes", "tracker.PublishManifest",
         lambda: publish_manifest(manifest_pb(piece_sha256s=[b"\x01" * 31])), INVALID, "piece_sha256s"),
    Case("manifest: malformed digest", "tracker.PublishManifest",
         lambda: publish_manifest(manifest_pb(sha256=NOT_HEX)), INVALID, "sha256"),
    Case("manifest: size 2**63", "tracker.PublishManifest",
         lambda: publish_manifest(manifest_pb(size=2**63)), INVALID, "size"),
    Case("manifest: unlike the one published", "tracker.PublishManifest",
         lambda: publish_manifest(manifest_pb(BLOB, piece_sha256s=[b"\x02" * 32] * 3)), PRECONDITION,
         BLOB.sha256),
    Case("manifest: size unlike the holders'", "tracker.PublishManifest",
         lambda: publish_manifest(manifest_pb(NEW, sha256=PLAIN.sha256)), INVALID, "size"),
    Case("manifest: unknown agent", "tracker.PublishManifest",
         lambda: publish_manifest(manifest_pb(), agent_id="stranger"), NOT_FOUND, "stranger"),
    # Origin mappings.
    Case("source: weak ETag", "tracker.PublishSource", lambda: publish_source(source(etag='W/"x"')),
         INVALID, "etag"),
    Case("source: unquoted ETag", "tracker.PublishSource", lambda: publish_source(source(etag="x")),
         INVALID, "etag"),
    Case("source: empty validator", "tracker.PublishSource", lambda: publish_source(source(etag="")),
         INVALID, "validator"),
    Case("source: no validator", "tracker.PublishSource",
         lambda: publish_source(common_pb2.SourceRef(url="http://origin.example/new.bin")), INVALID,
         "validator"),
    Case("source: ftp URL", "tracker.PublishSource",
         lambda: publish_source(source(url="ftp://origin.example/new.bin")), INVALID, "url"),
    Case("source: file URL", "tracker.PublishSource", lambda: publish_source(source(url="file:///etc/passwd")),
         INVALID, "url"),
    Case("source: URL without a host", "tracker.PublishSource", lambda: publish_source(source(url="http://")),
         INVALID, "url"),
    Case("source: URL over 4 KiB", "tracker.PublishSource",
         lambda: publish_source(source(url="http://origin.example/" + "x" * 5000)), INVALID, "url"),
    Case("source: malformed digest", "tracker.PublishSource", lambda: publish_source(source(), sha256=UPPER),
         INVALID, "sha256"),
    Case("source: unknown agent", "tracker.PublishSource",
         lambda: publish_source(source(), agent_id="stranger"), NOT_FOUND, "stranger"),
    # Locate.
    Case("locate: no query", "tracker.Locate", tracker_pb2.LocateRequest, INVALID, "query"),
    Case("locate: empty query", "tracker.Locate", locate, INVALID, "query"),
    Case("locate: by every version of a URL", "tracker.Locate", lambda: locate(url=origin().url),
         INVALID, "query.url"),
    Case("locate: uppercase digest", "tracker.Locate", lambda: locate(sha256=UPPER), INVALID, "sha256"),
    Case("locate: empty digest", "tracker.Locate", lambda: locate(sha256=""), INVALID, "sha256"),
    Case("locate: name with a slash", "tracker.Locate", lambda: locate(name="a/b"), INVALID, "name"),
    Case("locate: 300-byte name", "tracker.Locate", lambda: locate(name=LONG_NAME), INVALID, "name"),
    Case("locate: weak ETag", "tracker.Locate", lambda: locate(source=source(etag='W/"x"')), INVALID, "etag"),
    Case("locate: unknown policy", "tracker.Locate", lambda: locate(sha256=BLOB.sha256, policy="fastest"),
         INVALID, "fastest"),
    Case("locate: requester ../x", "tracker.Locate",
         lambda: locate(sha256=BLOB.sha256, requester_agent_id="../x"), INVALID, "requester_agent_id"),
    # Bad-source reports.
    Case("report: itself", "tracker.ReportBadSource", lambda: report(holder="alpha"), INVALID,
         "holder_agent_id"),
    Case("report: unknown holder", "tracker.ReportBadSource", lambda: report(holder="stranger"),
         NOT_FOUND, "stranger"),
    Case("report: unknown reporter", "tracker.ReportBadSource", lambda: report(reporter="stranger"),
         NOT_FOUND, "stranger"),
    Case("report: holder ../x", "tracker.ReportBadSource", lambda: report(holder="../x"), INVALID,
         "holder_agent_id"),
    Case("report: malformed digest", "tracker.ReportBadSource", lambda: report(sha256=SHORT), INVALID,
         "sha256"),
    Case("report: piece past the last", "tracker.ReportBadSource", lambda: report(piece_index=3), INVALID,
         "piece_index"),
    Case("report: reason over 1 KiB", "tracker.ReportBadSource", lambda: report(reason="x" * 2000), INVALID,
         "reason"),
    # Swarms.
    Case("announce: agent id ../x", "tracker.Announce", lambda: announce(agent_id="../x"), INVALID,
         "agent_id"),
    Case("announce: unknown agent", "tracker.Announce", lambda: announce(agent_id="stranger"), NOT_FOUND,
         "stranger"),
    Case("announce: malformed swarm id", "tracker.Announce", lambda: announce(swarm_id="../../etc"),
         INVALID, "swarm_id"),
    Case("announce: size 0", "tracker.Announce", lambda: announce(size=0, hashes=[], have=b""), INVALID,
         "size"),
    Case("announce: piece size not a power of two", "tracker.Announce",
         lambda: announce(piece_size=3 * MiB), INVALID, "piece_size"),
    Case("announce: have bitmap of the wrong length", "tracker.Announce", lambda: announce(have=b"\x80\x00"),
         INVALID, "have"),
    Case("announce: hash of 31 bytes", "tracker.Announce",
         lambda: announce(have=b"\xc0", hashes=[piece_hash(1, b"\x01" * 31)]), INVALID, "hashes"),
    Case("announce: hash of a piece past the end", "tracker.Announce",
         lambda: announce(hashes=[piece_hash(3)]), INVALID, "hashes"),
    Case("announce: hash of a piece it lacks", "tracker.Announce", lambda: announce(hashes=[piece_hash(1)]),
         INVALID, "hashes"),
    Case("announce: a piece hashed twice", "tracker.Announce", lambda: announce(hashes=[piece_hash(0)]),
         INVALID, "hashes"),
    Case("announce: hashes_known of the wrong length", "tracker.Announce",
         lambda: announce(hashes_known=b"\x80\x00"), INVALID, "hashes_known"),
    Case("announce: more claims than pieces", "tracker.Announce",
         lambda: announce(seed_claims=[0, 1, 2, 1]), INVALID, "seed_claims"),
    Case("announce: huge want_seed", "tracker.Announce", lambda: announce(want_seed=2**32 - 1),
         INVALID, "want_seed"),
    Case("announce: complete without every piece", "tracker.Announce", lambda: announce(complete=True),
         INVALID, "complete"),
    # The admin service.
    Case("inspect: no query", "admin.InspectContent", admin_pb2.InspectContentRequest, INVALID, "query"),
    Case("inspect: uppercase digest", "admin.InspectContent",
         lambda: admin_pb2.InspectContentRequest(query=common_pb2.ContentQuery(sha256=UPPER)), INVALID,
         "sha256"),
    Case("evict: agent id ../x", "admin.EvictAgent", lambda: admin_pb2.EvictAgentRequest(agent_id="../x"),
         INVALID, "agent_id"),
    Case("evict: unknown agent", "admin.EvictAgent", lambda: admin_pb2.EvictAgentRequest(agent_id="stranger"),
         NOT_FOUND, "stranger"),
    Case("unban: not banned", "admin.UnbanAgent", lambda: admin_pb2.UnbanAgentRequest(agent_id="alpha"),
         NOT_FOUND, "alpha"),
    Case("files: malformed page token", "admin.ListFiles",
         lambda: admin_pb2.ListFilesRequest(page_token="../x"), INVALID, "page_token"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_malformed_request_is_refused_and_changes_nothing(world, case):
    before = world.snapshot()

    error = world.call(case.rpc, case.build())

    assert error.code() == case.code, error.details()
    assert case.says in error.details()
    assert world.snapshot() == before


def test_a_message_over_the_receive_limit_is_resource_exhausted(world):
    before = world.snapshot()
    huge = holding(BLOB.sha256, BLOB.size, bitmap=bytes(9 * MiB))

    error = world.call("tracker.SyncInventory", full_sync(huge))

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details()
    assert world.snapshot() == before


def test_a_full_sync_of_exactly_the_maximum_entries_is_accepted(world):
    request = tracker_pb2.SyncInventoryRequest(
        agent_id="alpha", generation=2, full=True, holdings=[holding(d, 1) for d in digests(MAX_ENTRIES)]
    )
    reply = world.stubs.tracker.SyncInventory(request, timeout=30)
    assert (reply.resync_needed, reply.generation) == (False, 2)
    assert world.admin.stats().holdings == MAX_ENTRIES + 1  # and beta's


# ----------------------------------------------------------------------------- atomicity

OTHER = make_blob("other.bin", 2000)
BAD_LAST = {
    "malformed digest": holding(NOT_HEX, 1),
    "size over 4 TiB": holding(PLAIN.sha256, 2**63),
    "partial without a manifest": holding(PLAIN.sha256, PLAIN.size, bitmap=b"\x80"),
    "bitmap of the wrong length": holding(BLOB.sha256, BLOB.size, bitmap=b"\x80\x00"),
    "size unlike the manifest's": holding(BLOB.sha256, BLOB.size - 1),
    "repeats the first": holding(NEW.sha256, NEW.size),
}


def held_by(world: World, agent_id: str) -> set[str]:
    held = set()
    for summary in world.admin.files():
        (details,) = world.admin.inspect(DigestQuery(summary.sha256))
        if any(view.agent.agent_id == agent_id for view, _ in details.holders):
            held.add(summary.sha256)
    return held


def heartbeat(world: World, agent_id: str, generation: int) -> Any:
    request = tracker_pb2.HeartbeatRequest(agent_id=agent_id, generation=generation)
    return world.stubs.tracker.Heartbeat(request, timeout=10).action


@pytest.mark.parametrize("bad", BAD_LAST.values(), ids=BAD_LAST.keys())
def test_a_full_sync_whose_last_holding_is_invalid_leaves_the_previous_holdings(world, bad):
    # The first two entries are valid, and would replace all alpha holds if applied.
    entries = [holding(), holding(OTHER.sha256, OTHER.size, OTHER.name), bad]
    request = tracker_pb2.SyncInventoryRequest(agent_id="alpha", generation=2, full=True, holdings=entries)

    error = world.call("tracker.SyncInventory", request)

    assert error.code() in (INVALID, PRECONDITION)
    assert "holdings[2]" in error.details()
    assert held_by(world, "alpha") == {BLOB.sha256, PLAIN.sha256}
    assert heartbeat(world, "alpha", 1) == tracker_pb2.HEARTBEAT_ACTION_NONE, "the generation moved"
    request.ClearField("holdings")
    request.holdings.extend(entries[:2])
    assert not world.stubs.tracker.SyncInventory(request, timeout=10).resync_needed
    assert held_by(world, "alpha") == {NEW.sha256, OTHER.sha256}


@pytest.mark.parametrize("bad", BAD_LAST.values(), ids=BAD_LAST.keys())
def test_a_delta_whose_last_holding_is_invalid_changes_nothing(world, bad):
    entries = [holding(), holding(OTHER.sha256, OTHER.size, OTHER.name), bad]

    error = world.call("tracker.SyncInventory", delta(entries, [PLAIN.sha256]))

    assert error.code() in (INVALID, PRECONDITION)
    assert held_by(world, "alpha") == {BLOB.sha256, PLAIN.sha256}
    reply = world.stubs.tracker.SyncInventory(delta(entries[:2], [PLAIN.sha256]), timeout=10)
    assert (reply.resync_needed, reply.generation) == (False, 2), "the failed delta used up generation 2"
    assert held_by(world, "alpha") == {BLOB.sha256, NEW.sha256, OTHER.sha256}


# ----------------------------------------------------------------------------- digests

near_digests = st.from_regex(r"[0-9a-fA-F:sha]{60,70}", fullmatch=True)
any_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=80)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(near_digests, any_text))
def test_only_64_lowercase_hex_digits_are_a_digest(world, text):
    request = full_sync(holding(text, 10))
    if re.fullmatch(r"[0-9a-f]{64}", text):
        assert not world.stubs.tracker.SyncInventory(request, timeout=10).resync_needed
        return
    before = world.snapshot()
    error = world.call("tracker.SyncInventory", request)
    assert error.code() == INVALID
    assert "sha256" in error.details()
    assert world.snapshot() == before
