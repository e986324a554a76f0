"""HTTP byte ranges (RFC 9110 §14): parsing the Range header, If-Range, and the layout of
a multipart/byteranges body; and the upload rate people write in settings (`50MB/s`).
Pure: no I/O, and no allocation proportional to the numbers a client writes, so a hostile
header costs at most a pass over its own characters.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

# More list elements than this (empty ones included) and the Range header is ignored:
# a real client asks for a handful of ranges, and RFC 9110 §14.2 lets a server ignore
# a set of many small ranges as a likely denial-of-service attempt.
MAX_RANGE_SPECS = 64

# Positions with more significant digits than this are clamped to _HUGE, which lies
# past the end of any file, so no digit string is ever converted in full.
_MAX_DIGITS = 18
_HUGE = 10**18

_OWS = " \t"
_UNIT = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+)=(.*)", re.DOTALL)
_SPEC = re.compile(r"([0-9]*)-([0-9]*)")


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes `start` to `end` of some content, both included, as HTTP writes them."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"byte range {self.start}-{self.end}: need 0 <= start <= end")

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class RangeKind(enum.Enum):
    # No usable Range: serve the whole content with 200 (RFC 9110 §14.2 for an invalid
    # header, a unit other than bytes, or too many ranges).
    IGNORE = "ignore"
    # A valid header of which no range overlaps the content: 416.
    UNSATISFIABLE = "unsatisfiable"
    # At least one range overlaps the content: 206 with `ranges`.
    SATISFIABLE = "satisfiable"


@dataclass(frozen=True, slots=True)
class RangeRequest:
    """What a Range header asks of content of a known size. The ranges of a satisfiable
    request are clipped to the content, sorted, and coalesced: no two overlap or touch."""

    kind: RangeKind
    ranges: tuple[ByteRange, ...] = ()

    def __post_init__(self) -> None:
        if (self.kind is RangeKind.SATISFIABLE) != bool(self.ranges):
            raise ValueError("a range request has ranges exactly when it is satisfiable")
        for before, after in zip(self.ranges, self.ranges[1:], strict=False):
            if after.start <= before.end + 1:
                raise ValueError("the ranges of a range request must be sorted and apart")


IGNORE = RangeRequest(RangeKind.IGNORE)
UNSATISFIABLE = RangeRequest(RangeKind.UNSATISFIABLE)


def parse_range(header: str, size: int) -> RangeRequest:
    """What the Range header `header` asks of content of `size` bytes (RFC 9110 §14.1.2).

    Never raises on any header: a malformed one is IGNORE. Content of size 0 has no byte
    to send and a 206 cannot describe an empty range, so every range of it is
    UNSATISFIABLE, suffix ranges included.
    """
    if size < 0:
        raise ValueError(f"content size {size} is negative")
    if header.count(",") >= MAX_RANGE_SPECS:
        return IGNORE
    matched = _UNIT.fullmatch(header.strip(_OWS))
    if matched is None or matched.group(1).lower() != "bytes":
        return IGNORE
    wanted: list[ByteRange] = []
    specs = 0
    for element in matched.group(2).split(","):
        spec = _SPEC.fullmatch(element.strip(_OWS))
        if spec is None:
            # RFC 9110 §5.6.1: empty list elements are allowed and do not count.
            if element.strip(_OWS):
                return IGNORE
            continue
        first, last = spec.groups()
        if not first and not last:
            return IGNORE
        if first and last and _less(last, first):
            return IGNORE
        specs += 1
        satisfiable = _clip(first, last, size)
        if satisfiable is not None:
            wanted.append(satisfiable)
    if not specs:
        return IGNORE
    if not wanted:
        return UNSATISFIABLE
    return RangeRequest(RangeKind.SATISFIABLE, coalesce(wanted))


def _clip(first: str, last: str, size: int) -> ByteRange | None:
    """The part of one valid range-spec that lies in the content, or None when none does."""
    if not first:
        suffix = _number(last)
        if suffix == 0 or size == 0:
            return None
        return ByteRange(max(0, size - suffix), size - 1)
    start = _number(first)
    if start >= size:
        return None
    end = size - 1 if not last else min(_number(last), size - 1)
    return ByteRange(start, end)


def _number(digits: str) -> int:
    significant = digits.lstrip("0")
    if len(significant) > _MAX_DIGITS:
        return _HUGE
    return int(significant or "0")


def _less(a: str, b: str) -> bool:
    """Whether the digit string `a` is a smaller number than `b`, however long both are."""
    a, b = a.lstrip("0"), b.lstrip("0")
    return (len(a), a) < (len(b), b)


def coalesce(ranges: Sequence[ByteRange]) -> tuple[ByteRange, ...]:
    """The same bytes as `ranges`, sorted, with overlapping and adjacent ranges merged
    (RFC 9110 §15.3.7.2 lets a server coalesce)."""
    merged: list[ByteRange] = []
    for r in sorted(ranges, key=lambda r: r.start):
        if merged and r.start <= merged[-1].end + 1:
            if r.end > merged[-1].end:
                merged[-1] = ByteRange(merged[-1].start, r.end)
        else:
            merged.append(r)
    return tuple(merged)


def range_applies(if_range: str | None, etag: str) -> bool:
    """Whether to honour a Range header given the request's If-Range (RFC 9110 §13.1.5).

    `etag` is the content's strong entity tag, quotes included. If-Range needs a strong
    match, so a weak tag never matches, and neither does an HTTP-date: the content has no
    Last-Modified to compare it with. When it does not match, the whole content is sent.
    """
    return if_range is None or if_range.strip(_OWS) == etag


def content_range(r: ByteRange, size: int) -> str:
    return f"bytes {r.start}-{r.end}/{size}"


def unsatisfied_content_range(size: int) -> str:
    return f"bytes */{size}"


def multipart_byteranges(
    ranges: Sequence[ByteRange], size: int, boundary: str, content_type: str
) -> tuple[bytes | ByteRange, ...]:
    """The body of a multipart/byteranges response (RFC 9110 §14.6) as framing bytes
    interleaved with the ranges of content that go between them, in order."""
    body: list[bytes | ByteRange] = []
    for i, r in enumerate(ranges):
        delimiter = "--" if i == 0 else "\r\n--"
        head = (
            f"{delimiter}{boundary}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Range: {content_range(r, size)}\r\n\r\n"
        )
        body += [head.encode("ascii"), r]
    body.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
    return tuple(body)


def body_length(body: Sequence[bytes | ByteRange]) -> int:
    return sum(len(part) if isinstance(part, bytes) else part.length for part in body)


# Rates.

_RATE_FACTORS = {
    "": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
}
_RATE = re.compile(r"([0-9]{1,15}(?:\.[0-9]{1,9})?) ?(?:([kKmMgG]i?)?B)?(?:/s)?")
_RATE_UNITS = "B, KB, MB, GB in powers of 1000, KiB, MiB, GiB in powers of 1024; /s optional"


def parse_rate(text: str) -> int:
    """Bytes per second from a rate such as `50MB/s`, `1.5 GiB/s`, `800KB` or `1000000`.

    A bare number is bytes per second. The unit's B must be upper case: a lower-case b
    would mean bits, which this does not guess at.
    """
    matched = _RATE.fullmatch(text.strip())
    if matched is None:
        bits = " (b would mean bits: write B for bytes)" if "b" in text and "B" not in text else ""
        raise ValueError(
            f"{text!r} is not a rate{bits}: write a number and a unit ({_RATE_UNITS}), e.g. 50MB/s"
        )
    number, prefix = matched.groups()
    rate = int(Decimal(number) * _RATE_FACTORS[(prefix or "").lower()])
    if rate < 1:
        raise ValueError(f"{text!r} is less than one byte per second")
    return rate
