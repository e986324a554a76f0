"""Thin gRPC servicers: decode the request, call the registry, encode the reply.
Domain errors become gRPC status codes in one place, `_status_of`."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from lanpeer.v1 import admin_pb2, admin_pb2_grpc, tracker_pb2, tracker_pb2_grpc
from tracker import wire
from tracker.auth import check_token
from tracker.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TrackerError,
    Unauthenticated,
)
from tracker.metrics import TrackerMetrics
from tracker.model import MAX_REASON_LEN, UrlQuery, check_agent_id, check_sha256, check_text
from tracker.policy import policy_named
from tracker.registry import Registry
from tracker.store import StoreError

log = logging.getLogger(__name__)

DEFAULT_MAX_HOLDERS = 50
DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 5000

_CODES: tuple[tuple[type[TrackerError], grpc.StatusCode], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (StoreError, grpc.StatusCode.UNAVAILABLE),
)


def _status_of(exc: TrackerError) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


R = TypeVar("R")
Handler = Callable[[Any, Any, grpc.ServicerContext], R]


def _rpc(method: Handler[R]) -> Handler[R]:
    """Checks the caller's token, turns domain errors into status codes, and any other
    error into INTERNAL with a logged traceback: a bad request never takes the server down."""

    @functools.wraps(method)
    def wrapper(self: _Servicer, request: Any, context: grpc.ServicerContext) -> R:
        try:
            if self.token is not None:
                check_token(context.invocation_metadata(), self.token, self.token_kind)
            return method(self, request, context)
        except TrackerError as exc:
            if isinstance(exc, StoreError):
                log.error("%s", exc)
            context.abort(_status_of(exc), str(exc))
        except Exception:
            log.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal tracker error; see the tracker's log")
        raise AssertionError("context.abort returned")  # pragma: no cover

    return wrapper


class _Servicer:
    token: str | None
    token_kind: str


class TrackerServicer(tracker_pb2_grpc.TrackerServiceServicer, _Servicer):
    token_kind = "cluster"

    def __init__(self, registry: Registry, token: str | None, metrics: TrackerMetrics) -> None:
        self._registry = registry
        self.token = token
        self._metrics = metrics

    def _interval_ms(self) -> int:
        return max(1, round(self._registry.heartbeat_interval * 1000))

    @_rpc
    def Register(self, request: tracker_pb2.RegisterRequest, context: Any) -> tracker_pb2.RegisterResponse:
        self._registry.register(wire.agent_info_from_pb(request))
        return tracker_pb2.RegisterResponse(heartbeat_interval_ms=self._interval_ms())

    @_rpc
    def Heartbeat(self, request: tracker_pb2.HeartbeatRequest, context: Any) -> tracker_pb2.HeartbeatResponse:
        check_agent_id(request.agent_id)
        action = self._registry.heartbeat(
            request.agent_id,
            request.generation,
            wire.load_from_pb(request.load),
            wire.fetched_from_pb(request),
        )
        return tracker_pb2.HeartbeatResponse(
            action=wire.action_to_pb(action), heartbeat_interval_ms=self._interval_ms()
        )

    @_rpc
    def SyncInventory(
        self, request: tracker_pb2.SyncInventoryRequest, context: Any
    ) -> tracker_pb2.SyncInventoryResponse:
        check_agent_id(request.agent_id)
        result = self._registry.sync(
            request.agent_id,
            generation=request.generation,
            full=request.full,
            holdings=wire.holdings_from_pb(request.holdings),
            removed=wire.removed_from_pb(request.removed_sha256s),
        )
        return tracker_pb2.SyncInventoryResponse(
            resync_needed=result.resync_needed, generation=result.generation
        )

    @_rpc
    def Locate(self, request: tracker_pb2.LocateRequest, context: Any) -> tracker_pb2.LocateResponse:
        query = wire.query_from_pb(request.query)
        if isinstance(query, UrlQuery):
            raise InvalidArgument("query.url: name the version wanted with query.source instead")
        if request.requester_agent_id:
            check_agent_id(request.requester_agent_id, "requester_agent_id")
        policy = policy_named(request.policy) if request.policy else None
        started = self._metrics.locate_started()
        try:
            matches = self._registry.locate(
                query,
                max_holders=request.max_holders or DEFAULT_MAX_HOLDERS,
                policy=policy,
                requester=request.requester_agent_id,
            )
        except TrackerError:
            self._metrics.locate_done(started, None)
            raise
        self._metrics.locate_done(started, len(matches))
        return tracker_pb2.LocateResponse(matches=[wire.match_to_pb(m) for m in matches])

    @_rpc
    def PublishManifest(
        self, request: tracker_pb2.PublishManifestRequest, context: Any
    ) -> tracker_pb2.PublishManifestResponse:
        check_agent_id(request.agent_id)
        if not request.HasField("manifest"):
            raise InvalidArgument("manifest: missing")
        created = self._registry.publish_manifest(request.agent_id, wire.manifest_from_pb(request.manifest))
        return tracker_pb2.PublishManifestResponse(created=created)

    @_rpc
    def PublishSource(
        self, request: tracker_pb2.PublishSourceRequest, context: Any
    ) -> tracker_pb2.PublishSourceResponse:
        check_agent_id(request.agent_id)
        created = self._registry.publish_source(
            request.agent_id, wire.source_from_pb(request.source), request.sha256
        )
        return tracker_pb2.PublishSourceResponse(created=created)

    @_rpc
    def ReportBadSource(
        self, request: tracker_pb2.ReportBadSourceRequest, context: Any
    ) -> tracker_pb2.ReportBadSourceResponse:
        check_agent_id(request.reporter_agent_id, "reporter_agent_id")
        check_agent_id(request.holder_agent_id, "holder_agent_id")
        check_sha256(request.sha256)
        check_text(request.reason, "reason", MAX_REASON_LEN, allow_empty=True)
        total = self._registry.report_bad_source(
            reporter=request.reporter_agent_id,
            holder=request.holder_agent_id,
            sha256=request.sha256,
            piece_index=request.piece_index,
            reason=request.reason,
        )
        self._metrics.bad_source_reported()
        return tracker_pb2.ReportBadSourceResponse(holder_report_count=total)

    @_rpc
    def Leave(self, request: tracker_pb2.LeaveRequest, context: Any) -> tracker_pb2.LeaveResponse:
        check_agent_id(request.agent_id)
        self._registry.leave(request.agent_id)
        return tracker_pb2.LeaveResponse()

    @_rpc
    def Announce(self, request: tracker_pb2.AnnounceRequest, context: Any) -> tracker_pb2.AnnounceResponse:
        view = self._registry.announce(wire.announce_from_pb(request))
        self._metrics.announced()
        return wire.swarm_view_to_pb(view)


class TrackerAdminServicer(admin_pb2_grpc.TrackerAdminServiceServicer, _Servicer):
    token_kind = "admin"

    def __init__(self, registry: Registry, token: str | None) -> None:
        self._registry = registry
        self.token = token

    @_rpc
    def ListAgents(self, request: admin_pb2.ListAgentsRequest, context: Any) -> admin_pb2.ListAgentsResponse:
        return admin_pb2.ListAgentsResponse(
            agents=[wire.agent_status_to_pb(a) for a in self._registry.agents()]
        )

    @_rpc
    def ListFiles(self, request: admin_pb2.ListFilesRequest, context: Any) -> admin_pb2.ListFilesResponse:
        after = request.page_token
        if after:
            check_sha256(after, "page_token")
        limit = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        return wire.file_page_to_pb(self._registry.files(after=after, limit=limit))

    @_rpc
    def InspectContent(
        self, request: admin_pb2.InspectContentRequest, context: Any
    ) -> admin_pb2.InspectContentResponse:
        details = self._registry.inspect(wire.query_from_pb(request.query))
        return admin_pb2.InspectContentResponse(matches=[wire.details_to_pb(d) for d in details])

    @_rpc
    def EvictAgent(self, request: admin_pb2.EvictAgentRequest, context: Any) -> admin_pb2.EvictAgentResponse:
        check_agent_id(request.agent_id)
        removed = self._registry.evict(request.agent_id, ban=request.ban)
        return admin_pb2.EvictAgentResponse(holdings_removed=removed)

    @_rpc
    def UnbanAgent(self, request: admin_pb2.UnbanAgentRequest, context: Any) -> admin_pb2.UnbanAgentResponse:
        check_agent_id(request.agent_id)
        self._registry.unban(request.agent_id)
        return admin_pb2.UnbanAgentResponse()

    @_rpc
    def GetStats(self, request: admin_pb2.GetStatsRequest, context: Any) -> admin_pb2.GetStatsResponse:
        return wire.stats_to_pb(self._registry.stats())
