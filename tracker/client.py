"""Typed clients for the tracker's two services. The agent uses TrackerClient, the admin
CLI AdminClient. Both take and return the plain values of tracker.model, and turn gRPC
failures into the TrackerError tree, so no caller ever sees a grpc.RpcError."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from lanpeer.v1 import admin_pb2, admin_pb2_grpc, tracker_pb2, tracker_pb2_grpc
from tracker import wire
from tracker.auth import bearer_metadata
from tracker.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TrackerError,
    TrackerUnavailable,
    Unauthenticated,
)
from tracker.model import (
    AgentInfo,
    AgentStatus,
    Announce,
    ContentDetails,
    ContentMatch,
    ContentQuery,
    Fetched,
    FilePage,
    FileSummary,
    HeartbeatAction,
    Holding,
    Load,
    Manifest,
    SourceRef,
    Stats,
    SwarmView,
    SyncResult,
)

DEFAULT_TIMEOUT = 10.0

_ERRORS: dict[grpc.StatusCode, type[TrackerError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}

R = TypeVar("R")


class _Client:
    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        tls_ca: Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.target = target
        self._metadata = bearer_metadata(token)
        self._timeout = timeout
        if tls_ca is not None:
            try:
                roots = tls_ca.read_bytes()
            except OSError as exc:
                raise TrackerError(f"cannot read the CA certificate {tls_ca}: {exc}") from exc
            credentials = grpc.ssl_channel_credentials(root_certificates=roots)
            self._channel = grpc.secure_channel(target, credentials, options=wire.CLIENT_CHANNEL_OPTIONS)
        else:
            self._channel = grpc.insecure_channel(target, options=wire.CLIENT_CHANNEL_OPTIONS)

    def _call(self, method: Callable[..., R], request: Any) -> R:
        try:
            return method(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._translate(exc) from None

    def _translate(self, exc: grpc.RpcError) -> TrackerError:
        code = exc.code()
        details = exc.details() or code.name.lower()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return TrackerUnavailable(
                f"the tracker at {self.target} did not answer within {self._timeout:g} s"
            )
        if code == grpc.StatusCode.UNAVAILABLE:
            return TrackerUnavailable(
                f"cannot reach the tracker at {self.target}: {_why_unavailable(details)}"
            )
        kind = _ERRORS.get(code, TrackerError)
        return kind(f"the tracker refused: {details}")

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _why_unavailable(details: str) -> str:
    """gRPC's own text, shortened to the part a person needs."""
    lowered = details.lower()
    for clue, reason in (
        ("connection refused", "connection refused (is the tracker running?)"),
        ("name resolution", "the host name does not resolve"),
        ("dns resolution", "the host name does not resolve"),
        ("ssl", "the TLS handshake failed (plaintext tracker, or wrong CA?)"),
        ("handshake", "the TLS handshake failed (plaintext tracker, or wrong CA?)"),
        ("timed out", "the connection timed out"),
    ):
        if clue in lowered:
            return reason
    lines = details.strip().splitlines()
    return lines[0] if lines else "unavailable"


class TrackerClient(_Client):
    """What an agent calls."""

    def __init__(self, target: str, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self._stub = tracker_pb2_grpc.TrackerServiceStub(self._channel)  # type: ignore[no-untyped-call]

    def register(self, info: AgentInfo) -> float:
        """Returns the heartbeat interval in seconds."""
        reply = self._call(
            self._stub.Register,
            tracker_pb2.RegisterRequest(
                agent_id=info.agent_id,
                hostname=info.hostname,
                base_url=info.base_url,
                version=info.version,
            ),
        )
        return float(reply.heartbeat_interval_ms) / 1000

    def heartbeat(
        self, agent_id: str, generation: int, load: Load, fetched: Fetched | None = None
    ) -> HeartbeatAction:
        """Keeps the agent live; `fetched` is what it has fetched since it started."""
        fetched = fetched or Fetched()
        reply = self._call(
            self._stub.Heartbeat,
            tracker_pb2.HeartbeatRequest(
                agent_id=agent_id,
                generation=generation,
                load=wire.load_to_pb(load),
                bytes_from_peers=fetched.from_peers,
                bytes_from_origin=fetched.from_origin,
            ),
        )
        return wire.action_from_pb(reply.action)

    def sync(
        self,
        agent_id: str,
        *,
        generation: int,
        full: bool,
        holdings: Sequence[Holding] = (),
        removed: Sequence[str] = (),
    ) -> SyncResult:
        reply = self._call(
            self._stub.SyncInventory,
            tracker_pb2.SyncInventoryRequest(
                agent_id=agent_id,
                generation=generation,
                full=full,
                holdings=[wire.holding_to_pb(h) for h in holdings],
                removed_sha256s=removed,
            ),
        )
        return SyncResult(resync_needed=reply.resync_needed, generation=reply.generation)

    def locate(
        self,
        query: ContentQuery,
        *,
        max_holders: int = 0,
        policy: str = "",
        requester: str = "",
    ) -> list[ContentMatch]:
        reply = self._call(
            self._stub.Locate,
            tracker_pb2.LocateRequest(
                query=wire.query_to_pb(query),
                max_holders=max_holders,
                policy=policy,
                requester_agent_id=requester,
            ),
        )
        return [wire.match_from_pb(m) for m in reply.matches]

    def publish_manifest(self, agent_id: str, manifest: Manifest) -> bool:
        reply = self._call(
            self._stub.PublishManifest,
            tracker_pb2.PublishManifestRequest(agent_id=agent_id, manifest=wire.manifest_to_pb(manifest)),
        )
        return bool(reply.created)

    def publish_source(self, agent_id: str, source: SourceRef, sha256: str) -> bool:
        reply = self._call(
            self._stub.PublishSource,
            tracker_pb2.PublishSourceRequest(
                agent_id=agent_id, source=wire.source_to_pb(source), sha256=sha256
            ),
        )
        return bool(reply.created)

    def report_bad_source(
        self, *, reporter: str, holder: str, sha256: str, piece_index: int, reason: str
    ) -> int:
        reply = self._call(
            self._stub.ReportBadSource,
            tracker_pb2.ReportBadSourceRequest(
                reporter_agent_id=reporter,
                holder_agent_id=holder,
                sha256=sha256,
                piece_index=piece_index,
                reason=reason,
            ),
        )
        return int(reply.holder_report_count)

    def leave(self, agent_id: str) -> None:
        self._call(self._stub.Leave, tracker_pb2.LeaveRequest(agent_id=agent_id))

    def announce(self, a: Announce) -> SwarmView:
        return wire.swarm_view_from_pb(self._call(self._stub.Announce, wire.announce_to_pb(a)))


class AdminClient(_Client):
    """What the admin CLI calls."""

    def __init__(self, target: str, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self._stub = admin_pb2_grpc.TrackerAdminServiceStub(self._channel)  # type: ignore[no-untyped-call]

    def agents(self) -> list[AgentStatus]:
        reply = self._call(self._stub.ListAgents, admin_pb2.ListAgentsRequest())
        return [wire.agent_status_from_pb(a) for a in reply.agents]

    def files_page(self, *, page_size: int = 0, page_token: str = "") -> FilePage:
        reply = self._call(
            self._stub.ListFiles,
            admin_pb2.ListFilesRequest(page_size=page_size, page_token=page_token),
        )
        return wire.file_page_from_pb(reply)

    def files(self) -> Iterator[FileSummary]:
        token = ""
        while True:
            page = self.files_page(page_token=token)
            yield from page.files
            token = page.next_page_token
            if not token:
                return

    def inspect(self, query: ContentQuery) -> list[ContentDetails]:
        reply = self._call(
            self._stub.InspectContent,
            admin_pb2.InspectContentRequest(query=wire.query_to_pb(query)),
        )
        return [wire.details_from_pb(d) for d in reply.matches]

    def evict(self, agent_id: str, *, ban: bool = False) -> int:
        reply = self._call(self._stub.EvictAgent, admin_pb2.EvictAgentRequest(agent_id=agent_id, ban=ban))
        return int(reply.holdings_removed)

    def unban(self, agent_id: str) -> None:
        self._call(self._stub.UnbanAgent, admin_pb2.UnbanAgentRequest(agent_id=agent_id))

    def stats(self) -> Stats:
        return wire.stats_from_pb(self._call(self._stub.GetStats, admin_pb2.GetStatsRequest()))
