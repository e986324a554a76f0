"""The agent's range server, over real sockets on 127.0.0.1: ranges, limits, hostile clients,
timeouts and shutdown. The store behind it hands out real temporary files."""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from email.message import Message
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.rangeserver import (
    RangeServer,
    RangeServerConfig,
    TokenBucket,
    limited_chunk,
)
from tests.integration.helpers import BlobFiles, eventually, range_servers
from tests.unit.helpers import FakeClock

MiB = 1024 * 1024
DATA = random.Random(14).randbytes(2 * MiB + 5)
SHA = hashlib.sha256(DATA).hexdigest()
EMPTY_SHA = hashlib.sha256(b"").hexdigest()
# A sparse file far larger than the socket buffers, so a client that does not read keeps
# its upload under way. Its digest is made up: the store is trusted.
BIG_SHA = hashlib.sha256(b"big").hexdigest()
BIG_SIZE = 64 * MiB
UNKNOWN_SHA = hashlib.sha256(b"unknown").hexdigest()
TIMEOUT = 5.0


@pytest.fixture(scope="module")
def blob_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("blobs")
    (root / SHA).write_bytes(DATA)
    (root / EMPTY_SHA).write_bytes(b"")
    with (root / BIG_SHA).open("wb") as f:
        f.truncate(BIG_SIZE)
    return root


@pytest.fixture
def store(blob_dir: Path) -> BlobFiles:
    return BlobFiles(blob_dir)


Serve = Callable[..., RangeServer]


@pytest.fixture
def serve(store: BlobFiles) -> Iterator[Serve]:
    """Starts range servers on 127.0.0.1, port 0; stops them at the end and checks that
    every file they were given was closed."""
    yield from range_servers(store)


@pytest.fixture
def server(serve: Serve) -> RangeServer:
    return serve()


# ----------------------------------------------------------------------------- helpers


def request(
    server: RangeServer, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, Message, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def blob(sha: str = SHA) -> str:
    return f"/v1/blobs/{sha}"


def raw_exchange(server: RangeServer, data: bytes, method: str = "GET") -> tuple[int, Message, bytes]:
    """Sends `data` as it is and reads one response."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        return response.status, response.headers, response.read()


def stalled_download(server: RangeServer, sha: str = BIG_SHA) -> socket.socket:
    """A client that asks for a large blob and then reads nothing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(f"GET /v1/blobs/{sha} HTTP/1.1\r\nHost: peer\r\n\r\n".encode())
    return sock


def check_still_serving(server: RangeServer) -> None:
    status, _, body = request(server, blob(), {"Range": "bytes=5-9"})
    assert (status, body) == (206, DATA[5:10])


def parse_multipart(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """The (Content-Range, bytes) of each part of a multipart/byteranges body."""
    kind, _, boundary = content_type.partition("; boundary=")
    assert kind == "multipart/byteranges"
    delimiter = f"--{boundary}".encode()
    assert body.startswith(delimiter + b"\r\n")
    assert body.endswith(b"\r\n" + delimiter + b"--\r\n")
    inner = body[len(delimiter) + 2 : -len(delimiter) - 6]
    parts = []
    for section in inner.split(b"\r\n" + delimiter + b"\r\n"):
        head, payload = section.split(b"\r\n\r\n", 1)
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n"))
        assert fields[b"Content-Type"] == b"application/octet-stream"
        parts.append((fields[b"Content-Range"].decode(), payload))
    return parts


# ----------------------------------------------------------------------------- the token bucket (pure)


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1000, burst=500, clock=clock)
    assert bucket.reserve(500) == 0
    assert bucket.reserve(250) == pytest.approx(0.25)
    # The next sender queues behind the first.
    assert bucket.reserve(250) == pytest.approx(0.5)
    clock.advance(10)
    # Idle time refills up to the burst, no more.
    assert bucket.reserve(500) == 0
    assert bucket.reserve(1) == pytest.approx(0.001)


def test_limited_chunks_are_a_sixteenth_of_a_second_within_bounds() -> None:
    assert limited_chunk(4 * MiB) == 256 * 1024
    assert limited_chunk(1000) == 16 * 1024
    assert limited_chunk(10**10) == MiB


# ----------------------------------------------------------------------------- whole and single ranges


def test_get_serves_the_whole_blob_with_its_validators(server: RangeServer) -> None:
    status, headers, body = request(server, blob())
    assert status == 200
    assert body == DATA
    assert headers["Content-Length"] == str(len(DATA))
    assert headers["ETag"] == f'"{SHA}"'
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Date"]
    # The server counts the bytes just after they went out.
    eventually(lambda: server.bytes_served == len(DATA))


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=10-19", 10, 19),
        ("bytes=100-", 100, len(DATA) - 1),
        ("bytes=-100", len(DATA) - 100, len(DATA) - 1),
        ("bytes=-1", len(DATA) - 1, len(DATA) - 1),
        ("bytes=0-999999999999", 0, len(DATA) - 1),
        # Around the piece boundaries at 1 MiB and 2 MiB.
        (f"bytes={MiB - 1}-{MiB}", MiB - 1, MiB),
        (f"bytes={MiB - 1}-{MiB - 1}", MiB - 1, MiB - 1),
        (f"bytes={MiB}-{2 * MiB - 1}", MiB, 2 * MiB - 1),
        (f"bytes={MiB + 1}-{2 * MiB + 1}", MiB + 1, 2 * MiB + 1),
        (f"bytes={MiB - 1}-", MiB - 1, len(DATA) - 1),
        (f"bytes=-{MiB + 1}", len(DATA) - MiB - 1, len(DATA) - 1),
        (f"bytes={2 * MiB}-", 2 * MiB, len(DATA) - 1),
    ],
)
def test_a_single_range(server: RangeServer, header: str, start: int, end: int) -> None:
    status, headers, body = request(server, blob(), {"Range": header})
    assert status == 206
    assert headers["Content-Range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert headers["Content-Length"] == str(end - start + 1)
    assert headers["ETag"] == f'"{SHA}"'
    assert body == DATA[start : end + 1]


def test_head_has_the_headers_of_get_and_no_body(server: RangeServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        conn.request("HEAD", blob())
        head = conn.getresponse()
        assert head.read() == b""
        # Ranges are for GET only (RFC 9110 §14.2): a HEAD describes the whole content.
        conn.request("HEAD", blob(), headers={"Range": "bytes=0-9"})
        ranged_head = conn.getresponse()
        assert ranged_head.read() == b""
        # Had the server sent a body after a HEAD, it would be read as this response.
        conn.request("GET", "/v1/health")
        after = conn.getresponse()
        assert after.status == 200
        assert json.loads(after.read())["status"] == "ok"
    finally:
        conn.close()
    _, get_headers, _ = request(server, blob())
    for response in (head, ranged_head):
        assert response.status == 200
        assert dict(response.headers.items()) | {"Date": ""} == dict(get_headers.items()) | {"Date": ""}
    eventually(lambda: server.bytes_served == len(DATA))


def test_head_of_the_health_check(server: RangeServer) -> None:
    status, headers, body = request(server, "/v1/health", method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) > 0


# ----------------------------------------------------------------------------- If-Range, 416, several ranges


@pytest.mark.parametrize(
    ("if_range", "status"),
    [
        (f'"{SHA}"', 206),
        (f'"{UNKNOWN_SHA}"', 200),
        (f'W/"{SHA}"', 200),
        ("Sun, 06 Nov 1994 08:49:37 GMT", 200),
    ],
)
def test_if_range(server: RangeServer, if_range: str, status: int) -> None:
    got, headers, body = request(server, blob(), {"Range": "bytes=10-19", "If-Range": if_range})
    assert got == status
    assert body == (DATA[10:20] if status == 206 else DATA)
    assert ("Content-Range" in headers) is (status == 206)


def test_if_range_that_does_not_match_also_overrides_an_unsatisfiable_range(server: RangeServer) -> None:
    status, _, body = request(server, blob(), {"Range": f"bytes={len(DATA)}-", "If-Range": '"other"'})
    assert (status, body) == (200, DATA)


@pytest.mark.parametrize(
    "header", [f"bytes={len(DATA)}-", f"bytes={len(DATA) + 10}-{len(DATA) + 20}", "bytes=-0"]
)
def test_unsatisfiable_ranges_get_416_with_the_size(server: RangeServer, header: str) -> None:
    status, headers, body = request(server, blob(), {"Range": header})
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{len(DATA)}"
    assert body == b""


def test_several_ranges_come_as_multipart_byteranges(server: RangeServer) -> None:
    header = f"bytes=0-9, {MiB - 1}-{MiB}, -50"
    status, headers, body = request(server, blob(), {"Range": header})
    assert status == 206
    assert "Content-Range" not in headers
    assert int(headers["Content-Length"]) == len(body)
    size = len(DATA)
    assert parse_multipart(headers["Content-Type"], body) == [
        (f"bytes 0-9/{size}", DATA[0:10]),
        (f"bytes {MiB - 1}-{MiB}/{size}", DATA[MiB - 1 : MiB + 1]),
        (f"bytes {size - 50}-{size - 1}/{size}", DATA[-50:]),
    ]


def test_ranges_out_of_order_come_sorted(server: RangeServer) -> None:
    status, headers, body = request(server, blob(), {"Range": "bytes=200-299,0-9"})
    assert status == 206
    assert [r for r, _ in parse_multipart(headers["Content-Type"], body)] == [
        f"bytes 0-9/{len(DATA)}",
        f"bytes 200-299/{len(DATA)}",
    ]


def test_overlapping_ranges_are_coalesced_into_one_part(server: RangeServer) -> None:
    status, headers, body = request(server, blob(), {"Range": "bytes=0-99,50-149,150-199"})
    assert status == 206
    assert headers["Content-Range"] == f"bytes 0-199/{len(DATA)}"
    assert body == DATA[:200]


def test_an_empty_blob(server: RangeServer) -> None:
    status, headers, body = request(server, blob(EMPTY_SHA))
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == "0"
    for header in ("bytes=0-", "bytes=0-0", "bytes=-1"):
        status, headers, _ = request(server, blob(EMPTY_SHA), {"Range": header})
        assert status == 416
        assert headers["Content-Range"] == "bytes */0"


# ----------------------------------------------------------------------------- malformed and hostile requests


def _get(*headers: bytes, target: bytes = blob().encode()) -> bytes:
    return (
        b"GET " + target + b" HTTP/1.1\r\nHost: peer\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"
    )


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (_get(b"Range: bytes=99999999999999999999999-"), 416),
        (_get(b"Range: bytes=-" + b"9" * 5000), 206),
        (_get(b"Range: bytes=-"), 200),
        (_get(b"Range: garbage"), 200),
        (_get(b"Range: bytes=1-0"), 200),
        (_get(b"Range: bytes=0-1", b"Range: bytes=2-3"), 200),
        (_get(b"Range: bytes=\xff-\xfe"), 200),
        (_get(b"Range: bytes=" + b"0-0," * 3000), 200),
        (_get(b"Range: bytes=0-0", b"If-Range: \xff"), 200),
        (_get(b"X-Padding: " + b"a" * 20 * 1024), 431),
        (_get(*[b"X-Many: " + b"b" * 100] * 200), 431),
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /v1/health\r\n\r\n", 400),
        (b"GET /v1/health HTTP/1.1\r\n\r\n", 400),  # No Host.
        (b"GET /v1/\xffhealth HTTP/1.1\r\nHost: peer\r\n\r\n", 400),
        (_get(b"X\xff: 1"), 400),
        (_get(b"Bad Header: 1"), 400),
        (_get(b"Transfer-Encoding: gzip"), 501),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32) + b"\r\n\r\n", 400),  # TLS hello.
    ],
)
def test_hostile_requests_get_sensible_answers(server: RangeServer, data: bytes, status: int) -> None:
    got, _, body = raw_exchange(server, data)
    assert got == status
    if status == 206:
        assert body == DATA[-len(body) :]
    check_still_serving(server)


def test_a_client_that_hangs_up_mid_request_does_not_disturb_others(server: RangeServer) -> None:
    for data in (b"GET /v1/hea", _get()[:-2], b"\r\n"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            sock.recv(1024)
    check_still_serving(server)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (blob(SHA.upper()), 400),
        (blob(SHA[:-1]), 400),
        (blob(SHA + "0"), 400),
        (blob("g" * 64), 400),
        ("/v1/blobs/", 400),
        ("/v1/blobs/..%2F..%2Fetc%2Fpasswd", 400),
        (blob(UNKNOWN_SHA), 404),
        (blob(SHA) + "/", 404),
        (f"/v1/blobs/{SHA}/x", 404),
        ("/v1/blobs", 404),
        ("/", 404),
        ("/v1/health/", 404),
        ("/etc/passwd", 404),
        (blob(SHA) + "?x=1&y", 200),
        ("/v1/health?verbose=1", 200),
    ],
)
def test_routes(server: RangeServer, path: str, status: int) -> None:
    got, _, _ = request(server, path)
    assert got == status


def test_an_absolute_form_target_is_served(server: RangeServer) -> None:
    status, _, body = raw_exchange(server, _get(target=f"http://peer:1{blob()}".encode()))
    assert (status, body) == (200, DATA)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
@pytest.mark.parametrize("path", [blob(), "/v1/health"])
def test_other_methods_are_not_allowed(server: RangeServer, method: str, path: str) -> None:
    status, headers, _ = request(server, path, method=method)
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"


def test_a_request_with_a_body_is_answered_and_its_connection_closed(server: RangeServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: peer\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 200
        assert response.headers["Connection"] == "close"
        response.read()
        sock.sendall(b"x" * 1000)
        assert _read_to_eof(sock) == b""


def _read_to_eof(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


# ----------------------------------------------------------------------------- token


def test_blobs_need_the_token_and_the_health_check_does_not(serve: Serve) -> None:
    server = serve(token="s3cret-token")
    status, headers, _ = request(server, blob())
    assert status == 401
    assert headers["WWW-Authenticate"] == "Bearer"
    for wrong in ("Bearer wrong", "Bearer s3cret-toke", "Basic s3cret-token", "s3cret-token", "Bearer"):
        assert request(server, blob(), {"Authorization": wrong})[0] == 401
    status, _, body = request(server, blob(), {"Authorization": "Bearer s3cret-token"})
    assert (status, body) == (200, DATA)
    assert request(server, blob(), {"Authorization": "bearer s3cret-token"})[0] == 200
    assert request(server, blob(), {"Authorization": "Bearer s3cret-token"}, method="HEAD")[0] == 200
    assert request(server, blob(UNKNOWN_SHA), {"Authorization": "Bearer s3cret-token"})[0] == 404
    assert request(server, "/v1/health")[0] == 200
    # An unauthenticated client learns nothing about digests.
    assert request(server, blob("nonsense"))[0] == 401
    assert request(server, blob(UNKNOWN_SHA))[0] == 401
    twice = _get(b"Authorization: Bearer s3cret-token", b"Authorization: Bearer s3cret-token")
    assert raw_exchange(server, twice)[0] == 401


# ----------------------------------------------------------------------------- upload cap


def test_the_upload_cap_turns_away_the_next_download_with_retry_after(serve: Serve) -> None:
    server = serve(max_uploads=2)
    stalled = [stalled_download(server), stalled_download(server)]
    try:
        eventually(lambda: server.active_uploads == 2)
        status, headers, body = request(server, blob(), {"Range": "bytes=0-9"})
        assert status == 503
        assert headers["Retry-After"] == "1"
        # A HEAD sends no body: it is not an upload. Nor is an answer without file bytes.
        assert request(server, blob(), method="HEAD")[0] == 200
        assert request(server, blob(UNKNOWN_SHA))[0] == 404
        assert request(server, blob(), {"Range": f"bytes={len(DATA)}-"})[0] == 416
        assert server.uploads_refused == 1
        status, _, body = request(server, "/v1/health")
        assert json.loads(body) == {"status": "ok", "active_uploads": 2, "max_uploads": 2}
        stalled.pop().close()
        eventually(lambda: server.active_uploads == 1)
        check_still_serving(server)
        # The server gives the slot back just after the last byte went out.
        eventually(lambda: server.active_uploads == 1)
    finally:
        for sock in stalled:
            sock.close()
    eventually(lambda: server.active_uploads == 0)


def test_a_client_leaving_mid_body_frees_its_slot_quietly(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = serve(max_uploads=1)
    sock = stalled_download(server)
    assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    eventually(lambda: server.active_uploads == 1)
    sock.close()
    eventually(lambda: server.active_uploads == 0)

    def dropped() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "agent.rangeserver" and "dropped" in r.getMessage()]

    eventually(lambda: bool(dropped()))
    check_still_serving(server)
    assert [r.levelno for r in dropped()] == [logging.DEBUG]
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []


def test_a_file_that_shrank_under_the_server_ends_the_response_short(
    serve: Serve, store: BlobFiles, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve()
    store.extra[SHA] = 10
    with pytest.raises(http.client.IncompleteRead):
        request(server, blob())
    assert any("ended at byte" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    store.extra.clear()
    check_still_serving(server)
    eventually(lambda: server.active_uploads == 0)


# ----------------------------------------------------------------------------- connections and timeouts


def test_keep_alive_serves_several_requests_on_one_connection(server: RangeServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        for start in range(0, 50, 10):
            conn.request("GET", blob(), headers={"Range": f"bytes={start}-{start + 9}"})
            response = conn.getresponse()
            assert response.read() == DATA[start : start + 10]
            assert not response.will_close
        local_port = conn.sock.getsockname()[1]
        conn.request("GET", "/v1/health")
        conn.getresponse().read()
        assert conn.sock.getsockname()[1] == local_port
    finally:
        conn.close()


def test_pipelined_requests_are_answered_in_order(server: RangeServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(_get(b"Range: bytes=0-2") + _get(b"Range: bytes=3-5") + _get(b"Connection: close"))
        received = _read_to_eof(sock)
    assert received.count(b"HTTP/1.1 ") == 3
    assert received.index(b"bytes 0-2/") < received.index(b"bytes 3-5/") < received.index(b"HTTP/1.1 200 ")
    assert received.endswith(DATA)


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
def test_the_server_closes_when_asked_or_for_http_1_0(server: RangeServer, version: str) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        close = "Connection: close\r\n" if version == "HTTP/1.1" else ""
        sock.sendall(f"GET /v1/health {version}\r\nHost: peer\r\n{close}\r\n".encode())
        received = _read_to_eof(sock)
    assert received.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nConnection: close\r\n" in received


def test_an_idle_kept_alive_connection_is_closed_after_the_idle_timeout(serve: Serve) -> None:
    server = serve(idle_timeout=0.3)
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(_get(target=b"/v1/health"))
        response = http.client.HTTPResponse(sock)
        response.begin()
        response.read()
        started = time.monotonic()
        assert sock.recv(1024) == b""
        assert 0.2 < time.monotonic() - started < 2.0


def test_a_slowloris_client_is_dropped_while_others_are_served(serve: Serve) -> None:
    server = serve(header_timeout=0.5)
    outcome: dict[str, float] = {}
    received = bytearray()
    started = time.monotonic()

    def trickle() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
            sock.settimeout(0.05)
            request_head = b"GET /v1/health HTTP/1.1\r\nHost: peer\r\n" + b"X-Slow: a\r\n" * 100
            for byte in request_head:
                if time.monotonic() - started > TIMEOUT:
                    break
                try:
                    sock.send(bytes([byte]))
                    chunk = sock.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    break
                received.extend(chunk)
                if not chunk:
                    break
        outcome["dropped"] = time.monotonic() - started

    slow = threading.Thread(target=trickle)
    slow.start()
    try:
        time.sleep(0.15)
        status, _, _ = request(server, "/v1/health")
        assert status == 200
        served = time.monotonic() - started
    finally:
        slow.join()
    assert served < outcome["dropped"]
    assert 0.45 < outcome["dropped"] < 2.0
    assert received.startswith(b"HTTP/1.1 408 ")
    check_still_serving(server)


def test_a_silent_new_connection_is_dropped_after_the_header_timeout(serve: Serve) -> None:
    server = serve(header_timeout=0.3, idle_timeout=30)
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        started = time.monotonic()
        assert sock.recv(1024) == b""
        assert 0.25 < time.monotonic() - started < 2.0


def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout(serve: Serve) -> None:
    server = serve(send_timeout=0.3)
    sock = stalled_download(server)
    try:
        eventually(lambda: server.active_uploads == 1)
        eventually(lambda: server.active_uploads == 0, timeout=3.0)
    finally:
        sock.close()
    check_still_serving(server)


def test_the_rate_limit_slows_a_transfer(serve: Serve) -> None:
    server = serve(upload_limit=4 * MiB)
    started = time.monotonic()
    status, _, body = request(server, blob(), {"Range": f"bytes=0-{2 * MiB - 1}"})
    elapsed = time.monotonic() - started
    assert (status, body) == (206, DATA[: 2 * MiB])
    # 2 MiB at 4 MiB/s, less one 256 KiB burst: about 0.44 s.
    assert 0.35 <= elapsed < 5.0


# ----------------------------------------------------------------------------- start and stop


def test_stop_lets_an_upload_finish_within_the_grace_and_refuses_new_connections(serve: Serve) -> None:
    # About two seconds for the 2 MiB of DATA: time for the refusal to be seen first, even
    # on a busy machine, and well within the grace.
    server = serve(upload_limit=1 * MiB)
    got: list[tuple[int, Message, bytes]] = []

    def download() -> None:
        got.append(request(server, blob()))
        finished.append(time.monotonic())

    finished: list[float] = []

    downloader = threading.Thread(target=download)
    downloader.start()
    eventually(lambda: server.active_uploads == 1)
    stopper = threading.Thread(target=server.stop, kwargs={"grace": 5.0})
    started = time.monotonic()
    stopper.start()
    try:

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT).close()
            except (ConnectionRefusedError, ConnectionResetError):
                # A connection caught in the listening socket's queue as it closes is reset.
                return True
            return False

        eventually(refused, timeout=1.0)
        refused_at = time.monotonic()
    finally:
        downloader.join()
        stopper.join()
    [(status, _, body)] = got
    assert (status, body) == (200, DATA)
    assert refused_at < finished[0]
    assert time.monotonic() - started < 5.0


def test_stop_cuts_off_what_is_still_under_way_after_the_grace(serve: Serve) -> None:
    server = serve()
    sock = stalled_download(server)
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    try:
        # A kept-alive connection between two requests.
        idle.sendall(_get(target=b"/v1/health"))
        response = http.client.HTTPResponse(idle)
        response.begin()
        response.read()
        eventually(lambda: server.active_uploads == 1)
        started = time.monotonic()
        server.stop(grace=0.3)
        assert 0.25 < time.monotonic() - started < 2.0
        idle.settimeout(TIMEOUT)
        assert idle.recv(1024) == b""
    finally:
        sock.close()
        idle.close()
    assert server.active_uploads == 0
    server.stop()  # A second stop does nothing.


def test_the_server_is_a_context_manager(store: BlobFiles) -> None:
    with RangeServer(RangeServerConfig(host="127.0.0.1", port=0), store) as server:
        check_still_serving(server)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)


def test_a_port_in_use_fails_start_and_leaves_no_thread(server: RangeServer, store: BlobFiles) -> None:
    taken = RangeServer(RangeServerConfig(host="127.0.0.1", port=server.port), store)
    with pytest.raises(OSError, match="in use"):
        taken.start()
    taken.stop()


def test_stop_before_start_does_nothing(store: BlobFiles) -> None:
    RangeServer(RangeServerConfig(host="127.0.0.1", port=0), store).stop()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"port": 70000}, "not a TCP port"),
        ({"token": ""}, "non-empty"),
        ({"token": "a b"}, "without spaces"),
        ({"token": "t\u00e9"}, "printable ASCII"),
        ({"max_uploads": 0}, "less than 1"),
        ({"upload_limit": 0}, "less than 1"),
        ({"header_timeout": 0}, "positive"),
        ({"idle_timeout": -1.0}, "positive"),
        ({"send_timeout": float("nan")}, "positive"),
        ({"max_header_bytes": 100}, "less than 1 KiB"),
        ({"retry_after": -1}, "negative"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RangeServerConfig(**settings)  # type: ignore[arg-type]
