"""The tracker's state: the pure index, made durable by the store, and the swarms,
behind one lock.

Each operation validates and decides in the index, then writes what must survive a
restart to the store, all under the lock, so readers never see a half-applied change.
Swarms are soft state and never reach the store.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence

from tracker.errors import InvalidArgument, TrackerError
from tracker.index import Index
from tracker.model import (
    AgentInfo,
    AgentStatus,
    Announce,
    ContentDetails,
    ContentMatch,
    ContentQuery,
    Fetched,
    FilePage,
    HeartbeatAction,
    Holding,
    Load,
    Manifest,
    SourceRef,
    Stats,
    SwarmView,
    SyncResult,
    check_sha256,
)
from tracker.offload import OffloadTally
from tracker.policy import HandoutPolicy
from tracker.store import Store, StoreError
from tracker.swarm import Swarms

log = logging.getLogger(__name__)


class Registry:
    def __init__(self, index: Index, store: Store, swarms: Swarms | None = None) -> None:
        self._index = index
        self._store = store
        self._swarms = swarms or Swarms()
        self._offload = OffloadTally()
        self._lock = threading.Lock()
        self._restore()

    @property
    def heartbeat_interval(self) -> float:
        return self._index.heartbeat_interval

    def _restore(self) -> None:
        try:
            for stored in self._store.agents():
                self._index.restore_agent(stored.info, stored.bad_reports)
            for agent_id in self._store.bans():
                self._index.restore_ban(agent_id)
            for manifest in self._store.manifests():
                self._index.restore_manifest(manifest)
            for source, sha256 in self._store.sources():
                self._index.restore_source(source, sha256)
            for mark in self._store.bad_marks():
                self._index.restore_bad_mark(mark)
        except InvalidArgument as exc:
            raise StoreError(f"{self._store.path} holds an invalid record: {exc}") from exc
        stats = self._index.stats()
        log.info(
            "restored %d agents, %d manifests, %d URL mappings from %s",
            stats.dead_agents,
            stats.manifests,
            stats.sources,
            self._store.path,
        )

    def register(self, info: AgentInfo) -> None:
        with self._lock:
            self._index.register(info)
            self._swarms.drop_agent(info.agent_id, self._index.now())
            self._store.save_agent(info)
        log.info("agent %s registered from %s (%s)", info.agent_id, info.hostname, info.base_url)

    def heartbeat(
        self, agent_id: str, generation: int, load: Load, fetched: Fetched | None = None
    ) -> HeartbeatAction:
        """Keeps a registered agent live; `fetched` is what it reported fetching since it
        started, counted into the cluster's offload (None: it reported nothing)."""
        with self._lock:
            action = self._index.heartbeat(agent_id, generation, load)
            if fetched is not None and action is not HeartbeatAction.REGISTER:
                self._offload.report(agent_id, fetched)
            return action

    def sync(
        self,
        agent_id: str,
        *,
        generation: int,
        full: bool,
        holdings: Sequence[Holding],
        removed: Sequence[str],
    ) -> SyncResult:
        with self._lock:
            outcome = self._index.sync(
                agent_id, generation=generation, full=full, holdings=holdings, removed=removed
            )
            self._store.delete_bad_marks(outcome.cleared_marks)
        return outcome.result

    def leave(self, agent_id: str) -> None:
        with self._lock:
            self._index.leave(agent_id)
            self._swarms.drop_agent(agent_id, self._index.now())
            self._offload.forget(agent_id)
        log.info("agent %s left", agent_id)

    def evict(self, agent_id: str, *, ban: bool) -> int:
        with self._lock:
            outcome = self._index.evict(agent_id, ban=ban)
            self._swarms.drop_agent(agent_id, self._index.now())
            self._store.evict_agent(agent_id, ban=ban)
        log.info(
            "agent %s evicted%s; %d holdings withdrawn",
            agent_id,
            " and banned" if ban else "",
            outcome.holdings_removed,
        )
        return outcome.holdings_removed

    def unban(self, agent_id: str) -> None:
        with self._lock:
            self._index.unban(agent_id)
            self._store.unban(agent_id)
        log.info("agent %s unbanned", agent_id)

    def publish_manifest(self, agent_id: str, manifest: Manifest) -> bool:
        with self._lock:
            self._index.require_registered(agent_id)
            created = self._index.add_manifest(manifest)
            if created:
                try:
                    self._store.save_manifest(manifest)
                except StoreError:
                    self._index.forget_manifest(manifest.sha256)
                    raise
            return created

    def publish_source(self, agent_id: str, source: SourceRef, sha256: str) -> bool:
        check_sha256(sha256)
        with self._lock:
            self._index.require_registered(agent_id)
            try:
                created = self._index.add_source(source, sha256)
            except TrackerError:
                self._store.save_source(source, None)
                raise
            if created:
                self._store.save_source(source, sha256)
            return created

    def report_bad_source(
        self, *, reporter: str, holder: str, sha256: str, piece_index: int, reason: str
    ) -> int:
        with self._lock:
            mark, total = self._index.report_bad(
                reporter=reporter,
                holder=holder,
                sha256=sha256,
                piece_index=piece_index,
                reason=reason,
            )
            self._store.save_bad_mark(mark, total)
        log.warning(
            "agent %s reported %s as a bad source of %s (piece %d): %s",
            reporter,
            holder,
            sha256[:12],
            piece_index,
            reason or "no reason given",
        )
        return total

    def locate(
        self, query: ContentQuery, *, max_holders: int, policy: HandoutPolicy | None, requester: str
    ) -> list[ContentMatch]:
        with self._lock:
            return self._index.locate(query, max_holders=max_holders, policy=policy, requester=requester)

    def announce(self, a: Announce) -> SwarmView:
        with self._lock:
            member_url = self._index.live_agent(a.agent_id).base_url if a.agent_id else None
            return self._swarms.announce(
                a, self._index.now(), member_url=member_url, is_live=self._index.is_live
            )

    def inspect(self, query: ContentQuery) -> list[ContentDetails]:
        with self._lock:
            return self._index.inspect(query)

    def agents(self) -> list[AgentStatus]:
        with self._lock:
            return self._index.agents()

    def files(self, *, after: str, limit: int) -> FilePage:
        with self._lock:
            return self._index.files(after=after, limit=limit)

    def stats(self) -> Stats:
        with self._lock:
            swarms, members = self._swarms.stats()
            return dataclasses.replace(
                self._index.stats(), swarms=swarms, swarm_members=members, fetched=self._offload.totals
            )

    def sweep(self) -> None:
        with self._lock:
            swept = self._index.sweep()
            self._swarms.sweep(self._index.now(), self._index.is_live)
        if swept:
            log.info("forgot the holdings of %d long-silent agents", swept)

    def close(self) -> None:
        with self._lock:
            self._store.close()
