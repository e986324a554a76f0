"""Values validate themselves; the piece-size rule and bitmap helpers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.helpers import digest, manifest_for
from tracker.errors import InvalidArgument
from tracker.model import (
    MAX_CONTENT_SIZE,
    MAX_PIECE_SIZE,
    MIN_PIECE_SIZE,
    AgentInfo,
    Holding,
    Load,
    Manifest,
    MiB,
    NameQuery,
    SourceRef,
    Validator,
    bitmap_count,
    bitmap_has,
    check_bitmap,
    piece_count,
    piece_size_for,
)

A = digest("a")


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, MIN_PIECE_SIZE),
        (1, MIN_PIECE_SIZE),
        (1024 * MiB, MIN_PIECE_SIZE),
        (1024 * MiB + 1, 2 * MiB),
        (10 * 1024 * MiB, 16 * MiB),
        (MAX_CONTENT_SIZE, MAX_PIECE_SIZE),
    ],
)
def test_piece_size_rule(size: int, expected: int) -> None:
    assert piece_size_for(size) == expected


@given(st.integers(min_value=0, max_value=MAX_CONTENT_SIZE))
def test_piece_size_is_a_power_of_two_in_range_giving_about_a_thousand_pieces(size: int) -> None:
    ps = piece_size_for(size)
    assert MIN_PIECE_SIZE <= ps <= MAX_PIECE_SIZE
    assert ps & (ps - 1) == 0
    assert piece_count(size, ps) <= 1024 or ps == MAX_PIECE_SIZE
    if ps > MIN_PIECE_SIZE:
        assert piece_count(size, ps // 2) > 1024


def test_absurd_sizes_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="outside"):
        piece_size_for(MAX_CONTENT_SIZE + 1)
    with pytest.raises(InvalidArgument, match="outside"):
        Holding(A, -1)


@pytest.mark.parametrize("bad", ["", "A" * 64, "a" * 63, "g" * 64, "a" * 65, " " + "a" * 63])
def test_digests_are_64_lowercase_hex_digits(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="not a SHA-256"):
        Holding(bad, 1)


def test_manifest_checks_piece_size_and_count() -> None:
    good = manifest_for(A, 3 * MiB + 1)
    assert good.piece_count == 4
    assert len(good.piece_hash(3)) == 32
    with pytest.raises(InvalidArgument, match="power of two"):
        Manifest(A, 10, 3 * MiB, b"\0" * 32)
    with pytest.raises(InvalidArgument, match="power of two"):
        Manifest(A, 10, 512 * 1024, b"\0" * 32)
    with pytest.raises(InvalidArgument, match="need 4 piece digests, got 3"):
        Manifest(A, good.size, good.piece_size, good.piece_hashes[:96])
    with pytest.raises(InvalidArgument, match=r"got 3\.5"):
        Manifest(A, good.size, good.piece_size, good.piece_hashes[:112])
    assert Manifest(A, 0, MIN_PIECE_SIZE, b"").piece_count == 0


@pytest.mark.parametrize("name", ["a/b", ".", "..", "x" * 256, "tab\there", "nul\0"])
def test_names_are_plain_file_names(name: str) -> None:
    with pytest.raises(InvalidArgument):
        Holding(A, 1, name)


def test_name_length_counts_bytes_not_characters() -> None:
    Holding(A, 1, "é" * 127)
    with pytest.raises(InvalidArgument, match="255 bytes"):
        Holding(A, 1, "é" * 128)
    with pytest.raises(InvalidArgument, match="empty"):
        NameQuery("")


def test_validators_need_a_strong_etag_or_last_modified() -> None:
    assert Validator('"abc"').key == 'etag "abc"'
    assert Validator(last_modified="Tue, 1 Jan", content_length=5).key == "last-modified Tue, 1 Jan; length 5"
    for bad in ('W/"abc"', "abc", '"'):
        with pytest.raises(InvalidArgument, match="ETag"):
            Validator(bad)
    with pytest.raises(InvalidArgument, match="needs a strong ETag"):
        Validator()


@pytest.mark.parametrize(
    "url", ["ftp://host/x", "file:///etc/passwd", "http://", "not a url", "http://h:99999/", "http://h:0/"]
)
def test_urls_are_http_with_a_host(url: str) -> None:
    with pytest.raises(InvalidArgument):
        SourceRef(url, Validator('"x"'))


@pytest.mark.parametrize("agent_id", ["", "../x", "a" * 65, "a b", "é"])
def test_agent_ids_are_short_and_plain(agent_id: str) -> None:
    with pytest.raises(InvalidArgument, match="agent id"):
        AgentInfo(agent_id, "h", "http://h:1", "")


def test_load_is_bounded() -> None:
    with pytest.raises(InvalidArgument):
        Load(active_uploads=10**9)


def test_a_complete_holding_carries_no_bitmap() -> None:
    with pytest.raises(InvalidArgument, match="no bitmap"):
        Holding(A, 1, complete=True, bitmap=b"\x80")


@given(st.integers(min_value=1, max_value=300), st.data())
def test_bitmap_helpers_agree(pieces: int, data: st.DataObject) -> None:
    held = data.draw(st.sets(st.integers(min_value=0, max_value=pieces - 1)))
    value = sum(1 << (len_bits - 1 - i) for i in held for len_bits in [((pieces + 7) // 8) * 8])
    bitmap = value.to_bytes((pieces + 7) // 8, "big")
    assert check_bitmap(bitmap, pieces) == bitmap
    assert bitmap_count(bitmap) == len(held)
    assert all(bitmap_has(bitmap, i) == (i in held) for i in range(pieces))
