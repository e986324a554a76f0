"""The agent's HTTP server: byte ranges of the files this machine holds, named by an id.

    GET|HEAD /v1/blobs/<id>   the content, with RFC 9110 ranges; its ETag is the quoted id
    GET|HEAD /v1/health       {"status": "ok", "active_uploads": N, "max_uploads": M}
    GET|HEAD /metrics         Prometheus text, when the server was given a metrics renderer

An id is 64 lowercase hex digits: the content's SHA-256, or a swarm's id; the store says
what each names. Besides complete files, a store may hand out a download still under way
(an OpenBlob with `pieces`), of which only the verified pieces are served:

    Lanpeer-Pieces: <base64>   on every response about such a blob: the pieces it has
                               verified, a bitmap in BitTorrent order (0x80 of byte 0 is piece 0)
    Lanpeer-Missing: pieces    on its 404 to a GET for bytes (all of them, without a usable
                               Range) of which some lie in pieces not verified yet

h11 parses HTTP/1.1 and this module owns the I/O, on asyncio streams in one daemon thread:
file bytes go from the page cache to the socket with sendfile(), uploads are capped and
rate-limited, and a client too slow to send its request or to read the answer is dropped.
Only a response with file bytes in its body takes one of the capped upload slots.

/v1/health and /metrics need no token, even when blobs do: they carry counts only (bytes,
files, uploads), never a file's name or digest, nor anything secret, and a monitoring
system can then scrape an agent without holding the cluster token.

Ranges follow RFC 9110: an invalid Range header (or one with more than 64 ranges, or sent
twice) is ignored and the whole blob is sent (200); one that matches no byte gets 416 with
`Content-Range: bytes */size`; an If-Range other than the blob's ETag makes it ignored.
The ranges asked for are clipped to the blob, sorted, and merged where they overlap or
touch; one range left is a plain 206 with Content-Range, several are a 206
multipart/byteranges body in ascending order. A HEAD ignores Range, as RFC 9110 says.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hmac
import http
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO, Protocol, cast

import h11

from agent.errors import AgentError, ConfigError
from agent.ranges import (
    ByteRange,
    RangeKind,
    RangeRequest,
    body_length,
    content_range,
    multipart_byteranges,
    parse_range,
    range_applies,
    unsatisfied_content_range,
)
from tracker.model import bitmap_count, bitmap_has, bitmap_len, is_sha256

log = logging.getLogger(__name__)

KiB = 1024
MiB = 1024 * KiB

DEFAULT_PORT = 7071
DEFAULT_GRACE = 2.0
READ_SIZE = 64 * KiB
# Unlimited uploads still go out in chunks of this size, each of which must be sent
# within send_timeout.
UNLIMITED_CHUNK = 4 * MiB
# After an error response, how long to read and drop what the client is still sending
# before closing, so that closing does not reset the connection under the response.
LINGER_SECONDS = 1.0

SERVER_NAME = "lanpeer-agent"
OCTET_STREAM = "application/octet-stream"
TEXT_PLAIN = "text/plain; charset=utf-8"
# The Prometheus text format that prometheus_client's generate_latest() writes.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ALLOWED_METHODS = "GET, HEAD"
PIECES_HEADER = "Lanpeer-Pieces"
MISSING_HEADER = "Lanpeer-Missing"
_BLOBS = "/v1/blobs/"
_HEALTH = "/v1/health"
_METRICS = "/metrics"


@dataclass(frozen=True, slots=True)
class PieceMap:
    """Which pieces of a blob are verified: `count` pieces of `piece_size` bytes (the last
    may be shorter), in a bitmap in BitTorrent order (0x80 of byte i is piece 8i)."""

    piece_size: int
    count: int
    bitmap: bytes

    def __post_init__(self) -> None:
        if self.piece_size < 1 or self.count < 0:
            raise ValueError(f"piece map: {self.count} pieces of {self.piece_size} bytes")
        if len(self.bitmap) != bitmap_len(self.count):
            raise ValueError(f"piece map: {self.count} pieces need {bitmap_len(self.count)} bytes of bitmap")
        spare = len(self.bitmap) * 8 - self.count
        if spare and self.bitmap[-1] & ((1 << spare) - 1):
            raise ValueError("piece map: bits set past the last piece")

    def covers(self, start: int, end: int) -> bool:
        """Whether every piece holding a byte of `start` to `end` (included) is verified."""
        if not 0 <= start <= end:
            raise ValueError(f"byte range {start}-{end}: need 0 <= start <= end")
        last = end // self.piece_size
        return last < self.count and all(
            bitmap_has(self.bitmap, piece) for piece in range(start // self.piece_size, last + 1)
        )

    @property
    def complete(self) -> bool:
        return bitmap_count(self.bitmap) == self.count


@dataclass(frozen=True, slots=True)
class OpenBlob:
    sha256: str
    size: int
    file: BinaryIO  # opened "rb"; the server closes it when done
    # The verified pieces of a download under way; None when the whole blob is held.
    pieces: PieceMap | None = None


class BlobStore(Protocol):
    def open_blob(self, blob_id: str, /) -> OpenBlob | None:
        """The verified file holding the blob of this id, opened; None when not held (or when
        the file changed on disk since it was hashed: the store then withdraws it)."""


@dataclass(frozen=True, slots=True)
class RangeServerConfig:
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    # When set, blob requests need `Authorization: Bearer <token>`; /v1/health and
    # /metrics stay open.
    token: str | None = None
    max_uploads: int = 16
    # The machine's total upload rate in bytes per second, shared by all uploads.
    upload_limit: int | None = None
    # A complete request head must arrive within this many seconds of its first byte
    # (of the connection, for the first request).
    header_timeout: float = 10.0
    # How long a kept-alive connection may wait for its next request.
    idle_timeout: float = 30.0
    # A client that does not take a chunk of a response (4 MiB at most; about 1/16 s of
    # the rate limit when there is one) within this many seconds is dropped.
    send_timeout: float = 60.0
    max_header_bytes: int = 16 * KiB
    # Seconds a client turned away by the upload cap is told to wait.
    retry_after: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"range server port: {self.port} is not a TCP port (0 picks a free one)")
        if self.token is not None and not (self.token.isascii() and self.token.isprintable()):
            raise ConfigError("range server token: must be printable ASCII")
        if self.token is not None and (not self.token or " " in self.token):
            raise ConfigError("range server token: must be non-empty and without spaces")
        if self.max_uploads < 1:
            raise ConfigError(f"max uploads: {self.max_uploads} is less than 1")
        if self.upload_limit is not None and self.upload_limit < 1:
            raise ConfigError(f"upload limit: {self.upload_limit} bytes/s is less than 1")
        for what, seconds in (
            ("header timeout", self.header_timeout),
            ("idle timeout", self.idle_timeout),
            ("send timeout", self.send_timeout),
        ):
            if not seconds > 0:
                raise ConfigError(f"{what}: {seconds} s is not a positive duration")
        if self.max_header_bytes < 1 * KiB:
            raise ConfigError(f"max header bytes: {self.max_header_bytes} is less than 1 KiB")
        if self.retry_after < 0:
            raise ConfigError(f"retry after: {self.retry_after} s is negative")


class TokenBucket:
    """An upload allowance of `rate` bytes per second with bursts of up to `burst` bytes.

    A sender reserves bytes before sending them and first waits the delay it is given.
    The balance may go below zero, so senders sharing a bucket are served in the order
    they asked and together never exceed the rate.
    """

    def __init__(self, rate: int, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate < 1 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and burst")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def reserve(self, amount: int) -> float:
        """Takes `amount` bytes of allowance; returns the seconds to wait before sending them."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= amount
        return max(0.0, -self._tokens / self.rate)


def limited_chunk(rate: int) -> int:
    """The bytes given to one sendfile() call under a rate limit: about 1/16 s worth."""
    return min(1 * MiB, max(16 * KiB, rate // 16))


class _ContentChanged(AgentError):
    """The file ended before the range being sent: it changed on disk under the server."""


class _HeadTimeout(Exception):
    def __init__(self, partial: bool) -> None:
        super().__init__("no complete request head in time")
        self.partial = partial


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    headers: tuple[tuple[str, str], ...]
    # Bytes to send as they are, and ranges of the blob's file to sendfile().
    body: tuple[bytes | ByteRange, ...] = ()


class _Segment:
    """A range of the file, stood in for its bytes in an h11 Data event: h11 frames any
    object that has a length and hands it back untouched (its documented sendfile support)."""

    __slots__ = ("range",)

    def __init__(self, r: ByteRange) -> None:
        self.range = r

    def __len__(self) -> int:
        return self.range.length


@dataclass(slots=True)
class _ConnectionState:
    # Between a request head arriving and its response sent: stop() lets it finish.
    busy: bool = False


def _text_reply(status: int, headers: Sequence[tuple[str, str]] = (), text: str = "") -> _Reply:
    body = (text or http.HTTPStatus(status).phrase).encode() + b"\n"
    return _Reply(status, (("Content-Type", TEXT_PLAIN), *headers), (body,))


def _missing_pieces(headers: Sequence[tuple[str, str]]) -> _Reply:
    return _text_reply(404, (*headers, (MISSING_HEADER, "pieces")), "pieces not held yet")


def _target_path(target: bytes) -> str:
    """The path of a request target in origin or absolute form; the query is ignored."""
    path = target.split(b"?", 1)[0].split(b"#", 1)[0]
    if path[:7].lower() == b"http://" or path[:8].lower() == b"https://":
        parts = path.split(b"/", 3)
        path = b"/" + (parts[3] if len(parts) > 3 else b"")
    return path.decode("latin-1")


def _header_values(request: h11.Request, name: bytes) -> list[bytes]:
    return [value for key, value in request.headers if key == name]


def _single_header(request: h11.Request, name: bytes) -> tuple[int, str | None]:
    """How many times the header came, and its value (as latin-1 text) when once."""
    values = _header_values(request, name)
    return len(values), values[0].decode("latin-1") if len(values) == 1 else None


class RangeServer:
    """Serves the blobs of `store` over HTTP/1.1 from a daemon thread running an asyncio loop.

    `start()` binds and returns; `port` is then the bound port (useful with port 0).
    `stop(grace)` refuses new connections at once, lets responses under way finish for up
    to `grace` seconds, then drops what is left and joins the thread. The server is also a
    context manager. `clock` drives the upload rate limit. `metrics`, when given, renders
    the Prometheus text served at /metrics; it is called off the loop thread.
    """

    def __init__(
        self,
        config: RangeServerConfig,
        store: BlobStore,
        clock: Callable[[], float] = time.monotonic,
        *,
        metrics: Callable[[], bytes] | None = None,
    ) -> None:
        self.config = config
        self._store = store
        self._metrics = metrics
        self._token = config.token.encode("ascii") if config.token is not None else None
        self._bucket: TokenBucket | None = None
        self._chunk = UNLIMITED_CHUNK
        if config.upload_limit is not None:
            self._chunk = limited_chunk(config.upload_limit)
            self._bucket = TokenBucket(config.upload_limit, self._chunk, clock)
        # These are written by the loop thread only; other threads just read them.
        self._active_uploads = 0
        self._bytes_served = 0
        self._uploads_refused = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop_requested = False
        self._start_error: BaseException | None = None
        self._port: int | None = None
        # Loop-side state, set in the loop thread.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._stopping = False
        self._grace = DEFAULT_GRACE
        self._connections: dict[asyncio.Task[None], _ConnectionState] = {}

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the range server is not started")
        return self._port

    @property
    def active_uploads(self) -> int:
        """Blob bodies being sent right now."""
        return self._active_uploads

    @property
    def bytes_served(self) -> int:
        """File bytes sent since start."""
        return self._bytes_served

    @property
    def uploads_refused(self) -> int:
        """Requests for file bytes turned away (503) since start: every upload slot was taken."""
        return self._uploads_refused

    def start(self) -> None:
        """Binds and starts serving; raises the OSError when it cannot bind."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("the range server was already started")
            self._thread = threading.Thread(target=self._run, name="lanpeer-rangeserver", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._port is None:
            self._thread.join()
            raise self._start_error or RuntimeError("the range server's thread ended before it started")

    def stop(self, grace: float = DEFAULT_GRACE) -> None:
        """Refuses new connections at once, lets responses under way finish for up to
        `grace` seconds, then drops what is left and joins the thread. Idempotent."""
        with self._lock:
            thread, first = self._thread, not self._stop_requested
            self._stop_requested = True
        if thread is None:
            return
        self._ready.wait()
        if first and self._loop is not None:
            with suppress(RuntimeError):  # The loop has already ended.
                self._loop.call_soon_threadsafe(self._begin_stop, max(0.0, grace))
        thread.join()

    def __enter__(self) -> RangeServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # The loop thread.

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main())
        finally:
            try:
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()
                self._ready.set()

    async def _main(self) -> None:
        self._stop_event = asyncio.Event()
        cfg = self.config
        try:
            server = await asyncio.start_server(
                self._on_connection, cfg.host, cfg.port, reuse_address=True, limit=READ_SIZE
            )
        except OSError as exc:
            self._start_error = exc
            return
        self._port = server.sockets[0].getsockname()[1]
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        limit = f"{cfg.upload_limit} bytes/s" if cfg.upload_limit else "no rate limit"
        log.info(
            "range server listening on %s:%d (up to %d uploads, %s)",
            cfg.host,
            self._port,
            cfg.max_uploads,
            limit,
        )
        if self._token is None:
            log.warning(
                "no range server token configured: any machine that can reach port %d may download "
                "the files this agent shares",
                self._port,
            )
        await self._stop_event.wait()
        server.close()
        await self._finish_connections(self._grace)
        # One more turn of the loop, for the last closed transports to close their sockets.
        await asyncio.sleep(0)
        await server.wait_closed()
        log.info("range server stopped after serving %d bytes", self._bytes_served)

    def _begin_stop(self, grace: float) -> None:
        self._stopping = True
        self._grace = grace
        assert self._stop_event is not None
        self._stop_event.set()

    async def _finish_connections(self, grace: float) -> None:
        """Drops idle connections now and busy ones once they are done, or after `grace`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        for task, state in list(self._connections.items()):
            if not state.busy:
                task.cancel()
        while self._connections:
            tasks = set(self._connections)
            remaining = deadline - loop.time()
            if remaining > 0:
                await asyncio.wait(tasks, timeout=remaining)
                continue
            busy = sum(state.busy for state in self._connections.values())
            if busy:
                log.warning("stopping: %d responses still under way after %.1f s are cut off", busy, grace)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        state = _ConnectionState()
        self._connections[task] = state
        peer = writer.get_extra_info("peername")
        try:
            if not self._stopping:
                await self._converse(reader, writer, state)
            await self._close(writer)
        except _ContentChanged as exc:
            log.warning("dropped a response to %s: %s", peer, exc)
        except OSError as exc:
            # Resets, broken pipes and send timeouts: the client went away or stopped reading.
            log.debug("connection from %s dropped: %s", peer, exc or type(exc).__name__)
        except asyncio.CancelledError:
            # stop() drops the connection. The task ends quietly rather than cancelled:
            # asyncio's streams (3.11) report a cancelled client task as an error.
            pass
        except Exception:
            log.exception("unexpected error serving %s", peer)
        finally:
            del self._connections[task]
            # Nothing once closed; otherwise drops what a vanished client left unread.
            writer.transport.abort()

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: _ConnectionState
    ) -> None:
        """Serves the requests of one connection in turn, until it is to be closed."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.config.max_header_bytes)
        fresh = True
        while True:
            state.busy = False
            try:
                request = await self._receive_head(conn, reader, fresh)
            except _HeadTimeout as exc:
                if exc.partial:
                    peer = writer.get_extra_info("peername")
                    log.debug("dropping %s: no complete request head in time", peer)
                    await self._send(conn, writer, _text_reply(408), close=True)
                    await self._linger(reader, writer)
                return
            except h11.RemoteProtocolError as exc:
                log.debug("bad request from %s: %s", writer.get_extra_info("peername"), exc)
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._send(conn, writer, _text_reply(exc.error_status_hint), close=True)
                    await self._linger(reader, writer)
                return
            if request is None:
                return
            fresh = False
            state.busy = True
            await self._respond(conn, writer, request)
            state.busy = False
            if conn.their_state not in (h11.DONE, h11.MUST_CLOSE):
                # The client is sending a body that was left unread.
                await self._linger(reader, writer)
                return
            if conn.our_state is not h11.DONE or self._stopping:
                return
            conn.start_next_cycle()

    async def _receive_head(
        self, conn: h11.Connection, reader: asyncio.StreamReader, fresh: bool
    ) -> h11.Request | None:
        """The next request's head, or None when the client closed the connection first."""
        loop = asyncio.get_running_loop()
        cfg = self.config
        received = len(conn.trailing_data[0])
        started = fresh or received > 0
        deadline = loop.time() + (cfg.header_timeout if started else cfg.idle_timeout)
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                if received - len(conn.trailing_data[0]) > cfg.max_header_bytes:
                    raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
                return event
            if isinstance(event, h11.ConnectionClosed):
                return None
            if event is not h11.NEED_DATA:
                raise h11.RemoteProtocolError(f"expected a request, got {event!r}")
            try:
                async with asyncio.timeout_at(deadline):
                    data = await reader.read(READ_SIZE)
            except TimeoutError:
                raise _HeadTimeout(partial=received > 0) from None
            if not started:
                started = True
                deadline = loop.time() + cfg.header_timeout
            received += len(data)
            conn.receive_data(data)

    async def _respond(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request
    ) -> None:
        # A GET or HEAD has no use for a body: when a client sends one anyway, it is left
        # unread and the connection closes after the response.
        try:
            complete = isinstance(conn.next_event(), h11.EndOfMessage)
        except h11.RemoteProtocolError:
            complete = False
        close = self._stopping or not complete
        head = request.method == b"HEAD"
        path = _target_path(request.target)
        readable = request.method in (b"GET", b"HEAD")
        if path == _HEALTH:
            reply = self._health() if readable else self._not_allowed()
            status = await self._send(conn, writer, reply, head=head, close=close)
        elif path == _METRICS and self._metrics is not None:
            reply = await self._render_metrics(self._metrics) if readable else self._not_allowed()
            status = await self._send(conn, writer, reply, head=head, close=close)
        elif path.startswith(_BLOBS) and "/" not in path[len(_BLOBS) :]:
            status = await self._serve_blob(conn, writer, request, path[len(_BLOBS) :], close)
        else:
            status = await self._send(conn, writer, _text_reply(404), head=head, close=close)
        log.debug(
            "%s %s %s: %d",
            writer.get_extra_info("peername"),
            request.method.decode("latin-1"),
            request.target.decode("latin-1"),
            status,
        )

    def _health(self) -> _Reply:
        doc = {"status": "ok", "active_uploads": self._active_uploads, "max_uploads": self.config.max_uploads}
        body = json.dumps(doc).encode() + b"\n"
        return _Reply(200, (("Content-Type", "application/json"),), (body,))

    @staticmethod
    async def _render_metrics(render: Callable[[], bytes]) -> _Reply:
        """Renders off the loop thread, since the figures are read under other threads' locks."""
        try:
            body = await asyncio.get_running_loop().run_in_executor(None, render)
        except Exception:
            log.exception("cannot render the metrics")
            return _text_reply(500)
        return _Reply(200, (("Content-Type", METRICS_CONTENT_TYPE),), (body,))

    @staticmethod
    def _not_allowed() -> _Reply:
        return _text_reply(405, [("Allow", ALLOWED_METHODS)])

    def _authorized(self, request: h11.Request) -> bool:
        if self._token is None:
            return True
        values = _header_values(request, b"authorization")
        if len(values) != 1:
            return False
        scheme, _, credentials = values[0].partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(b" \t"), self._token)

    async def _serve_blob(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        request: h11.Request,
        blob_id: str,
        close: bool,
    ) -> int:
        """Answers a request for a blob; returns the status sent."""
        head = request.method == b"HEAD"
        if request.method not in (b"GET", b"HEAD"):
            reply = self._not_allowed()
        elif not self._authorized(request):
            reply = _text_reply(401, [("WWW-Authenticate", "Bearer")])
        elif not is_sha256(blob_id):
            reply = _text_reply(400, text="not a blob id (64 lowercase hex digits)")
        else:
            return await self._send_blob(conn, writer, request, blob_id, head=head, close=close)
        return await self._send(conn, writer, reply, head=head, close=close)

    async def _send_blob(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        request: h11.Request,
        blob_id: str,
        *,
        head: bool,
        close: bool,
    ) -> int:
        try:
            blob = await self._open(blob_id)
        except OSError as exc:
            log.warning("cannot open the file holding %s: %s", blob_id, exc)
            return await self._send(conn, writer, _text_reply(500), head=head, close=close)
        if blob is None:
            reply = _text_reply(404, text="not held here")
            return await self._send(conn, writer, reply, head=head, close=close)
        try:
            reply = self._blob_reply(request, blob_id, blob, head)
            if head or not any(isinstance(part, ByteRange) for part in reply.body):
                return await self._send(conn, writer, reply, head=head, close=close)
            return await self._upload(conn, writer, reply, blob_id, blob.file, close)
        finally:
            blob.file.close()

    async def _upload(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        reply: _Reply,
        blob_id: str,
        file: BinaryIO,
        close: bool,
    ) -> int:
        """Sends a reply with file bytes in its body in one of the upload slots, or a 503
        when they are all taken."""
        if self._active_uploads >= self.config.max_uploads:
            log.debug("turned away a download of %s: %d uploads under way", blob_id, self._active_uploads)
            self._uploads_refused += 1
            busy = _text_reply(503, [("Retry-After", str(self.config.retry_after))], "too many uploads")
            return await self._send(conn, writer, busy, close=close)
        # The check above and this increment have no await between them, and the loop
        # runs one coroutine at a time, so the count is exact.
        self._active_uploads += 1
        try:
            return await self._send(conn, writer, reply, close=close, file=file)
        finally:
            self._active_uploads -= 1

    async def _open(self, blob_id: str) -> OpenBlob | None:
        """Asks the store off the loop thread, since it may wait on disk or on a lock."""
        opening = asyncio.get_running_loop().run_in_executor(None, self._store.open_blob, blob_id)
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_unwanted)
            raise

    def _blob_reply(self, request: h11.Request, blob_id: str, blob: OpenBlob, head: bool) -> _Reply:
        size, pieces = blob.size, blob.pieces
        etag = f'"{blob_id}"'
        held = () if pieces is None else ((PIECES_HEADER, base64.b64encode(pieces.bitmap).decode("ascii")),)
        common = (("Accept-Ranges", "bytes"), ("ETag", etag), *held)
        wanted = self._wanted_ranges(request, etag, size, head)
        if wanted.kind is RangeKind.UNSATISFIABLE:
            return _Reply(416, (*common, ("Content-Range", unsatisfied_content_range(size))))
        if wanted.kind is RangeKind.IGNORE:
            if pieces is not None and not pieces.complete and not head:
                return _missing_pieces(held)
            whole = (ByteRange(0, size - 1),) if size else ()
            return _Reply(200, (*common, ("Content-Type", OCTET_STREAM)), whole)
        if pieces is not None and not all(pieces.covers(r.start, r.end) for r in wanted.ranges):
            return _missing_pieces(held)
        if len(wanted.ranges) == 1:
            (only,) = wanted.ranges
            headers = (*common, ("Content-Type", OCTET_STREAM), ("Content-Range", content_range(only, size)))
            return _Reply(206, headers, (only,))
        boundary = f"lanpeer-{secrets.token_hex(16)}"
        body = multipart_byteranges(wanted.ranges, size, boundary, OCTET_STREAM)
        return _Reply(206, (*common, ("Content-Type", f"multipart/byteranges; boundary={boundary}")), body)

    @staticmethod
    def _wanted_ranges(request: h11.Request, etag: str, size: int, head: bool) -> RangeRequest:
        """What the Range header asks, after If-Range. RFC 9110 §14.2 defines ranges for GET
        only, so a HEAD gets the headers of the whole content. A request with two Range
        headers is malformed: its ranges are ignored."""
        ranges, range_value = _single_header(request, b"range")
        if head or ranges != 1 or range_value is None:
            return parse_range("", size)
        if_ranges, if_range = _single_header(request, b"if-range")
        if if_ranges > 1 or not range_applies(if_range, etag):
            return parse_range("", size)
        return parse_range(range_value, size)

    async def _send(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        reply: _Reply,
        *,
        head: bool = False,
        close: bool = False,
        file: BinaryIO | None = None,
    ) -> int:
        """Sends `reply`, its body from `file` where it names ranges; returns its status."""
        headers = [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Server", SERVER_NAME),
            *reply.headers,
            ("Content-Length", str(body_length(reply.body))),
        ]
        if close or self._stopping:
            headers.append(("Connection", "close"))
        writer.write(_bytes(conn.send(h11.Response(status_code=reply.status, headers=headers))))
        if not head:
            for part in reply.body:
                if isinstance(part, bytes):
                    writer.write(_bytes(conn.send(h11.Data(data=part))))
                    continue
                assert file is not None
                segment = _Segment(part)
                for item in conn.send_with_data_passthrough(h11.Data(data=cast(bytes, segment))) or ():
                    if item is cast(bytes, segment):
                        await self._send_file(writer, file, part)
                    else:
                        writer.write(item)
        writer.write(_bytes(conn.send(h11.EndOfMessage())))
        async with asyncio.timeout(self.config.send_timeout):
            await writer.drain()
        return reply.status

    async def _send_file(self, writer: asyncio.StreamWriter, file: BinaryIO, r: ByteRange) -> None:
        loop = asyncio.get_running_loop()
        offset, remaining = r.start, r.length
        while remaining:
            count = min(remaining, self._chunk)
            if self._bucket is not None:
                delay = self._bucket.reserve(count)
                if delay > 0:
                    await asyncio.sleep(delay)
            try:
                async with asyncio.timeout(self.config.send_timeout):
                    sent = await loop.sendfile(writer.transport, file, offset, count)
            except RuntimeError as exc:
                # asyncio's word for a transport that closed under the call.
                raise ConnectionError(str(exc)) from exc
            self._bytes_served += sent
            if sent < count:
                raise _ContentChanged(f"the file ended at byte {offset + sent} while sending {r}")
            offset += sent
            remaining -= sent

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Closes our side, then reads and drops what the client still sends for a moment, so
        that unread input does not make the kernel reset the connection under the response."""
        try:
            async with asyncio.timeout(self.config.send_timeout):
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            async with asyncio.timeout(LINGER_SECONDS):
                while await reader.read(READ_SIZE):
                    pass
        except OSError:
            pass

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        """Closes the connection once what is buffered has gone out, within send_timeout."""
        writer.close()
        with suppress(OSError):
            async with asyncio.timeout(self.config.send_timeout):
                await writer.wait_closed()


def _bytes(data: bytes | None) -> bytes:
    return data or b""


def _close_unwanted(opening: asyncio.Future[OpenBlob | None]) -> None:
    """Closes a file the store opened for a request that was given up meanwhile."""
    if not opening.cancelled() and opening.exception() is None:
        blob = opening.result()
        if blob is not None:
            blob.file.close()
