"""`lanpeer-agent get`: fetch a file from the peers that hold it and the origin, verified,
resumable, with a progress bar on a terminal and one summary line at the end."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from agent import __version__
from agent.download import Downloader, Options, Progress, Sharing, Summary
from agent.errors import AgentError, ValidatorChanged
from agent.fetch import HttpFetcher
from agent.planner import Policy
from agent.resolve import parse_source, resolve
from agent.swarm import SwarmAccess
from tracker.client import TrackerClient
from tracker.errors import TrackerError
from tracker.model import SourceRef
from tracker.render import human_size, plural

log = logging.getLogger(__name__)

MAX_RESTARTS = 2


@dataclass(frozen=True, slots=True)
class GetRequest:
    source: str
    output: Path | None = None
    sha256: str | None = None
    tracker: str | None = None
    token: str | None = None
    tracker_tls_ca: Path | None = None
    agent_id: str = ""
    connections: int = 16
    use_origin: bool = True
    force: bool = False
    policy: Policy = Policy.PEERS_FIRST
    timeout: float = 10.0


class ProgressBar:
    """A tqdm bar on a terminal; nothing at all otherwise."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self._stream = stream
        self._enabled = enabled and stream.isatty()
        self._bar: tqdm[Any] | None = None

    def update(self, p: Progress) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            self._bar = tqdm(
                total=p.size,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=self._stream,
                dynamic_ncols=True,
                initial=p.done_bytes,
                smoothing=0.1,
            )
        self._bar.update(p.done_bytes - self._bar.n)
        origin = ", origin" if p.origin_active else ""
        self._bar.set_postfix_str(f"{p.peers_active} peers{origin}", refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def summary_line(s: Summary) -> str:
    rate = s.size / s.seconds if s.seconds > 0 else 0.0
    fetched = s.bytes_from_peers + s.bytes_from_origin
    parts = [
        f"{s.path}: {human_size(s.size)} in {s.seconds:.1f} s ({human_size(int(rate))}/s)",
        f"peers {human_size(s.bytes_from_peers)}, origin {human_size(s.bytes_from_origin)} "
        f"({s.origin_share:.0%} from the origin)"
        if fetched
        else "nothing fetched",
        plural(len(s.sources_used), "source"),
    ]
    if s.resumed_bytes:
        parts.append(f"{human_size(s.resumed_bytes)} resumed")
    if s.pieces_refetched:
        parts.append(f"{s.pieces_refetched} pieces re-fetched")
    return "; ".join(parts)


def summary_json(s: Summary) -> dict[str, Any]:
    return {
        "path": str(s.path),
        "sha256": s.sha256,
        "size": s.size,
        "seconds": round(s.seconds, 3),
        "bytes_from_peers": s.bytes_from_peers,
        "bytes_from_origin": s.bytes_from_origin,
        "origin_share": round(s.origin_share, 4),
        "resumed_bytes": s.resumed_bytes,
        "sources_used": list(s.sources_used),
        "bytes_by_source": dict(sorted(s.bytes_by_source.items())),
        "pieces_refetched": s.pieces_refetched,
    }


@dataclass(frozen=True, slots=True)
class Fetched:
    summary: Summary
    # The origin URL and validator the content was fetched under, to publish it as.
    source: SourceRef | None


def get(
    request: GetRequest,
    on_progress: Callable[[Progress], None],
    cancelled: threading.Event | None = None,
    sharing: Sharing | None = None,
) -> Fetched:
    """Fetches what `request` names. With `sharing` (in the daemon, which serves the pieces
    as they are verified) the download joins its swarm as a member; without, it only
    looks at the swarm for peers and for the origin pieces others are fetching."""
    wanted = parse_source(request.source)
    tracker = None
    if request.tracker is not None:
        tracker = TrackerClient(
            request.tracker, token=request.token, tls_ca=request.tracker_tls_ca, timeout=request.timeout
        )
    try:
        with HttpFetcher(
            timeout=request.timeout, token=request.token, user_agent=f"lanpeer/{__version__}"
        ) as fetcher:
            for attempt in range(MAX_RESTARTS + 1):
                plan, source = resolve(
                    wanted,
                    output=request.output,
                    sha256=request.sha256,
                    use_origin=request.use_origin,
                    fetcher=fetcher,
                    tracker=tracker,
                    requester=request.agent_id,
                )
                _check_output(plan.output, plan.expected_sha256, request.force)
                reporter = _bad_source_reporter(tracker, request.agent_id)
                swarm = None
                if tracker is not None:
                    swarm = SwarmAccess(tracker, request.agent_id if sharing is not None else "")
                downloader = Downloader(
                    fetcher,
                    report_bad=reporter,
                    on_progress=on_progress,
                    cancelled=cancelled,
                    swarm=swarm,
                    sharing=sharing,
                )
                try:
                    options = Options(connections=request.connections, policy=request.policy)
                    return Fetched(downloader.run(plan, options), source)
                except ValidatorChanged as exc:
                    if attempt == MAX_RESTARTS:
                        raise
                    log.warning("%s; starting again", exc)
                    _discard_part(plan.output)
            raise AssertionError("unreachable")
    finally:
        if tracker is not None:
            tracker.close()


def _bad_source_reporter(tracker: TrackerClient | None, agent_id: str) -> Any:
    if tracker is None or not agent_id:
        return None

    def report(holder: str, sha256: str, piece: int, reason: str) -> None:
        try:
            tracker.report_bad_source(
                reporter=agent_id, holder=holder, sha256=sha256, piece_index=piece, reason=reason
            )
        except TrackerError as exc:
            log.info("could not report %s to the tracker: %s", holder, exc)

    return report


def _check_output(path: Path, expected: str | None, force: bool) -> None:
    if path.is_dir():
        raise AgentError(f"{path} is a directory; give the file's path with -o")
    if not path.exists() or force:
        return
    if expected is not None and _sha256_of(path) == expected:
        raise AlreadyThere(path)
    raise AgentError(f"{path} exists and is different; use --force to replace it")


class AlreadyThere(AgentError):
    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} is already there, with the expected content")
        self.path = path


def _sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _discard_part(output: Path) -> None:
    part = output.with_name(output.name + ".part")
    part.unlink(missing_ok=True)
    Path(str(part) + ".lanpeer").unlink(missing_ok=True)


def print_result(summary: Summary, *, as_json: bool, quiet: bool, out: TextIO = sys.stdout) -> None:
    if as_json:
        print(json.dumps(summary_json(summary), sort_keys=True), file=out)
    elif not quiet:
        print(summary_line(summary), file=out)
