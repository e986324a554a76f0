"""Piece maps, and downloads under way as a blob store: which ids name what, and the bitmap
of verified pieces as the downloader's threads fill it. Real part files, no sockets."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.partials import MAX_ALIASES, PartialBlob, PartialBlobs
from agent.rangeserver import OpenBlob, PieceMap

CONTENT_SHA = hashlib.sha256(b"content").hexdigest()
SWARM_ID = hashlib.sha256(b"swarm").hexdigest()
OTHER_ID = hashlib.sha256(b"other").hexdigest()


# ----------------------------------------------------------------------------- PieceMap

# Pieces of 10 bytes; 0 and 2 of 3 verified. The content would be 25 bytes: the last piece is short.
SOME = PieceMap(piece_size=10, count=3, bitmap=bytes([0b1010_0000]))


@pytest.mark.parametrize(
    ("start", "end", "covered"),
    [
        (0, 0, True),
        (0, 9, True),
        (9, 9, True),
        (9, 10, False),
        (10, 19, False),
        (5, 24, False),
        (20, 20, True),
        (20, 24, True),
        # Past the last piece there is nothing to cover anything with.
        (30, 30, False),
        (25, 35, False),
    ],
)
def test_covers_needs_every_piece_the_range_touches(start: int, end: int, covered: bool) -> None:
    assert SOME.covers(start, end) is covered


def test_a_range_spanning_pieces_is_covered_when_all_of_them_are() -> None:
    nine = PieceMap(piece_size=4, count=9, bitmap=bytes([0xFF, 0x80]))
    assert nine.covers(0, 35)
    assert nine.covers(3, 32)
    assert nine.complete
    # Piece 8 alone is in the second byte, at 0x80.
    without_last = PieceMap(piece_size=4, count=9, bitmap=bytes([0xFF, 0x00]))
    assert without_last.covers(0, 31)
    assert not without_last.covers(31, 32)
    assert not without_last.complete
    without_first = PieceMap(piece_size=4, count=9, bitmap=bytes([0x7F, 0x80]))
    assert without_first.covers(4, 35)
    assert not without_first.covers(3, 4)


def test_an_empty_piece_map() -> None:
    empty = PieceMap(piece_size=1024, count=0, bitmap=b"")
    assert empty.complete
    assert not empty.covers(0, 0)
    none_yet = PieceMap(piece_size=1024, count=3, bitmap=b"\x00")
    assert not none_yet.complete
    assert not none_yet.covers(0, 0)


@pytest.mark.parametrize(
    ("piece_size", "count", "bitmap", "message"),
    [
        (0, 1, b"\x80", "pieces of 0 bytes"),
        (10, -1, b"", "-1 pieces"),
        (10, 9, b"\xff", "need 2 bytes"),
        (10, 3, b"\x80\x00", "need 1 bytes"),
        (10, 3, b"\x10", "past the last piece"),
    ],
)
def test_a_malformed_piece_map_is_refused(piece_size: int, count: int, bitmap: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PieceMap(piece_size, count, bitmap)


def test_covers_refuses_a_reversed_range() -> None:
    with pytest.raises(ValueError, match="start <= end"):
        SOME.covers(5, 4)


# ----------------------------------------------------------------------------- PartialBlob


@pytest.fixture
def part(tmp_path: Path) -> Path:
    path = tmp_path / "file.bin.part"
    path.write_bytes(bytes(range(250)))
    return path


@pytest.fixture
def partial(part: Path) -> Iterator[PartialBlob]:
    blob = PartialBlob(part, size=250, piece_size=100, have=[2])
    yield blob
    blob.close()


def test_pieces_are_those_resumed_and_those_verified_since(partial: PartialBlob) -> None:
    assert partial.pieces() == PieceMap(100, 3, bytes([0b0010_0000]))
    partial.verified(0)
    partial.verified(0)
    assert partial.pieces() == PieceMap(100, 3, bytes([0b1010_0000]))
    partial.verified(1)
    assert partial.pieces().complete


def test_a_piece_past_the_end_is_refused(part: Path, partial: PartialBlob) -> None:
    with pytest.raises(IndexError):
        partial.verified(3)
    with pytest.raises(IndexError):
        partial.verified(-1)
    with pytest.raises(IndexError):
        PartialBlob(part, size=250, piece_size=100, have=[3])


def test_a_snapshot_does_not_change_afterwards(partial: PartialBlob) -> None:
    before = partial.pieces()
    partial.verified(1)
    assert not before.covers(100, 199)
    assert partial.pieces().covers(100, 199)


def test_each_reader_has_an_offset_of_its_own(partial: PartialBlob) -> None:
    with partial.open() as first, partial.open() as second:
        first.seek(200)
        assert second.read(3) == bytes([0, 1, 2])
        assert first.read(3) == bytes([200, 201, 202])


def test_the_part_file_is_served_across_its_rename(part: Path, partial: PartialBlob) -> None:
    final = part.with_name("file.bin")
    os.replace(part, final)
    with final.open("r+b") as f:
        f.seek(10)
        f.write(b"new")
    with partial.open() as reader:
        reader.seek(10)
        assert reader.read(3) == b"new"


def test_close_ends_opening_but_not_what_was_opened(partial: PartialBlob) -> None:
    reader = partial.open()
    partial.close()
    partial.close()
    with pytest.raises(ValueError, match="closed"):
        partial.open()
    with reader:
        assert reader.read(2) == bytes([0, 1])


def test_threads_marking_pieces_together_lose_none(tmp_path: Path) -> None:
    """Eight threads mark pieces that share the bytes of the bitmap, taking snapshots as
    they go: no mark is lost, and a snapshot holds every piece its thread marked before."""
    (tmp_path / "part").write_bytes(b"")
    count = 4000
    blob = PartialBlob(tmp_path / "part", size=count, piece_size=1)
    snapshots: list[tuple[int, int, PieceMap]] = []

    def mark(first: int) -> None:
        for piece in range(first, count, 8):
            blob.verified(piece)
            if piece % 200 == first:
                snapshots.append((first, piece, blob.pieces()))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=mark, args=(first,)) for first in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
        blob.close()
    assert blob.pieces().complete
    assert len(snapshots) == count // 200 * 8
    for first, last, snapshot in snapshots:
        assert all(snapshot.covers(piece, piece) for piece in range(first, last + 1, 8))


# ----------------------------------------------------------------------------- PartialBlobs


class Complete:
    """The inventory's part: complete content by digest, as in-memory files."""

    def __init__(self) -> None:
        self.content: dict[str, bytes] = {}
        self.asked: list[str] = []

    def open_blob(self, blob_id: str, /) -> OpenBlob | None:
        self.asked.append(blob_id)
        data = self.content.get(blob_id)
        return None if data is None else OpenBlob(blob_id, len(data), io.BytesIO(data))


@pytest.fixture
def complete() -> Complete:
    return Complete()


@pytest.fixture
def blobs(complete: Complete) -> PartialBlobs:
    return PartialBlobs(complete)


def read(blob: OpenBlob | None) -> bytes:
    assert blob is not None
    with blob.file:
        return blob.file.read()


def test_a_download_is_served_under_each_of_its_ids(blobs: PartialBlobs, partial: PartialBlob) -> None:
    blobs.add(SWARM_ID, partial)
    blobs.add(CONTENT_SHA, partial)
    for blob_id in (SWARM_ID, CONTENT_SHA):
        opened = blobs.open_blob(blob_id)
        assert opened is not None
        assert (opened.sha256, opened.size, opened.pieces) == (blob_id, 250, partial.pieces())
        assert read(opened) == bytes(range(250))
    assert blobs.open_blob(OTHER_ID) is None


def test_side_by_side_downloads_of_one_id_are_served_in_turn(
    blobs: PartialBlobs, partial: PartialBlob, part: Path
) -> None:
    second = PartialBlob(part, size=250, piece_size=100, have=[0])
    try:
        blobs.add(SWARM_ID, partial)
        blobs.add(SWARM_ID, second)
        blobs.add(SWARM_ID, partial)
        first_served = blobs.open_blob(SWARM_ID)
        assert first_served is not None
        first_served.file.close()
        assert first_served.pieces == partial.pieces()
        blobs.remove(partial)
        then = blobs.open_blob(SWARM_ID)
        assert then is not None
        then.file.close()
        assert then.pieces == second.pieces()
        blobs.remove(second)
        assert blobs.open_blob(SWARM_ID) is None
    finally:
        second.close()


def test_complete_content_comes_first(blobs: PartialBlobs, complete: Complete, partial: PartialBlob) -> None:
    blobs.add(CONTENT_SHA, partial)
    complete.content[CONTENT_SHA] = b"whole"
    opened = blobs.open_blob(CONTENT_SHA)
    assert opened is not None
    assert opened.pieces is None
    assert read(opened) == b"whole"


def test_an_alias_serves_complete_content_under_another_id(
    blobs: PartialBlobs, complete: Complete, partial: PartialBlob
) -> None:
    complete.content[CONTENT_SHA] = b"whole"
    blobs.add(SWARM_ID, partial)
    blobs.alias(SWARM_ID, CONTENT_SHA)
    assert read(blobs.open_blob(SWARM_ID)) == b"whole"
    # An alias to content no longer held serves nothing, not the download.
    del complete.content[CONTENT_SHA]
    assert blobs.open_blob(SWARM_ID) is None


def test_a_new_download_under_an_aliased_id_is_served(
    blobs: PartialBlobs, complete: Complete, partial: PartialBlob
) -> None:
    """The file an earlier download under the id became is gone: it is being fetched again."""
    blobs.alias(SWARM_ID, CONTENT_SHA)
    blobs.add(SWARM_ID, partial)
    opened = blobs.open_blob(SWARM_ID)
    assert opened is not None
    assert opened.pieces == partial.pieces()
    opened.file.close()


def test_remove_drops_every_id_of_the_download_and_closes_it(
    blobs: PartialBlobs, complete: Complete, partial: PartialBlob
) -> None:
    complete.content[CONTENT_SHA] = b"whole"
    blobs.add(SWARM_ID, partial)
    blobs.add(OTHER_ID, partial)
    blobs.alias(SWARM_ID, CONTENT_SHA)
    blobs.remove(partial)
    assert blobs.open_blob(OTHER_ID) is None
    assert read(blobs.open_blob(SWARM_ID)) == b"whole"
    with pytest.raises(ValueError, match="closed"):
        partial.open()


def test_a_download_that_ends_between_two_looks_is_found_complete(partial: PartialBlob) -> None:
    """The daemon puts the file in the inventory, then removes the download: a request that
    looked in the inventory just before finds it there on its second look."""

    class EndsMeanwhile(Complete):
        def open_blob(self, blob_id: str, /) -> OpenBlob | None:
            found = super().open_blob(blob_id)
            if found is None and len(self.asked) == 1:
                self.content[CONTENT_SHA] = b"whole"
                ending.remove(partial)
            return found

    complete = EndsMeanwhile()
    ending = PartialBlobs(complete)
    ending.add(CONTENT_SHA, partial)
    assert read(ending.open_blob(CONTENT_SHA)) == b"whole"
    assert complete.asked == [CONTENT_SHA, CONTENT_SHA]


def test_the_newest_aliases_are_kept(blobs: PartialBlobs, complete: Complete) -> None:
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(MAX_ALIASES + 1)]
    complete.content[CONTENT_SHA] = b"whole"
    for blob_id in ids:
        blobs.alias(blob_id, CONTENT_SHA)
    # Aliasing the oldest again makes it the newest: the second oldest goes next.
    blobs.alias(ids[1], CONTENT_SHA)
    blobs.alias(OTHER_ID, CONTENT_SHA)
    assert blobs.open_blob(ids[0]) is None
    assert blobs.open_blob(ids[2]) is None
    for kept in (ids[1], ids[3], ids[-1], OTHER_ID):
        assert read(blobs.open_blob(kept)) == b"whole"
