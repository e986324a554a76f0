"""Swarms: the agents fetching the same content at the same time.

Each downloading agent announces about once an interval the pieces it has verified, the
hashes of pieces it fetched from the origin, and how many more pieces it wants granted. The
answer lists the other members, the hashes it lacks, and grants it pieces to fetch from a
seed (a member holding every piece, or else the origin) that no member still downloading
has and no other member is granted, so that each piece leaves the seeds about once and the
members pass it on among themselves.

This module is pure: no sockets, no threads, no clock. Time comes in as `now`, seconds on
a clock that never goes backwards, and randomness from an injected generator. The caller
serialises access (the registry holds its lock around every call). Swarms are soft state,
never stored: after a tracker restart, members rebuild them with their next announces.

Piece bitmaps are handled as Python ints read big-endian, so that piece i of a bitmap of
n bytes is bit 8n - 1 - i, as tracker.model.bitmap_has has it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import islice

from tracker.errors import FailedPrecondition, ResourceExhausted
from tracker.model import SWARM_MEMBERS_SHOWN, Announce, SwarmMember, SwarmView, bitmap_len, bitmap_pieces

MAX_SWARMS = 10_000
MAX_MEMBERS = 10_000
# A member still fetching that misses this many announces is gone.
STALE_INTERVALS = 3
# A swarm without members is forgotten, with its piece hashes, after this long.
IDLE_SWARM_SECONDS = 600.0


@dataclass(slots=True)
class _Member:
    agent_id: str
    base_url: str
    have: bytes
    last_seen: float
    # Origin pieces granted to it that it has not verified yet.
    claims: set[int] = field(default_factory=set)


class _Swarm:
    def __init__(self, a: Announce) -> None:
        self.swarm_id = a.swarm_id
        self.size = a.size
        self.piece_size = a.piece_size
        pieces = a.piece_count
        self.nbytes = bitmap_len(pieces)
        self.every_piece = ((1 << pieces) - 1) << (self.nbytes * 8 - pieces)
        self.hashes: dict[int, bytes] = {}
        self.hashes_known = 0
        # Members still fetching, the least recently seen first.
        self.fetching: dict[str, _Member] = {}
        # Members that hold every piece: they serve while their agent is live.
        self.complete: dict[str, _Member] = {}
        # Claims are disjoint, so their union is kept exactly; the union of the members'
        # pieces is recomputed after a member loses some (None until then).
        self.claimed = 0
        self._held: int | None = 0
        self.empty_since: float | None = None

    def __len__(self) -> int:
        return len(self.fetching) + len(self.complete)

    def check_layout(self, a: Announce) -> None:
        if (a.size, a.piece_size) != (self.size, self.piece_size):
            raise FailedPrecondition(
                f"swarm {self.swarm_id[:12]} is for {self.size} bytes in pieces of {self.piece_size}"
            )

    def _check_room(self, agent_id: str) -> None:
        if len(self) >= MAX_MEMBERS and agent_id not in self.fetching and agent_id not in self.complete:
            raise ResourceExhausted(f"swarm {self.swarm_id[:12]} already has {MAX_MEMBERS} members")

    def bit(self, index: int) -> int:
        return 1 << (self.nbytes * 8 - 1 - index)

    def bitmap(self, bits: int) -> bytes:
        return bits.to_bytes(self.nbytes, "big")

    def learn(self, hashes: Mapping[int, bytes], *, keep: bool) -> tuple[int, ...]:
        """Stores the hashes of pieces that had none when `keep`; returns the pieces whose
        hash differs from the one stored first."""
        conflicts = []
        for index, digest in hashes.items():
            known = self.hashes.get(index)
            if known is None:
                if keep:
                    self.hashes[index] = digest
                    self.hashes_known |= self.bit(index)
            elif known != digest:
                conflicts.append(index)
        return tuple(sorted(conflicts))

    def prune(self, now: float, stale_after: float) -> None:
        """Drops the members still fetching that have been silent for over `stale_after`."""
        while self.fetching:
            member = next(iter(self.fetching.values()))
            if now - member.last_seen <= stale_after:
                return
            self.remove(member.agent_id, now)

    def upsert(self, a: Announce, base_url: str, now: float) -> _Member:
        self._check_room(a.agent_id)
        member = self.fetching.pop(a.agent_id, None) or self.complete.pop(a.agent_id, None)
        have = int.from_bytes(a.have, "big")
        if member is None:
            member = _Member(a.agent_id, base_url, a.have, now)
        else:
            if int.from_bytes(member.have, "big") & ~have:
                self._held = None
            member.base_url, member.have, member.last_seen = base_url, a.have, now
        (self.complete if a.complete else self.fetching)[a.agent_id] = member
        if a.complete:
            self._held = None
        elif self._held is not None:
            self._held |= have
        self.empty_since = None
        self._keep_claims(member, a.seed_claims, have)
        return member

    def _keep_claims(self, member: _Member, claims: frozenset[int], have: int) -> None:
        """A member keeps the claims it still reports and has not verified: it can never
        claim a piece it was not granted."""
        kept = {i for i in member.claims & claims if not have & self.bit(i)}
        self._release(member.claims - kept)
        member.claims = kept

    def _release(self, pieces: set[int]) -> None:
        for index in pieces:
            self.claimed &= ~self.bit(index)

    def remove(self, agent_id: str, now: float) -> None:
        member = self.fetching.pop(agent_id, None) or self.complete.pop(agent_id, None)
        if member is None:
            return
        self._release(member.claims)
        self._held = None
        if not len(self):
            self.empty_since = now

    def grant(self, member: _Member, want: int) -> tuple[int, ...]:
        """Up to `want` pieces, lowest first, that no member still downloading has and
        no member claims."""
        free = self.every_piece & ~(self.held() | self.claimed)
        granted = tuple(islice(bitmap_pieces(self.bitmap(free)), want))
        for index in granted:
            member.claims.add(index)
            self.claimed |= self.bit(index)
        return granted

    def held(self) -> int:
        """The pieces members still downloading have. Complete members are seeds, like
        the origin: their pieces are granted too, to be fetched from them once each."""
        if self._held is None:
            held = 0
            for member in self.fetching.values():
                held |= int.from_bytes(member.have, "big")
            self._held = held
        return self._held

    def others(
        self, agent_id: str, rng: random.Random, is_live: Callable[[str], bool]
    ) -> tuple[SwarmMember, ...]:
        """The members but `agent_id`: all of them, or a random sample when there are more
        than an answer shows. A complete member whose agent is no longer live is left out
        (the sweep removes it)."""
        everyone = [
            *self.fetching.values(),
            *(m for m in self.complete.values() if is_live(m.agent_id)),
        ]
        if len(everyone) > SWARM_MEMBERS_SHOWN:
            # One more than shown, in case the requester is drawn.
            everyone = rng.sample(everyone, SWARM_MEMBERS_SHOWN + 1)
        others = [m for m in everyone if m.agent_id != agent_id][:SWARM_MEMBERS_SHOWN]
        return tuple(
            SwarmMember(m.agent_id, m.base_url, None if m.agent_id in self.complete else m.have)
            for m in others
        )

    def hashes_missing(self, known: bytes) -> dict[int, bytes]:
        missing = self.hashes_known & ~int.from_bytes(known, "big")
        return {index: self.hashes[index] for index in bitmap_pieces(self.bitmap(missing))}


class Swarms:
    """Every swarm the tracker follows, by swarm_id."""

    def __init__(self, *, interval: float = 1.0, rng: random.Random | None = None) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self._stale_after = STALE_INTERVALS * interval
        self._rng = rng or random.Random()
        self._swarms: dict[str, _Swarm] = {}

    def announce(
        self,
        a: Announce,
        now: float,
        *,
        member_url: str | None,
        is_live: Callable[[str], bool] = lambda agent_id: True,
    ) -> SwarmView:
        """Applies one announce and answers it. `member_url` is the base URL of the
        announcing agent, registered and live; None makes the announce an observer's,
        which learns the swarm's state but joins nothing and stores nothing. `is_live`
        says whether an agent still heartbeats: complete members need not announce."""
        url = member_url if a.agent_id else None
        swarm = self._swarm_for(a, create=url is not None and not a.leaving)
        swarm.prune(now, self._stale_after)
        joined = None
        if url is not None:
            if a.leaving:
                swarm.remove(a.agent_id, now)
            else:
                joined = swarm.upsert(a, url, now)
        conflicts = swarm.learn(a.hashes, keep=url is not None)
        granted: tuple[int, ...] = ()
        if joined is not None and a.want_seed:
            granted = swarm.grant(joined, a.want_seed)
        return SwarmView(
            members=swarm.others(a.agent_id, self._rng, is_live),
            hashes=swarm.hashes_missing(a.hashes_known),
            hashes_known=swarm.bitmap(swarm.hashes_known),
            seed_granted=granted,
            seed_claimed=swarm.bitmap(swarm.claimed),
            hash_conflicts=conflicts,
            interval=self.interval,
        )

    def _swarm_for(self, a: Announce, *, create: bool) -> _Swarm:
        """The swarm announced to. One that does not exist yet is made, and kept only when
        `create`: an observer, or a member leaving, sees an empty swarm."""
        swarm = self._swarms.get(a.swarm_id)
        if swarm is not None:
            swarm.check_layout(a)
            return swarm
        swarm = _Swarm(a)
        if create:
            if len(self._swarms) >= MAX_SWARMS:
                raise ResourceExhausted(f"the tracker already follows {MAX_SWARMS} swarms")
            self._swarms[a.swarm_id] = swarm
        return swarm

    def drop_agent(self, agent_id: str, now: float) -> None:
        """Takes an agent out of every swarm and releases its claims: it registered
        again, left or was evicted."""
        for swarm in self._swarms.values():
            swarm.remove(agent_id, now)

    def sweep(self, now: float, is_live: Callable[[str], bool]) -> None:
        """Drops the members still fetching that stopped announcing, the complete members
        whose agent is no longer live, and the swarms without members for long."""
        for swarm_id, swarm in list(self._swarms.items()):
            swarm.prune(now, self._stale_after)
            for agent_id in [i for i in swarm.complete if not is_live(i)]:
                swarm.remove(agent_id, now)
            if swarm.empty_since is not None and now - swarm.empty_since >= IDLE_SWARM_SECONDS:
                del self._swarms[swarm_id]

    def stats(self) -> tuple[int, int]:
        """The swarms with at least one member, and their members."""
        sizes = [len(swarm) for swarm in self._swarms.values()]
        return sum(1 for n in sizes if n), sum(sizes)
