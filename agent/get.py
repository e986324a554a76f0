"""`lanpeer-agent get`: fetch a file from the peers that hold it and the origin, verified,
resumable, with a progress bar on a terminal and one summary line at the end."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import __version__
from agent.download import Downloader, Options, Sharing
from agent.errors import AgentError, ValidatorChanged
from agent.fetch import HttpFetcher
from agent.job import AlreadyThere, GetRequest, Progress, Summary
from agent.resolve import parse_source, resolve
from agent.swarm import SwarmAccess
from agent.traffic import Traffic
from tracker.client import TrackerClient
from tracker.errors import TrackerError
from tracker.model import SourceRef

log = logging.getLogger(__name__)

MAX_RESTARTS = 2


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
    traffic: Traffic | None = None,
) -> Fetched:
    """Fetches what `request` names. With `sharing` (in the daemon, which serves the pieces
    as they are verified) the download joins its swarm as a member; without, it only
    looks at the swarm for peers and for the origin pieces others are fetching. What it
    fetches is counted into `traffic` as it arrives."""
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
                    traffic=traffic,
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


def _sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _discard_part(output: Path) -> None:
    part = output.with_name(output.name + ".part")
    part.unlink(missing_ok=True)
    Path(str(part) + ".lanpeer").unlink(missing_ok=True)
