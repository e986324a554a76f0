"""A download's place in its swarm: the machines fetching the same content at the same time.

The session announces the download to the tracker about once a second, on a thread of its
own: the pieces verified so far, the hashes of pieces fetched from the origin that the
tracker does not know yet, the granted pieces it still fetches from the seeds (the origin,
peers with the whole file) and how many more it wants. The answers (other members and
their pieces, piece hashes, pieces granted) wait in the session until the download loop
takes them, so the loop never blocks on the tracker. When the tracker cannot be used for
the swarm, the session says so and the download goes on alone.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from tracker.client import TrackerClient
from tracker.errors import (
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    TrackerError,
    TrackerUnavailable,
)
from tracker.model import Announce, SourceRef, SwarmView, bitmap_has, bitmap_of, piece_count

log = logging.getLogger(__name__)

# With no answer for this long, the download stops waiting for the swarm's grants.
GIVE_UP_SECONDS = 5.0
FIRST_INTERVAL = 1.0
# News worth telling (a hash the tracker lacks) or hearing (the download has nothing to
# do) brings the next announce forward, but never closer than this to the last one.
MIN_SPACING = 0.5


def swarm_id_for(source: SourceRef) -> str:
    """The swarm of everyone fetching this URL at this validator: one SHA-256, which the
    members also serve the pieces under."""
    assert source.validator is not None
    digest = hashlib.sha256(b"lanpeer swarm v1\n")
    digest.update(source.url.encode())
    digest.update(b"\n")
    digest.update(source.validator.key.encode())
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class SwarmAccess:
    """How a download joins swarms: through this tracker, as this agent ("" when it can
    serve nothing and only looks)."""

    tracker: TrackerClient
    agent_id: str

    @property
    def member(self) -> bool:
        return bool(self.agent_id)

    def join(
        self,
        swarm_id: str,
        size: int,
        piece_size: int,
        verified: Mapping[int, bytes],
        *,
        hashes_known: bool,
        want_seed: int = 0,
    ) -> SwarmSession:
        """Starts announcing; the first announce already asks for `want_seed` pieces."""
        session = SwarmSession(
            self.tracker,
            agent_id=self.agent_id,
            swarm_id=swarm_id,
            size=size,
            piece_size=piece_size,
            verified=verified,
            hashes_known=hashes_known,
        )
        session.want((), want_seed)
        session.start()
        return session


class SwarmSession:
    def __init__(
        self,
        tracker: TrackerClient,
        *,
        agent_id: str,
        swarm_id: str,
        size: int,
        piece_size: int,
        verified: Mapping[int, bytes],
        hashes_known: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.swarm_id = swarm_id
        self._tracker = tracker
        self._agent_id = agent_id
        self._size = size
        self._piece_size = piece_size
        self._count = piece_count(size, piece_size)
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._urgent = False
        self._interval = FIRST_INTERVAL
        self._thread = threading.Thread(target=self._run, name=f"swarm-{swarm_id[:8]}", daemon=True)
        # Hashes of the pieces verified here.
        self._verified: dict[int, bytes] = dict(verified)
        # Pieces whose hash is known here, from the manifest, the origin or the tracker.
        self._known: set[int] = set(range(self._count)) if hashes_known else set(verified)
        self._tracker_known = b""
        self._claims: frozenset[int] = frozenset()
        self._want = 0
        self._answers: list[SwarmView] = []
        self._last_answer = clock()
        self._answered = False
        self.failed: str | None = None

    def start(self) -> None:
        self._thread.start()

    # ----------------------------------------------------------------- the download's side

    def verified(self, piece: int, digest: bytes) -> None:
        with self._lock:
            self._verified[piece] = digest
            self._known.add(piece)
            news = self._agent_id and not (self._tracker_known and bitmap_has(self._tracker_known, piece))
        if news:
            self.hurry()

    def hurry(self) -> None:
        """Announces sooner than the interval (MIN_SPACING after the last at the soonest)."""
        with self._lock:
            self._urgent = True
        self._wake.set()

    def want(self, claims: Iterable[int], want_seed: int) -> None:
        with self._lock:
            self._claims = frozenset(claims)
            self._want = want_seed

    def take(self) -> list[SwarmView]:
        """The answers that arrived since the last call, oldest first."""
        with self._lock:
            answers, self._answers = self._answers, []
            return answers

    def close(self, *, complete: bool) -> None:
        """Stops announcing, and tells the tracker the download is complete (it keeps
        serving every piece) or that it leaves the swarm."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._agent_id and self.failed is None:
            try:
                self._tracker.announce(self._announce(complete=complete, leaving=not complete))
            except (TrackerError, InvalidArgument) as exc:
                log.debug("swarm %s: the last announce failed: %s", self.swarm_id[:12], exc)

    # ----------------------------------------------------------------- the thread

    def _run(self) -> None:
        last = -float("inf")
        while not self._stop.is_set():
            with self._lock:
                spacing = MIN_SPACING if self._urgent else self._interval
            wait = last + spacing - self._clock()
            if wait > 0:
                self._wake.wait(wait)
                self._wake.clear()
                continue
            with self._lock:
                self._urgent = False
            last = self._clock()
            self._interval = self._announce_once()
            if self.failed is not None:
                return

    def _announce_once(self) -> float:
        try:
            view = self._tracker.announce(self._announce())
        except (FailedPrecondition, PermissionDenied, InvalidArgument) as exc:
            self._give_up(str(exc))
            return FIRST_INTERVAL
        except TrackerError as exc:
            # Before any answer, an unreachable tracker is not waited for: nothing is granted yet.
            unreachable = isinstance(exc, TrackerUnavailable) and not self._answered
            if unreachable or self._clock() - self._last_answer > GIVE_UP_SECONDS:
                self._give_up(f"the tracker does not answer ({exc})")
            else:
                log.debug("swarm %s: %s", self.swarm_id[:12], exc)
            return FIRST_INTERVAL
        with self._lock:
            self._answered = True
            self._last_answer = self._clock()
            self._tracker_known = view.hashes_known
            self._known.update(view.hashes)
            self._answers.append(view)
        return view.interval

    def _give_up(self, why: str) -> None:
        log.warning("swarm %s: %s; downloading without it", self.swarm_id[:12], why)
        self.failed = why

    def _announce(self, *, complete: bool = False, leaving: bool = False) -> Announce:
        with self._lock:
            have = bitmap_of(self._verified, self._count)
            known = self._tracker_known
            hashes = {
                piece: digest
                for piece, digest in self._verified.items()
                if not (known and bitmap_has(known, piece))
            }
            return Announce(
                agent_id=self._agent_id,
                swarm_id=self.swarm_id,
                size=self._size,
                piece_size=self._piece_size,
                have=have,
                hashes=hashes if self._agent_id else {},
                hashes_known=bitmap_of(self._known, self._count),
                seed_claims=self._claims if not (complete or leaving) else frozenset(),
                want_seed=self._want if not (complete or leaving) else 0,
                complete=complete and len(self._verified) == self._count,
                leaving=leaving,
            )
