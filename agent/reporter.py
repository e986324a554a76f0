"""Keeps the tracker told what this agent holds: register, full snapshot, deltas, heartbeats,
and the manifests the tracker lacks.

It never stops the agent from serving. When the tracker is away it backs off and retries;
when the tracker has lost track (it restarted, or evicted this agent) it registers and
sends a full snapshot again on its own.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.inventory import Inventory
from tracker.client import TrackerClient
from tracker.errors import PermissionDenied, TrackerError, TrackerUnavailable
from tracker.model import AgentInfo, Fetched, HeartbeatAction, Holding, Load, Manifest, SourceRef
from tracker.wire import MAX_SYNC_ENTRIES

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Backoff:
    """An immutable retry delay: `next()` returns the following one."""

    delay: float = 1.0
    maximum: float = 30.0

    def next(self) -> Backoff:
        return Backoff(min(self.delay * 2, self.maximum), self.maximum)

    def jittered(self, rng: random.Random) -> float:
        return self.delay * rng.uniform(0.8, 1.2)


class Reporter:
    def __init__(
        self,
        client: TrackerClient,
        info: AgentInfo,
        inventory: Inventory,
        load: Callable[[], Load],
        *,
        fetched: Callable[[], Fetched] = Fetched,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        initial_backoff: Backoff = Backoff(),
    ) -> None:
        self._client = client
        self._info = info
        self._inventory = inventory
        self._load = load
        # What this agent has fetched since it started, told to the tracker with each heartbeat.
        self._fetched = fetched
        self._clock = clock
        self._rng = rng or random.Random()
        self._initial_backoff = initial_backoff
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._registered = False
        self._interval = 10.0
        self._tracker_generation = 0
        self._sent: dict[str, Holding] = {}
        self._synced_generation = -1
        self._published: set[str] = set()
        self._away_since: float | None = None
        self.registrations = 0

    @property
    def connected(self) -> bool:
        return self._registered and self._away_since is None

    @property
    def away(self) -> bool:
        """The last call to the tracker found it unreachable."""
        return self._away_since is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="reporter", daemon=True)
        self._thread.start()

    def stop(self, *, leave: bool = True) -> None:
        """Stops reporting; with `leave`, tells the tracker this agent is going."""
        self._stopping.set()
        self._inventory.wake()
        if self._thread is not None:
            self._thread.join()
        if leave and self._registered:
            try:
                self._client.leave(self._info.agent_id)
                log.info("told the tracker this agent is leaving")
            except TrackerError as exc:
                log.info("could not tell the tracker this agent is leaving: %s", exc)
        self._client.close()

    # ----------------------------------------------------------------- the loop

    def _run(self) -> None:
        backoff = self._initial_backoff
        next_heartbeat = 0.0
        while not self._stopping.is_set():
            try:
                if not self._registered:
                    self._register()
                    next_heartbeat = self._clock() + self._interval
                wait = max(0.0, next_heartbeat - self._clock())
                generation = self._inventory.wait_for_change(self._synced_generation, wait, self._stopping)
                if self._stopping.is_set():
                    return
                if generation != self._synced_generation:
                    self._sync_changes()
                if self._clock() >= next_heartbeat:
                    self._heartbeat()
                    next_heartbeat = self._clock() + self._interval
                self._back()
                backoff = self._initial_backoff
            except PermissionDenied as exc:
                self._registered = False
                log.error("%s; retrying in %.0f s", exc, backoff.maximum)
                self._stopping.wait(backoff.maximum)
            except TrackerUnavailable as exc:
                self._away(exc, backoff)
                self._stopping.wait(backoff.jittered(self._rng))
                backoff = backoff.next()
            except TrackerError as exc:
                self._registered = False
                log.warning("the tracker refused a report (%s); registering again", exc)
                self._stopping.wait(backoff.jittered(self._rng))
                backoff = backoff.next()

    def _away(self, exc: TrackerError, backoff: Backoff) -> None:
        if self._away_since is None:
            self._away_since = self._clock()
            log.warning("%s; still serving, retrying every %.0f s at most", exc, backoff.maximum)

    def _back(self) -> None:
        if self._away_since is not None:
            log.info("the tracker is reachable again after %.0f s", self._clock() - self._away_since)
            self._away_since = None

    def _register(self) -> None:
        self._interval = self._client.register(self._info)
        self._registered = True
        self._published.clear()
        self.registrations += 1
        log.info(
            "registered with the tracker at %s as %s (%s)",
            self._client.target,
            self._info.agent_id,
            self._info.base_url,
        )
        self._full_sync()

    def _heartbeat(self) -> None:
        action = self._client.heartbeat(
            self._info.agent_id, self._tracker_generation, self._load(), self._fetched()
        )
        if action is HeartbeatAction.REGISTER:
            log.info("the tracker lost track of this agent; registering again")
            self._registered = False
        elif action is HeartbeatAction.RESYNC:
            log.info("the tracker asked for a full inventory")
            self._full_sync()

    # ----------------------------------------------------------------- inventory

    def _full_sync(self) -> None:
        generation, holdings = self._inventory.snapshot()
        entries = list(holdings.values())
        first, rest = entries[:MAX_SYNC_ENTRIES], entries[MAX_SYNC_ENTRIES:]
        self._tracker_generation += 1
        self._client.sync(self._info.agent_id, generation=self._tracker_generation, full=True, holdings=first)
        if not self._send_deltas(rest, ()):
            raise TrackerError("the tracker lost a snapshot batch")
        self._sent = holdings
        self._synced_generation = generation
        self._publish_manifests(holdings)

    def _sync_changes(self) -> None:
        generation, holdings = self._inventory.snapshot()
        added = [h for digest, h in holdings.items() if self._sent.get(digest) != h]
        removed = [digest for digest in self._sent if digest not in holdings]
        if not self._send_deltas(added, removed):
            log.info("the tracker missed an inventory change; sending a full inventory")
            self._full_sync()
            return
        self._sent = holdings
        self._synced_generation = generation
        self._publish_manifests(holdings)

    def _send_deltas(self, added: Sequence[Holding], removed: Sequence[str]) -> bool:
        """Sends the changes in as many messages as the size limit needs; False when the
        tracker asks for a full snapshot instead."""
        step = MAX_SYNC_ENTRIES
        batches: list[tuple[Sequence[Holding], Sequence[str]]] = [
            (added[i : i + step], ()) for i in range(0, len(added), step)
        ]
        batches += [((), removed[i : i + step]) for i in range(0, len(removed), step)]
        for batch_added, batch_removed in batches:
            self._tracker_generation += 1
            result = self._client.sync(
                self._info.agent_id,
                generation=self._tracker_generation,
                full=False,
                holdings=batch_added,
                removed=batch_removed,
            )
            if result.resync_needed:
                return False
        return True

    def _publish_manifests(self, holdings: dict[str, Holding]) -> None:
        """Publishes the manifests of multi-piece content. A one-piece manifest needs no
        publishing: its only piece digest is the content digest."""
        for digest in holdings.keys() - self._published:
            manifest = self._inventory.manifest(digest)
            if manifest is None:
                continue
            if manifest.piece_count > 1:
                self._client.publish_manifest(self._info.agent_id, manifest)
            self._published.add(digest)

    def publish(self, manifest: Manifest, source: SourceRef | None) -> None:
        """Publishes content this agent has just fetched and verified: its manifest and
        the origin URL and validator it came from. Failures are logged, not raised: the
        next machine then fetches from the origin."""
        if not self._registered:
            return
        try:
            if manifest.piece_count > 1:
                self._client.publish_manifest(self._info.agent_id, manifest)
                self._published.add(manifest.sha256)
            if source is not None:
                self._client.publish_source(self._info.agent_id, source, manifest.sha256)
        except TrackerError as exc:
            log.warning("could not publish %s to the tracker: %s", manifest.sha256[:12], exc)
