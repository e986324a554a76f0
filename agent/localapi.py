"""The daemon's local control API (AgentService) on a unix socket only its owner may use,
and the client `lanpeer-agent get` and `status` use to reach it."""

from __future__ import annotations

import enum
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc

from agent.errors import AgentError, OutputNotWritable
from agent.job import AlreadyThere, GetRequest, Progress, Summary
from agent.planner import Policy
from lanpeer.v1 import agent_pb2, agent_pb2_grpc
from tracker.errors import TrackerError

log = logging.getLogger(__name__)

# A client is sent at most one progress event per this many seconds.
PROGRESS_EVERY = 0.1

SOCKET_NAME = "agent.sock"
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes, the last one a NUL.


@dataclass(frozen=True, slots=True)
class DownloadView:
    source: str
    output: str
    progress: Progress | None


class TrackerSource(enum.Enum):
    """How the daemon came to use its tracker (the values are AgentService's)."""

    NONE = agent_pb2.TRACKER_SOURCE_UNSPECIFIED
    CONFIGURED = agent_pb2.TRACKER_SOURCE_CONFIGURED
    MDNS = agent_pb2.TRACKER_SOURCE_MDNS


@dataclass(frozen=True, slots=True)
class AgentStatus:
    agent_id: str
    version: str
    base_url: str
    shares: tuple[str, ...]
    files: int
    bytes_held: int
    active_uploads: int
    bytes_served: int
    tracker: str
    tracker_connected: bool
    downloads: tuple[DownloadView, ...]
    tracker_source: TrackerSource = TrackerSource.NONE
    cluster: str = ""
    discovery_note: str = ""


class Fetching(Protocol):
    """What the daemon offers the API."""

    def fetch(
        self, request: GetRequest, on_progress: Callable[[Progress], None], cancelled: threading.Event
    ) -> Summary: ...

    def status(self) -> AgentStatus: ...


def _progress_pb(p: Progress) -> agent_pb2.GetProgress:
    return agent_pb2.GetProgress(
        size=p.size,
        done_bytes=p.done_bytes,
        peers_active=p.peers_active,
        origin_active=p.origin_active,
        elapsed_seconds=p.elapsed,
    )


def _progress_from_pb(pb: agent_pb2.GetProgress) -> Progress:
    return Progress(pb.size, pb.done_bytes, pb.peers_active, pb.origin_active, pb.elapsed_seconds)


def _summary_from_pb(pb: agent_pb2.GetSummary) -> Summary:
    return Summary(
        path=Path(pb.path),
        sha256=pb.sha256,
        size=pb.size,
        seconds=pb.seconds,
        bytes_from_peers=pb.bytes_from_peers,
        bytes_from_origin=pb.bytes_from_origin,
        resumed_bytes=pb.resumed_bytes,
        sources_used=tuple(pb.sources_used),
        pieces_refetched=pb.pieces_refetched,
        bytes_by_source=dict(pb.bytes_by_source),
    )


def _summary_pb(s: Summary, already_there: bool = False) -> agent_pb2.GetSummary:
    return agent_pb2.GetSummary(
        path=str(s.path),
        sha256=s.sha256,
        size=s.size,
        seconds=s.seconds,
        bytes_from_peers=s.bytes_from_peers,
        bytes_from_origin=s.bytes_from_origin,
        resumed_bytes=s.resumed_bytes,
        sources_used=s.sources_used,
        pieces_refetched=s.pieces_refetched,
        already_there=already_there,
        bytes_by_source=s.bytes_by_source,
    )


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, daemon: Fetching) -> None:
        self._daemon = daemon

    def Get(
        self, request: agent_pb2.GetRequest, context: grpc.ServicerContext
    ) -> Iterator[agent_pb2.GetEvent]:
        try:
            wanted = GetRequest(
                source=request.source,
                output=Path(request.output) if request.output else None,
                sha256=request.sha256 or None,
                connections=request.connections or 16,
                use_origin=not request.no_origin,
                force=request.force,
                policy=Policy(request.policy) if request.policy else Policy.PEERS_FIRST,
            )
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if wanted.output is not None and not wanted.output.is_absolute():
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the output path must be absolute")
        events: queue.Queue[agent_pb2.GetEvent | BaseException | None] = queue.Queue()
        cancelled = threading.Event()
        context.add_callback(cancelled.set)

        last_progress = -PROGRESS_EVERY

        def progress(p: Progress) -> None:
            nonlocal last_progress
            now = time.monotonic()
            if now - last_progress >= PROGRESS_EVERY:
                last_progress = now
                events.put(agent_pb2.GetEvent(progress=_progress_pb(p)))

        def work() -> None:
            try:
                summary = self._daemon.fetch(wanted, progress, cancelled)
                events.put(agent_pb2.GetEvent(summary=_summary_pb(summary)))
            except BaseException as exc:
                events.put(exc)
            finally:
                events.put(None)

        worker = threading.Thread(target=work, name="api-get", daemon=True)
        worker.start()
        while (event := events.get()) is not None:
            if isinstance(event, AlreadyThere):
                yield agent_pb2.GetEvent(
                    summary=agent_pb2.GetSummary(path=str(event.path), already_there=True)
                )
            elif isinstance(event, OutputNotWritable):
                worker.join()
                context.abort(grpc.StatusCode.PERMISSION_DENIED, event.directory)
            elif isinstance(event, AgentError | TrackerError):
                worker.join()
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(event))
            elif isinstance(event, BaseException):
                worker.join()
                log.error("get %s failed", request.source, exc_info=event)
                context.abort(grpc.StatusCode.INTERNAL, f"the daemon failed: {event}")
            else:
                yield event
        worker.join()

    def Status(
        self, request: agent_pb2.StatusRequest, context: grpc.ServicerContext
    ) -> agent_pb2.StatusResponse:
        s = self._daemon.status()
        return agent_pb2.StatusResponse(
            agent_id=s.agent_id,
            version=s.version,
            base_url=s.base_url,
            shares=s.shares,
            files=s.files,
            bytes_held=s.bytes_held,
            active_uploads=s.active_uploads,
            bytes_served=s.bytes_served,
            tracker=s.tracker,
            tracker_connected=s.tracker_connected,
            downloads=[
                agent_pb2.DownloadStatus(
                    source=d.source,
                    output=d.output,
                    progress=_progress_pb(d.progress) if d.progress else None,
                )
                for d in s.downloads
            ],
            tracker_source=s.tracker_source.value,
            cluster=s.cluster,
            discovery_note=s.discovery_note,
        )


class LocalApiServer:
    """AgentService on `state_dir/agent.sock`. The socket is open to its owner and group
    (mode 0660); the state directory decides who reaches it: the daemon makes its own 0700,
    and a system install makes it 0750 for the `lanpeer` group."""

    def __init__(self, daemon: Fetching, socket_path: Path) -> None:
        self.socket_path = socket_path
        if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH:
            raise AgentError(
                f"the control socket path {socket_path} is longer than {MAX_SOCKET_PATH} bytes; "
                "choose a shorter --state-dir"
            )
        self._executor = futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="agent-api")
        self._server = grpc.server(self._executor)
        agent_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(daemon), self._server)  # type: ignore[no-untyped-call]
        socket_path.unlink(missing_ok=True)
        old_umask = os.umask(0o117)
        try:
            if not self._server.add_insecure_port(f"unix:{socket_path}"):
                raise AgentError(f"cannot listen on {socket_path}")
        finally:
            os.umask(old_umask)

    def start(self) -> None:
        self._server.start()
        os.chmod(self.socket_path, 0o660)

    def stop(self, grace: float = 1.0) -> None:
        self._server.stop(grace).wait()
        self._executor.shutdown(wait=True)
        self.socket_path.unlink(missing_ok=True)


class LocalApiClient:
    def __init__(self, socket_path: Path) -> None:
        self._channel = grpc.insecure_channel(f"unix:{socket_path}")
        self._stub = agent_pb2_grpc.AgentServiceStub(self._channel)  # type: ignore[no-untyped-call]

    def reachable(self, timeout: float = 1.0) -> bool:
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
            return True
        except grpc.FutureTimeoutError:
            return False

    def get(self, request: GetRequest, on_progress: Callable[[Progress], None]) -> Summary:
        """Runs the download in the daemon; raises AlreadyThere as a local get would."""
        pb = agent_pb2.GetRequest(
            source=request.source,
            output=str(request.output.resolve()) if request.output else "",
            sha256=request.sha256 or "",
            connections=request.connections,
            no_origin=not request.use_origin,
            force=request.force,
            policy=request.policy.value,
        )
        summary: agent_pb2.GetSummary | None = None
        try:
            # Read the stream to its end, also after the summary: a call left open when the
            # channel closes and the process exits can make gRPC's poller abort.
            for event in self._stub.Get(pb):
                if event.HasField("progress"):
                    on_progress(_progress_from_pb(event.progress))
                elif event.HasField("summary"):
                    summary = event.summary
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                raise OutputNotWritable(exc.details()) from None
            raise AgentError(exc.details() or "the daemon failed") from None
        if summary is None:
            raise AgentError("the daemon ended the download without a summary")
        if summary.already_there:
            raise AlreadyThere(Path(summary.path))
        return _summary_from_pb(summary)

    def status(self, timeout: float = 5.0) -> agent_pb2.StatusResponse:
        try:
            reply: agent_pb2.StatusResponse = self._stub.Status(agent_pb2.StatusRequest(), timeout=timeout)
            return reply
        except grpc.RpcError as exc:
            raise AgentError(f"the daemon did not answer: {exc.details()}") from None

    def close(self) -> None:
        self._channel.close()
