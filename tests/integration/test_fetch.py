"""HttpFetcher over real sockets: against the test origin (tests/integration/origin.py) for
probes, ranges, streams and the ways origins misbehave, and against a real agent range
server for peer fetches."""

from __future__ import annotations

import email.utils
import hashlib
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent.errors import (
    FetchError,
    RangeNotSupported,
    SourceBusy,
    SourceFailed,
    SourceMissing,
    SourceUnauthorized,
    SourceUnreachable,
    ValidatorChanged,
)
from agent.fetch import HttpFetcher, OriginInfo
from agent.rangeserver import RangeServer
from tests.integration.helpers import BlobFiles, range_servers
from tests.integration.origin import DEFAULT_LAST_MODIFIED, Origin, start_origin
from tracker.model import Validator

KiB = 1024
MiB = 1024 * KiB
DATA = random.Random(4).randbytes(3 * MiB + 123)
SHA = hashlib.sha256(DATA).hexdigest()
# A sparse blob larger than the socket buffers, for a download that stays under way.
BIG_SHA = hashlib.sha256(b"big").hexdigest()
BIG_SIZE = 64 * MiB
UNKNOWN_SHA = hashlib.sha256(b"unknown").hexdigest()
TOKEN = "peer-secret-token"
# Long enough for a loaded machine, short enough to keep timeouts fast.
TIMEOUT = 2.0
SHORT_TIMEOUT = 0.3


@pytest.fixture
def origin() -> Iterator[Origin]:
    with start_origin() as running:
        yield running


@pytest.fixture
def fetcher() -> Iterator[HttpFetcher]:
    with HttpFetcher(timeout=TIMEOUT, token=TOKEN) as made:
        yield made


def buffer(length: int) -> memoryview:
    return memoryview(bytearray(length))


def one_line(error: BaseException) -> str:
    text = str(error)
    assert text
    assert "\n" not in text
    assert "\r" not in text
    return text


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Collector:
    """A sink for fetch_origin_stream that keeps what it is given."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.calls = 0

    def __call__(self, chunk: memoryview) -> None:
        self.calls += 1
        assert len(chunk) <= 1 * MiB
        self.data += chunk


# ----------------------------------------------------------------------------- probe


def test_probe_finds_size_strong_etag_and_ranges(origin: Origin, fetcher: HttpFetcher) -> None:
    origin.add("/x.tar", DATA)
    info = fetcher.probe(origin.url("/x.tar"))
    assert info == OriginInfo(
        url=origin.url("/x.tar"),
        size=len(DATA),
        validator=Validator(origin.etag("/x.tar") or "", DEFAULT_LAST_MODIFIED, len(DATA)),
        accepts_ranges=True,
        digest_hint=None,
    )
    assert [s.method for s in origin.seen()] == ["HEAD"]
    assert origin.bytes_served() == 0


def test_a_weak_etag_falls_back_to_last_modified_and_length(origin: Origin, fetcher: HttpFetcher) -> None:
    origin.add("/weak", DATA, etag="weak")
    info = fetcher.probe(origin.url("/weak"))
    assert info.validator == Validator("", DEFAULT_LAST_MODIFIED, len(DATA))


def test_no_etag_and_no_last_modified_is_no_validator(origin: Origin, fetcher: HttpFetcher) -> None:
    origin.add("/bare", DATA, etag="none", last_modified=None)
    info = fetcher.probe(origin.url("/bare"))
    assert info.validator is None
    assert info.size == len(DATA)


def test_probe_follows_redirects_absolute_and_relative(origin: Origin, fetcher: HttpFetcher) -> None:
    origin.add("/dir/c.tar", DATA)
    origin.add("/dir/b", redirect_to="c.tar", redirect_status=307)
    origin.add("/a", redirect_to=origin.url("/dir/b"), redirect_status=301)
    origin.add("/start", redirect_to="/a", redirect_status=302)
    info = fetcher.probe(origin.url("/start"))
    assert info.url == origin.url("/dir/c.tar")
    assert info.size == len(DATA)
    # Ranges go to the final URL directly.
    fetcher.fetch_origin(info, 0, 9, buffer(10))
    assert origin.seen()[-1].path == "/dir/c.tar"


def test_a_redirect_loop_is_a_one_line_failure(origin: Origin, fetcher: HttpFetcher) -> None:
    origin.add("/loop", redirect_to="/loop")
    with pytest.raises(SourceFailed) as caught:
        fetcher.probe(origin.url("/loop"))
    assert one_line(caught.value) == f"{origin.url('/loop')} redirects more than 10 times"
    assert origin.request_count("/loop") == 11


def test_a_refused_head_falls_back_to_the_first_byte(origin: Origin, fetcher: HttpFetcher) -> None:
    origin.add("/nohead", DATA, head_allowed=False, repr_digest=True)
    info = fetcher.probe(origin.url("/nohead"))
    assert info.size == len(DATA)
    assert info.accepts_ranges
    assert info.digest_hint == SHA
    assert info.validator is not None and info.validator.etag == origin.etag("/nohead")
    head, get = origin.seen()
    assert (head.method, get.method, get.headers["range"]) == ("HEAD", "GET", "bytes=0-0")
    assert origin.bytes_served() == 1


def test_a_head_without_length_falls_back_to_the_first_byte(origin: Origin, fetcher: HttpFetcher) -> None:
    origin.add("/nolength", DATA, send_length=False, legacy_digest=True)
    info = fetcher.probe(origin.url("/nolength"))
    assert (info.size, info.accepts_ranges, info.digest_hint) == (len(DATA), True, SHA)


def test_refused_head_and_no_ranges_take_the_length_of_the_whole(
    origin: Origin, fetcher: HttpFetcher
) -> None:
    origin.add("/plain", DATA, head_allowed=False, ranges=False)
    info = fetcher.probe(origin.url("/plain"))
    assert (info.size, info.accepts_ranges) == (len(DATA), False)


def test_no_length_anywhere_is_an_unknown_size(origin: Origin, fetcher: HttpFetcher) -> None:
    origin.add("/stream", DATA, send_length=False, ranges=False, etag="none")
    info = fetcher.probe(origin.url("/stream"))
    assert (info.size, info.accepts_ranges, info.validator) == (None, False, None)


def test_an_empty_file(origin: Origin, fetcher: HttpFetcher) -> None:
    origin.add("/empty", b"")
    assert fetcher.probe(origin.url("/empty")).size == 0
    origin.add("/empty-nohead", b"", head_allowed=False)
    assert fetcher.probe(origin.url("/empty-nohead")).size == 0


def test_probe_errors_are_one_line(origin: Origin, fetcher: HttpFetcher) -> None:
    origin.add("/busy", DATA, fail_times=1, retry_after="7")
    origin.add("/broken", DATA, fail_times=5, fail_status=500)
    with pytest.raises(SourceMissing) as missing:
        fetcher.probe(origin.url("/nope"))
    assert one_line(missing.value) == f"origin answered 404 Not Found for {origin.url('/nope')}"
    with pytest.raises(SourceBusy) as busy:
        fetcher.probe(origin.url("/busy"))
    assert busy.value.retry_after == 7.0
    assert fetcher.probe(origin.url("/busy")).size == len(DATA)
    with pytest.raises(SourceFailed) as failed:
        fetcher.probe(origin.url("/broken"))
    assert failed.value.status == 500
    assert one_line(failed.value) == f"origin answered 500 Internal Server Error for {origin.url('/broken')}"
    with pytest.raises(SourceFailed, match="not an http"):
        fetcher.probe("ftp://example.com/x")


# ----------------------------------------------------------------------------- ranges from the origin


@pytest.mark.parametrize("etag", ["strong", "weak"])
def test_origin_ranges_are_byte_exact(origin: Origin, fetcher: HttpFetcher, etag: str) -> None:
    origin.add("/x.tar", DATA, etag=etag)
    info = fetcher.probe(origin.url("/x.tar"))
    assert info.validator is not None
    for start, end in [(0, 0), (len(DATA) - 1, len(DATA) - 1), (1000, 1 * MiB + 7), (0, len(DATA) - 1)]:
        into = buffer(end - start + 1)
        assert fetcher.fetch_origin(info, start, end, into) == end - start + 1
        assert into == DATA[start : end + 1]
    if_ranges = {s.headers.get("if-range") for s in origin.seen() if s.method == "GET"}
    assert if_ranges == {info.validator.etag or DEFAULT_LAST_MODIFIED}


def test_keep_alive_connections_are_reused(origin: Origin, fetcher: HttpFetcher) -> None:
    origin.add("/x.tar", DATA)
    info = fetcher.probe(origin.url("/x.tar"))
    for i in range(20):
        fetcher.fetch_origin(info, i * 1000, i * 1000 + 999, buffer(1000))
    with pytest.raises(SourceMissing):
        fetcher.probe(origin.url("/nope"))
    fetcher.fetch_origin(info, 0, 9, buffer(10))
    assert origin.connections == 1


def test_what_goes_to_the_origin(origin: Origin, fetcher: HttpFetcher) -> None:
    origin.add("/x.tar", DATA, head_allowed=False)
    info = fetcher.probe(origin.url("/x.tar"))
    fetcher.fetch_origin(info, 0, 99, buffer(100))
    fetcher.fetch_origin_stream(info, len(DATA) - 10, Collector())
    seen = origin.seen()
    assert len(seen) == 4
    for request in seen:
        assert "authorization" not in request.headers
        assert request.headers["user-agent"].startswith("lanpeer/")
        assert request.headers["accept-encoding"] == "identity"


def test_a_change_mid_download_is_validator_changed(origin: Origin, fetcher: HttpFetcher) -> None:
    origin.add("/x.tar", DATA, change_after_bytes=1 * MiB)
    info = fetcher.probe(origin.url("/x.tar"))
    was = origin.etag("/x.tar")
    into = buffer(1 * MiB)
    fetcher.fetch_origin(info, 0, MiB - 1, into)
    assert into == DATA[: 1 * MiB]
    with pytest.raises(ValidatorChanged) as caught:
        fetcher.fetch_origin(info, MiB, 2 * MiB - 1, buffer(1 * MiB))
    now = origin.etag("/x.tar")
    assert now != was
    assert one_line(caught.value) == (
        f"{origin.url('/x.tar')} changed while downloading (its ETag is now {now}, was {was})"
    )


def test_a_change_is_seen_by_last_modified_too(origin: Origin, fetcher: HttpFetcher) -> None:
    origin.add("/x.tar", DATA, etag="none", change_after_bytes=1)
    info = fetcher.probe(origin.url("/x.tar"))
    fetcher.fetch_origin(info, 0, 9, buffer(10))
    with pytest.raises(ValidatorChanged, match=r"its Last-Modified is now .*, was Mon, 02 Jan 2023"):
        fetcher.fetch_origin(info, 10, 19, buffer(10))


def test_a_change_of_size_is_a_change(origin: Origin, fetcher: HttpFetcher) -> None:
    origin.add("/x.tar", DATA, etag="none", last_modified=None)
    info = fetcher.probe(origin.url("/x.tar"))
    origin.add("/x.tar", DATA + b"more", etag="none", last_modified=None)
    with pytest.raises(ValidatorChanged, match=f"its size is now {len(DATA) + 4} bytes, was {len(DATA)}"):
        fetcher.fetch_origin(info, 10, 19, buffer(10))


def test_an_origin_that_ignores_ranges(origin: Origin, fetcher: HttpFetcher) -> None:
    origin.add("/x.tar", DATA, ranges=False)
    info = fetcher.probe(origin.url("/x.tar"))
    assert not info.accepts_ranges
    with pytest.raises(RangeNotSupported) as caught:
        fetcher.fetch_origin(info, 100, 199, buffer(100))
    assert one_line(caught.value).startswith(f"{origin.url('/x.tar')} ignores Range")
    # A "range" that is the whole file is read from the 200.
    whole = buffer(len(DATA))
    fetcher.fetch_origin(info, 0, len(DATA) - 1, whole)
    assert whole == DATA
    sink = Collector()
    assert fetcher.fetch_origin_stream(info, 0, sink) == len(DATA)
    assert sink.data == DATA
    assert sink.calls >= 3


def test_streams_resume_from_a_start(origin: Origin, fetcher: HttpFetcher) -> None:
    origin.add("/ranged", DATA)
    origin.add("/whole", DATA, ranges=False)
    start = 2 * MiB + 5
    for path, served in (("/ranged", len(DATA) - start), ("/whole", len(DATA))):
        info = fetcher.probe(origin.url(path))
        sink = Collector()
        assert fetcher.fetch_origin_stream(info, start, sink) == len(DATA) - start
        assert sink.data == DATA[start:]
        assert origin.bytes_served(path) == served


def test_a_stream_of_unknown_length(origin: Origin, fetcher: HttpFetcher) -> None:
    origin.add("/stream", DATA, send_length=False, ranges=False, etag="none")
    info = fetcher.probe(origin.url("/stream"))
    sink = Collector()
    assert fetcher.fetch_origin_stream(info, 0, sink) == len(DATA)
    assert sink.data == DATA


def test_a_stream_of_another_version_is_validator_changed(origin: Origin, fetcher: HttpFetcher) -> None:
    origin.add("/x.tar", DATA, ranges=False)
    info = fetcher.probe(origin.url("/x.tar"))
    origin.add("/x.tar", DATA[::-1], ranges=False)
    sink = Collector()
    with pytest.raises(ValidatorChanged, match="its ETag is now"):
        fetcher.fetch_origin_stream(info, 0, sink)
    assert sink.calls == 0


@pytest.mark.parametrize(
    ("status", "kind", "words"),
    [
        (404, SourceMissing, "404 Not Found"),
        (503, SourceBusy, "503 Service Unavailable"),
        (500, SourceFailed, "500 Internal Server Error"),
        (403, SourceUnauthorized, "403 Forbidden"),
    ],
)
def test_origin_error_statuses(
    origin: Origin, fetcher: HttpFetcher, status: int, kind: type[FetchError], words: str
) -> None:
    origin.add("/x.tar", DATA)
    info = fetcher.probe(origin.url("/x.tar"))
    origin.add("/x.tar", DATA, fail_times=1, fail_status=status, retry_after="3")
    with pytest.raises(kind) as caught:
        fetcher.fetch_origin(info, 0, 9, buffer(10))
    assert one_line(caught.value).startswith(f"origin answered {words} for {origin.url('/x.tar')}")
    assert caught.value.source == info.url
    assert caught.value.status == status
    if isinstance(caught.value, SourceBusy):
        assert caught.value.retry_after == 3.0
    with pytest.raises(kind):
        origin.add("/x.tar", DATA, fail_times=1, fail_status=status)
        fetcher.fetch_origin_stream(info, 0, Collector())


def test_a_range_past_the_end_is_a_failure(origin: Origin, fetcher: HttpFetcher) -> None:
    origin.add("/x.tar", DATA)
    info = OriginInfo(origin.url("/x.tar"), None, None, True)
    with pytest.raises(SourceFailed) as caught:
        fetcher.fetch_origin(info, len(DATA), len(DATA) + 9, buffer(10))
    assert caught.value.status == 416
    # The phrase is "Requested Range Not Satisfiable" before Python 3.13.
    assert "answered 416 " in one_line(caught.value)
    assert "Range Not Satisfiable" in str(caught.value)


def test_a_short_origin_body_is_a_failure(origin: Origin, fetcher: HttpFetcher) -> None:
    origin.add("/cut", DATA, truncate_after=1000)
    origin.add("/cut-unsized", DATA, truncate_after=1000, send_length=False)
    for path in ("/cut", "/cut-unsized"):
        info = OriginInfo(origin.url(path), len(DATA), None, True)
        with pytest.raises(SourceFailed) as caught:
            fetcher.fetch_origin(info, 0, 99_999, buffer(100_000))
        message = one_line(caught.value)
        assert origin.url(path) in message
        assert "1000" in message and "100000" in message
        sink = Collector()
        with pytest.raises(SourceFailed):
            fetcher.fetch_origin_stream(info, 0, sink)
        assert len(sink.data) == 1000


def test_an_unreachable_origin_fails_fast(fetcher: HttpFetcher) -> None:
    url = f"http://127.0.0.1:{closed_port()}/x.tar"
    started = time.monotonic()
    with pytest.raises(SourceUnreachable) as caught:
        fetcher.probe(url)
    assert time.monotonic() - started < 1.0
    assert one_line(caught.value) == f"cannot reach {url}: connection refused"
    with pytest.raises(SourceUnreachable):
        fetcher.fetch_origin(OriginInfo(url, 10, None, True), 0, 9, buffer(10))


def test_a_slow_origin_times_out(origin: Origin) -> None:
    origin.add("/late", DATA, respond_delay=5.0)
    origin.add("/crawl", DATA, delay_per_mib=16.0)
    with HttpFetcher(timeout=SHORT_TIMEOUT) as fetcher:
        started = time.monotonic()
        with pytest.raises(SourceUnreachable) as late:
            fetcher.probe(origin.url("/late"))
        assert one_line(late.value) == f"{origin.url('/late')} stopped answering: nothing received for 0.3 s"
        info = OriginInfo(origin.url("/crawl"), len(DATA), None, True)
        with pytest.raises(SourceUnreachable, match="stopped answering"):
            fetcher.fetch_origin(info, 0, MiB - 1, buffer(MiB))
        assert time.monotonic() - started < 2.0


def test_a_slow_but_steady_origin_is_not_a_timeout(origin: Origin) -> None:
    origin.add("/steady", DATA[: 256 * KiB], rate_limit=1 * MiB)
    with HttpFetcher(timeout=SHORT_TIMEOUT) as fetcher:
        info = fetcher.probe(origin.url("/steady"))
        into = buffer(256 * KiB)
        fetcher.fetch_origin(info, 0, 256 * KiB - 1, into)
        assert into == DATA[: 256 * KiB]


def test_proxies_from_the_environment_serve_the_origin_never_peers(
    origin: Origin, peer: RangeServer, fetcher: HttpFetcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin.add("/x.tar", DATA)
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    proxy = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("http_proxy", proxy)
    with pytest.raises(SourceUnreachable, match="through the proxy: connection refused"):
        fetcher.probe(origin.url("/x.tar"))
    into = buffer(10)
    fetcher.fetch_peer(peer_url(peer), SHA, 0, 9, into)
    assert into == DATA[:10]


# ----------------------------------------------------------------------------- peers


@pytest.fixture(scope="module")
def blob_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("blobs")
    (root / SHA).write_bytes(DATA)
    with (root / BIG_SHA).open("wb") as f:
        f.truncate(BIG_SIZE)
    return root


@pytest.fixture
def blobs(blob_dir: Path) -> BlobFiles:
    return BlobFiles(blob_dir)


Serve = Callable[..., RangeServer]


@pytest.fixture
def serve(blobs: BlobFiles) -> Iterator[Serve]:
    yield from range_servers(blobs)


@pytest.fixture
def peer(serve: Serve) -> RangeServer:
    return serve()


def peer_url(server: RangeServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def test_peer_ranges_are_byte_exact(peer: RangeServer, fetcher: HttpFetcher) -> None:
    for start, end in [(0, 0), (len(DATA) - 1, len(DATA) - 1), (5, 1 * MiB + 4), (0, len(DATA) - 1)]:
        into = buffer(end - start + 1)
        assert fetcher.fetch_peer(peer_url(peer) + "/", SHA, start, end, into) is None
        assert into == DATA[start : end + 1]


def test_a_peer_without_the_blob(peer: RangeServer, fetcher: HttpFetcher) -> None:
    with pytest.raises(SourceMissing) as caught:
        fetcher.fetch_peer(peer_url(peer), UNKNOWN_SHA, 0, 9, buffer(10))
    assert caught.value.source == peer_url(peer)
    assert one_line(caught.value) == (
        f"peer answered 404 Not Found for {peer_url(peer)}/v1/blobs/{UNKNOWN_SHA}"
    )


def test_a_range_past_the_end_of_a_blob(peer: RangeServer, fetcher: HttpFetcher) -> None:
    with pytest.raises(SourceFailed) as caught:
        fetcher.fetch_peer(peer_url(peer), SHA, len(DATA), len(DATA) + 9, buffer(10))
    assert caught.value.status == 416


def test_a_busy_peer_says_when_to_come_back(serve: Serve, fetcher: HttpFetcher) -> None:
    server = serve(max_uploads=1, retry_after=3)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.settimeout(TIMEOUT)
    try:
        stalled.connect(("127.0.0.1", server.port))
        stalled.sendall(
            f"GET /v1/blobs/{BIG_SHA} HTTP/1.1\r\nHost: peer\r\nAuthorization: x\r\n\r\n".encode()
        )
        deadline = time.monotonic() + TIMEOUT
        while server.active_uploads < 1:
            assert time.monotonic() < deadline, "the stalled download never started"
            time.sleep(0.005)
        with pytest.raises(SourceBusy) as caught:
            fetcher.fetch_peer(peer_url(server), SHA, 0, 9, buffer(10))
        assert caught.value.retry_after == 3.0
        assert caught.value.status == 503
        assert one_line(caught.value).endswith("; retry after 3 s")
    finally:
        stalled.close()


def test_retry_after_as_a_date(origin: Origin) -> None:
    """A busy source may name the moment to come back instead of a delay."""
    now = 1_700_000_000.0
    origin.add(
        f"/v1/blobs/{SHA}", DATA, fail_times=1, retry_after=email.utils.formatdate(now + 12, usegmt=True)
    )
    with HttpFetcher(timeout=TIMEOUT, wall_clock=lambda: now) as fetcher, pytest.raises(SourceBusy) as caught:
        fetcher.fetch_peer(origin.url(), SHA, 0, 9, buffer(10))
    assert caught.value.retry_after == 12.0


def test_a_peer_token(serve: Serve) -> None:
    server = serve(token=TOKEN)
    with HttpFetcher(timeout=TIMEOUT) as anonymous:
        with pytest.raises(SourceUnauthorized) as caught:
            anonymous.fetch_peer(peer_url(server), SHA, 0, 9, buffer(10))
        assert one_line(caught.value).endswith("it wants a token and none is configured")
    with HttpFetcher(timeout=TIMEOUT, token="wrong") as wrong:
        with pytest.raises(SourceUnauthorized) as refused:
            wrong.fetch_peer(peer_url(server), SHA, 0, 9, buffer(10))
        assert "wrong" not in str(refused.value)
    with HttpFetcher(timeout=TIMEOUT, token=TOKEN) as right:
        into = buffer(10)
        right.fetch_peer(peer_url(server), SHA, 0, 9, into)
        assert into == DATA[:10]


def test_a_short_peer_body_is_a_failure(peer: RangeServer, blobs: BlobFiles, fetcher: HttpFetcher) -> None:
    blobs.extra[SHA] = 100 * KiB
    start = len(DATA) - 200 * KiB
    with pytest.raises(SourceFailed) as caught:
        fetcher.fetch_peer(peer_url(peer), SHA, start, start + 300 * KiB - 1, buffer(300 * KiB))
    assert peer_url(peer) in one_line(caught.value)


def test_an_unreachable_peer(fetcher: HttpFetcher) -> None:
    base = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(SourceUnreachable) as caught:
        fetcher.fetch_peer(base, SHA, 0, 9, buffer(10))
    assert one_line(caught.value) == f"cannot reach {base}: connection refused"
    assert caught.value.source == base


def test_peers_never_redirect(origin: Origin, fetcher: HttpFetcher) -> None:
    origin.add(f"/v1/blobs/{SHA}", redirect_to=origin.url("/elsewhere"))
    with pytest.raises(SourceFailed, match="302 Found"):
        fetcher.fetch_peer(origin.url(), SHA, 0, 9, buffer(10))
    assert origin.request_count("/elsewhere") == 0
    assert origin.seen()[0].headers["authorization"] == f"Bearer {TOKEN}"


# ----------------------------------------------------------------------------- concurrency


def test_sixteen_threads_share_one_fetcher(origin: Origin, peer: RangeServer, fetcher: HttpFetcher) -> None:
    origin.add("/x.tar", DATA)
    info = fetcher.probe(origin.url("/x.tar"))
    piece = 64 * KiB
    spans = [(i * piece, min(len(DATA), (i + 1) * piece) - 1) for i in range(len(DATA) // piece + 1)]
    threads_seen: set[int] = set()

    def fetch(index: int) -> bytes:
        threads_seen.add(threading.get_ident())
        start, end = spans[index]
        into = buffer(end - start + 1)
        if index % 2:
            fetcher.fetch_peer(peer_url(peer), SHA, start, end, into)
        else:
            fetcher.fetch_origin(info, start, end, into)
        return bytes(into)

    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="fetch-test") as pool:
        pieces = list(pool.map(fetch, range(len(spans))))
    assert b"".join(pieces) == DATA
    assert len(threads_seen) > 1
    from_origin = sum(end - start + 1 for i, (start, end) in enumerate(spans) if i % 2 == 0)
    assert origin.bytes_served("/x.tar") == from_origin
