"""The HTTP edge of downloads: what an origin URL holds (`probe`), and byte ranges from the
origin and from peers' range servers, read straight into the caller's buffer.

This module decides nothing about what to fetch or from whom: the planner does, and
download.py calls in here from its worker threads. One HttpFetcher is shared by all of
them; its connection pools keep connections alive between pieces.

Every failure becomes a FetchError subclass carrying the source and a one-line message
for a person. requests' and urllib3's exceptions are translated in one place
(`_mapped_errors`), HTTP statuses in another (`status_error`).

The top half is pure: header parsing and the choice of error for a status, tested without
sockets. The bottom half does the I/O.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import http
import http.client
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath
from types import TracebackType
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
import requests.adapters
import urllib3.exceptions

from agent.errors import (
    FetchError,
    PieceNotHeld,
    RangeNotSupported,
    SourceBusy,
    SourceFailed,
    SourceMissing,
    SourceUnauthorized,
    SourceUnreachable,
    ValidatorChanged,
)
from agent.rangeserver import MISSING_HEADER, PIECES_HEADER
from tracker import __version__
from tracker.errors import InvalidArgument
from tracker.model import Validator, check_http_url, is_sha256

KiB = 1024
MiB = 1024 * KiB

DEFAULT_TIMEOUT = 10.0
DEFAULT_POOL_SIZE = 32
DEFAULT_USER_AGENT = f"lanpeer/{__version__}"
MAX_REDIRECTS = 10
# Bodies are read in chunks of at most this size: straight into the caller's buffer for
# ranges, handed to the sink for streams.
READ_CHUNK = 1 * MiB
# A `.sha256` file beside a download is one line; anything larger is not one.
SIDECAR_LIMIT = 64 * 1024
# Retry-After when a busy source gives none, and the longest wait believed.
DEFAULT_RETRY_AFTER = 1.0
MAX_RETRY_AFTER = 60.0
# An error response's body up to this size is read and dropped so that its connection can
# be reused; a larger one closes the connection.
DRAIN_LIMIT = 64 * KiB
# Statuses to a HEAD after which the probe asks again with a GET of the first byte:
# servers that do not implement HEAD (405, 501), and those that refuse it where they
# would answer a GET (400, 403: a URL signed for GET only, as S3's presigned URLs are).
HEAD_REFUSED = frozenset({400, 403, 405, 501})

_DIGITS = re.compile(r"[0-9]{1,18}")
# RFC 9110 §8.8.3: entity-tag = [ weak ] opaque-tag; opaque-tag = DQUOTE *etagc DQUOTE.
# Header values arrive decoded as latin-1, so obs-text is \x80-\xff.
_STRONG_ETAG = re.compile(r'"[\x21\x23-\x7e\x80-\xff]*"')
_CONTENT_RANGE = re.compile(r"bytes +(?:([0-9]{1,18})-([0-9]{1,18})|(\*))/([0-9]{1,18}|\*)", re.IGNORECASE)
# RFC 9530 (Repr-Digest, a structured dictionary): sha-256=:BASE64:, maybe with parameters.
_SF_BYTES = re.compile(r":([A-Za-z0-9+/]*={0,2}):")
_SIDECAR_HEX = re.compile(r"(?<![0-9A-Fa-f])([0-9A-Fa-f]{64})(?![0-9A-Fa-f])")
_NOT_SHOWN = re.compile(r"[^\x20-\x7e]")


# ----------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class OriginInfo:
    """What a probe of an origin URL found."""

    # The final URL after redirects: where range requests go.
    url: str
    # The length of the whole representation; None when the origin did not say.
    size: int | None
    # A strong ETag, else Last-Modified with the length; None when the origin gave neither.
    validator: Validator | None
    # Whether the origin said `Accept-Ranges: bytes` (or answered a range with a 206).
    accepts_ranges: bool
    # A SHA-256 (hex) the origin published in Repr-Digest or Digest.
    digest_hint: str | None = None

    def __post_init__(self) -> None:
        try:
            check_http_url(self.url, "origin url")
        except InvalidArgument as exc:
            raise ValueError(str(exc)) from None
        if self.size is not None and self.size < 0:
            raise ValueError(f"origin size: {self.size} is negative")
        if self.digest_hint is not None and not is_sha256(self.digest_hint):
            raise ValueError(f"origin digest hint: {self.digest_hint!r} is not a SHA-256 in hex")
        v = self.validator
        if v is not None and not v.etag and v.content_length != self.size:
            raise ValueError(
                f"origin validator: Last-Modified goes with a length of {v.content_length}, "
                f"but the size is {self.size}"
            )


@dataclass(frozen=True, slots=True)
class ContentRange:
    """A Content-Range header (RFC 9110 §14.4): bytes `first` to `last` (both included) of
    content of `size` bytes. `first` and `last` are None in the form a 416 carries
    (`bytes */size`); `size` is None when the sender did not know it (`bytes a-b/*`)."""

    first: int | None
    last: int | None
    size: int | None

    def __post_init__(self) -> None:
        if (self.first is None) != (self.last is None):
            raise ValueError("a content range has both ends or neither")
        if self.first is None and self.size is None:
            raise ValueError("a content range without a range needs a size")
        if self.first is not None and self.last is not None:
            if not 0 <= self.first <= self.last:
                raise ValueError(f"content range {self.first}-{self.last}: need 0 <= first <= last")
            if self.size is not None and self.last >= self.size:
                raise ValueError(f"content range {self.first}-{self.last} lies past its size {self.size}")
        if self.size is not None and self.size < 0:
            raise ValueError(f"content range size {self.size} is negative")


# ----------------------------------------------------------------------------- pure helpers


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, whatever the case of its name in `headers`."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, found in headers.items():
        if key.lower() == lowered:
            return found
    return None


def one_line(text: str, limit: int = 200) -> str:
    """`text` fit for a one-line message: control and non-ASCII characters replaced,
    cut to `limit` characters."""
    shown = _NOT_SHOWN.sub("?", " ".join(text.split()))
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def shown_url(url: str) -> str:
    """`url` for a message, with any password in it hidden."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return one_line(url)
    if password is None:
        return one_line(url)
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return one_line(urlunsplit(parts._replace(netloc=f"{user}:***@{host}")))


def parse_content_range(value: str | None) -> ContentRange | None:
    """A Content-Range header's value (`bytes a-b/size`, `bytes a-b/*`, `bytes */size`);
    None when absent or malformed. Never raises."""
    if value is None:
        return None
    matched = _CONTENT_RANGE.fullmatch(value.strip(" \t"))
    if matched is None:
        return None
    first, last, star, size = matched.groups()
    try:
        return ContentRange(
            None if star else int(first),
            None if star else int(last),
            None if size == "*" else int(size),
        )
    except ValueError:
        return None


def content_length(headers: Mapping[str, str]) -> int | None:
    """The Content-Length, or None when absent or malformed. Repeated headers that agree
    (`10, 10`, as they arrive joined) count as one."""
    value = _header(headers, "Content-Length")
    if value is None:
        return None
    values = {v.strip(" \t") for v in value.split(",")}
    if len(values) != 1:
        return None
    (only,) = values
    return int(only) if _DIGITS.fullmatch(only) else None


def parse_retry_after(
    value: str | None,
    now: float,
    *,
    default: float = DEFAULT_RETRY_AFTER,
    cap: float = MAX_RETRY_AFTER,
) -> float:
    """Seconds to wait from a Retry-After header (RFC 9110 §10.2.3): delta-seconds or an
    HTTP-date, compared with `now` (seconds since the epoch). `default` when absent or
    malformed; at most `cap`; a date in the past is 0. Never raises."""
    if value is None:
        return default
    text = value.strip(" \t")
    if re.fullmatch(r"[0-9]+", text):
        return min(cap, float(int(text[:12])))
    try:
        when = email.utils.parsedate_to_datetime(text)
        seconds = when.timestamp() - now
    except (TypeError, ValueError, IndexError, OverflowError):
        return default
    return min(cap, max(0.0, seconds))


def strong_etag(headers: Mapping[str, str]) -> str | None:
    """The ETag when it is a single well-formed strong entity tag, quotes included."""
    value = _header(headers, "ETag")
    if value is None:
        return None
    value = value.strip(" \t")
    return value if _STRONG_ETAG.fullmatch(value) else None


def last_modified(headers: Mapping[str, str]) -> str | None:
    """The Last-Modified header, as sent, when it is a printable HTTP-date."""
    value = _header(headers, "Last-Modified")
    if value is None:
        return None
    value = value.strip(" \t")
    if not value.isascii() or not value.isprintable():
        return None
    try:
        email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return value


def validator_from_headers(headers: Mapping[str, str], size: int | None) -> Validator | None:
    """What identifies the version of a representation of `size` bytes: its strong ETag,
    else its Last-Modified with the size (RFC 9110 §8.8). A weak ETag identifies nothing
    byte for byte, and a Last-Modified is no use without the size. None when there is
    neither, or when the values are unfit for a Validator (too long, say)."""
    etag = strong_etag(headers)
    modified = last_modified(headers)
    candidates: list[tuple[str, str]] = []
    if etag is not None:
        candidates.append((etag, modified or ""))
    if modified is not None and size is not None:
        candidates.append(("", modified))
    for tag, date in candidates:
        try:
            return Validator(tag, date, size or 0)
        except InvalidArgument:
            continue
    return None


def if_range_value(validator: Validator) -> str:
    """The If-Range header for a range of the version `validator` names: its ETag, else
    its Last-Modified date."""
    return validator.etag or validator.last_modified


def validator_change(
    was: Validator | None, size_was: int | None, headers: Mapping[str, str], size_now: int | None
) -> str | None:
    """How a response's headers show that the representation is no longer the version
    probed (`was`, of `size_was` bytes), as words for a message; None when nothing shows
    it. What a response leaves out is not taken as a change."""
    if was is not None and was.etag:
        etag = strong_etag(headers)
        if etag is not None and etag != was.etag:
            return f"its ETag is now {etag}, was {was.etag}"
    elif was is not None:
        modified = last_modified(headers)
        if modified is not None and modified != was.last_modified:
            return f"its Last-Modified is now {modified}, was {was.last_modified}"
    if size_was is not None and size_now is not None and size_now != size_was:
        return f"its size is now {size_now} bytes, was {size_was}"
    return None


def accepts_byte_ranges(headers: Mapping[str, str]) -> bool:
    value = _header(headers, "Accept-Ranges") or ""
    return any(unit.strip(" \t").lower() == "bytes" for unit in value.split(","))


def _sha256_hex(encoded: str) -> str | None:
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None


def digest_hint_from_headers(headers: Mapping[str, str]) -> str | None:
    """The SHA-256 (hex) of the whole representation when the origin published it:
    `Repr-Digest: sha-256=:BASE64:` (RFC 9530), else the older `Digest: SHA-256=BASE64`
    (RFC 3230). Other algorithms are ignored; a malformed value is None, never an error."""
    for member in (_header(headers, "Repr-Digest") or "").split(","):
        key, _, value = member.partition("=")
        if key.strip(" \t").lower() != "sha-256":
            continue
        matched = _SF_BYTES.fullmatch(value.split(";", 1)[0].strip(" \t"))
        found = _sha256_hex(matched.group(1)) if matched else None
        if found:
            return found
    for member in (_header(headers, "Digest") or "").split(","):
        key, _, value = member.partition("=")
        if key.strip(" \t").lower() != "sha-256":
            continue
        found = _sha256_hex(value.strip(" \t"))
        if found:
            return found
    return None


def sha256_from_sidecar(text: str, name: str) -> str | None:
    """The digest a `.sha256` file gives for `name`: its only one, or the one on the line
    that names the file."""
    found = [(m.group(1).lower(), line) for line in text.splitlines() if (m := _SIDECAR_HEX.search(line))]
    if len(found) == 1:
        return found[0][0]
    named = [digest for digest, line in found if name and (f" {name}" in line or f"({name})" in line)]
    return named[0] if len(named) == 1 else None


def peer_bitmap(headers: Mapping[str, str]) -> bytes | None:
    """The pieces a peer still downloading a blob holds, from its Lanpeer-Pieces header;
    None when absent or not base64. Never raises."""
    value = _header(headers, PIECES_HEADER)
    if value is None:
        return None
    try:
        return base64.b64decode(value.strip(" \t"), validate=True)
    except (binascii.Error, ValueError):
        return None


def describe_status(status: int, reason: str = "") -> str:
    """`404 Not Found`: the standard phrase when the status has one, else the server's."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = one_line(reason, 60)
    return f"{status} {phrase}".rstrip()


def status_error(
    who: str,
    source: str,
    target: str,
    status: int,
    *,
    reason: str = "",
    retry_after: str | None = None,
    now: float = 0.0,
    token_sent: bool = False,
) -> FetchError:
    """The error for a response of status `status` from `who` ("origin" or "peer") to a
    request for `target`, a URL as shown in messages. 503 and 429 are busy, with the
    wait from `retry_after` (compared with `now`, seconds since the epoch); 404 and 410
    missing; 401 and 403 unauthorized; anything else failed."""
    said = f"{who} answered {describe_status(status, reason)} for {target}"
    if status in (429, 503):
        wait = parse_retry_after(retry_after, now)
        return SourceBusy(source, f"{said}; retry after {wait:g} s", retry_after=wait, status=status)
    if status in (404, 410):
        return SourceMissing(source, said, status=status)
    if status in (401, 403):
        if who == "peer":
            said += ": the token was refused" if token_sent else ": it wants a token and none is configured"
        return SourceUnauthorized(source, said, status=status)
    return SourceFailed(source, said, status=status)


def _check_span(start: int, end: int, into: memoryview) -> int:
    if not 0 <= start <= end:
        raise ValueError(f"byte range {start}-{end}: need 0 <= start <= end")
    length = end - start + 1
    if into.readonly or into.nbytes != length or len(into) != length:
        raise ValueError(f"byte range {start}-{end} needs a writable buffer of {length} bytes")
    return length


# ----------------------------------------------------------------------------- errors from requests


@dataclass(slots=True)
class _Progress:
    """How much of a body has arrived, for the message when it breaks off."""

    expected: int | None
    got: int = 0

    def __str__(self) -> str:
        of = f" of {self.expected}" if self.expected is not None else ""
        return f"after {self.got}{of} bytes"


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and every exception behind it: causes, contexts, urllib3's `reason`, and
    exceptions passed as arguments (as requests wraps urllib3's)."""
    found: list[BaseException] = []
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if any(e is seen for seen in found):
            continue
        found.append(e)
        behind = [getattr(e, "reason", None), e.__cause__, e.__context__, *e.args]
        todo += [b for b in behind if isinstance(b, BaseException)]
    return found


def _reason(exc: BaseException) -> str:
    """A few words for the lowest-level cause of `exc`."""
    chain = _chain(exc)

    def first(kind: type[BaseException] | tuple[type[BaseException], ...]) -> BaseException | None:
        return next((e for e in chain if isinstance(e, kind)), None)

    if first(socket.gaierror):
        return "the host name does not resolve"
    if first(ConnectionRefusedError):
        return "connection refused"
    if first(ConnectionResetError):
        return "connection reset"
    if first((http.client.RemoteDisconnected, http.client.BadStatusLine)):
        return "the connection closed without an answer"
    if first((http.client.IncompleteRead, urllib3.exceptions.IncompleteRead)):
        return "the connection closed early"
    tls = first(ssl.SSLError)
    if tls is not None:
        return f"TLS: {one_line(getattr(tls, 'reason', None) or str(tls), 100)}"
    if first((TimeoutError, urllib3.exceptions.TimeoutError)):
        return "timed out"
    for e in chain:
        if isinstance(e, OSError) and e.strerror:
            return one_line(e.strerror, 100).lower()
    return one_line(str(exc) or type(exc).__name__, 100)


@contextmanager
def _mapped_errors(source: str, timeout: float, progress: _Progress | None = None) -> Iterator[None]:
    """Translates what requests and urllib3 raise, inside the block, into FetchErrors
    about `source` (httpcore's map_exceptions). Before a response, failures are
    SourceUnreachable; in the middle of a body, a timeout still is, and a broken
    connection is SourceFailed."""
    shown = shown_url(source)
    try:
        yield
    except FetchError:
        raise
    except requests.exceptions.ConnectTimeout as exc:
        raise SourceUnreachable(source, f"cannot reach {shown}: no connection within {timeout:g} s") from exc
    except (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
        during = f" {progress}" if progress is not None and progress.got else ""
        raise SourceUnreachable(
            source, f"{shown} stopped answering{during}: nothing received for {timeout:g} s"
        ) from exc
    except requests.exceptions.TooManyRedirects as exc:
        raise SourceFailed(source, f"{shown} redirects more than {MAX_REDIRECTS} times") from exc
    except requests.exceptions.ProxyError as exc:
        raise SourceUnreachable(source, f"cannot reach {shown} through the proxy: {_reason(exc)}") from exc
    except requests.exceptions.ConnectionError as exc:
        raise SourceUnreachable(source, f"cannot reach {shown}: {_reason(exc)}") from exc
    except (
        requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.ProtocolError,
        http.client.HTTPException,
    ) as exc:
        during = f" {progress}" if progress is not None else ""
        raise SourceFailed(source, f"{shown} broke off{during}: {_reason(exc)}") from exc
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise SourceFailed(source, f"{shown}: {_reason(exc)}") from exc
    except OSError as exc:
        raise SourceUnreachable(source, f"cannot reach {shown}: {_reason(exc)}") from exc


# ----------------------------------------------------------------------------- the fetcher


def _session(pool_size: int, user_agent: str, *, trust_env: bool) -> requests.Session:
    session = requests.Session()
    session.trust_env = trust_env
    session.max_redirects = MAX_REDIRECTS
    # Bytes as they are stored: a range of a compressed encoding is not a range of the file.
    session.headers.update({"User-Agent": user_agent, "Accept-Encoding": "identity", "Accept": "*/*"})
    adapter = requests.adapters.HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class HttpFetcher:
    """Probes origins and fetches byte ranges from origins and peers, over pooled keep-alive
    connections; safe to share between threads.

    `timeout` bounds the wait for a connection and for each read (not a whole transfer:
    a slow but steady source is the planner's business). `token` goes to peers, as
    `Authorization: Bearer`, never to an origin. No request is retried here: retries and
    their budget belong to the planner. Origin requests honour the environment's proxy
    settings (HTTP_PROXY, NO_PROXY, ...) as curl does; peer requests, on the LAN, never go
    through a proxy. `wall_clock` (seconds since the epoch) reads Retry-After dates.
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        token: str | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        user_agent: str = DEFAULT_USER_AGENT,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"fetch timeout: {timeout} s is not a positive duration")
        if pool_size < 1:
            raise ValueError(f"connection pool size: {pool_size} is less than 1")
        if token is not None and not (token and token.isascii() and token.isprintable() and " " not in token):
            raise ValueError("peer token: must be non-empty printable ASCII without spaces")
        self._timeout = timeout
        self._token = token
        self._wall_clock = wall_clock
        self._origin = _session(pool_size, user_agent, trust_env=True)
        self._peers = _session(pool_size, user_agent, trust_env=False)

    def __repr__(self) -> str:
        token = "set" if self._token is not None else "none"
        return f"HttpFetcher(timeout={self._timeout:g}, token={token})"

    def close(self) -> None:
        """Closes every pooled connection."""
        self._origin.close()
        self._peers.close()

    def __enter__(self) -> HttpFetcher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------------- origin

    def probe(self, url: str) -> OriginInfo:
        """What `url` holds: a HEAD, following up to 10 redirects. When the HEAD is refused
        or gives no length, a GET of the first byte, whose Content-Range tells the length."""
        try:
            check_http_url(url)
        except InvalidArgument as exc:
            raise SourceFailed(url, str(exc)) from None
        with self._exchange(self._origin, "HEAD", url, source=url, redirects=True) as resp:
            status, final = resp.status_code, resp.url
            if 200 <= status < 300:
                size = content_length(resp.headers)
                if size is not None and status != 206:
                    return _origin_info(final, size, resp.headers, accepts_byte_ranges(resp.headers))
            elif status not in HEAD_REFUSED:
                raise self._status_error("origin", url, final, resp)
        return self._probe_first_byte(url, final)

    def published_sha256(self, url: str) -> str | None:
        """The SHA-256 an origin publishes beside a file as `URL.sha256` (`HEX  NAME`, or
        just `HEX`, or BSD's `SHA256 (NAME) = HEX`); None when there is none or it cannot
        be read. Never raises."""
        parts = urlsplit(url)
        if parts.query or parts.fragment:
            return None  # A signed or generated URL has no file beside it.
        name = unquote(PurePosixPath(parts.path).name)
        try:
            with self._exchange(self._origin, "GET", url + ".sha256", source=url, redirects=True) as resp:
                if resp.status_code != 200:
                    return None
                text = resp.raw.read(SIDECAR_LIMIT + 1, decode_content=True)
        except FetchError:
            return None
        if len(text) > SIDECAR_LIMIT:
            return None
        return sha256_from_sidecar(text.decode("utf-8", "replace"), name)

    def _probe_first_byte(self, url: str, final: str) -> OriginInfo:
        headers = {"Range": "bytes=0-0"}
        with self._exchange(self._origin, "GET", final, source=url, headers=headers, redirects=True) as resp:
            status, final = resp.status_code, resp.url
            if status == 206:
                got = parse_content_range(resp.headers.get("Content-Range"))
                if got is None or got.first != 0:
                    raise SourceFailed(
                        url,
                        f"origin answered bytes 0-0 of {shown_url(final)} with an unusable Content-Range",
                        status=206,
                    )
                _drain(resp)
                return _origin_info(final, got.size, resp.headers, True)
            if status == 200:
                # The origin ignores Range: the body is the whole file, left unread.
                return _origin_info(final, content_length(resp.headers), resp.headers, False)
            got = parse_content_range(resp.headers.get("Content-Range"))
            if status == 416 and got is not None and got.size == 0:
                # No byte 0: the file is empty.
                _drain(resp)
                return _origin_info(final, 0, resp.headers, True)
            raise self._status_error("origin", url, final, resp)

    def fetch_origin(self, info: OriginInfo, start: int, end: int, into: memoryview) -> int:
        """Bytes `start` to `end` (included) of the origin's file into `into`, which must
        hold exactly that many; returns the count. The request carries If-Range, so a
        changed file answers with all of itself (a 200) and raises ValidatorChanged;
        a 200 for an unchanged file means the origin ignores Range: RangeNotSupported
        (unless the range was the whole file, which is then read)."""
        length = _check_span(start, end, into)
        if info.size is not None and end >= info.size:
            raise ValueError(f"byte range {start}-{end} lies past the end of {info.size} bytes")
        headers = {"Range": f"bytes={start}-{end}"}
        if info.validator is not None:
            headers["If-Range"] = if_range_value(info.validator)
        shown = shown_url(info.url)
        progress = _Progress(length)
        with self._exchange(
            self._origin, "GET", info.url, source=info.url, headers=headers, redirects=True, progress=progress
        ) as resp:
            status = resp.status_code
            if status == 206:
                got = self._check_partial(resp, "origin", info.url, shown, start, end)
                change = validator_change(info.validator, info.size, resp.headers, got.size)
                if change is not None:
                    raise ValidatorChanged(info.url, f"{shown} changed while downloading ({change})")
                _read_into(resp, into, progress, info.url, shown)
                return length
            if status == 200:
                size = content_length(resp.headers)
                change = validator_change(info.validator, info.size, resp.headers, size)
                if change is not None:
                    raise ValidatorChanged(info.url, f"{shown} changed while downloading ({change})")
                if start == 0 and size == length:
                    _read_into(resp, into, progress, info.url, shown)
                    return length
                raise RangeNotSupported(
                    info.url, f"{shown} ignores Range: the origin sent the whole file for bytes {start}-{end}"
                )
            if status == 416:
                unsatisfied = parse_content_range(resp.headers.get("Content-Range"))
                change = validator_change(None, info.size, {}, unsatisfied.size if unsatisfied else None)
                if change is not None:
                    raise ValidatorChanged(info.url, f"{shown} changed while downloading ({change})")
            raise self._status_error("origin", info.url, info.url, resp)

    def fetch_origin_stream(self, info: OriginInfo, start: int, sink: Callable[[memoryview], None]) -> int:
        """The origin's file from byte `start` to its end, handed to `sink` chunk by chunk
        (up to 1 MiB each, valid only during the call); returns the bytes handed over.
        For origins that ignore Range. With `start` > 0 it asks for the rest with Range
        and If-Range; an origin that sends the whole file anyway has its first `start`
        bytes skipped. Raises ValidatorChanged when the response shows another version."""
        if start < 0 or (info.size is not None and start > info.size):
            raise ValueError(f"stream start {start} lies outside the {info.size} bytes of {info.url}")
        if info.size is not None and start == info.size:
            return 0
        headers: dict[str, str] = {}
        if start:
            headers["Range"] = f"bytes={start}-"
            if info.validator is not None:
                headers["If-Range"] = if_range_value(info.validator)
        shown = shown_url(info.url)
        remaining = None if info.size is None else info.size - start
        progress = _Progress(remaining)
        with self._exchange(
            self._origin, "GET", info.url, source=info.url, headers=headers, redirects=True, progress=progress
        ) as resp:
            status = resp.status_code
            if status == 206 and start:
                got = self._check_partial(resp, "origin", info.url, shown, start, None)
                size_now = got.size
                skip = 0
            elif status == 200:
                size_now = content_length(resp.headers)
                skip = start
            else:
                raise self._status_error("origin", info.url, info.url, resp)
            change = validator_change(info.validator, info.size, resp.headers, size_now)
            if change is not None:
                raise ValidatorChanged(info.url, f"{shown} changed while downloading ({change})")
            if progress.expected is None and size_now is not None:
                progress.expected = size_now - start
            return _stream(resp, sink, skip, progress, info.url, shown)

    # ------------------------------------------------------------------------- peers

    def fetch_peer(self, base_url: str, blob_id: str, start: int, end: int, into: memoryview) -> bytes | None:
        """Bytes `start` to `end` (included) of the blob `blob_id` (a content digest or a
        swarm id) from the peer's range server at `base_url` into `into`, which must hold
        exactly that many. Returns the pieces the peer holds, from its Lanpeer-Pieces
        header, when it is still downloading the blob; None when it holds all of it (or
        sent a bitmap that is not base64). A peer still downloading that lacks a piece of
        the range (404 with Lanpeer-Missing): PieceNotHeld with its bitmap. Busy (503):
        SourceBusy with its Retry-After; not held (404): SourceMissing; 401/403:
        SourceUnauthorized; anything but the exact bytes: SourceFailed."""
        length = _check_span(start, end, into)
        if not is_sha256(blob_id):
            raise ValueError(f"{blob_id!r} is not a blob id (a SHA-256 or swarm id: 64 lowercase hex digits)")
        url = f"{base_url.rstrip('/')}/v1/blobs/{blob_id}"
        headers = {"Range": f"bytes={start}-{end}", "If-Range": f'"{blob_id}"'}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        shown = shown_url(base_url)
        progress = _Progress(length)
        # No redirects: a peer never sends one, and the token must not follow it elsewhere.
        with self._exchange(
            self._peers, "GET", url, source=base_url, headers=headers, redirects=False, progress=progress
        ) as resp:
            if resp.status_code == 200:
                raise SourceFailed(
                    base_url,
                    f"peer {shown} sent all of {blob_id} when asked for bytes {start}-{end}",
                    status=200,
                )
            if resp.status_code == 404 and MISSING_HEADER in resp.headers:
                _drain(resp)
                raise PieceNotHeld(
                    base_url,
                    f"peer {shown} does not hold all of bytes {start}-{end} of {blob_id} yet",
                    bitmap=peer_bitmap(resp.headers),
                    status=404,
                )
            if resp.status_code != 206:
                raise self._status_error("peer", base_url, url, resp)
            self._check_partial(resp, "peer", base_url, shown, start, end)
            etag = strong_etag(resp.headers)
            if etag is not None and etag != f'"{blob_id}"':
                raise SourceFailed(base_url, f"peer {shown} answered for {blob_id} with the ETag {etag}")
            _read_into(resp, into, progress, base_url, shown)
            return peer_bitmap(resp.headers)

    # ------------------------------------------------------------------------- I/O

    @contextmanager
    def _exchange(
        self,
        session: requests.Session,
        method: str,
        url: str,
        *,
        source: str,
        headers: Mapping[str, str] | None = None,
        redirects: bool,
        progress: _Progress | None = None,
    ) -> Iterator[requests.Response]:
        """One request, its response open in the block (its body unread) and closed after.
        Errors inside the block are translated too. A response whose body was read to the
        end gives its connection back to the pool; any other closes it."""
        with _mapped_errors(source, self._timeout, progress):
            resp = session.request(
                method,
                url,
                headers=dict(headers or {}),
                # A HEAD's empty body is read at once, which gives its connection back.
                stream=method != "HEAD",
                timeout=(self._timeout, self._timeout),
                allow_redirects=redirects,
            )
            try:
                yield resp
            finally:
                resp.close()

    def _status_error(self, who: str, source: str, target: str, resp: requests.Response) -> FetchError:
        _drain(resp)
        return status_error(
            who,
            source,
            shown_url(target),
            resp.status_code,
            reason=resp.reason or "",
            retry_after=resp.headers.get("Retry-After"),
            now=self._wall_clock(),
            token_sent=self._token is not None and who == "peer",
        )

    @staticmethod
    def _check_partial(
        resp: requests.Response, who: str, source: str, shown: str, start: int, end: int | None
    ) -> ContentRange:
        """The Content-Range of a 206, checked against the range asked for (`end` None:
        to the end of the file)."""
        got = parse_content_range(resp.headers.get("Content-Range"))
        if got is None or got.first is None or got.last is None:
            raise SourceFailed(
                source, f"{who} {shown} answered 206 without a usable Content-Range", status=206
            )
        if got.first != start or (end is not None and got.last != end):
            asked = f"{start}-{end}" if end is not None else f"{start}-"
            raise SourceFailed(
                source, f"{who} {shown} sent bytes {got.first}-{got.last} when asked for {asked}", status=206
            )
        length = content_length(resp.headers)
        if length is not None and length != got.last - got.first + 1:
            raise SourceFailed(
                source,
                f"{who} {shown} sent a Content-Length of {length} for bytes {got.first}-{got.last}",
                status=206,
            )
        return got


def _origin_info(url: str, size: int | None, headers: Mapping[str, str], accepts_ranges: bool) -> OriginInfo:
    return OriginInfo(
        url=url,
        size=size,
        validator=validator_from_headers(headers, size),
        accepts_ranges=accepts_ranges,
        digest_hint=digest_hint_from_headers(headers),
    )


def _read_into(
    resp: requests.Response, into: memoryview, progress: _Progress, source: str, shown: str
) -> None:
    """Fills `into` from the body, chunk by chunk; SourceFailed when the body is shorter
    or longer than `into`."""
    raw = resp.raw
    want = len(into)
    while progress.got < want:
        chunk = raw.read(min(READ_CHUNK, want - progress.got), decode_content=False)
        if not chunk:
            raise SourceFailed(source, f"{shown} broke off {progress}: the body ended early")
        into[progress.got : progress.got + len(chunk)] = chunk
        progress.got += len(chunk)
    if content_length(resp.headers) is None and raw.read(1, decode_content=False):
        raise SourceFailed(source, f"{shown} sent more than the {want} bytes asked for")


def _stream(
    resp: requests.Response,
    sink: Callable[[memoryview], None],
    skip: int,
    progress: _Progress,
    source: str,
    shown: str,
) -> int:
    """Hands the body to `sink` in chunks, after dropping its first `skip` bytes; returns
    the bytes handed over, which must be the number expected when it is known."""
    raw = resp.raw
    while True:
        chunk = raw.read(READ_CHUNK, decode_content=False)
        if not chunk:
            break
        view = memoryview(chunk)
        if skip:
            dropped = min(skip, len(view))
            skip -= dropped
            view = view[dropped:]
            if not view:
                continue
        if progress.expected is not None and progress.got + len(view) > progress.expected:
            raise ValidatorChanged(
                source,
                f"{shown} changed while downloading (it sent more than the {progress.expected} bytes left)",
            )
        sink(view)
        progress.got += len(view)
    if skip or (progress.expected is not None and progress.got < progress.expected):
        raise SourceFailed(source, f"{shown} broke off {progress}")
    return progress.got


def _drain(resp: requests.Response) -> None:
    """Reads and drops a small body so that the connection can serve the next request;
    leaves a large or unsized one (the connection then closes with the response)."""
    length = content_length(resp.headers)
    if length is None or length > DRAIN_LIMIT:
        return
    try:
        while resp.raw.read(DRAIN_LIMIT, decode_content=False):
            pass
    except (OSError, urllib3.exceptions.HTTPError, http.client.HTTPException):
        # The connection is closed with the response instead; the status says enough.
        pass
