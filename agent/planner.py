"""The download planner: which piece to fetch from which source, and what to do when a
source is slow, busy, broken or lying.

It is pure bookkeeping. It opens no socket and starts no thread: the download loop asks it
for assignments, does the I/O, and feeds each outcome back as an event (done, failed). Time
comes in as an argument, so tests drive it with a fake clock.

Sources pull work: whenever a source has a free connection it gets the next piece, so fast
sources do more of the file (work stealing, not a fixed split). A piece in flight for much
longer than pieces usually take is "slow" and may be fetched again elsewhere; whichever
copy lands first wins. When no piece is left to start, the pieces still in flight are
duplicated (end-game), so one slow source cannot hold up the finish.

In a swarm the picture moves while the download runs: peers appear and their bitmaps grow
(`update_source`), piece hashes arrive from the tracker (`learn_hash`; a peer's copy is
only fetched once it can be checked), and the seeds (the origin, and peers that hold every
piece) may be restricted to the pieces the tracker granted this machine (`restrict_seeds`),
so that each piece leaves the seeds about once and the machines still downloading pass it
on among themselves (BitTorrent's super-seeding, with the tracker handing out the pieces).
"""

from __future__ import annotations

import dataclasses
import enum
import random
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from tracker.model import bitmap_has, bitmap_of


class SourceKind(enum.Enum):
    PEER = "peer"
    ORIGIN = "origin"


@dataclass(frozen=True, slots=True)
class Source:
    """A place bytes can come from: a peer (with the pieces in `bitmap`, or all when it is
    None) or the origin (all pieces)."""

    id: str
    kind: SourceKind
    connections: int
    bitmap: bytes | None = None

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ValueError("a source needs at least one connection")
        if self.kind is SourceKind.ORIGIN and self.bitmap is not None:
            raise ValueError("the origin has every piece")

    def has(self, piece: int) -> bool:
        return self.bitmap is None or bitmap_has(self.bitmap, piece)


class Failure(enum.Enum):
    BUSY = "busy"  # 503: try again after its Retry-After.
    UNREACHABLE = "unreachable"  # Connection refused, reset or timed out.
    FAILED = "failed"  # Any other error answer.
    MISSING = "missing"  # 404: it does not hold the content (any more).
    NOT_HELD = "not-held"  # A partial holder lacks the piece after all: ask elsewhere.
    CORRUPT = "corrupt"  # The bytes failed their hash: never use it again.


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """How many more failures a source may have, and how long to wait after the next one.
    Immutable: `spend()` returns the budget left after one more failure, or None."""

    attempts: int = 4
    delay: float = 0.5
    max_delay: float = 8.0

    def spend(self) -> RetryBudget | None:
        if self.attempts <= 1:
            return None
        return RetryBudget(self.attempts - 1, min(self.delay * 2, self.max_delay), self.max_delay)


@dataclass(frozen=True, slots=True)
class Assignment:
    id: int
    source: str
    piece: int
    duplicate: bool


class Policy(enum.Enum):
    # Peers first; the origin only for pieces no usable peer holds, and for pieces that
    # are slow everywhere else, so the origin serves as few bytes as possible.
    PEERS_FIRST = "peers-first"
    # Every source alike, the origin included: the fastest finish, at the origin's expense.
    FASTEST = "fastest"


POLICY_NAMES = tuple(p.value for p in Policy)


@dataclass(slots=True)
class _SourceState:
    source: Source
    budget: RetryBudget
    active: int = 0
    # Connections it may have now: cut to what it was serving when it said it was busy,
    # grown back by one with each piece it gives.
    limit: int = 0
    not_before: float = 0.0
    dropped: str | None = None
    bytes: int = 0
    pieces_done: int = 0
    # Seconds per byte over its recent pieces, for ordering sources fastest first.
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=8))

    @property
    def usable(self) -> bool:
        return self.dropped is None

    def seconds_per_byte(self) -> float:
        return statistics.fmean(self.recent) if self.recent else 0.0


@dataclass(slots=True)
class _Flight:
    assignment: Assignment
    started: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a `done` or `failed` event changed."""

    # Other fetches of the same piece still running: their result no longer matters.
    superseded: tuple[int, ...] = ()
    # Set when the event dropped its source for good.
    dropped: str | None = None


class NoSourceLeft(Exception):
    def __init__(self, pieces: list[int]) -> None:
        shown = ", ".join(str(p) for p in pieces[:10]) + (" ..." if len(pieces) > 10 else "")
        super().__init__(f"no source left for {len(pieces)} pieces ({shown})")
        self.pieces = pieces


class Planner:
    def __init__(
        self,
        piece_sizes: list[int],
        *,
        connections: int,
        policy: Policy = Policy.PEERS_FIRST,
        have: Iterable[int] = (),
        rng: random.Random | None = None,
        slow_factor: float = 4.0,
        min_slow_seconds: float = 2.0,
        max_copies: int = 2,
        budget: RetryBudget = RetryBudget(),
        hashes_known: bool = True,
    ) -> None:
        if connections < 1:
            raise ValueError("at least one connection")
        self._sizes = piece_sizes
        self._done = [False] * len(piece_sizes)
        for piece in have:
            self._done[piece] = True
        self._left = self._done.count(False)
        self._connections = connections
        self._policy = policy
        self._rng = rng or random.Random()
        self._slow_factor = slow_factor
        self._min_slow = min_slow_seconds
        self._max_copies = max_copies
        self._budget = budget
        self._sources: dict[str, _SourceState] = {}
        self._flights: dict[int, _Flight] = {}
        self._by_piece: dict[int, set[int]] = {}
        self._availability = [0] * len(piece_sizes)
        # Whether each piece's hash is known, so that a copy from a peer can be checked.
        self._verifiable = [hashes_known] * len(piece_sizes)
        # Usable peers that hold every piece.
        self._complete_peers = 0
        # The pieces the seeds may give; None for all of them.
        self._seed_allowed: set[int] | None = None
        # Whether the limit above leaves peers with every piece alone.
        self._origin_only = False
        # Connections to each seed, when fewer than their own.
        self._seed_connections: int | None = None
        self._durations: deque[float] = deque(maxlen=32)
        self._next_id = 0
        self.refetched = 0

    # ----------------------------------------------------------------- sources

    def add_source(self, source: Source) -> None:
        if source.id in self._sources:
            raise ValueError(f"source {source.id} already added")
        self._sources[source.id] = _SourceState(source, self._budget, limit=source.connections)
        self._count(source, +1)

    def update_source(self, source_id: str, bitmap: bytes | None) -> None:
        """A peer's pieces changed (None: it holds them all now)."""
        state = self._sources[source_id]
        old = state.source
        if old.bitmap == bitmap:
            return
        new = dataclasses.replace(old, bitmap=bitmap)
        if state.usable:
            changed = _bits(old.bitmap, len(self._sizes)) ^ _bits(bitmap, len(self._sizes))
            for piece in _indices(changed, len(self._sizes)):
                self._availability[piece] += 1 if new.has(piece) else -1
            self._complete_peers += (bitmap is None) - (old.bitmap is None)
        state.source = new

    def unavailable(self, pieces: Iterable[int]) -> set[int]:
        """Those of `pieces` not verified here that no usable peer has."""
        return {p for p in pieces if not self._done[p] and self._availability[p] == 0}

    def learn_hash(self, piece: int) -> None:
        self._verifiable[piece] = True

    def restrict_seeds(self, allowed: Iterable[int] | None, *, origin_only: bool = False) -> None:
        """Limits the seeds (the origin, and peers with every piece; with `origin_only`,
        the origin alone) to `allowed` pieces; None lifts the limit. Restricted seeds are
        never sent duplicates: another machine may be fetching the same piece from them."""
        self._seed_allowed = None if allowed is None else set(allowed)
        self._origin_only = origin_only

    def _gated(self, source: Source) -> bool:
        if self._seed_allowed is None or not self._is_seed(source):
            return False
        return source.kind is SourceKind.ORIGIN or not self._origin_only

    def limit_seed_connections(self, connections: int | None) -> None:
        """At most `connections` to each seed (None: each its own). With other machines
        fetching from the same seeds, one connection each makes their pieces arrive one
        after the other, each passed on while the next comes, instead of all at the end."""
        self._seed_connections = connections

    def _limit(self, state: _SourceState) -> int:
        if self._seed_connections is not None and self._is_seed(state.source):
            return min(state.limit, self._seed_connections)
        return state.limit

    def seed_rate(self) -> float | None:
        """What the seeds gave lately, in bytes per second over all their connections;
        None before any piece came from one."""
        rates = [
            self._limit(s) / s.seconds_per_byte()
            for s in self._sources.values()
            if s.usable and self._is_seed(s.source) and s.recent
        ]
        return sum(rates) if rates else None

    def trim_seed_queue(self, keep: int) -> None:
        """Keeps, of the allowed seed pieces not started yet, only the `keep` lowest: the
        rest go back to the tracker for other machines to fetch."""
        if self._seed_allowed is None:
            return
        waiting = sorted(p for p in self._seed_allowed if not self._done[p] and p not in self._by_piece)
        self._seed_allowed.difference_update(waiting[keep:])

    def seed_pending(self) -> set[int]:
        """The allowed seed pieces not verified yet (in flight or still to start)."""
        if self._seed_allowed is None:
            return set()
        return {p for p in self._seed_allowed if not self._done[p]}

    def seed_wanted(self, queue: int) -> int:
        """How many more seed pieces would be useful, keeping up to `queue` pending:
        pieces no peer still downloading has, nobody here fetches, not allowed yet."""
        if self._seed_allowed is None or not any(
            s.usable and self._is_seed(s.source) for s in self._sources.values()
        ):
            return 0
        room = queue - len(self.seed_pending())
        if room <= 0:
            return 0
        needy = 0
        for piece, done in enumerate(self._done):
            if done or piece in self._by_piece or piece in self._seed_allowed:
                continue
            if self._availability[piece] == self._complete_peers:
                needy += 1
                if needy >= room:
                    break
        return needy

    @staticmethod
    def _is_seed(source: Source) -> bool:
        return source.bitmap is None

    def _count(self, source: Source, step: int) -> None:
        if source.kind is not SourceKind.PEER:
            return
        if source.bitmap is None:
            self._complete_peers += step
        for piece in _indices(_bits(source.bitmap, len(self._sizes)), len(self._sizes)):
            self._availability[piece] += step

    def _drop(self, state: _SourceState, why: str) -> None:
        if state.dropped is None:
            state.dropped = why
            self._count(state.source, -1)

    @property
    def finished(self) -> bool:
        return self._left == 0

    def pieces_left(self) -> int:
        return self._left

    def pieces_done(self) -> int:
        return len(self._sizes) - self._left

    def bytes_by_kind(self) -> dict[SourceKind, int]:
        totals = dict.fromkeys(SourceKind, 0)
        for state in self._sources.values():
            totals[state.source.kind] += state.bytes
        return totals

    def bytes_by_source(self) -> dict[str, int]:
        return {s.source.id: s.bytes for s in self._sources.values() if s.bytes}

    def pieces_from(self, source_id: str) -> int:
        return self._sources[source_id].pieces_done

    def sources_used(self) -> list[str]:
        return [s.source.id for s in self._sources.values() if s.pieces_done]

    def dropped(self) -> dict[str, str]:
        return {s.source.id: s.dropped for s in self._sources.values() if s.dropped is not None}

    # ----------------------------------------------------------------- planning

    def assign(self, now: float) -> list[Assignment]:
        """Fills free connections, fastest sources first, one piece per source per round."""
        made: list[Assignment] = []
        ready = [
            s
            for s in self._sources.values()
            if s.usable and s.not_before <= now and s.active < self._limit(s)
        ]
        ready.sort(key=lambda s: (s.source.kind is SourceKind.ORIGIN, s.seconds_per_byte()))
        progress = True
        while progress and len(self._flights) < self._connections:
            progress = False
            for state in ready:
                if len(self._flights) >= self._connections:
                    break
                if state.active >= self._limit(state):
                    continue
                assignment = self._pick(state, now)
                if assignment is not None:
                    made.append(assignment)
                    progress = True
        return made

    def _pick(self, state: _SourceState, now: float) -> Assignment | None:
        piece = self._fresh_piece(state)
        duplicate = False
        if piece is None:
            piece = self._duplicate_piece(state, now)
            duplicate = piece is not None
        if piece is None:
            return None
        assignment = Assignment(self._next_id, state.source.id, piece, duplicate)
        self._next_id += 1
        self._flights[assignment.id] = _Flight(assignment, now)
        self._by_piece.setdefault(piece, set()).add(assignment.id)
        state.active += 1
        return assignment

    def _fresh_piece(self, state: _SourceState) -> int | None:
        """A piece nobody is fetching: rarest first among peers (random among equals); in
        index order from the origin, which then reads the file front to back."""
        source = state.source
        if self._gated(source):
            return self._fresh_seed_piece(source)
        if source.kind is SourceKind.ORIGIN:
            return self._fresh_origin_piece()
        best: list[int] = []
        best_rarity = 0
        for piece, done in enumerate(self._done):
            if done or piece in self._by_piece or not self._verifiable[piece] or not source.has(piece):
                continue
            rarity = self._availability[piece]
            if not best or rarity < best_rarity:
                best, best_rarity = [piece], rarity
            elif rarity == best_rarity:
                best.append(piece)
        return self._rng.choice(best) if best else None

    def _fresh_origin_piece(self) -> int | None:
        for piece, done in enumerate(self._done):
            if done or piece in self._by_piece:
                continue
            if self._policy is Policy.PEERS_FIRST and self._availability[piece] > 0:
                continue
            return piece
        return None

    def _fresh_seed_piece(self, source: Source) -> int | None:
        """A granted piece, lowest first; under peers-first, not one a peer still
        downloading has (it is fetched from that peer), and from the origin not one a
        complete peer has."""
        assert self._seed_allowed is not None
        origin = source.kind is SourceKind.ORIGIN
        for piece in sorted(self._seed_allowed):
            if self._done[piece] or piece in self._by_piece:
                continue
            if not origin and not self._verifiable[piece]:
                continue
            if self._policy is Policy.PEERS_FIRST:
                others = (
                    self._availability[piece] if origin else self._availability[piece] - self._complete_peers
                )
                if others > 0:
                    continue
            return piece
        return None

    def _duplicate_piece(self, state: _SourceState, now: float) -> int | None:
        """End-game: a piece in flight elsewhere for longer than pieces usually take, the
        longest-running first. Under peers-first the origin only takes a piece that is
        slow where it is."""
        source = state.source
        if self._gated(source):
            return None
        slow_after = self.slow_after()
        overdue_after = max(self.typical_duration(), self._min_slow / 2)
        candidates = []
        for piece, flight_ids in self._by_piece.items():
            if len(flight_ids) >= self._max_copies or not source.has(piece):
                continue
            if source.kind is SourceKind.PEER and not self._verifiable[piece]:
                continue
            flights = [self._flights[i] for i in flight_ids]
            if any(f.assignment.source == source.id for f in flights):
                continue
            started = min(f.started for f in flights)
            if source.kind is SourceKind.ORIGIN and self._policy is Policy.PEERS_FIRST:
                if now - started <= slow_after:
                    continue
            elif now - started <= overdue_after:
                continue
            candidates.append((started, piece))
        return min(candidates)[1] if candidates else None

    def slow_after(self) -> float:
        """How long a piece may be in flight before it counts as slow."""
        if not self._durations:
            return self._min_slow
        return max(self._min_slow, self._slow_factor * self.typical_duration())

    def typical_duration(self) -> float:
        """The median time pieces took so far (zero before any)."""
        return statistics.median(self._durations) if self._durations else 0.0

    def next_deadline(self, now: float) -> float | None:
        """When planning may change without any event: a back-off ends, or a piece turns
        slow. None when nothing is pending."""
        times = [s.not_before for s in self._sources.values() if s.usable and s.not_before > now]
        if self._flights:
            soonest = min(self.slow_after(), max(self.typical_duration(), self._min_slow / 2))
            times.append(min(f.started for f in self._flights.values()) + soonest)
        return min(times) if times else None

    def check_stuck(self, *, more_may_come: bool = False) -> None:
        """Raises NoSourceLeft when pieces remain that no usable source can ever give.
        With `more_may_come` (a swarm still at work), pieces nobody has yet are awaited."""
        if self._flights or self.finished or more_may_come:
            return
        usable = [s.source for s in self._sources.values() if s.usable]
        orphans = [
            piece
            for piece, done in enumerate(self._done)
            if not done
            and not any(
                source.has(piece) and (source.kind is SourceKind.ORIGIN or self._verifiable[piece])
                for source in usable
            )
        ]
        if orphans:
            raise NoSourceLeft(orphans)

    # ----------------------------------------------------------------- events

    def done(self, assignment_id: int, now: float) -> Outcome:
        flight = self._end(assignment_id)
        a = flight.assignment
        state = self._sources[a.source]
        size = self._sizes[a.piece]
        state.bytes += size
        state.pieces_done += 1
        state.budget = self._budget
        state.limit = min(state.limit + 1, state.source.connections)
        duration = max(now - flight.started, 1e-6)
        state.recent.append(duration / max(size, 1))
        if self._done[a.piece]:
            return Outcome()  # Another copy landed first.
        self._durations.append(duration)
        self._done[a.piece] = True
        self._left -= 1
        return Outcome(superseded=tuple(self._by_piece.pop(a.piece, ())))

    def failed(self, assignment_id: int, now: float, failure: Failure, retry_after: float = 1.0) -> Outcome:
        flight = self._end(assignment_id)
        state = self._sources[flight.assignment.source]
        if failure is Failure.CORRUPT:
            self.refetched += 1
            self._drop(state, "sent bytes that failed their hash")
        elif failure is Failure.MISSING:
            self._drop(state, "does not hold the content")
        elif failure is Failure.BUSY:
            # Busy with the other connections it serves us: use those; busy with none: wait.
            state.limit = max(1, state.active)
            if state.active == 0:
                state.not_before = now + retry_after
        elif failure is Failure.NOT_HELD:
            self._forget_piece(state, flight.assignment.piece)
        else:
            budget = state.budget.spend()
            if budget is None:
                self._drop(state, f"{failure.value} too often")
            else:
                state.budget = budget
                state.not_before = now + state.budget.delay
        return Outcome(dropped=state.source.id if state.dropped else None)

    def _forget_piece(self, state: _SourceState, piece: int) -> None:
        source = state.source
        if not source.has(piece) or source.kind is SourceKind.ORIGIN:
            return
        count = len(self._sizes)
        self.update_source(
            source.id, bitmap_of((p for p in range(count) if p != piece and source.has(p)), count)
        )

    def _end(self, assignment_id: int) -> _Flight:
        flight = self._flights.pop(assignment_id)
        piece = flight.assignment.piece
        ids = self._by_piece.get(piece)
        if ids is not None:
            ids.discard(assignment_id)
            if not ids:
                del self._by_piece[piece]
        self._sources[flight.assignment.source].active -= 1
        return flight


def _bits(bitmap: bytes | None, count: int) -> int:
    """A bitmap as an int with piece 0 as the most significant of `count` bits."""
    if bitmap is None:
        return (1 << count) - 1
    return int.from_bytes(bitmap, "big") >> (len(bitmap) * 8 - count) if bitmap else 0


def _indices(bits: int, count: int) -> Iterable[int]:
    while bits:
        low = bits & -bits
        yield count - low.bit_length()
        bits ^= low
