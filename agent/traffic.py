"""What the downloads of one daemon have fetched since it started, by kind of source.

Downloads count each piece as it is verified, from their loop and worker threads, so
the figures move while a download runs; the daemon reads them for its metrics and its
heartbeats. Bytes are those of verified pieces (a piece fetched twice in the end game
counts twice, as the download's own summary counts it); a piece that failed its hash
counts as a hash failure instead.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from agent.planner import SourceKind
from tracker.model import Fetched


@dataclass(frozen=True, slots=True)
class TrafficTotals:
    bytes_from_peers: int = 0
    bytes_from_origin: int = 0
    peer_hash_failures: int = 0
    origin_hash_failures: int = 0

    @property
    def fetched(self) -> Fetched:
        return Fetched(self.bytes_from_peers, self.bytes_from_origin)


class Traffic:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes = dict.fromkeys(SourceKind, 0)
        self._hash_failures = dict.fromkeys(SourceKind, 0)

    def fetched(self, kind: SourceKind, size: int) -> None:
        """A piece of `size` bytes from a source of this kind passed its hash check."""
        with self._lock:
            self._bytes[kind] += size

    def hash_failed(self, kind: SourceKind) -> None:
        """A piece from a source of this kind failed its hash check."""
        with self._lock:
            self._hash_failures[kind] += 1

    def totals(self) -> TrafficTotals:
        with self._lock:
            return TrafficTotals(
                bytes_from_peers=self._bytes[SourceKind.PEER],
                bytes_from_origin=self._bytes[SourceKind.ORIGIN],
                peer_hash_failures=self._hash_failures[SourceKind.PEER],
                origin_hash_failures=self._hash_failures[SourceKind.ORIGIN],
            )
