"""Plain values shared by the tracker, its clients and the agent.

Every value validates itself on construction, so a value that exists is a valid one:
the wire decoder builds these from protobuf messages, and a malformed message fails
here with an InvalidArgument that names the field.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tracker.errors import InvalidArgument

MiB = 1024 * 1024
MIN_PIECE_SIZE = 1 * MiB
MAX_PIECE_SIZE = 64 * MiB
TARGET_PIECE_COUNT = 1024
MAX_PIECE_COUNT = 65_536
MAX_CONTENT_SIZE = MAX_PIECE_COUNT * MAX_PIECE_SIZE  # 4 TiB
HASH_LEN = 32

MAX_AGENT_ID_LEN = 64
MAX_HOSTNAME_LEN = 255
MAX_NAME_BYTES = 255
MAX_URL_LEN = 4096
MAX_VERSION_LEN = 64
MAX_VALIDATOR_LEN = 512
MAX_REASON_LEN = 1024

_SHA256 = re.compile(r"[0-9a-f]{64}")
_AGENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NONZERO_BYTE = re.compile(rb"[^\x00]")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]*):(\d{1,5})")


def piece_size_for(size: int) -> int:
    """The piece size for content of `size` bytes: the smallest power of two from 1 MiB
    to 64 MiB that cuts it into at most about a thousand pieces."""
    check_size(size)
    piece_size = MIN_PIECE_SIZE
    while piece_size < MAX_PIECE_SIZE and size > piece_size * TARGET_PIECE_COUNT:
        piece_size *= 2
    return piece_size


def piece_count(size: int, piece_size: int) -> int:
    return math.ceil(size / piece_size)


def check_size(size: int, what: str = "size") -> int:
    if not 0 <= size <= MAX_CONTENT_SIZE:
        raise InvalidArgument(f"{what}: {size} is outside 0..{MAX_CONTENT_SIZE} bytes")
    return size


def check_piece_layout(size: int, piece_size: int, what: str) -> int:
    """Checks that `size` bytes cut in pieces of `piece_size` make a valid layout; returns
    the piece count."""
    ps = piece_size
    if not MIN_PIECE_SIZE <= ps <= MAX_PIECE_SIZE or ps & (ps - 1):
        raise InvalidArgument(
            f"{what}.piece_size: {ps} is not a power of two from {MIN_PIECE_SIZE} to {MAX_PIECE_SIZE}"
        )
    count = piece_count(size, ps)
    if count > MAX_PIECE_COUNT:
        raise InvalidArgument(f"{what}: {count} pieces is more than {MAX_PIECE_COUNT}")
    return count


def is_sha256(value: str) -> bool:
    return _SHA256.fullmatch(value) is not None


def check_sha256(value: str, what: str = "sha256") -> str:
    if not is_sha256(value):
        raise InvalidArgument(f"{what}: {_shown(value)} is not a SHA-256 digest (64 lowercase hex digits)")
    return value


def check_agent_id(value: str, what: str = "agent_id") -> str:
    if not _AGENT_ID.fullmatch(value):
        raise InvalidArgument(
            f"{what}: {_shown(value)} is not an agent id (1 to {MAX_AGENT_ID_LEN} of A-Z a-z 0-9 . _ -)"
        )
    return value


def check_text(value: str, what: str, max_len: int, *, allow_empty: bool = False) -> str:
    if not value and not allow_empty:
        raise InvalidArgument(f"{what}: must not be empty")
    if len(value.encode("utf-8", "surrogatepass")) > max_len:
        raise InvalidArgument(f"{what}: longer than {max_len} bytes")
    if _CONTROL.search(value):
        raise InvalidArgument(f"{what}: contains control characters")
    return value


def check_name(value: str, what: str = "name", *, allow_empty: bool = True) -> str:
    """A file's base name: no slashes, not '.' or '..', at most 255 bytes."""
    check_text(value, what, MAX_NAME_BYTES, allow_empty=allow_empty)
    if "/" in value or value in (".", ".."):
        raise InvalidArgument(f"{what}: {_shown(value)} is not a file name")
    return value


def check_http_url(value: str, what: str = "url") -> str:
    check_text(value, what, MAX_URL_LEN)
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or parts.port > 0
    except ValueError as exc:
        raise InvalidArgument(f"{what}: {_shown(value)} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise InvalidArgument(f"{what}: {_shown(value)} is not an http(s) URL with a host")
    return value


def split_host_port(value: str, what: str = "address") -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets) into the host, without brackets, and the port."""
    match = _HOST_PORT.fullmatch(value)
    if not match or int(match.group(2)) > 65535:
        raise InvalidArgument(f"{what}: {_shown(value)} is not HOST:PORT")
    return match.group(1).strip("[]"), int(match.group(2))


def _shown(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:77] + "...")


@dataclass(frozen=True, slots=True)
class Manifest:
    """How content is cut into pieces, and the SHA-256 of each piece."""

    sha256: str
    size: int
    piece_size: int
    # The piece digests, 32 bytes each, concatenated in piece order.
    piece_hashes: bytes = field(repr=False)

    def __post_init__(self) -> None:
        check_sha256(self.sha256, "manifest.sha256")
        check_size(self.size, "manifest.size")
        ps = self.piece_size
        expected = check_piece_layout(self.size, ps, "manifest")
        if len(self.piece_hashes) != expected * HASH_LEN:
            got = len(self.piece_hashes) / HASH_LEN
            raise InvalidArgument(
                f"manifest.piece_sha256s: {self.size} bytes in pieces of {ps} need {expected} "
                f"piece digests, got {got:g}"
            )

    @property
    def piece_count(self) -> int:
        return len(self.piece_hashes) // HASH_LEN

    def piece_hash(self, index: int) -> bytes:
        if not 0 <= index < self.piece_count:
            raise IndexError(index)
        return self.piece_hashes[index * HASH_LEN : (index + 1) * HASH_LEN]


@dataclass(frozen=True, slots=True)
class Validator:
    """What an origin said identifies one version of a URL."""

    etag: str = ""
    last_modified: str = ""
    content_length: int = 0

    def __post_init__(self) -> None:
        check_text(self.etag, "validator.etag", MAX_VALIDATOR_LEN, allow_empty=True)
        check_text(self.last_modified, "validator.last_modified", MAX_VALIDATOR_LEN, allow_empty=True)
        check_size(self.content_length, "validator.content_length")
        if self.etag:
            if self.etag.startswith("W/"):
                raise InvalidArgument("validator.etag: a weak ETag cannot identify content")
            if len(self.etag) < 2 or not (self.etag[0] == self.etag[-1] == '"'):
                raise InvalidArgument(f"validator.etag: {_shown(self.etag)} is not a quoted ETag")
        elif not self.last_modified:
            raise InvalidArgument("validator: needs a strong ETag, or Last-Modified with Content-Length")

    @property
    def key(self) -> str:
        """A canonical text form: equal validators have equal keys."""
        if self.etag:
            return f"etag {self.etag}"
        return f"last-modified {self.last_modified}; length {self.content_length}"


@dataclass(frozen=True, slots=True)
class SourceRef:
    """One version of a file at an origin URL."""

    url: str
    validator: Validator

    def __post_init__(self) -> None:
        check_http_url(self.url, "source.url")


@dataclass(frozen=True, slots=True)
class DigestQuery:
    sha256: str

    def __post_init__(self) -> None:
        check_sha256(self.sha256, "query.sha256")


@dataclass(frozen=True, slots=True)
class SourceQuery:
    source: SourceRef


@dataclass(frozen=True, slots=True)
class NameQuery:
    name: str

    def __post_init__(self) -> None:
        check_name(self.name, "query.name", allow_empty=False)


@dataclass(frozen=True, slots=True)
class UrlQuery:
    url: str

    def __post_init__(self) -> None:
        check_http_url(self.url, "query.url")


ContentQuery = DigestQuery | SourceQuery | NameQuery | UrlQuery


def bitmap_len(pieces: int) -> int:
    return (pieces + 7) // 8


def bitmap_has(bitmap: bytes, index: int) -> bool:
    return bool(bitmap[index >> 3] & (0x80 >> (index & 7)))


def bitmap_count(bitmap: bytes) -> int:
    return int.from_bytes(bitmap, "big").bit_count()


def bitmap_of(pieces: Iterable[int], count: int) -> bytes:
    """The bitmap of `count` pieces with `pieces` set."""
    bits = bytearray(bitmap_len(count))
    for piece in pieces:
        bits[piece >> 3] |= 0x80 >> (piece & 7)
    return bytes(bits)


def bitmap_pieces(bitmap: bytes) -> Iterator[int]:
    """The pieces set in `bitmap`, in ascending order. Scanning 65,536 pieces byte by byte
    in Python would be slow; the regex engine skips the zero bytes."""
    for match in _NONZERO_BYTE.finditer(bitmap):
        i = match.start()
        for j in range(8):
            if bitmap[i] & (0x80 >> j):
                yield 8 * i + j


def check_bitmap(bitmap: bytes, pieces: int, what: str = "pieces") -> bytes:
    """A BitTorrent-style bitmap for `pieces` pieces: the right length, spare bits zero."""
    if len(bitmap) != bitmap_len(pieces):
        raise InvalidArgument(
            f"{what}: a bitmap for {pieces} pieces has {bitmap_len(pieces)} bytes, got {len(bitmap)}"
        )
    spare = len(bitmap) * 8 - pieces
    if spare and bitmap[-1] & ((1 << spare) - 1):
        raise InvalidArgument(f"{what}: bits set past the last piece")
    return bitmap


@dataclass(frozen=True, slots=True)
class Holding:
    """One file an agent holds: whole, or the pieces in `bitmap` when not complete."""

    sha256: str
    size: int
    name: str = ""
    complete: bool = True
    bitmap: bytes = b""

    def __post_init__(self) -> None:
        check_sha256(self.sha256, "holding.sha256")
        check_size(self.size, "holding.size")
        check_name(self.name, "holding.name")
        if self.complete and self.bitmap:
            raise InvalidArgument("holding.pieces: a complete holding carries no bitmap")


@dataclass(frozen=True, slots=True)
class Load:
    active_uploads: int = 0
    active_downloads: int = 0

    def __post_init__(self) -> None:
        for what, value in (
            ("active_uploads", self.active_uploads),
            ("active_downloads", self.active_downloads),
        ):
            if not 0 <= value <= 1_000_000:
                raise InvalidArgument(f"load.{what}: {value} is out of range")


# The most bytes an agent may say it fetched since it started: 8 PiB, far more than a
# machine fetches, and still exact as a float (Prometheus' number type).
MAX_REPORTED_FETCH = 2**53
MAX_UINT64 = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Fetched:
    """Bytes fetched from other agents and from origins: one agent's since it started, or
    the cluster's since the tracker started."""

    from_peers: int = 0
    from_origin: int = 0

    def __post_init__(self) -> None:
        for what, value in (("from_peers", self.from_peers), ("from_origin", self.from_origin)):
            if not 0 <= value <= MAX_UINT64:
                raise InvalidArgument(f"bytes {what}: {value} is out of range")

    @property
    def total(self) -> int:
        return self.from_peers + self.from_origin

    @property
    def offload(self) -> float | None:
        """The share that came from peers rather than the origin; None before any byte."""
        return self.from_peers / self.total if self.total else None


@dataclass(frozen=True, slots=True)
class AgentInfo:
    agent_id: str
    hostname: str
    base_url: str
    version: str

    def __post_init__(self) -> None:
        check_agent_id(self.agent_id)
        check_text(self.hostname, "hostname", MAX_HOSTNAME_LEN)
        check_http_url(self.base_url, "base_url")
        check_text(self.version, "version", MAX_VERSION_LEN, allow_empty=True)


class HeartbeatAction(enum.Enum):
    NONE = "none"
    RESYNC = "resync"
    REGISTER = "register"


class HolderState(enum.Enum):
    LIVE = "live"
    DEAD = "dead"
    BAD = "bad"


@dataclass(frozen=True, slots=True)
class HolderView:
    """An agent that holds some or all of a file, as the tracker hands it out."""

    agent: AgentInfo
    holding: Holding
    load: Load


@dataclass(frozen=True, slots=True)
class ContentMatch:
    sha256: str
    size: int
    manifest: Manifest | None
    names: tuple[str, ...]
    holders: tuple[HolderView, ...]


@dataclass(frozen=True, slots=True)
class ContentDetails:
    sha256: str
    size: int
    manifest: Manifest | None
    names: tuple[str, ...]
    holders: tuple[tuple[HolderView, HolderState], ...]
    sources: tuple[SourceRef, ...]


@dataclass(frozen=True, slots=True)
class SyncResult:
    resync_needed: bool
    generation: int


@dataclass(frozen=True, slots=True)
class AgentStatus:
    agent: AgentInfo
    live: bool
    last_seen_age: float | None
    files: int
    bytes_held: int
    load: Load
    bad_source_reports: int
    banned: bool


@dataclass(frozen=True, slots=True)
class FileSummary:
    sha256: str
    size: int
    names: tuple[str, ...]
    live_holders: int
    holders: int
    has_manifest: bool
    sources: tuple[SourceRef, ...]


@dataclass(frozen=True, slots=True)
class FilePage:
    files: tuple[FileSummary, ...]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class Stats:
    live_agents: int
    dead_agents: int
    banned_agents: int
    distinct_files: int
    holdings: int
    bytes_held: int
    manifests: int
    sources: int
    bad_source_reports: int
    swarms: int = 0
    swarm_members: int = 0
    # What agents reported fetching since the tracker started.
    fetched: Fetched = Fetched()


@dataclass(frozen=True, slots=True)
class Announce:
    """One swarm member's report, sent about once a second while it downloads."""

    # Empty for an observer: a client that can serve nothing and joins nothing.
    agent_id: str
    swarm_id: str
    size: int
    piece_size: int
    have: bytes  # bitmap of verified pieces
    # Hashes of pieces in `have` the tracker did not know at the last answer.
    hashes: Mapping[int, bytes] = field(default_factory=dict)
    hashes_known: bytes = b""  # bitmap; empty means none
    # Pieces granted earlier, still to be fetched from a seed; how many more it wants.
    seed_claims: frozenset[int] = frozenset()
    want_seed: int = 0
    complete: bool = False
    leaving: bool = False

    def __post_init__(self) -> None:
        if self.agent_id:
            check_agent_id(self.agent_id)
        check_sha256(self.swarm_id, "swarm_id")
        check_size(self.size)
        if self.size == 0:
            raise InvalidArgument("size: empty content needs no swarm")
        pieces = check_piece_layout(self.size, self.piece_size, "announce")
        check_bitmap(self.have, pieces, "have")
        if self.hashes_known:
            check_bitmap(self.hashes_known, pieces, "hashes_known")
        for index, digest in self.hashes.items():
            if not 0 <= index < pieces:
                raise InvalidArgument(f"hashes: piece {index} is past the last piece ({pieces - 1})")
            if len(digest) != HASH_LEN:
                raise InvalidArgument(f"hashes: piece {index} has a {len(digest)}-byte digest, not 32")
            if not bitmap_has(self.have, index):
                raise InvalidArgument(f"hashes: piece {index} is not among the pieces it has")
        for index in self.seed_claims:
            if not 0 <= index < pieces:
                raise InvalidArgument(f"seed_claims: piece {index} is past the last piece ({pieces - 1})")
        if not 0 <= self.want_seed <= MAX_PIECE_COUNT:
            raise InvalidArgument(f"want_seed: {self.want_seed} is out of range")
        if self.complete and bitmap_count(self.have) != pieces:
            raise InvalidArgument("complete: it does not have every piece")

    @property
    def piece_count(self) -> int:
        return piece_count(self.size, self.piece_size)


# An Announce's answer lists at most this many other members.
SWARM_MEMBERS_SHOWN = 64


@dataclass(frozen=True, slots=True)
class SwarmMember:
    agent_id: str
    base_url: str
    # The verified pieces; None when it has them all.
    have: bytes | None


@dataclass(frozen=True, slots=True)
class SwarmView:
    """The tracker's answer to an Announce."""

    members: tuple[SwarmMember, ...]
    # Hashes the tracker knows that the announce's hashes_known lacked.
    hashes: Mapping[int, bytes]
    hashes_known: bytes  # bitmap
    seed_granted: tuple[int, ...]
    seed_claimed: bytes  # bitmap
    hash_conflicts: tuple[int, ...]
    interval: float  # seconds


@dataclass(frozen=True, slots=True)
class BadMark:
    """A holder reported for sending bytes of `sha256` that failed their hash."""

    holder_agent_id: str
    sha256: str
    reports: int
    last_reason: str
