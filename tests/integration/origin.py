"""A test origin: a real HTTP/1.1 server on 127.0.0.1, port 0, serving in-memory files by
path, each with switches for the ways real origins behave (weak or missing ETags, no
ranges, no HEAD, redirects, failures, slowness, content that changes mid-download).

It stands in for a third-party web server, so it is written with the standard library's
http.server and has nothing of lanpeer in it but the Range header parser. It counts the
requests, connections and body bytes it serves, and records every request's headers, so
that tests can check what a client sent and how much it took.

    with start_origin() as origin:
        origin.add("/x.tar", data, ranges=False)
        fetcher.probe(origin.url("/x.tar"))
        assert origin.bytes_served("/x.tar") <= 1.1 * len(data)

`stop()` shuts every connection down and joins every thread it started.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

from agent.ranges import RangeKind, parse_range

KiB = 1024
MiB = 1024 * KiB
CHUNK = 64 * KiB
DEFAULT_LAST_MODIFIED = "Mon, 02 Jan 2023 10:00:00 GMT"
# A socket timeout for the handlers, as a safety net: stop() does not wait for it.
HANDLER_TIMEOUT = 30.0

ETagKind = Literal["strong", "weak", "none"]


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How the origin serves one path."""

    # A strong ETag (made from the content and its version), a weak one, or none.
    etag: ETagKind = "strong"
    # Sent as it is; None sends no Last-Modified. A change of content moves it an hour on.
    last_modified: str | None = DEFAULT_LAST_MODIFIED
    # False: ignore Range (and say nothing of Accept-Ranges), always answer 200 with everything.
    ranges: bool = True
    # False: answer HEAD with 405.
    head_allowed: bool = True
    # False: no Content-Length; a GET body then ends when the connection closes.
    send_length: bool = True
    # Answer every request with `redirect_status` and this Location, sent as it is (it may
    # be relative). Chains are paths that redirect to paths that redirect.
    redirect_to: str | None = None
    redirect_status: int = 302
    # The first `fail_times` requests of the path get `fail_status`, with Retry-After when set.
    fail_times: int = 0
    fail_status: int = 503
    retry_after: str | None = None
    # Seconds to wait before answering at all.
    respond_delay: float = 0.0
    # A body rate in bytes per second, sent smoothly in chunks of 1/20 s.
    rate_limit: int | None = None
    # A pause of this many seconds per MiB, taken before each 64 KiB chunk.
    delay_per_mib: float = 0.0
    # Once this many body bytes of the path were served, the content is swapped for
    # `changed_content` (default: the content rotated by one byte) with a new ETag and
    # Last-Modified. A response under way goes on with the old content, as a web server
    # goes on sending the file it opened.
    change_after_bytes: int | None = None
    changed_content: bytes | None = None
    # Publish the content's SHA-256 as `Repr-Digest: sha-256=:…:` and/or `Digest: SHA-256=…`.
    repr_digest: bool = False
    legacy_digest: bool = False
    # Close the connection after this many bytes of each GET body: a short body.
    truncate_after: int | None = None


@dataclass(frozen=True, slots=True)
class Version:
    """One version of a file's content and validators."""

    content: bytes
    number: int
    etag: str | None
    last_modified: str | None


@dataclass(frozen=True, slots=True)
class Seen:
    """A request as the origin received it; header names in lower case."""

    method: str
    path: str
    headers: dict[str, str] = field(hash=False)


@dataclass(slots=True)
class _File:
    behaviour: Behaviour
    version: Version
    requests: int = 0
    served: int = 0


def _version(content: bytes, number: int, behaviour: Behaviour) -> Version:
    tag = f'"{hashlib.sha256(content).hexdigest()[:16]}-{number}"'
    etag = {"strong": tag, "weak": f"W/{tag}", "none": None}[behaviour.etag]
    modified = behaviour.last_modified
    if modified is not None and number > 1:
        when = email.utils.parsedate_to_datetime(modified).timestamp() + 3600 * (number - 1)
        modified = email.utils.formatdate(when, usegmt=True)
    return Version(content, number, etag, modified)


class Origin:
    """The server, its files and its counters. Thread-safe; a context manager."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, _File] = {}
        self._seen: list[Seen] = []
        self._total_served = 0
        self._connections = 0
        self._open: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------- files

    def add(self, path: str, content: bytes = b"", **switches: Any) -> None:
        """Serves `content` at `path` (which starts with /), behaving as `switches` say
        (the fields of Behaviour; another name is a TypeError). Replaces what the path
        served before, counters included."""
        if not path.startswith("/"):
            raise ValueError(f"{path!r}: a path starts with /")
        behaviour = replace(Behaviour(), **switches)
        with self._lock:
            self._files[path] = _File(behaviour, _version(content, 1, behaviour))

    def content(self, path: str) -> bytes:
        """What the path serves now (after any change)."""
        with self._lock:
            return self._files[path].version.content

    def etag(self, path: str) -> str | None:
        with self._lock:
            return self._files[path].version.etag

    def version(self, path: str) -> Version:
        with self._lock:
            return self._files[path].version

    # ------------------------------------------------------------------------- counters

    def bytes_served(self, path: str | None = None) -> int:
        """Body bytes handed to the socket, for `path` or in all."""
        with self._lock:
            return self._total_served if path is None else self._files[path].served

    def request_count(self, path: str | None = None) -> int:
        with self._lock:
            if path is None:
                return len(self._seen)
            return sum(1 for seen in self._seen if seen.path == path)

    def seen(self, path: str | None = None) -> list[Seen]:
        """The requests received, oldest first."""
        with self._lock:
            return [s for s in self._seen if path is None or s.path == path]

    @property
    def connections(self) -> int:
        """Connections accepted since start."""
        with self._lock:
            return self._connections

    # ------------------------------------------------------------------------- server

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the origin is not started")
        return int(self._server.server_address[1])

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the origin was already started")
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="test-origin"
        )
        self._thread.start()

    def stop(self) -> None:
        """Stops accepting, cuts every open connection, and joins every thread. Idempotent."""
        server, thread = self._server, self._thread
        if server is None or thread is None or self._stopping.is_set():
            return
        self._stopping.set()
        server.shutdown()
        with self._lock:
            still_open = list(self._open)
        for sock in still_open:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        # Joins the handler threads (block_on_close), then the serving thread.
        server.server_close()
        thread.join()

    def __enter__(self) -> Origin:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------------- for the handler

    def _connected(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections += 1
            self._open.add(sock)

    def _disconnected(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)

    def _begin(self, method: str, path: str, headers: dict[str, str]) -> tuple[_File, Version, bool] | None:
        """Records a request; returns its file, the version it gets, and whether it fails."""
        with self._lock:
            self._seen.append(Seen(method, path, headers))
            file = self._files.get(path)
            if file is None:
                return None
            file.requests += 1
            return file, file.version, file.requests <= file.behaviour.fail_times

    def _sent(self, file: _File, count: int) -> None:
        with self._lock:
            file.served += count
            self._total_served += count
            b = file.behaviour
            if (
                b.change_after_bytes is not None
                and file.version.number == 1
                and file.served >= b.change_after_bytes
            ):
                old = file.version.content
                new = b.changed_content if b.changed_content is not None else old[1:] + old[:1]
                file.version = _version(new, 2, b)


@contextmanager
def start_origin() -> Iterator[Origin]:
    """A started origin, stopped when the block ends."""
    origin = Origin()
    origin.start()
    try:
        yield origin
    finally:
        origin.stop()


class _Server(ThreadingHTTPServer):
    # Handler threads are joined by server_close(), once stop() has cut their connections.
    daemon_threads = False
    block_on_close = True

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: socket.socket, client_address: Any) -> None:  # type: ignore[override]
        self.origin._connected(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        self.origin._disconnected(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away is no error of the origin's.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "test-origin/1"
    timeout = HANDLER_TIMEOUT
    # The status line and headers go out in one write and the body in others: without
    # this, Nagle's algorithm and delayed ACKs add 40 ms to each small response.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, *, head: bool) -> None:
        origin = self.server.origin
        path = urlsplit(self.path).path
        headers = {name.lower(): value for name, value in self.headers.items()}
        begun = origin._begin(self.command, path, headers)
        if begun is None:
            self._short_reply(404, head)
            return
        file, version, failing = begun
        b = file.behaviour
        if b.respond_delay and self._pause(b.respond_delay):
            return
        if failing:
            extra = [("Retry-After", b.retry_after)] if b.retry_after is not None else []
            self._short_reply(b.fail_status, head, extra)
        elif b.redirect_to is not None:
            self._short_reply(b.redirect_status, head, [("Location", b.redirect_to)])
        elif head and not b.head_allowed:
            self._short_reply(405, head, [("Allow", "GET")])
        else:
            self._send_content(file, version, head)

    def _short_reply(self, status: int, head: bool, extra: list[tuple[str, str]] | None = None) -> None:
        body = f"{status} {HTTPStatus(status).phrase}\n".encode()
        self.send_response(status)
        for name, value in extra or []:
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_content(self, file: _File, version: Version, head: bool) -> None:
        b = file.behaviour
        content = version.content
        size = len(content)
        status, start, end = 200, 0, size - 1
        fields: list[tuple[str, str]] = [("Content-Type", "application/octet-stream")]
        if version.etag is not None:
            fields.append(("ETag", version.etag))
        if version.last_modified is not None:
            fields.append(("Last-Modified", version.last_modified))
        if b.ranges:
            fields.append(("Accept-Ranges", "bytes"))
        if b.repr_digest or b.legacy_digest:
            digest = base64.b64encode(hashlib.sha256(content).digest()).decode()
            if b.repr_digest:
                fields.append(("Repr-Digest", f"sha-256=:{digest}:"))
            if b.legacy_digest:
                fields.append(("Digest", f"SHA-256={digest}"))
        wanted = self.headers.get("Range")
        if b.ranges and not head and wanted is not None and self._if_range_holds(version):
            asked = parse_range(wanted, size)
            if asked.kind is RangeKind.UNSATISFIABLE:
                self._short_reply(416, head, [("Content-Range", f"bytes */{size}")])
                return
            if asked.kind is RangeKind.SATISFIABLE and len(asked.ranges) == 1:
                (only,) = asked.ranges
                status, start, end = 206, only.start, only.end
                fields.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        self.send_response(status)
        for name, value in fields:
            self.send_header(name, value)
        if b.send_length:
            self.send_header("Content-Length", str(end - start + 1))
        elif not head:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if not head:
            self._send_body(file, memoryview(content)[start : end + 1])

    def _if_range_holds(self, version: Version) -> bool:
        """RFC 9110 §13.1.5: a strong match of the ETag, or the exact Last-Modified date."""
        if_range = self.headers.get("If-Range")
        if if_range is None:
            return True
        if_range = if_range.strip()
        if if_range.startswith(('"', "W/")):
            return version.etag is not None and not version.etag.startswith("W/") and if_range == version.etag
        return if_range == version.last_modified

    def _send_body(self, file: _File, body: memoryview) -> None:
        b = file.behaviour
        chunk = CHUNK
        if b.rate_limit is not None:
            chunk = max(1 * KiB, min(CHUNK, b.rate_limit // 20))
        if b.truncate_after is not None:
            body = body[: b.truncate_after]
            self.close_connection = True
        sent = 0
        while sent < len(body):
            part = body[sent : sent + chunk]
            pause = 0.0
            if b.rate_limit is not None:
                pause += len(part) / b.rate_limit
            if b.delay_per_mib:
                pause += b.delay_per_mib * len(part) / MiB
            if pause and self._pause(pause):
                return
            # Counted before the write, so that a client that has the bytes also sees
            # the counters (and any change of content) they caused.
            self.server.origin._sent(file, len(part))
            try:
                self.wfile.write(part)
            except OSError:
                self.close_connection = True
                return
            sent += len(part)

    def _pause(self, seconds: float) -> bool:
        """Waits; True (and the connection is to close) when the origin is stopping."""
        if self.server.origin._stopping.wait(seconds):
            self.close_connection = True
            return True
        return False
