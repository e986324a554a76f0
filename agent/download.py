"""A download: the planner decides, worker threads fetch and verify, this loop feeds the
outcomes back, writes checkpoints, and puts the finished file in place.

The file is preallocated as `PATH.part` and written with positional writes from the
workers (no shared file position, no lock around I/O). Every piece is checked against its
SHA-256 before it counts, and the whole file against its digest before it appears at PATH,
with an atomic rename. A control file beside the part file records the verified pieces,
so a download killed at any moment resumes from its last checkpoint.

In a swarm, the loop also takes the tracker's answers from the swarm session (new peers,
their pieces, piece hashes, the origin pieces granted to this machine) and offers each
verified piece to peers at once through `Sharing` (the daemon's range server).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent import control
from agent.errors import (
    AgentError,
    FetchError,
    PieceNotHeld,
    RangeNotSupported,
    SourceBusy,
    SourceMissing,
    SourceUnauthorized,
    SourceUnreachable,
    ValidatorChanged,
)
from agent.fetch import HttpFetcher, OriginInfo
from agent.job import Progress, Summary
from agent.planner import Assignment, Failure, NoSourceLeft, Planner, Policy, Source, SourceKind
from agent.swarm import SwarmAccess, SwarmSession
from agent.traffic import Traffic
from tracker.model import (
    SWARM_MEMBERS_SHOWN,
    Manifest,
    SwarmView,
    bitmap_len,
    bitmap_pieces,
    piece_count,
    piece_size_for,
)

log = logging.getLogger(__name__)

ORIGIN_ID = "origin"
# How often the loop looks for the swarm's answers when nothing else wakes it.
SWARM_POLL = 0.1
# Connections to each seed while other members fetch from the seeds too, and seed pieces
# granted ahead of them.
SWARM_SEED_CONNECTIONS = 1
SWARM_SEED_QUEUE = 2
# With this few pieces left, a member asks peers holding the whole file without a grant.
SWARM_ENDGAME_PIECES = 8
# Connections to each member of a swarm: with every member asking every other for the
# last pieces at once, more would run into their upload caps (503) at the very end.
SWARM_PEER_CONNECTIONS = 2
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
    bitmap: bytes | None
    # What it serves the content as: the content's digest, or the swarm id.
    blob_id: str


class Sharing(Protocol):
    """Where a download offers its verified pieces to peers while it runs."""

    def offer(
        self, ids: tuple[str, ...], part: Path, size: int, piece_size: int, have: frozenset[int]
    ) -> None:
        """The part file is ready; `have` are its pieces verified so far."""

    def verified(self, piece: int) -> None:
        """One more piece is verified and written."""


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
    # The swarm of machines fetching the same content now, when there is one to join.
    swarm_id: str | None = None

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
    # In a swarm, seed pieces to keep granted ahead: one per origin connection, or what
    # the seeds give in this many seconds when that is more.
    seed_lead_seconds: float = 1.5


@dataclass(slots=True)
class _Result:
    assignment: Assignment
    failure: Failure | None = None
    retry_after: float = 1.0
    error: FetchError | None = None
    digest: bytes = b""
    fatal: BaseException | None = None
    # The peer's bitmap, when its answer carried one.
    bitmap: bytes | None = None


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
    # Piece digests learned from the swarm, to check copies from peers against.
    swarm_hashes: dict[int, bytes] = field(default_factory=dict)
    swarm: SwarmSession | None = None
    # The peers met through the swarm (the others came from the tracker's Locate).
    swarm_peers: set[str] = field(default_factory=set)
    sharing: Sharing | None = None
    reported: set[str] = field(default_factory=set)
    done_bytes: int = 0
    # Bytes fetched from the origin as one stream, outside the planner.
    streamed: int = 0
    # The first piece not yet verified: every piece before it is in the file digest.
    frontier: int = 0
    # Set when the swarm could not be used and the download went on alone.
    alone: bool = False
    # Whether the swarm's last answer listed members still downloading.
    others_downloading: bool = True
    whole: _FileDigest = field(init=False)

    def __post_init__(self) -> None:
        self.whole = _FileDigest(self.fd, self.plan.output)
        self.done_bytes = sum(self.sizes[i] for i in self.done)

    def expected_hash(self, piece: int) -> bytes | None:
        if self.plan.manifest is not None:
            return self.plan.manifest.piece_hash(piece)
        return self.swarm_hashes.get(piece)

    @property
    def swarming(self) -> bool:
        return self.swarm is not None and self.swarm.failed is None


class Downloader:
    def __init__(
        self,
        fetcher: HttpFetcher,
        *,
        report_bad: Callable[[str, str, int, str], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        cancelled: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        swarm: SwarmAccess | None = None,
        sharing: Sharing | None = None,
        traffic: Traffic | None = None,
    ) -> None:
        self._fetcher = fetcher
        self._swarm = swarm
        self._sharing = sharing
        self._traffic = traffic
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
            planner = Planner(
                sizes,
                connections=connections,
                policy=options.policy,
                have=have,
                hashes_known=plan.manifest is not None,
            )
            run = _Run(plan, piece_size, sizes, fd, planner, {}, done=set(have), piece_hashes=dict(hashes))
            self._add_sources(run, options)
            resumed_bytes = sum(sizes[i] for i in have)
            origin = plan.origin
            peers_usable = plan.manifest is not None and plan.peers
            try:
                if origin is not None and not origin.accepts_ranges and not peers_usable:
                    self._stream(run, origin, started)
                else:
                    self._share(run, part, options)
                    try:
                        self._loop(run, options, ctl, identity, started)
                    except RangeNotSupported as exc:
                        if origin is None:
                            raise
                        log.warning("%s; fetching it as one stream", exc)
                        self._stream(run, origin, started)
                os.fsync(fd)
                manifest = self._verify_whole(run)
            except BaseException:
                if run.swarm is not None:
                    run.swarm.close(complete=False)
                raise
        finally:
            os.close(fd)
        os.replace(part, plan.output)
        control.remove(ctl)
        if run.swarm is not None:
            run.swarm.close(complete=True)
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
                self._add_peer(run, peer, options.peer_connections)
        if run.plan.origin is not None:
            connections = options.origin_connections if run.plan.origin.accepts_ranges else 1
            run.planner.add_source(Source(ORIGIN_ID, SourceKind.ORIGIN, connections))
            run.sources[ORIGIN_ID] = run.plan.origin

    def _add_peer(self, run: _Run, peer: Peer, connections: int) -> None:
        run.planner.add_source(Source(peer.agent_id, SourceKind.PEER, connections, peer.bitmap))
        run.sources[peer.agent_id] = peer

    # ----------------------------------------------------------------- the swarm

    def _share(self, run: _Run, part: Path, options: Options) -> None:
        """Offers the verified pieces to peers, and joins the swarm."""
        plan = run.plan
        manifest = plan.manifest
        ids = tuple(dict.fromkeys(i for i in (plan.swarm_id, manifest and manifest.sha256) if i))
        if self._sharing is not None and ids:
            self._sharing.offer(ids, part, plan.size, run.piece_size, frozenset(run.done))
            run.sharing = self._sharing
        if self._swarm is None or plan.swarm_id is None:
            return
        verified = {
            piece: run.piece_hashes.get(piece) or run.expected_hash(piece) or b"" for piece in run.done
        }
        if self._swarm.member:
            # Until the tracker grants pieces, the seeds (the origin, peers with every
            # piece) wait: other members may be fetching any piece from them.
            run.planner.restrict_seeds(())
        run.swarm = self._swarm.join(
            plan.swarm_id,
            plan.size,
            run.piece_size,
            verified,
            hashes_known=manifest is not None,
            want_seed=run.planner.seed_wanted(_seed_queue(run, options)),
        )

    def _follow_swarm(self, run: _Run, options: Options) -> None:
        swarm = run.swarm
        assert swarm is not None
        if swarm.failed is not None:
            if not run.alone:
                run.alone = True
                run.planner.restrict_seeds(None)
            return
        for view in swarm.take():
            self._apply_view(run, view, options)
        if self._swarm is not None and self._swarm.member:
            swarm.want(run.planner.seed_pending(), run.planner.seed_wanted(_seed_queue(run, options)))

    def _apply_view(self, run: _Run, view: SwarmView, options: Options) -> None:
        plan = run.plan
        planner = run.planner
        if view.hash_conflicts:
            shown = ", ".join(str(p) for p in view.hash_conflicts[:5])
            raise DownloadError(
                f"pieces {shown} of {plan.output.name} from the origin differ from the copies other "
                "machines fetched: the origin changed the file without changing its validator; "
                "try again later"
            )
        if plan.manifest is None:
            for piece, digest in view.hashes.items():
                if piece not in run.swarm_hashes:
                    run.swarm_hashes[piece] = digest
                    planner.learn_hash(piece)
        assert plan.swarm_id is not None
        count = len(run.sizes)
        listed = set()
        for member in view.members:
            if member.have is not None and len(member.have) != bitmap_len(count):
                continue
            listed.add(member.agent_id)
            if member.agent_id in run.swarm_peers:
                planner.update_source(member.agent_id, member.have)
            elif member.agent_id not in run.sources:
                peer = Peer(member.agent_id, member.base_url, member.have, plan.swarm_id)
                self._add_peer(run, peer, SWARM_PEER_CONNECTIONS)
                run.swarm_peers.add(member.agent_id)
        if len(view.members) < SWARM_MEMBERS_SHOWN:
            # The whole swarm is listed: a member left out holds nothing any more.
            for agent_id in run.swarm_peers - listed:
                planner.update_source(agent_id, bytes(bitmap_len(count)))
        run.others_downloading = any(member.have is not None for member in view.members)
        claimed = _piece_set(view.seed_claimed, count)
        if self._swarm is not None and self._swarm.member:
            # The tracker grants no piece a member still downloading has; when that member
            # sent bad bytes or cannot be reached, nobody else gives it: fetch it anyway.
            held = set().union(*(_piece_set(m.have, count) for m in view.members))
            stranded = planner.unavailable(held) - claimed
            # At the very end everyone needs the same last pieces: peers holding the whole
            # file then serve them to all at once, not to one granted member after another.
            endgame = planner.pieces_left() <= SWARM_ENDGAME_PIECES
            allowed = planner.seed_pending() | set(view.seed_granted) | stranded
            planner.restrict_seeds(allowed, origin_only=endgame)
            if run.others_downloading:
                # A queue granted while this machine fetched alone would starve the others.
                planner.trim_seed_queue(SWARM_SEED_QUEUE)
                planner.limit_seed_connections(SWARM_SEED_CONNECTIONS)
            else:
                planner.limit_seed_connections(None)
        else:
            # Not a member: it takes no grants, and leaves to the members the origin
            # pieces they fetch; peers that hold the whole file serve it as usual.
            planner.restrict_seeds((p for p in range(count) if p not in claimed), origin_only=True)

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
                    if run.swarm is not None:
                        self._follow_swarm(run, options)
                    # In a swarm, answers from the tracker change the plan without any event here.
                    poll = SWARM_POLL if run.swarming else 1.0
                    now = self._clock()
                    for assignment in planner.assign(now):
                        running[pool.submit(self._fetch, run, assignment)] = assignment
                    if run.swarm is not None and run.swarming and len(running) < options.connections:
                        # Connections idle for want of known pieces: ask the swarm sooner.
                        run.swarm.hurry()
                    if not running:
                        planner.check_stuck(more_may_come=run.swarming and run.others_downloading)
                        deadline = planner.next_deadline(now)
                        if deadline is None and not run.swarming:
                            raise DownloadError("the download stalled with no piece to fetch")
                        time.sleep(max(0.0, min((deadline or now + poll) - now, poll)))
                        continue
                    deadline = planner.next_deadline(now)
                    timeout = (
                        min(0.5, poll) if deadline is None else min(0.5, poll, max(0.01, deadline - now))
                    )
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
        expected = run.expected_hash(a.piece)
        bitmap = None
        try:
            if isinstance(source, Peer):
                if expected is None:
                    return _Result(a, Failure.NOT_HELD)
                bitmap = self._fetcher.fetch_peer(source.base_url, source.blob_id, start, end, view)
            else:
                self._fetcher.fetch_origin(source, start, end, view)
        except PieceNotHeld as exc:
            return _Result(a, Failure.NOT_HELD, error=exc, bitmap=exc.bitmap)
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
        if expected is not None and digest != expected:
            if self._traffic is not None:
                self._traffic.hash_failed(_kind_of(source))
            if isinstance(source, Peer):
                return _Result(a, Failure.CORRUPT, digest=digest, bitmap=bitmap)
            # The swarm's hash came from another machine's copy from the origin.
            error = FetchError(
                a.source, f"the origin sent piece {a.piece} unlike the copy other machines got"
            )
            return _Result(a, Failure.FAILED, error=error)
        os.pwrite(run.fd, view, start)
        return _Result(a, digest=digest, bitmap=bitmap)

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
        if result.bitmap is not None and len(result.bitmap) == bitmap_len(len(run.sizes)):
            run.planner.update_source(a.source, result.bitmap)
        if result.failure is None:
            if self._traffic is not None:
                self._traffic.fetched(_kind_of(run.sources[a.source]), run.sizes[a.piece])
            if a.piece not in run.done:
                run.done.add(a.piece)
                run.done_bytes += run.sizes[a.piece]
                run.piece_hashes.setdefault(a.piece, result.digest)
                if run.sharing is not None:
                    run.sharing.verified(a.piece)
                if run.swarm is not None:
                    run.swarm.verified(a.piece, result.digest)
            run.planner.done(a.id, now)
            # The file's digest follows the run of verified pieces from the start, so that
            # little is left to read back once the last piece lands.
            while run.frontier < len(run.sizes) and run.frontier in run.done:
                run.frontier += 1
            run.whole.advance(min(run.frontier * run.piece_size, run.plan.size))
            return
        outcome = run.planner.failed(a.id, now, result.failure, result.retry_after)
        if result.failure is Failure.CORRUPT:
            peer = run.sources[a.source]
            assert isinstance(peer, Peer)
            if a.source in run.reported:
                return
            run.reported.add(a.source)
            log.warning(
                "%s sent piece %d of %s with a wrong hash; not using it again",
                a.source,
                a.piece,
                run.plan.output.name,
            )
            if self._report_bad is not None:
                self._report_bad(a.source, peer.blob_id, a.piece, "piece hash mismatch")
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
        pieces = _InOrderPieces(run, self._traffic)

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

    def __init__(self, run: _Run, traffic: Traffic | None) -> None:
        self._run = run
        self._traffic = traffic
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
                    if self._traffic is not None:
                        self._traffic.hash_failed(SourceKind.ORIGIN)
                    raise DownloadError(f"the origin sent piece {self._piece} with a wrong hash")
                if self._traffic is not None:
                    self._traffic.fetched(SourceKind.ORIGIN, run.sizes[self._piece])
                run.piece_hashes[self._piece] = digest
                run.done.add(self._piece)
                run.done_bytes += run.sizes[self._piece]
                self._piece += 1
                self._hasher = hashlib.sha256()
                completed = True
        return completed


def _kind_of(source: Peer | OriginInfo) -> SourceKind:
    return SourceKind.PEER if isinstance(source, Peer) else SourceKind.ORIGIN


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


def _seed_queue(run: _Run, options: Options) -> int:
    """How many seed pieces to keep granted ahead in a swarm. While others fetch from the
    seeds too, a few: pieces granted here are fetched from the seeds by nobody else, so
    a long queue at one machine would starve the others. Alone, what the seeds give in
    the lead time, so that a fast origin is not held back by the announce interval."""
    if run.others_downloading:
        return SWARM_SEED_CONNECTIONS + SWARM_SEED_QUEUE
    rate = run.planner.seed_rate()
    ahead = math.ceil(rate * options.seed_lead_seconds / run.piece_size) if rate else 0
    return max(options.origin_connections + 1, ahead)


def _piece_set(bitmap: bytes | None, count: int) -> set[int]:
    """The pieces set in `bitmap` (none for None: a complete member is a seed)."""
    if bitmap is None or len(bitmap) != bitmap_len(count):
        return set()
    return set(bitmap_pieces(bitmap))
