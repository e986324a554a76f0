"""The tracker's index: agents, what they hold, manifests, origin mappings, bad sources.

This module is pure: no sockets, no files, no threads. Time comes from an injected
clock and randomness from an injected generator, so tests drive it with a fake clock.
The caller serialises access (the registry holds a lock around every call) and makes
the durable parts durable (the registry writes them to the store).

Every mutating method validates its whole input before it changes anything, so a
rejected request never leaves the index half-updated.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tracker.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from tracker.model import (
    AgentInfo,
    AgentStatus,
    BadMark,
    ContentDetails,
    ContentMatch,
    ContentQuery,
    DigestQuery,
    FilePage,
    FileSummary,
    HeartbeatAction,
    HolderState,
    HolderView,
    Holding,
    Load,
    Manifest,
    NameQuery,
    SourceQuery,
    SourceRef,
    Stats,
    SyncResult,
    UrlQuery,
    bitmap_count,
    check_bitmap,
)
from tracker.policy import HandoutPolicy

MAX_HOLDERS_HANDED_OUT = 1000


@dataclass(slots=True)
class _Agent:
    info: AgentInfo
    # Registered since this tracker started. Agents restored from the store are known
    # but not registered: they are never live until they register again.
    registered: bool
    last_seen: float | None = None
    # The last inventory generation accepted; None until the first full snapshot.
    generation: int | None = None
    load: Load = field(default_factory=Load)
    holdings: dict[str, Holding] = field(default_factory=dict)
    bytes_held: int = 0
    bad_reports: int = 0


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    result: SyncResult
    # Bad-source marks dropped because the holder withdrew that content.
    cleared_marks: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class EvictOutcome:
    holdings_removed: int
    cleared_marks: tuple[tuple[str, str], ...]


class Index:
    def __init__(
        self,
        *,
        heartbeat_interval: float,
        policy: HandoutPolicy,
        ttl_intervals: float = 3.0,
        forget_after: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be positive")
        self.heartbeat_interval = heartbeat_interval
        self.ttl = heartbeat_interval * ttl_intervals
        self.forget_after = forget_after
        self.default_policy = policy
        self._clock = clock
        self._rng = rng or random.Random()
        self._agents: dict[str, _Agent] = {}
        self._banned: set[str] = set()
        self._holders: dict[str, dict[str, Holding]] = {}
        self._names: dict[str, dict[str, int]] = {}
        self._manifests: dict[str, Manifest] = {}
        self._sources: dict[tuple[str, str], tuple[SourceRef, str]] = {}
        self._sources_by_digest: dict[str, list[SourceRef]] = {}
        self._conflicted_sources: set[tuple[str, str]] = set()
        self._bad: dict[tuple[str, str], BadMark] = {}
        self._holding_count = 0
        self._bytes_held = 0

    # ----------------------------------------------------------------- restoring

    def restore_agent(self, info: AgentInfo, bad_reports: int = 0) -> None:
        self._agents[info.agent_id] = _Agent(info=info, registered=False, bad_reports=bad_reports)

    def restore_ban(self, agent_id: str) -> None:
        self._banned.add(agent_id)

    def restore_manifest(self, manifest: Manifest) -> None:
        self._manifests[manifest.sha256] = manifest

    def restore_source(self, source: SourceRef, sha256: str | None) -> None:
        key = (source.url, source.validator.key)
        if sha256 is None:
            self._conflicted_sources.add(key)
        else:
            self._add_source(key, source, sha256)

    def restore_bad_mark(self, mark: BadMark) -> None:
        self._bad[(mark.holder_agent_id, mark.sha256)] = mark

    # ----------------------------------------------------------------- agents

    def register(self, info: AgentInfo) -> None:
        """(Re)announces an agent. Its old holdings go; a full snapshot must follow."""
        if info.agent_id in self._banned:
            raise PermissionDenied(f"agent {info.agent_id} is banned by an administrator")
        old = self._agents.get(info.agent_id)
        if old is not None:
            self._drop_holdings(old)
        bad_reports = old.bad_reports if old else 0
        self._agents[info.agent_id] = _Agent(
            info=info, registered=True, last_seen=self._clock(), bad_reports=bad_reports
        )

    def heartbeat(self, agent_id: str, generation: int, load: Load) -> HeartbeatAction:
        agent = self._agents.get(agent_id)
        if agent is None or not agent.registered:
            return HeartbeatAction.REGISTER
        agent.last_seen = self._clock()
        agent.load = load
        if agent.generation is None or agent.generation != generation:
            return HeartbeatAction.RESYNC
        return HeartbeatAction.NONE

    def leave(self, agent_id: str) -> None:
        self._retire(self._registered(agent_id))

    def _retire(self, agent: _Agent) -> None:
        self._drop_holdings(agent)
        agent.registered = False
        agent.last_seen = None
        agent.generation = None
        agent.load = Load()

    def evict(self, agent_id: str, *, ban: bool) -> EvictOutcome:
        """Withdraws an agent's holdings and forgets it; a banned agent stays listed, as
        banned, so that an administrator can see whom to unban. An agent not seen yet may
        be banned too."""
        agent = self._agents.get(agent_id)
        if agent is None and not ban:
            raise NotFound(f"no agent {agent_id}")
        removed = 0
        if agent is not None:
            removed = len(agent.holdings)
            self._retire(agent)
            if not ban:
                del self._agents[agent_id]
        cleared = tuple(key for key in self._bad if key[0] == agent_id)
        for key in cleared:
            del self._bad[key]
        if ban:
            self._banned.add(agent_id)
        return EvictOutcome(holdings_removed=removed, cleared_marks=cleared)

    def unban(self, agent_id: str) -> None:
        if agent_id not in self._banned:
            raise NotFound(f"agent {agent_id} is not banned")
        self._banned.discard(agent_id)

    def require_registered(self, agent_id: str) -> None:
        self._registered(agent_id)

    def live_agent(self, agent_id: str) -> AgentInfo:
        """The agent, when it is registered, live and not banned."""
        if agent_id in self._banned:
            raise PermissionDenied(f"agent {agent_id} is banned by an administrator")
        agent = self._registered(agent_id)
        if not self._live(agent):
            raise FailedPrecondition(
                f"agent {agent_id} is not live: no heartbeat for over {self.ttl:g} s; heartbeat first"
            )
        return agent.info

    def now(self) -> float:
        return self._clock()

    def is_live(self, agent_id: str) -> bool:
        agent = self._agents.get(agent_id)
        return agent is not None and self._live(agent)

    def _registered(self, agent_id: str) -> _Agent:
        agent = self._agents.get(agent_id)
        if agent is None or not agent.registered:
            raise NotFound(f"agent {agent_id} is not registered; register first")
        return agent

    def _live(self, agent: _Agent) -> bool:
        return (
            agent.registered and agent.last_seen is not None and self._clock() - agent.last_seen <= self.ttl
        )

    def sweep(self) -> int:
        """Forgets the holdings of agents silent for longer than forget_after.
        Returns how many agents lost their holdings."""
        now = self._clock()
        swept = 0
        for agent in self._agents.values():
            silent = agent.last_seen is None or now - agent.last_seen > self.forget_after
            if agent.holdings and silent:
                self._drop_holdings(agent)
                agent.generation = None
                swept += 1
        return swept

    # ----------------------------------------------------------------- inventory

    def sync(
        self,
        agent_id: str,
        *,
        generation: int,
        full: bool,
        holdings: Sequence[Holding],
        removed: Sequence[str],
    ) -> SyncOutcome:
        agent = self._registered(agent_id)
        agent.last_seen = self._clock()
        if full and removed:
            raise InvalidArgument("removed_sha256s: a full snapshot removes nothing; omit them")
        if not full and (agent.generation is None or generation != agent.generation + 1):
            return SyncOutcome(SyncResult(resync_needed=True, generation=agent.generation or 0))
        incoming: dict[str, Holding] = {}
        for i, holding in enumerate(holdings):
            if holding.sha256 in incoming:
                raise InvalidArgument(f"holdings[{i}]: {holding.sha256} appears twice")
            self._check_holding(holding, f"holdings[{i}]")
            incoming[holding.sha256] = holding
        for i, digest in enumerate(removed):
            if digest in incoming:
                raise InvalidArgument(f"removed_sha256s[{i}]: {digest} is also in holdings")

        if full:
            withdrawn = [d for d in agent.holdings if d not in incoming]
            # A snapshot is the agent's whole truth: content it no longer holds loses its
            # mark even when the holding itself went earlier, with a re-registration.
            unmarked = [key for key in self._bad if key[0] == agent_id and key[1] not in incoming]
        else:
            withdrawn = list(removed)
            unmarked = [(agent_id, d) for d in removed if (agent_id, d) in self._bad]
        for digest in withdrawn:
            self._remove_holding(agent, digest)
        for key in unmarked:
            del self._bad[key]
        cleared = unmarked
        for holding in incoming.values():
            self._put_holding(agent, holding)
        agent.generation = generation
        return SyncOutcome(SyncResult(resync_needed=False, generation=generation), tuple(cleared))

    def _check_holding(self, holding: Holding, where: str) -> None:
        manifest = self._manifests.get(holding.sha256)
        if manifest is not None and manifest.size != holding.size:
            raise InvalidArgument(
                f"{where}.size: {holding.size} differs from the manifest's {manifest.size} bytes"
            )
        if manifest is None:
            others = self._holders.get(holding.sha256)
            if others:
                known = next(iter(others.values())).size
                if known != holding.size:
                    raise InvalidArgument(
                        f"{where}.size: {holding.size} differs from the {known} bytes other holders report"
                    )
        if not holding.complete:
            if manifest is None:
                raise FailedPrecondition(
                    f"{where}: a partial holding of {holding.sha256} needs its manifest published first"
                )
            check_bitmap(holding.bitmap, manifest.piece_count, f"{where}.pieces")

    def _put_holding(self, agent: _Agent, holding: Holding) -> None:
        self._remove_holding(agent, holding.sha256)
        agent.holdings[holding.sha256] = holding
        self._holders.setdefault(holding.sha256, {})[agent.info.agent_id] = holding
        names = self._names.setdefault(holding.name, {})
        names[holding.sha256] = names.get(holding.sha256, 0) + 1
        held = self._bytes_of(holding)
        agent.bytes_held += held
        self._bytes_held += held
        self._holding_count += 1

    def _remove_holding(self, agent: _Agent, digest: str) -> bool:
        holding = agent.holdings.pop(digest, None)
        if holding is None:
            return False
        holders = self._holders[digest]
        del holders[agent.info.agent_id]
        if not holders:
            del self._holders[digest]
        names = self._names[holding.name]
        names[digest] -= 1
        if not names[digest]:
            del names[digest]
            if not names:
                del self._names[holding.name]
        held = self._bytes_of(holding)
        agent.bytes_held -= held
        self._bytes_held -= held
        self._holding_count -= 1
        return True

    def _drop_holdings(self, agent: _Agent) -> None:
        for digest in list(agent.holdings):
            self._remove_holding(agent, digest)

    def _bytes_of(self, holding: Holding) -> int:
        if holding.complete:
            return holding.size
        manifest = self._manifests[holding.sha256]
        return min(holding.size, bitmap_count(holding.bitmap) * manifest.piece_size)

    # ----------------------------------------------------------------- content

    def add_manifest(self, manifest: Manifest) -> bool:
        """Records a manifest; False when it was already known. A different manifest
        for the same digest is refused: the first one verified stays."""
        known = self._manifests.get(manifest.sha256)
        if known is not None:
            if known != manifest:
                raise FailedPrecondition(
                    f"manifest of {manifest.sha256}: differs from the one already published"
                )
            return False
        holders = self._holders.get(manifest.sha256)
        if holders:
            size = next(iter(holders.values())).size
            if size != manifest.size:
                raise InvalidArgument(
                    f"manifest.size: {manifest.size} differs from the {size} bytes holders report"
                )
        self._manifests[manifest.sha256] = manifest
        return True

    def forget_manifest(self, sha256: str) -> None:
        """Undoes add_manifest, for a manifest the store failed to keep."""
        self._manifests.pop(sha256, None)

    def add_source(self, source: SourceRef, sha256: str) -> bool:
        """Maps a URL at a validator to content; False when already mapped so.

        Two different digests for one URL and validator mean the origin's validator
        does not identify its content: the mapping is dropped for good and FailedPrecondition
        is raised, so agents fetch that URL from the origin from then on."""
        key = (source.url, source.validator.key)
        if key in self._conflicted_sources:
            raise FailedPrecondition(
                f"{source.url}: its validator has named different content before; not mapped"
            )
        known = self._sources.get(key)
        if known is not None:
            if known[1] == sha256:
                return False
            self._remove_source(key)
            self._conflicted_sources.add(key)
            raise FailedPrecondition(
                f"{source.url}: the same validator now names {sha256}, before {known[1]}; "
                "the mapping is dropped"
            )
        self._add_source(key, source, sha256)
        return True

    def _add_source(self, key: tuple[str, str], source: SourceRef, sha256: str) -> None:
        self._sources[key] = (source, sha256)
        self._sources_by_digest.setdefault(sha256, []).append(source)

    def _remove_source(self, key: tuple[str, str]) -> None:
        source, sha256 = self._sources.pop(key)
        refs = self._sources_by_digest[sha256]
        refs.remove(source)
        if not refs:
            del self._sources_by_digest[sha256]

    def report_bad(
        self, *, reporter: str, holder: str, sha256: str, piece_index: int, reason: str
    ) -> tuple[BadMark, int]:
        """Marks `holder` as a bad source of `sha256`. Returns the mark and the holder's
        report count in all."""
        self._registered(reporter)
        agent = self._agents.get(holder)
        if agent is None:
            raise NotFound(f"no agent {holder}")
        if reporter == holder:
            raise InvalidArgument("holder_agent_id: an agent cannot report itself")
        manifest = self._manifests.get(sha256)
        if manifest is not None and piece_index >= max(manifest.piece_count, 1):
            raise InvalidArgument(
                f"piece_index: {piece_index} is past the last of {manifest.piece_count} pieces"
            )
        key = (holder, sha256)
        old = self._bad.get(key)
        mark = BadMark(holder, sha256, (old.reports if old else 0) + 1, reason)
        self._bad[key] = mark
        agent.bad_reports += 1
        return mark, agent.bad_reports

    # ----------------------------------------------------------------- queries

    def locate(
        self,
        query: ContentQuery,
        *,
        max_holders: int,
        policy: HandoutPolicy | None = None,
        requester: str = "",
    ) -> list[ContentMatch]:
        chosen = policy or self.default_policy
        limit = min(max_holders, MAX_HOLDERS_HANDED_OUT)
        matches = []
        cutoff = self._clock() - self.ttl
        for digest in self._resolve(query):
            candidates = []
            for agent_id, holding in self._holders.get(digest, {}).items():
                agent = self._agents[agent_id]
                if (
                    agent_id != requester
                    and agent.registered
                    and agent.last_seen is not None
                    and agent.last_seen >= cutoff
                    and (agent_id, digest) not in self._bad
                ):
                    candidates.append((agent, holding))
            order = chosen.order([agent.load.active_uploads for agent, _ in candidates], self._rng)
            holders = tuple(
                HolderView(agent.info, holding, agent.load)
                for agent, holding in (candidates[i] for i in order[:limit])
            )
            manifest = self._manifests.get(digest)
            matches.append(
                ContentMatch(digest, self._size_of(digest), manifest, self._names_of(digest), holders)
            )
        return matches

    def inspect(self, query: ContentQuery) -> list[ContentDetails]:
        details = []
        for digest in self._resolve(query):
            holders = []
            for agent_id, holding in sorted(self._holders.get(digest, {}).items()):
                agent = self._agents[agent_id]
                if (agent_id, digest) in self._bad:
                    state = HolderState.BAD
                elif self._live(agent):
                    state = HolderState.LIVE
                else:
                    state = HolderState.DEAD
                holders.append((HolderView(agent.info, holding, agent.load), state))
            details.append(
                ContentDetails(
                    sha256=digest,
                    size=self._size_of(digest),
                    manifest=self._manifests.get(digest),
                    names=self._names_of(digest),
                    holders=tuple(holders),
                    sources=tuple(self._sources_by_digest.get(digest, ())),
                )
            )
        return details

    def _resolve(self, query: ContentQuery) -> list[str]:
        if isinstance(query, DigestQuery):
            known = query.sha256 in self._holders or query.sha256 in self._manifests
            return [query.sha256] if known else []
        if isinstance(query, SourceQuery):
            entry = self._sources.get((query.source.url, query.source.validator.key))
            return [entry[1]] if entry else []
        if isinstance(query, UrlQuery):
            return sorted({digest for (url, _), (_, digest) in self._sources.items() if url == query.url})
        assert isinstance(query, NameQuery)
        digests = self._names.get(query.name, {})
        return sorted(digests, key=lambda d: (-self._live_holder_count(d), d))

    def _live_holder_count(self, digest: str) -> int:
        return sum(1 for agent_id in self._holders.get(digest, {}) if self._live(self._agents[agent_id]))

    def _size_of(self, digest: str) -> int:
        manifest = self._manifests.get(digest)
        if manifest is not None:
            return manifest.size
        holders = self._holders.get(digest)
        return next(iter(holders.values())).size if holders else 0

    def _names_of(self, digest: str) -> tuple[str, ...]:
        holders = self._holders.get(digest, {})
        return tuple(sorted({h.name for h in holders.values() if h.name}))

    def agents(self) -> list[AgentStatus]:
        now = self._clock()
        return [
            AgentStatus(
                agent=agent.info,
                live=self._live(agent),
                last_seen_age=None if agent.last_seen is None else max(0.0, now - agent.last_seen),
                files=len(agent.holdings),
                bytes_held=agent.bytes_held,
                load=agent.load,
                bad_source_reports=agent.bad_reports,
                banned=agent.info.agent_id in self._banned,
            )
            for agent in sorted(self._agents.values(), key=lambda a: (a.info.hostname, a.info.agent_id))
        ]

    def files(self, *, after: str, limit: int) -> FilePage:
        digests = sorted(d for d in self._holders if d > after)
        page = digests[:limit]
        files = tuple(
            FileSummary(
                sha256=digest,
                size=self._size_of(digest),
                names=self._names_of(digest),
                live_holders=self._live_holder_count(digest),
                holders=len(self._holders[digest]),
                has_manifest=digest in self._manifests,
                sources=tuple(self._sources_by_digest.get(digest, ())),
            )
            for digest in page
        )
        next_token = page[-1] if len(digests) > limit else ""
        return FilePage(files, next_token)

    def stats(self) -> Stats:
        live = sum(1 for agent in self._agents.values() if self._live(agent))
        banned_known = sum(1 for agent_id in self._agents if agent_id in self._banned)
        return Stats(
            live_agents=live,
            dead_agents=len(self._agents) - live - banned_known,
            banned_agents=len(self._banned),
            distinct_files=len(self._holders),
            holdings=self._holding_count,
            bytes_held=self._bytes_held,
            manifests=len(self._manifests),
            sources=len(self._sources),
            bad_source_reports=sum(agent.bad_reports for agent in self._agents.values()),
        )
