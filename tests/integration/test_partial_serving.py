"""A download under way, served by a real range server on 127.0.0.1 while it runs: only its
verified pieces go out, a range over any other gets a 404 that says so, and every answer
carries the bitmap of what is held. Also what HttpFetcher.fetch_peer makes of it."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import os
import random
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest

from agent.errors import PieceNotHeld, SourceBusy, SourceMissing
from agent.fetch import HttpFetcher
from agent.partials import PartialBlob, PartialBlobs
from agent.rangeserver import OpenBlob, RangeServer
from tests.integration.helpers import BlobFiles, eventually, range_servers

KiB = 1024
PIECE = 64 * KiB
# Five pieces, the last one short.
DATA = random.Random(21).randbytes(4 * PIECE + 1000)
SIZE = len(DATA)
CONTENT_SHA = hashlib.sha256(DATA).hexdigest()
SWARM_ID = hashlib.sha256(b"a swarm").hexdigest()
# Far larger than the socket buffers: a client that reads none of it keeps its upload under way.
BIG_SIZE = 64 * 1024 * KiB
TIMEOUT = 5.0


def span(piece: int) -> tuple[int, int]:
    """The first and last byte of a piece."""
    return piece * PIECE, min(SIZE, (piece + 1) * PIECE) - 1


class Recorded:
    """The daemon's store, keeping every blob it hands out so that the test can check that
    the server closed each file."""

    def __init__(self, store: PartialBlobs) -> None:
        self.store = store
        self.opened: list[OpenBlob] = []

    def open_blob(self, blob_id: str, /) -> OpenBlob | None:
        blob = self.store.open_blob(blob_id)
        if blob is not None:
            self.opened.append(blob)
        return blob


@dataclass
class Download:
    """A part file like the downloader's: verified pieces written, the others still zero."""

    path: Path
    writer: int  # the downloader's descriptor
    blob: PartialBlob

    def write(self, piece: int) -> None:
        start, end = span(piece)
        os.pwrite(self.writer, DATA[start : end + 1], start)

    def verify(self, piece: int) -> None:
        self.write(piece)
        self.blob.verified(piece)


@pytest.fixture
def complete_dir(tmp_path: Path) -> Path:
    root = tmp_path / "complete"
    root.mkdir()
    return root


@pytest.fixture
def blobs(complete_dir: Path) -> PartialBlobs:
    return PartialBlobs(BlobFiles(complete_dir))


@pytest.fixture
def download(tmp_path: Path, blobs: PartialBlobs) -> Iterator[Download]:
    """Pieces 0, 1 and 3 verified, served as the swarm id and as the content's digest."""
    path = tmp_path / "file.bin.part"
    writer = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(writer, SIZE)
    made = Download(path, writer, PartialBlob(path, SIZE, PIECE))
    for piece in (0, 1, 3):
        made.verify(piece)
    blobs.add(SWARM_ID, made.blob)
    blobs.add(CONTENT_SHA, made.blob)
    yield made
    os.close(writer)
    blobs.remove(made.blob)


Serve = Callable[..., RangeServer]


@pytest.fixture
def serve(blobs: PartialBlobs) -> Iterator[Serve]:
    yield from range_servers(Recorded(blobs))


@pytest.fixture
def server(serve: Serve) -> RangeServer:
    return serve()


@pytest.fixture
def fetcher() -> Iterator[HttpFetcher]:
    with HttpFetcher(timeout=TIMEOUT) as made:
        yield made


def request(
    server: RangeServer,
    blob_id: str = SWARM_ID,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, Message, bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        conn.request(method, f"/v1/blobs/{blob_id}", headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        if own:
            conn.close()


def ranged(start: int, end: int) -> dict[str, str]:
    return {"Range": f"bytes={start}-{end}"}


def bitmap(*pieces: int) -> bytes:
    bits = bytearray(1)
    for piece in pieces:
        bits[0] |= 0x80 >> piece
    return bytes(bits)


def held(headers: Message) -> bytes:
    value = headers["Lanpeer-Pieces"]
    assert value is not None
    return base64.b64decode(value, validate=True)


def assert_missing(status: int, headers: Message, body: bytes, pieces: bytes) -> None:
    assert status == 404
    assert headers["Lanpeer-Missing"] == "pieces"
    assert held(headers) == pieces
    assert body == b"pieces not held yet\n"


def parts(headers: Message, body: bytes) -> list[bytes]:
    """The payloads of a multipart/byteranges body."""
    boundary = headers.get_content_type() == "multipart/byteranges" and headers.get_param("boundary")
    assert isinstance(boundary, str)
    sections = body.split(f"--{boundary}".encode())[1:-1]
    return [section.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n") for section in sections]


# ----------------------------------------------------------------------------- what is served


@pytest.mark.parametrize("blob_id", [SWARM_ID, CONTENT_SHA])
@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, 0),
        span(0),
        (PIECE - 10, PIECE + 10),
        (0, 2 * PIECE - 1),
        span(3),
        (3 * PIECE + 5, 3 * PIECE + 5),
    ],
)
def test_a_range_over_verified_pieces_is_byte_exact(
    server: RangeServer, download: Download, blob_id: str, start: int, end: int
) -> None:
    status, headers, body = request(server, blob_id, ranged(start, end))
    assert status == 206
    assert body == DATA[start : end + 1]
    assert headers["Content-Range"] == f"bytes {start}-{end}/{SIZE}"
    assert headers["ETag"] == f'"{blob_id}"'
    assert held(headers) == bitmap(0, 1, 3)


@pytest.mark.parametrize(
    "header",
    [
        f"bytes={2 * PIECE}-{2 * PIECE}",
        f"bytes={2 * PIECE - 1}-{2 * PIECE}",
        f"bytes={3 * PIECE - 1}-{3 * PIECE}",
        f"bytes={PIECE}-{3 * PIECE}",
        f"bytes={4 * PIECE}-",
        "bytes=-1",
        "bytes=0-",
    ],
)
def test_a_range_touching_a_missing_piece_is_a_404_that_says_so(
    server: RangeServer, download: Download, header: str
) -> None:
    status, headers, body = request(server, headers={"Range": header})
    assert_missing(status, headers, body, bitmap(0, 1, 3))


def test_the_whole_blob_waits_for_every_piece(server: RangeServer, download: Download) -> None:
    assert_missing(*request(server), bitmap(0, 1, 3))
    # A Range that If-Range sets aside asks for the whole blob too.
    mismatched = {**ranged(0, 9), "If-Range": '"another"'}
    assert_missing(*request(server, headers=mismatched), bitmap(0, 1, 3))
    download.verify(2)
    assert_missing(*request(server), bitmap(0, 1, 2, 3))
    download.verify(4)
    status, headers, body = request(server)
    assert (status, body) == (200, DATA)
    assert held(headers) == bitmap(0, 1, 2, 3, 4)
    assert request(server, headers=mismatched)[0] == 200


def test_several_ranges_are_served_when_all_are_held(server: RangeServer, download: Download) -> None:
    header = f"bytes=0-9, {PIECE + 5}-{PIECE + 20}, {3 * PIECE}-{3 * PIECE + 3}"
    status, headers, body = request(server, headers={"Range": header})
    assert status == 206
    assert held(headers) == bitmap(0, 1, 3)
    assert parts(headers, body) == [DATA[0:10], DATA[PIECE + 5 : PIECE + 21], DATA[3 * PIECE : 3 * PIECE + 4]]
    one_missing = f"bytes=0-9, {2 * PIECE + 5}-{2 * PIECE + 20}, {3 * PIECE}-{3 * PIECE + 3}"
    assert_missing(*request(server, headers={"Range": one_missing}), bitmap(0, 1, 3))


def test_head_describes_the_whole_blob_with_its_pieces(server: RangeServer, download: Download) -> None:
    for headers in ({}, ranged(2 * PIECE, 2 * PIECE + 9)):
        status, got, body = request(server, headers=headers, method="HEAD")
        assert (status, body) == (200, b"")
        assert got["Content-Length"] == str(SIZE)
        assert got["ETag"] == f'"{SWARM_ID}"'
        assert "Lanpeer-Missing" not in got
        assert held(got) == bitmap(0, 1, 3)


def test_a_range_past_the_end_is_416(server: RangeServer, download: Download) -> None:
    status, headers, _ = request(server, headers=ranged(SIZE, SIZE + 10))
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{SIZE}"
    assert held(headers) == bitmap(0, 1, 3)


def test_a_piece_verified_while_a_peer_asks_is_served_at_once(
    server: RangeServer, download: Download
) -> None:
    start, end = span(2)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        assert_missing(*request(server, headers=ranged(start, end), conn=conn), bitmap(0, 1, 3))
        download.verify(2)
        # On the same kept-alive connection: a 404 for missing pieces does not close it.
        status, headers, body = request(server, headers=ranged(start, end), conn=conn)
    finally:
        conn.close()
    assert (status, body) == (206, DATA[start : end + 1])
    assert held(headers) == bitmap(0, 1, 2, 3)


def test_a_written_piece_is_not_served_before_it_is_verified(server: RangeServer, download: Download) -> None:
    download.write(2)
    assert_missing(*request(server, headers=ranged(*span(2))), bitmap(0, 1, 3))


def test_the_part_file_is_served_across_its_rename(server: RangeServer, download: Download) -> None:
    os.replace(download.path, download.path.with_name("file.bin"))
    download.verify(2)
    start, end = span(2)
    status, _, body = request(server, headers=ranged(start - 10, end))
    assert (status, body) == (206, DATA[start - 10 : end + 1])


# ----------------------------------------------------------------------------- when the download ends


def test_an_ended_download_is_served_complete_under_its_swarm_id(
    server: RangeServer, download: Download, blobs: PartialBlobs, complete_dir: Path
) -> None:
    (complete_dir / CONTENT_SHA).write_bytes(DATA)
    blobs.alias(SWARM_ID, CONTENT_SHA)
    blobs.remove(download.blob)
    start, end = span(2)
    status, headers, body = request(server, headers={**ranged(start, end), "If-Range": f'"{SWARM_ID}"'})
    assert (status, body) == (206, DATA[start : end + 1])
    assert headers["ETag"] == f'"{SWARM_ID}"'
    assert "Lanpeer-Pieces" not in headers
    status, headers, body = request(server, CONTENT_SHA)
    assert (status, body) == (200, DATA)
    assert headers["ETag"] == f'"{CONTENT_SHA}"'


def test_a_removed_download_is_not_held_at_all(
    server: RangeServer, download: Download, blobs: PartialBlobs
) -> None:
    blobs.remove(download.blob)
    for blob_id in (SWARM_ID, CONTENT_SHA):
        status, headers, body = request(server, blob_id, ranged(0, 9))
        assert (status, body) == (404, b"not held here\n")
        assert "Lanpeer-Missing" not in headers
        assert "Lanpeer-Pieces" not in headers


# ----------------------------------------------------------------------------- limits


@contextlib.contextmanager
def slot_taken(server: RangeServer, blobs: PartialBlobs, tmp_path: Path) -> Iterator[None]:
    """A large download under way, every piece verified, asked for whole by a client that
    reads nothing: it holds an upload slot until the block ends."""
    big_id = hashlib.sha256(b"big").hexdigest()
    big_part = tmp_path / "big.part"
    with big_part.open("wb") as f:
        f.truncate(BIG_SIZE)
    big = PartialBlob(big_part, BIG_SIZE, 1024 * KiB, have=range(BIG_SIZE // (1024 * KiB)))
    blobs.add(big_id, big)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.settimeout(TIMEOUT)
    try:
        stalled.connect(("127.0.0.1", server.port))
        stalled.sendall(f"GET /v1/blobs/{big_id} HTTP/1.1\r\nHost: peer\r\n\r\n".encode())
        eventually(lambda: server.active_uploads == 1)
        yield
    finally:
        stalled.close()
        eventually(lambda: server.active_uploads == 0)
        blobs.remove(big)


def test_the_upload_cap_counts_partial_blobs_but_not_their_404s(
    serve: Serve, download: Download, blobs: PartialBlobs, tmp_path: Path
) -> None:
    server = serve(max_uploads=1)
    with slot_taken(server, blobs, tmp_path):
        status, headers, _ = request(server, headers=ranged(0, 9))
        assert (status, headers["Retry-After"]) == (503, "1")
        # Telling a peer what is missing sends no file: it needs no upload slot.
        for _ in range(3):
            assert_missing(*request(server, headers=ranged(*span(2))), bitmap(0, 1, 3))
        assert server.active_uploads == 1
    assert request(server, headers=ranged(0, 9))[0] == 206


def test_the_rate_limit_holds_for_partial_blobs(serve: Serve, download: Download) -> None:
    # 1 MiB/s in chunks of 64 KiB with a burst of one chunk: the second chunk of 128 KiB
    # waits about 1/16 s.
    server = serve(upload_limit=1024 * KiB)
    started = time.monotonic()
    status, _, body = request(server, headers=ranged(0, 2 * PIECE - 1))
    elapsed = time.monotonic() - started
    assert (status, body) == (206, DATA[: 2 * PIECE])
    assert 0.05 <= elapsed < 3.0


# ----------------------------------------------------------------------------- fetch_peer


def base(server: RangeServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def test_fetch_peer_returns_the_pieces_of_a_partial_peer(
    server: RangeServer, download: Download, fetcher: HttpFetcher
) -> None:
    start, end = PIECE - 100, PIECE + 100
    into = memoryview(bytearray(end - start + 1))
    assert fetcher.fetch_peer(base(server), SWARM_ID, start, end, into) == bitmap(0, 1, 3)
    assert into == DATA[start : end + 1]


def test_fetch_peer_says_which_pieces_a_partial_peer_lacks(
    server: RangeServer, download: Download, fetcher: HttpFetcher
) -> None:
    start, end = span(2)
    with pytest.raises(PieceNotHeld) as caught:
        fetcher.fetch_peer(base(server), SWARM_ID, start, end, memoryview(bytearray(end - start + 1)))
    assert caught.value.bitmap == bitmap(0, 1, 3)
    assert caught.value.status == 404
    assert caught.value.source == base(server)
    assert not isinstance(caught.value, SourceMissing)
    assert str(caught.value) == (
        f"peer {base(server)} does not hold all of bytes {start}-{end} of {SWARM_ID} yet"
    )
    # The connection stays usable: the next range comes over it.
    into = memoryview(bytearray(10))
    assert fetcher.fetch_peer(base(server), SWARM_ID, 0, 9, into) == bitmap(0, 1, 3)
    assert into == DATA[:10]


def test_fetch_peer_from_a_peer_that_no_longer_serves_the_download(
    server: RangeServer, download: Download, blobs: PartialBlobs, fetcher: HttpFetcher
) -> None:
    blobs.remove(download.blob)
    with pytest.raises(SourceMissing) as caught:
        fetcher.fetch_peer(base(server), SWARM_ID, 0, 9, memoryview(bytearray(10)))
    assert not isinstance(caught.value, PieceNotHeld)


def test_a_busy_partial_peer_still_says_which_pieces_it_lacks(
    serve: Serve, download: Download, blobs: PartialBlobs, fetcher: HttpFetcher, tmp_path: Path
) -> None:
    server = serve(max_uploads=1, retry_after=3)
    with slot_taken(server, blobs, tmp_path):
        with pytest.raises(SourceBusy) as busy:
            fetcher.fetch_peer(base(server), SWARM_ID, 0, 9, memoryview(bytearray(10)))
        assert busy.value.retry_after == 3.0
        with pytest.raises(PieceNotHeld) as lacking:
            fetcher.fetch_peer(base(server), SWARM_ID, 0, SIZE - 1, memoryview(bytearray(SIZE)))
        assert lacking.value.bitmap == bitmap(0, 1, 3)
