"""Small builders shared by the integration tests: content made of real bytes, agents that
talk to a real tracker, and a snapshot of everything the admin API can see."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from agent.rangeserver import OpenBlob, RangeServer, RangeServerConfig
from tracker.client import AdminClient, TrackerClient
from tracker.model import (
    AgentInfo,
    ContentMatch,
    ContentQuery,
    DigestQuery,
    HeartbeatAction,
    Holding,
    Load,
    Manifest,
    MiB,
    SourceRef,
    SyncResult,
    Validator,
    piece_size_for,
)


@dataclass(frozen=True, slots=True)
class Blob:
    """Content an agent could hold, described by a manifest hashed from real bytes."""

    name: str
    manifest: Manifest

    @property
    def sha256(self) -> str:
        return self.manifest.sha256

    @property
    def size(self) -> int:
        return self.manifest.size

    @property
    def pieces(self) -> int:
        return self.manifest.piece_count

    def whole(self, name: str | None = None) -> Holding:
        return Holding(self.sha256, self.size, self.name if name is None else name)

    def partial(self, bitmap: bytes) -> Holding:
        return Holding(self.sha256, self.size, self.name, complete=False, bitmap=bitmap)


@functools.cache
def make_blob(name: str, size: int = 1000) -> Blob:
    """Deterministic bytes for `name`, cut into pieces and hashed in one pass as an agent would."""
    data = random.Random(f"{name}/{size}").randbytes(size)
    piece_size = piece_size_for(size)
    whole = hashlib.sha256()
    piece_hashes = []
    for offset in range(0, size, piece_size):
        piece = data[offset : offset + piece_size]
        whole.update(piece)
        piece_hashes.append(hashlib.sha256(piece).digest())
    return Blob(name, Manifest(whole.hexdigest(), size, piece_size, b"".join(piece_hashes)))


# Three pieces of 1 MiB: enough for piece bitmaps with spare bits.
def three_piece_blob(name: str = "three-pieces.bin") -> Blob:
    return make_blob(name, 2 * MiB + 512 * 1024)


def some_digest(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def origin(url: str = "http://origin.example/dataset.tar", etag: str = '"v1"') -> SourceRef:
    return SourceRef(url, Validator(etag=etag))


def agent_info(agent_id: str) -> AgentInfo:
    return AgentInfo(agent_id, f"host-{agent_id}", f"http://{agent_id}.lab:7071", "0.1.0")


@dataclass
class Agent:
    """An agent as the tracker sees it: registers, syncs with generation numbers, heartbeats."""

    client: TrackerClient
    info: AgentInfo
    generation: int = 0
    uploads: int = 0
    held: dict[str, Holding] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.info.agent_id

    def register(self) -> float:
        return self.client.register(self.info)

    def join(self, *holdings: Holding) -> Agent:
        """Registers, sends a full snapshot and one heartbeat, as an agent does at start-up."""
        self.register()
        self.full_sync(*holdings)
        assert self.beat() is HeartbeatAction.NONE
        return self

    def full_sync(self, *holdings: Holding) -> SyncResult:
        self.generation += 1
        result = self.client.sync(self.id, generation=self.generation, full=True, holdings=holdings)
        self.held = {h.sha256: h for h in holdings}
        return result

    def delta(self, add: tuple[Holding, ...] = (), remove: tuple[str, ...] = ()) -> SyncResult:
        result = self.client.sync(
            self.id, generation=self.generation + 1, full=False, holdings=add, removed=remove
        )
        if not result.resync_needed:
            self.generation += 1
        return result

    def beat(self, uploads: int | None = None) -> HeartbeatAction:
        if uploads is not None:
            self.uploads = uploads
        return self.client.heartbeat(self.id, self.generation, Load(active_uploads=self.uploads))

    def locate(self, query: ContentQuery, **kwargs: Any) -> list[ContentMatch]:
        return self.client.locate(query, requester=self.id, **kwargs)

    def holders_of(self, sha256: str, **kwargs: Any) -> list[str]:
        return holder_ids(self.client, sha256, requester=self.id, **kwargs)


def holder_ids(client: TrackerClient, sha256: str, **kwargs: Any) -> list[str]:
    """The agent ids a Locate by digest hands out, in order; [] when nothing matches."""
    matches = client.locate(DigestQuery(sha256), **kwargs)
    if not matches:
        return []
    (match,) = matches
    return [h.agent.agent_id for h in match.holders]


def snapshot(admin: AdminClient, client: TrackerClient, digests: tuple[str, ...] = ()) -> Any:
    """Everything the tracker shows about its index, minus the clocks: equal snapshots mean
    a request changed nothing."""
    agents = [
        (a.agent, a.live, a.files, a.bytes_held, a.load, a.bad_source_reports, a.banned)
        for a in admin.agents()
    ]
    return {
        "stats": admin.stats(),
        "files": list(admin.files()),
        "agents": agents,
        "inspect": [admin.inspect(DigestQuery(d)) for d in digests],
        "locate": [_unordered(client.locate(DigestQuery(d))) for d in digests],
    }


def _unordered(matches: list[ContentMatch]) -> list[Any]:
    """Locate hands out equally loaded holders in random order: compare them as sets."""
    return [
        (m.sha256, m.size, m.manifest, m.names, sorted(m.holders, key=lambda h: h.agent.agent_id))
        for m in matches
    ]


def eventually(
    check: Callable[[], Any], timeout: float = 10.0, what: str = "condition", poll: float = 0.01
) -> Any:
    """The first true value of `check()`, called every `poll` seconds; fails the test after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


class BlobFiles:
    """Blobs in a directory, named by digest, as an agent's inventory hands them to its range
    server. `extra` makes it claim more bytes than a file holds, so the server stops short."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.extra: dict[str, int] = {}
        self.opened: list[OpenBlob] = []

    def open_blob(self, sha256: str) -> OpenBlob | None:
        path = self.root / sha256
        if not path.exists():
            return None
        blob = OpenBlob(sha256, path.stat().st_size + self.extra.get(sha256, 0), path.open("rb"))
        self.opened.append(blob)
        return blob


class RecordingStore(Protocol):
    """A blob store that keeps every blob it hands out."""

    opened: list[OpenBlob]

    def open_blob(self, blob_id: str, /) -> OpenBlob | None: ...


def range_servers(store: RecordingStore) -> Iterator[Callable[..., RangeServer]]:
    """For a fixture: starts range servers on 127.0.0.1, port 0, over `store`; stops them at
    the end and checks that every file they were given was closed."""
    started: list[RangeServer] = []

    def start(**settings: object) -> RangeServer:
        config = RangeServerConfig(**{"host": "127.0.0.1", "port": 0, **settings})  # type: ignore[arg-type]
        server = RangeServer(config, store)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(grace=0)
    assert all(blob.file.closed for blob in store.opened)


PR_CAPBSET_DROP = 24


def without_root_file_access() -> None:
    """Drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set (a subprocess's
    preexec_fn), so that even root is refused a file or directory its mode does not allow."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")
