"""What `get` fetches: from a URL, a digest or a file name to a Plan (the content's size,
its manifest when known, the origin, the peers that hold it)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from agent.download import Peer, Plan
from agent.errors import AgentError, FetchError
from agent.fetch import HttpFetcher, OriginInfo
from agent.swarm import swarm_id_for
from tracker.client import TrackerClient
from tracker.errors import InvalidArgument, TrackerError
from tracker.model import (
    ContentMatch,
    DigestQuery,
    Manifest,
    NameQuery,
    SourceQuery,
    SourceRef,
    check_http_url,
    check_name,
    check_sha256,
    piece_count,
    piece_size_for,
)

log = logging.getLogger(__name__)

MAX_PEERS = 50


class ResolveError(AgentError):
    """The source cannot be turned into something to fetch."""


@dataclass(frozen=True, slots=True)
class UrlSource:
    url: str


@dataclass(frozen=True, slots=True)
class DigestSource:
    sha256: str


@dataclass(frozen=True, slots=True)
class NameSource:
    name: str


WantedSource = UrlSource | DigestSource | NameSource


def parse_source(text: str) -> WantedSource:
    """`http(s)://…`, `sha256:HEX`, or `name:NAME`."""
    try:
        if text.startswith(("http://", "https://")):
            return UrlSource(check_http_url(text, "SOURCE"))
        if text.startswith("sha256:"):
            return DigestSource(check_sha256(text[len("sha256:") :].lower(), "SOURCE"))
        if text.startswith("name:"):
            return NameSource(check_name(text[len("name:") :], "SOURCE", allow_empty=False))
    except InvalidArgument as exc:
        raise ResolveError(str(exc)) from None
    raise ResolveError(f"SOURCE {text!r} is not an http(s) URL, sha256:HEX or name:NAME")


def resolve(
    wanted: WantedSource,
    *,
    output: Path | None,
    sha256: str | None,
    use_origin: bool,
    fetcher: HttpFetcher,
    tracker: TrackerClient | None,
    requester: str = "",
) -> tuple[Plan, SourceRef | None]:
    """The plan, and the origin URL + validator the content should be published under
    once verified (None when there is no origin version to name)."""
    if sha256 is not None:
        sha256 = check_sha256(sha256.lower(), "--sha256")
    if isinstance(wanted, UrlSource):
        return _resolve_url(wanted.url, output, sha256, use_origin, fetcher, tracker, requester)
    if tracker is None:
        raise ResolveError("finding content by digest or name needs a tracker (--tracker HOST:PORT)")
    if isinstance(wanted, DigestSource):
        query: DigestQuery | NameQuery = DigestQuery(wanted.sha256)
        what = f"sha256:{wanted.sha256}"
    else:
        query = NameQuery(wanted.name)
        what = f"a file named {wanted.name!r}"
    matches = _locate(tracker, query, requester)
    if not matches:
        raise ResolveError(f"no agent holds {what}")
    if len(matches) > 1:
        listing = "; ".join(f"sha256:{m.sha256} ({m.size} bytes)" for m in matches[:10])
        raise ResolveError(f"{len(matches)} different files are named {wanted.name!r}: {listing}")  # type: ignore[union-attr]
    match = matches[0]
    if sha256 is not None and match.sha256 != sha256:
        raise ResolveError(f"{what} is sha256:{match.sha256}, not the --sha256 given")
    manifest = _manifest_of(match)
    if manifest is None:
        raise ResolveError(
            f"{what} has no published manifest, so its pieces cannot be checked; fetch it by URL"
        )
    name = match.names[0] if match.names else match.sha256
    plan = Plan(
        output=_output_path(output, name),
        size=match.size,
        manifest=manifest,
        origin=None,
        peers=_peers(match),
        expected_sha256=match.sha256,
        swarm_id=match.sha256,
    )
    return plan, None


def _resolve_url(
    url: str,
    output: Path | None,
    sha256: str | None,
    use_origin: bool,
    fetcher: HttpFetcher,
    tracker: TrackerClient | None,
    requester: str,
) -> tuple[Plan, SourceRef | None]:
    origin: OriginInfo | None = None
    origin_error: FetchError | None = None
    if use_origin:
        try:
            origin = fetcher.probe(url)
        except FetchError as exc:
            origin_error = exc
            if sha256 is None or tracker is None:
                raise ResolveError(str(exc)) from None
            log.warning("%s; trying the peers that hold sha256:%s", exc, sha256)
    source = SourceRef(url, origin.validator) if origin and origin.validator else None
    expected = sha256 or (origin.digest_hint if origin else None)
    if expected is None and origin is not None:
        expected = fetcher.published_sha256(origin.url)
    match: ContentMatch | None = None
    if tracker is not None:
        if source is not None:
            found = _locate(tracker, SourceQuery(source), requester)
            match = found[0] if found else None
        if match is None and expected is not None:
            found = _locate(tracker, DigestQuery(expected), requester)
            match = found[0] if found else None
    if match is not None and expected is not None and match.sha256 != expected:
        raise ResolveError(
            f"the tracker maps {url} to sha256:{match.sha256}, but sha256:{expected} is expected"
        )
    manifest = _manifest_of(match) if match is not None else None
    size = match.size if match is not None else (origin.size if origin else None)
    if origin is not None and origin.size is not None and size is not None and origin.size != size:
        log.warning(
            "%s is %d bytes now, not the %d the tracker knows; fetching from the origin",
            url,
            origin.size,
            size,
        )
        manifest, match, size = None, None, origin.size
    if manifest is None and origin is None:
        reason = f" ({origin_error})" if origin_error else " (--no-origin)"
        raise ResolveError(f"no peer can give {url} with verified pieces, and the origin is not used{reason}")
    if size is None:
        raise ResolveError(f"{url} does not say how large it is; lanpeer needs a Content-Length")
    plan = Plan(
        output=_output_path(output, _name_from_url(url)),
        size=size,
        manifest=manifest,
        origin=origin,
        peers=_peers(match) if match is not None and manifest is not None else (),
        expected_sha256=expected or (match.sha256 if match is not None else None),
        swarm_id=swarm_id_for(source) if source is not None else expected,
    )
    return plan, source


def _locate(
    tracker: TrackerClient, query: DigestQuery | NameQuery | SourceQuery, requester: str
) -> list[ContentMatch]:
    try:
        return tracker.locate(query, max_holders=MAX_PEERS, requester=requester)
    except TrackerError as exc:
        log.warning("%s; going on without peers", exc)
        return []


def _manifest_of(match: ContentMatch) -> Manifest | None:
    """The published manifest; for one-piece content, the one its digest implies."""
    if match.manifest is not None:
        return match.manifest
    piece_size = piece_size_for(match.size)
    if piece_count(match.size, piece_size) <= 1:
        hashes = bytes.fromhex(match.sha256) if match.size else b""
        return Manifest(match.sha256, match.size, piece_size, hashes)
    return None


def _peers(match: ContentMatch) -> tuple[Peer, ...]:
    return tuple(
        Peer(
            view.agent.agent_id,
            view.agent.base_url,
            None if view.holding.complete else view.holding.bitmap,
            match.sha256,
        )
        for view in match.holders
    )


def _output_path(output: Path | None, name: str) -> Path:
    """-o PATH, or the file's own name inside -o DIR or the current directory."""
    if output is None:
        return Path(name)
    return output / name if output.is_dir() else output


def _name_from_url(url: str) -> str:
    name = unquote(PurePosixPath(urlsplit(url).path).name)
    name = re.sub(r"[\x00-\x1f/\\]", "_", name).strip()
    return name if name not in ("", ".", "..") else "download"
