"""Small builders shared by the unit tests."""

from __future__ import annotations

import hashlib

from tracker.model import AgentInfo, Holding, Manifest, piece_count, piece_size_for


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def digest(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def agent(agent_id: str, host: str = "") -> AgentInfo:
    return AgentInfo(agent_id, host or f"host-{agent_id}", f"http://{agent_id}.lab:7071", "0.1.0")


def manifest_for(sha256: str, size: int) -> Manifest:
    """A manifest with made-up piece digests: the index never rehashes content."""
    ps = piece_size_for(size)
    hashes = b"".join(hashlib.sha256(f"{sha256}/{i}".encode()).digest() for i in range(piece_count(size, ps)))
    return Manifest(sha256, size, ps, hashes)


def whole(sha256: str, size: int = 100, name: str = "") -> Holding:
    return Holding(sha256, size, name)
