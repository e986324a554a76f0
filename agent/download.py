"""A download: the planner decides, worker threads fetch and verify, this loop feeds the
outcomes back, writes checkpoints, and puts the finished file in place.

The file is preallocated as `PATH.part` and written with positional writes from the
workers (no shared file position, no lock around I/O). Every piece is checked against its
SHA-256 before it counts, and the whole file against its digest before it appears at PATH,
with an atomic rename. A control file beside the part file records the verified pieces,
so a download killed at any moment resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import control
from agent.errors import (
    AgentError,
    FetchError,
    RangeNotSupported,
    SourceBusy,
    SourceMissing,
    SourceUnauthorized,
    SourceUnreachable,
    ValidatorChanged,
)
from agent.fetch import HttpFetcher, OriginInfo
from agent.planner import Assignment, Failure, NoSourceLeft, Planner, Policy, Source, SourceKind
from tracker.model import Manifest, piece_count, piece_size_for

log = logging.getLogger(__name__)

ORIGIN_ID = "origin"
HASH_BLOCK = 4 * 1024 * 1024
MAX_BUFFERED = 256 * 1024 * 1024


class DownloadError(AgentError):
    """The download could not finish; what is on disk stays for a later resume."""


class DigestMismatch(DownloadError):
    def __init__(self, path: Path, expected: str, got: str) -> None:
        super().__init__(f"{path}: the finished file's SHA-256 is {got}, not the expected {expected}")
        self.expected = expected
        self.got = got


@dataclass(frozen=True, slots=True)
class Peer:
    agent_id: str
    base_url: str
    # The pieces it holds; None when it holds the whole file.
    bitmap: bytes | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """What to fetch, and from where."""

    output: Path
    size: int
    # The content's manifest when the tracker knows it; else the pieces are hashed as they
    # arrive from the origin and the manifest is made at the end.
    manifest: Manifest | None
    origin: OriginInfo | None
    peers: tuple[Peer, ...] = ()
    # A digest the finished file must have (--sha256, or one the origin published).
    expected_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.manifest is None and self.origin is None:
            raise DownloadError("nothing to fetch from: no manifest is known and no origin may be used")
        if self.manifest is not None and self.manifest.size != self.size:
            raise DownloadError("the manifest's size differs from the plan's")


@dataclass(frozen=True, slots=True)
class Options:
    connections: int = 16
    peer_connections: int = 4
    origin_connections: int = 4
    policy: Policy = Policy.PEERS_FIRST
    checkpoint_every: float = 2.0


@dataclass(frozen=True, slots=True)
class Progress:
    size: int
    done_bytes: int
    peers_active: int
    origin_active: bool
    elapsed: float


@dataclass(frozen=True, slots=True)
class Summary:
    path: Path
    sha256: str
    size: int
    seconds: float
    bytes_from_peers: int
    bytes_from_origin: int
    resumed_bytes: int
    sources_used: tuple[str, ...]
    pieces_refetched: int
    # Bytes each source gave: agent ids, and "origin".
    bytes_by_source: dict[str, int] = field(default_factory=dict)
    # The verified manifest; known where the download ran, not to a client of the daemon.
    manifest: Manifest | None = None

    @property
    def origin_share(self) -> float:
        fetched = self.bytes_from_peers + self.bytes_from_origin
        return self.bytes_from_origin / fetched if fetched else 0.0


@dataclass(slots=True)
class _Result:
    assignment: Assignment
    failure: Failure | None = None
    retry_after: float = 1.0
    error: FetchError | None = None
    digest: bytes = b""
    fatal: BaseException | None = None


@dataclass(slots=True)
class _Run:
    plan: Plan
    piece_size: int
    sizes: list[int]
    fd: int
    planner: Planner
    sources: dict[str, Peer | OriginInfo]
    done: set[int] = field(default_factory=set)
    # The digest of each verified piece; the manifest's when known, else computed here.
    piece_hashes: dict[int, bytes] = field(default_factory=dict)
    reported: set[str] = field(default_factory=set)
    done_bytes: int = 0
    # Bytes fetched from the origin as one stream, outside the planner.
    streamed: int = 0
    # The first piece not yet verified: every piece before it is in the file digest.
    frontier: int = 0
    whole: _FileDigest = field(init=False)

    def __post_init__(self) -> None:
        self.whole = _FileDigest(self.fd, self.plan.output)
        self.done_bytes = sum(self.sizes[i] for i in self.done)


class Downloader:
    def __init__(
        self,
        fetcher: HttpFetcher,
        *,
        report_bad: Callable[[str, str, int, str], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        cancelled: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetcher = fetcher
        self._cancelled = cancelled or threading.Event()
        self._buffers = threading.local()
        self._report_bad = report_bad
        self._on_progress = on_progress
        self._clock = clock

    def run(self, plan: Plan, options: Options) -> Summary:
        started = self._clock()
        part = plan.output.with_name(plan.output.name + ".part")
        ctl = control.control_path(part)
        piece_size = plan.manifest.piece_size if plan.manifest else piece_size_for(plan.size)
        sizes = _piece_sizes(plan.size, piece_size)
        identity = _identity(plan)
        saved = control.load(ctl) if part.exists() else None
        resumable = (
            saved is not None
            and saved.identity == identity
            and saved.size == plan.size
            and saved.piece_size == piece_size
        )
        have = saved.done if saved is not None and resumable else frozenset()
        hashes = {i: bytes.fromhex(h) for i, h in saved.piece_hashes.items()} if saved and resumable else {}
        if have:
            log.info("resuming %s: %d of %d pieces already verified", plan.output, len(have), len(sizes))
        fd = os.open(part, os.O_RDWR | os.O_CREAT | (0 if have else os.O_TRUNC), 0o644)
        try:
            _preallocate(fd, plan.size)
            # Each connection holds one piece in memory: bound the total for very large pieces.
            connections = min(options.connections, max(2, MAX_BUFFERED // piece_size))
            options = dataclasses.replace(options, connections=connections)
            planner = Planner(sizes, connections=connections, policy=options.policy, have=have)
            run = _Run(plan, piece_size, sizes, fd, planner, {}, done=set(have), piece_hashes=dict(hashes))
            self._add_sources(run, options)
            resumed_bytes = sum(sizes[i] for i in have)
            origin = plan.origin
            peers_usable = plan.manifest is not None and plan.peers
            if origin is not None and not origin.accepts_ranges and not peers_usable:
                self._stream(run, origin, started)
            else:
                try:
                    self._loop(run, options, ctl, identity, started)
                except RangeNotSupported as exc:
                    if origin is None:
                        raise
                    log.warning("%s; fetching it as one stream", exc)
                    self._stream(run, origin, started)
            os.fsync(fd)
            manifest = self._verify_whole(run)
        finally:
            os.close(fd)
        os.replace(part, plan.output)
        control.remove(ctl)
        totals = planner.bytes_by_kind()
        return Summary(
            path=plan.output,
            sha256=manifest.sha256,
            size=manifest.size,
            manifest=manifest,
            seconds=self._clock() - started,
            bytes_from_peers=totals[SourceKind.PEER],
            bytes_from_origin=totals[SourceKind.ORIGIN] + run.streamed,
            resumed_bytes=resumed_bytes,
            sources_used=tuple(planner.sources_used()),
            pieces_refetched=planner.refetched,
            bytes_by_source=_with_stream(planner.bytes_by_source(), run.streamed),
        )

    # ----------------------------------------------------------------- sources

    def _add_sources(self, run: _Run, options: Options) -> None:
        if run.plan.manifest is not None:
            for peer in run.plan.peers:
                run.planner.add_source(
                    Source(peer.agent_id, SourceKind.PEER, options.peer_connections, peer.bitmap)
                )
                run.sources[peer.agent_id] = peer
        if run.plan.origin is not None:
            connections = options.origin_connections if run.plan.origin.accepts_ranges else 1
            run.planner.add_source(Source(ORIGIN_ID, SourceKind.ORIGIN, connections))
            run.sources[ORIGIN_ID] = run.plan.origin

    # ----------------------------------------------------------------- the loop

    def _loop(self, run: _Run, options: Options, ctl: Path, identity: dict[str, Any], started: float) -> None:
        planner = run.planner
        running: dict[Future[_Result], Assignment] = {}
        last_checkpoint = self._clock()
        with ThreadPoolExecutor(max_workers=options.connections, thread_name_prefix="fetch") as pool:
            try:
                while not planner.finished:
                    if self._cancelled.is_set():
                        raise DownloadError("the download was cancelled; run it again to resume")
                    now = self._clock()
                    for assignment in planner.assign(now):
                        running[pool.submit(self._fetch, run, assignment)] = assignment
                    if not running:
                        planner.check_stuck()
                        deadline = planner.next_deadline(now)
                        if deadline is None:
                            raise DownloadError("the download stalled with no piece to fetch")
                        time.sleep(max(0.0, min(deadline - now, 1.0)))
                        continue
                    deadline = planner.next_deadline(now)
                    timeout = 0.5 if deadline is None else min(0.5, max(0.01, deadline - now))
                    finished, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
                    for future in finished:
                        del running[future]
                        self._settle(run, future.result())
                    if self._clock() - last_checkpoint >= options.checkpoint_every:
                        self._checkpoint(run, ctl, identity)
                        last_checkpoint = self._clock()
                    self._report_progress(run, running.values(), started)
            except NoSourceLeft as exc:
                self._checkpoint(run, ctl, identity)
                raise DownloadError(_explain_stuck(exc, run)) from None
            except BaseException:
                for future in running:
                    future.cancel()
                self._checkpoint(run, ctl, identity)
                raise
        self._report_progress(run, (), started)

    def _fetch(self, run: _Run, a: Assignment) -> _Result:
        """Runs in a worker thread: fetch one piece, verify it, write it in place."""
        start = a.piece * run.piece_size
        end = start + run.sizes[a.piece] - 1
        view = self._buffer(run.piece_size)[: run.sizes[a.piece]]
        source = run.sources[a.source]
        try:
            if isinstance(source, Peer):
                manifest = run.plan.manifest
                assert manifest is not None
                self._fetcher.fetch_peer(source.base_url, manifest.sha256, start, end, view)
            else:
                self._fetcher.fetch_origin(source, start, end, view)
        except SourceBusy as exc:
            return _Result(a, Failure.BUSY, retry_after=exc.retry_after, error=exc)
        except (SourceMissing, SourceUnauthorized) as exc:
            return _Result(a, Failure.MISSING, error=exc)
        except SourceUnreachable as exc:
            return _Result(a, Failure.UNREACHABLE, error=exc)
        except (ValidatorChanged, RangeNotSupported) as exc:
            return _Result(a, fatal=exc)
        except FetchError as exc:
            return _Result(a, Failure.FAILED, error=exc)
        digest = hashlib.sha256(view).digest()
        manifest = run.plan.manifest
        if manifest is not None and digest != manifest.piece_hash(a.piece):
            return _Result(a, Failure.CORRUPT, digest=digest)
        os.pwrite(run.fd, view, start)
        return _Result(a, digest=digest)

    def _buffer(self, size: int) -> memoryview:
        """This worker thread's piece buffer. A piece is written to the file only once it
        is verified, so that a late, bad copy can never overwrite a good one."""
        buffer: bytearray | None = getattr(self._buffers, "buffer", None)
        if buffer is None or len(buffer) < size:
            buffer = bytearray(size)
            self._buffers.buffer = buffer
        return memoryview(buffer)

    def _settle(self, run: _Run, result: _Result) -> None:
        a = result.assignment
        now = self._clock()
        if result.fatal is not None:
            raise result.fatal
        if result.failure is None:
            if a.piece not in run.done:
                run.done.add(a.piece)
                run.done_bytes += run.sizes[a.piece]
            run.piece_hashes.setdefault(a.piece, result.digest)
            run.planner.done(a.id, now)
            # The file's digest follows the run of verified pieces from the start, so that
            # little is left to read back once the last piece lands.
            while run.frontier < len(run.sizes) and run.frontier in run.done:
                run.frontier += 1
            run.whole.advance(min(run.frontier * run.piece_size, run.plan.size))
            return
        outcome = run.planner.failed(a.id, now, result.failure, result.retry_after)
        if result.failure is Failure.CORRUPT:
            manifest = run.plan.manifest
            assert manifest is not None
            log.warning(
                "%s sent piece %d of %s with a wrong hash; not using it again",
                a.source,
                a.piece,
                manifest.sha256[:12],
            )
            if self._report_bad is not None and a.source not in run.reported:
                run.reported.add(a.source)
                self._report_bad(a.source, manifest.sha256, a.piece, "piece hash mismatch")
        elif outcome.dropped:
            why = result.error or result.failure.value
            log.warning("stopped using %s: %s", a.source, why)
        elif result.error is not None:
            log.debug("piece %d from %s: %s", a.piece, a.source, result.error)

    def _stream(self, run: _Run, origin: OriginInfo, started: float) -> None:
        """One GET of the whole file from an origin that ignores Range: written in order,
        each piece hashed (and checked, when its digest is known) as it completes."""
        run.done.clear()
        run.done_bytes = 0
        run.piece_hashes.clear()
        pieces = _InOrderPieces(run)

        def sink(chunk: memoryview) -> None:
            if self._cancelled.is_set():
                raise DownloadError("the download was cancelled")
            if pieces.write(chunk):
                self._report_progress(run, (), started)

        run.streamed = self._fetcher.fetch_origin_stream(origin, 0, sink)
        if len(run.done) != len(run.sizes):
            raise DownloadError(f"{origin.url} ended after {pieces.offset} of {run.plan.size} bytes")

    def _checkpoint(self, run: _Run, ctl: Path, identity: dict[str, Any]) -> None:
        os.fdatasync(run.fd)
        done = frozenset(run.done)
        hashes = {} if run.plan.manifest else {i: d.hex() for i, d in run.piece_hashes.items()}
        control.save(ctl, control.ControlState(identity, run.plan.size, run.piece_size, done, hashes))

    def _report_progress(self, run: _Run, running: Any, started: float) -> None:
        if self._on_progress is None:
            return
        flights = list(running)
        self._on_progress(
            Progress(
                size=run.plan.size,
                done_bytes=run.done_bytes,
                peers_active=len({a.source for a in flights if a.source != ORIGIN_ID}),
                origin_active=any(a.source == ORIGIN_ID for a in flights),
                elapsed=self._clock() - started,
            )
        )

    # ----------------------------------------------------------------- the end

    def _verify_whole(self, run: _Run) -> Manifest:
        run.whole.advance(run.plan.size)
        digest = run.whole.hexdigest()
        manifest = run.plan.manifest
        if manifest is None:
            hashes = b"".join(run.piece_hashes[i] for i in range(len(run.sizes)))
            manifest = Manifest(digest, run.plan.size, run.piece_size, hashes)
        expected = run.plan.expected_sha256 or (run.plan.manifest.sha256 if run.plan.manifest else None)
        if expected is not None and digest != expected:
            raise DigestMismatch(run.plan.output, expected, digest)
        return manifest


class _FileDigest:
    """The SHA-256 of the part file's first bytes, extended by reading the file back."""

    def __init__(self, fd: int, output: Path) -> None:
        self._fd = fd
        self._output = output
        self._hash = hashlib.sha256()
        self._offset = 0
        self._view = memoryview(bytearray(HASH_BLOCK))

    def advance(self, upto: int) -> None:
        while self._offset < upto:
            n = os.preadv(self._fd, [self._view[: min(HASH_BLOCK, upto - self._offset)]], self._offset)
            if n <= 0:
                raise DownloadError(f"{self._output}.part is shorter than expected")
            self._hash.update(self._view[:n])
            self._offset += n

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class _InOrderPieces:
    """Writes a stream that starts at byte 0 into the part file, and hashes it piece by piece."""

    def __init__(self, run: _Run) -> None:
        self._run = run
        self.offset = 0
        self._piece = 0
        self._hasher = hashlib.sha256()

    def write(self, chunk: memoryview) -> bool:
        """Returns True when a piece was completed."""
        run = self._run
        os.pwrite(run.fd, chunk, self.offset)
        completed = False
        while chunk:
            piece_end = min((self._piece + 1) * run.piece_size, run.plan.size)
            take = min(len(chunk), piece_end - self.offset)
            self._hasher.update(chunk[:take])
            chunk = chunk[take:]
            self.offset += take
            if self.offset == piece_end:
                digest = self._hasher.digest()
                manifest = run.plan.manifest
                if manifest is not None and digest != manifest.piece_hash(self._piece):
                    raise DownloadError(f"the origin sent piece {self._piece} with a wrong hash")
                run.piece_hashes[self._piece] = digest
                run.done.add(self._piece)
                run.done_bytes += run.sizes[self._piece]
                self._piece += 1
                self._hasher = hashlib.sha256()
                completed = True
        return completed


def _with_stream(by_source: dict[str, int], streamed: int) -> dict[str, int]:
    if streamed:
        by_source[ORIGIN_ID] = by_source.get(ORIGIN_ID, 0) + streamed
    return by_source


def _piece_sizes(size: int, piece_size: int) -> list[int]:
    count = piece_count(size, piece_size)
    return [min(piece_size, size - i * piece_size) for i in range(count)]


def _identity(plan: Plan) -> dict[str, Any]:
    if plan.manifest is not None:
        return {"sha256": plan.manifest.sha256}
    assert plan.origin is not None
    validator = plan.origin.validator
    return {
        "url": plan.origin.url,
        "validator": validator.key if validator else None,
        "expected_sha256": plan.expected_sha256,
    }


def _preallocate(fd: int, size: int) -> None:
    if os.fstat(fd).st_size == size:
        return
    os.ftruncate(fd, size)
    if size:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            raise DownloadError(f"cannot reserve {size} bytes for the download: {exc.strerror}") from None


def _explain_stuck(exc: NoSourceLeft, run: _Run) -> str:
    dropped = run.planner.dropped()
    why = "; ".join(f"{source} {reason}" for source, reason in dropped.items())
    origin = "the origin is not used" if run.plan.origin is None else "the origin failed too"
    return f"{exc}: {why or 'no peer holds them'}, and {origin}"
