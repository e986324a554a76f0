"""Range headers (RFC 9110 §14) against a reference, If-Range, multipart layout, and rates."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.ranges import (
    IGNORE,
    MAX_RANGE_SPECS,
    UNSATISFIABLE,
    ByteRange,
    RangeKind,
    RangeRequest,
    body_length,
    coalesce,
    content_range,
    multipart_byteranges,
    parse_range,
    parse_rate,
    range_applies,
)

MiB = 1024 * 1024
SIZES = (0, 1, MiB - 1, MiB, MiB + 1)
CONTENT = random.Random(9110).randbytes(MiB + 1)
ETAG = '"' + "ab" * 32 + '"'


def ranges(*pairs: tuple[int, int]) -> RangeRequest:
    return RangeRequest(RangeKind.SATISFIABLE, tuple(ByteRange(a, b) for a, b in pairs))


# ----------------------------------------------------------------------------- values


def test_byte_range_has_an_inclusive_end() -> None:
    assert ByteRange(0, 0).length == 1
    assert ByteRange(10, 19).length == 10


@pytest.mark.parametrize(("start", "end"), [(-1, 0), (5, 4), (-3, -1)])
def test_byte_range_refuses_what_http_cannot_write(start: int, end: int) -> None:
    with pytest.raises(ValueError, match="0 <= start <= end"):
        ByteRange(start, end)


def test_a_range_request_holds_sorted_apart_ranges_exactly_when_satisfiable() -> None:
    with pytest.raises(ValueError, match="exactly when"):
        RangeRequest(RangeKind.SATISFIABLE)
    with pytest.raises(ValueError, match="exactly when"):
        RangeRequest(RangeKind.IGNORE, (ByteRange(0, 1),))
    with pytest.raises(ValueError, match="sorted and apart"):
        ranges((0, 5), (6, 9))
    with pytest.raises(ValueError, match="sorted and apart"):
        ranges((10, 19), (0, 1))


def test_coalesce_merges_overlapping_and_adjacent_ranges_in_order() -> None:
    got = coalesce(
        [ByteRange(50, 60), ByteRange(0, 9), ByteRange(10, 19), ByteRange(55, 58), ByteRange(21, 22)]
    )
    assert got == (ByteRange(0, 19), ByteRange(21, 22), ByteRange(50, 60))


# ----------------------------------------------------------------------------- parse_range, by example

# The examples of RFC 9110 §14.1.2, for a representation of 10000 bytes.
RFC_EXAMPLES = [
    ("bytes=0-499", ranges((0, 499))),
    ("bytes=500-999", ranges((500, 999))),
    ("bytes=-500", ranges((9500, 9999))),
    ("bytes=9500-", ranges((9500, 9999))),
    ("bytes=0-0,-1", ranges((0, 0), (9999, 9999))),
    ("bytes= 0-999, 4500-5499, -1000", ranges((0, 999), (4500, 5499), (9000, 9999))),
    ("bytes=500-600,601-999", ranges((500, 999))),
    ("bytes=500-700,601-999", ranges((500, 999))),
]

CASES = [
    # Units are case-insensitive; OWS around the value and the list's commas is allowed.
    ("Bytes=0-1", ranges((0, 1))),
    ("BYTES=0-1", ranges((0, 1))),
    (" \tbytes=0-1\t ", ranges((0, 1))),
    ("bytes=0-1 ,\t5-6", ranges((0, 1), (5, 6))),
    # Empty list elements are ignored (RFC 9110 §5.6.1).
    ("bytes=0-1,,5-6", ranges((0, 1), (5, 6))),
    ("bytes=,0-1", ranges((0, 1))),
    ("bytes=0-1, ,", ranges((0, 1))),
    # Clipped to the content; unsatisfiable specs among satisfiable ones are dropped.
    ("bytes=9000-20000", ranges((9000, 9999))),
    ("bytes=-20000", ranges((0, 9999))),
    ("bytes=0-99999999999999999999999999999", ranges((0, 9999))),
    ("bytes=20000-,0-0", ranges((0, 0))),
    ("bytes=-0,5-5", ranges((5, 5))),
    ("bytes=9999-", ranges((9999, 9999))),
    # Coalesced in order, whatever order they came in.
    ("bytes=200-299,0-9,100-199", ranges((0, 9), (100, 299))),
    ("bytes=0-,0-,0-", ranges((0, 9999))),
    ("bytes=0-0,0-0", ranges((0, 0))),
    ("bytes=-1,9999-", ranges((9999, 9999))),
    # Leading zeros do not make a number large.
    ("bytes=0000000000000000000000000000001-000000000000000000000000000002", ranges((1, 2))),
    ("bytes=" + ",".join(["7-7"] * MAX_RANGE_SPECS), ranges((7, 7))),
    # Valid, but nothing in the content.
    ("bytes=10000-", UNSATISFIABLE),
    ("bytes=10000-20000", UNSATISFIABLE),
    ("bytes=-0", UNSATISFIABLE),
    ("bytes=99999999999999999999999-", UNSATISFIABLE),
    ("bytes=10000000000000000000000-99999999999999999999999", UNSATISFIABLE),
    ("bytes=184467440737095516160-", UNSATISFIABLE),
    ("bytes=10000-,-0", UNSATISFIABLE),
    # Invalid or not ours: ignored, so the whole content is sent.
    ("", IGNORE),
    ("bytes", IGNORE),
    ("bytes=", IGNORE),
    ("bytes=,", IGNORE),
    ("bytes= , ", IGNORE),
    ("bytes=-", IGNORE),
    ("bytes=1-0", IGNORE),
    ("bytes=0-1,5-4", IGNORE),
    ("bytes=99999999999999999999999-10000000000000000000000", IGNORE),
    ("bytes=a-b", IGNORE),
    ("bytes=0-1-2", IGNORE),
    ("bytes=--1", IGNORE),
    ("bytes=1--2", IGNORE),
    ("bytes=+1-2", IGNORE),
    ("bytes=0x10-0x20", IGNORE),
    ("bytes=0 -1", IGNORE),
    ("bytes=0- 1", IGNORE),
    ("bytes =0-1", IGNORE),
    ("bytes=0-1;q=1", IGNORE),
    ("bytes=\u0661-\u0662", IGNORE),  # Arabic-Indic digits are not DIGIT.
    ("bytes=0\u00a0-1", IGNORE),
    ("items=0-1", IGNORE),
    ("none", IGNORE),
    ("=0-1", IGNORE),
    ("bytes=0-1\r\nX-Evil: 1", IGNORE),
    ("bytes=" + ",".join(["7-7"] * (MAX_RANGE_SPECS + 1)), IGNORE),
    ("bytes=" + "0-0," * 5000, IGNORE),
    ("bytes=" + "," * 100 + "0-0", IGNORE),
]


@pytest.mark.parametrize(("header", "expected"), RFC_EXAMPLES + CASES)
def test_parse_range(header: str, expected: RangeRequest) -> None:
    assert parse_range(header, 10_000) == expected


@pytest.mark.parametrize("header", ["bytes=0-", "bytes=0-0", "bytes=-1", "bytes=-100", "bytes=5-9"])
def test_every_range_of_empty_content_is_unsatisfiable(header: str) -> None:
    assert parse_range(header, 0) == UNSATISFIABLE


def test_a_one_byte_file() -> None:
    assert parse_range("bytes=0-", 1) == ranges((0, 0))
    assert parse_range("bytes=-5", 1) == ranges((0, 0))
    assert parse_range("bytes=1-", 1) == UNSATISFIABLE


def test_a_negative_size_is_a_bug() -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_range("bytes=0-", -1)


# ----------------------------------------------------------------------------- parse_range, by property


@dataclass(frozen=True)
class Spec:
    """One range-spec as a test writes it: first-last, first-, or -suffix."""

    first: int | None
    last: int | None

    @property
    def text(self) -> str:
        return f"{'' if self.first is None else self.first}-{'' if self.last is None else self.last}"

    def reference_slice(self, content: bytes) -> bytes:
        """The bytes this spec selects, by Python slicing rather than by RFC arithmetic."""
        if self.first is None:
            assert self.last is not None
            return content[max(0, len(content) - self.last) :] if self.last > 0 else b""
        if self.last is None:
            return content[self.first :]
        return content[self.first : self.last + 1]

    def reference_positions(self, size: int) -> int:
        """The positions this spec selects, as a bit mask."""
        if self.first is None:
            assert self.last is not None
            low, high = max(0, size - self.last), size - 1 if self.last > 0 else -1
        else:
            low, high = self.first, size - 1 if self.last is None else min(self.last, size - 1)
        return (1 << (high + 1)) - (1 << low) if low <= high else 0


def _positions(result: RangeRequest) -> int:
    return sum((1 << (r.end + 1)) - (1 << r.start) for r in result.ranges)


def specs(limit: int) -> st.SearchStrategy[Spec]:
    position = st.one_of(st.integers(0, limit), st.integers(0, 10**40))
    int_range = st.tuples(position, position).map(lambda p: Spec(min(p), max(p)))
    open_range = position.map(lambda a: Spec(a, None))
    suffix = position.map(lambda n: Spec(None, n))
    return st.one_of(int_range, open_range, suffix)


@settings(max_examples=300)
@given(st.sampled_from(SIZES), st.data())
def test_one_range_serves_exactly_the_reference_bytes(size: int, data: st.DataObject) -> None:
    content = CONTENT[:size]
    spec = data.draw(specs(size + 2))
    result = parse_range(f"bytes={spec.text}", size)
    expected = spec.reference_slice(content)
    if not expected:
        assert result == UNSATISFIABLE
    else:
        assert result.kind is RangeKind.SATISFIABLE
        assert len(result.ranges) == 1
        (r,) = result.ranges
        assert content[r.start : r.end + 1] == expected


@settings(max_examples=200)
@given(st.sampled_from(SIZES), st.data())
def test_several_ranges_cover_exactly_the_reference_positions(size: int, data: st.DataObject) -> None:
    wanted = data.draw(st.lists(specs(size + 2), min_size=1, max_size=16))
    header = "bytes=" + data.draw(st.sampled_from([",", ", ", " ,\t"])).join(s.text for s in wanted)
    result = parse_range(header, size)
    expected = 0
    for spec in wanted:
        expected |= spec.reference_positions(size)
    if not expected:
        assert result == UNSATISFIABLE
    else:
        assert result.kind is RangeKind.SATISFIABLE
        assert _positions(result) == expected
        # Sorted, with a gap between neighbours: nothing left to coalesce.
        assert all(b.start > a.end + 1 for a, b in zip(result.ranges, result.ranges[1:], strict=False))


@settings(max_examples=300)
@given(st.text(), st.integers(0, 2**42))
def test_no_header_makes_it_raise(header: str, size: int) -> None:
    _check_sane(parse_range(header, size), size)
    _check_sane(parse_range("bytes=" + header, size), size)


@settings(max_examples=500)
@given(st.text(alphabet="0123456789-, \t=bytesBYTES", max_size=200), st.sampled_from(SIZES))
def test_near_valid_headers_never_make_it_raise(header: str, size: int) -> None:
    _check_sane(parse_range(header, size), size)


@pytest.mark.parametrize(
    "header",
    [
        "bytes=" + "9" * 5000 + "-",
        "bytes=-" + "9" * 5000,
        "bytes=0-" + "9" * 100_000,
        "bytes=" + "9" * 5000 + "-" + "9" * 5001,
        "bytes=" + "9" * 5001 + "-" + "9" * 5000,
        "bytes=" + str(10**40) + "-" + str(10**40 + 1),
        "bytes=" + "0" * 100_000 + "1-2",
        "bytes=-" + "0" * 100_000,
        "bytes=" + "-" * 100_000,
        "bytes=" + "1-2," * 63 + "3-" + "4" * 50_000,
    ],
)
def test_huge_numbers_are_neither_converted_nor_trusted(header: str) -> None:
    for size in SIZES:
        _check_sane(parse_range(header, size), size)


def _check_sane(result: RangeRequest, size: int) -> None:
    assert isinstance(result, RangeRequest)
    for r in result.ranges:
        assert 0 <= r.start <= r.end < size


# ----------------------------------------------------------------------------- If-Range


@pytest.mark.parametrize(
    ("if_range", "applies"),
    [
        (None, True),
        (ETAG, True),
        (f" {ETAG}\t", True),
        ("W/" + ETAG, False),
        ('"' + "cd" * 32 + '"', False),
        (ETAG.upper(), False),
        (ETAG.strip('"'), False),
        ("*", False),
        ("", False),
        ("Sun, 06 Nov 1994 08:49:37 GMT", False),
    ],
)
def test_if_range_needs_a_strong_match_of_our_etag(if_range: str | None, applies: bool) -> None:
    assert range_applies(if_range, ETAG) is applies


# ----------------------------------------------------------------------------- multipart


def test_multipart_body_frames_each_range_with_its_content_range() -> None:
    content = bytes(range(256)) * 4
    parts = (ByteRange(0, 9), ByteRange(100, 199), ByteRange(1000, 1023))
    layout = multipart_byteranges(parts, len(content), "SEP", "application/octet-stream")
    body = b"".join(p if isinstance(p, bytes) else content[p.start : p.end + 1] for p in layout)
    assert body_length(layout) == len(body)
    assert body.startswith(b"--SEP\r\n")
    assert body.endswith(b"\r\n--SEP--\r\n")
    sections = body[: -len(b"\r\n--SEP--\r\n")].split(b"\r\n--SEP\r\n")
    sections[0] = sections[0].removeprefix(b"--SEP\r\n")
    assert len(sections) == len(parts)
    for section, r in zip(sections, parts, strict=True):
        head, payload = section.split(b"\r\n\r\n", 1)
        assert head.split(b"\r\n") == [
            b"Content-Type: application/octet-stream",
            f"Content-Range: {content_range(r, len(content))}".encode(),
        ]
        assert payload == content[r.start : r.end + 1]


# ----------------------------------------------------------------------------- rates


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("50MB/s", 50_000_000),
        ("50MB", 50_000_000),
        ("50 MB/s", 50_000_000),
        (" 4MiB/s ", 4 * MiB),
        ("1.5GiB/s", 3 * 1024**3 // 2),
        ("1GB/s", 10**9),
        ("800KB/s", 800_000),
        ("800kB/s", 800_000),
        ("64KiB", 65_536),
        ("100B/s", 100),
        ("100B", 100),
        ("100/s", 100),
        ("1000000", 1_000_000),
        ("2.5KB", 2500),
        ("1.0009KB", 1000),
    ],
)
def test_parse_rate(text: str, rate: int) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a rate"),
        ("fast", "not a rate"),
        ("MB/s", "not a rate"),
        ("-5MB/s", "not a rate"),
        ("5 TB/s", "not a rate"),
        ("5MB/h", "not a rate"),
        ("5 M", "not a rate"),
        ("1e6", "not a rate"),
        ("nan", "not a rate"),
        ("5,5MB", "not a rate"),
        ("50mb/s", "bits"),
        ("50Mbps", "not a rate"),
        ("9" * 100 + "GB", "not a rate"),
        ("0", "less than one byte"),
        ("0MB/s", "less than one byte"),
        ("0.4B/s", "less than one byte"),
    ],
)
def test_parse_rate_refuses_what_it_cannot_read_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_rate(text)
    assert "e.g. 50MB/s" in str(caught.value) or "less than one byte" in str(caught.value)
