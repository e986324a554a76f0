"""The SQLite store, and the registry restoring the index from it and keeping the swarms."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from tests.unit.helpers import FakeClock, agent, digest, manifest_for, whole
from tracker.errors import FailedPrecondition, PermissionDenied
from tracker.index import Index
from tracker.model import (
    Announce,
    DigestQuery,
    HeartbeatAction,
    Load,
    MiB,
    SourceQuery,
    SourceRef,
    Validator,
)
from tracker.policy import LeastLoaded
from tracker.registry import Registry
from tracker.store import Store, StoreError

A, B = digest("a"), digest("b")
SRC = SourceRef("http://origin/a.tar", Validator('"v1"'))


def open_registry(path: Path, clock: FakeClock | None = None) -> Registry:
    index = Index(
        heartbeat_interval=10, policy=LeastLoaded(), clock=clock or FakeClock(), rng=random.Random(1)
    )
    return Registry(index, Store(path))


def test_wal_mode_and_schema_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "sub" / "t.db")
    store.close()
    db = sqlite3.connect(tmp_path / "sub" / "t.db")
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.execute("PRAGMA user_version").fetchone() == (1,)


def test_a_database_from_the_future_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "t.db")
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StoreError, match="schema version 99"):
        Store(tmp_path / "t.db")


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "t.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        Store(tmp_path / "t.db")


def test_durable_state_survives_a_restart_and_soft_state_does_not(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    reg = open_registry(path)
    for name in ("x", "y", "banned"):
        reg.register(agent(name))
    reg.sync("x", generation=1, full=True, holdings=[whole(A, 3 * MiB)], removed=())
    reg.sync("y", generation=1, full=True, holdings=[whole(A, 3 * MiB), whole(B)], removed=())
    reg.publish_manifest("x", manifest_for(A, 3 * MiB))
    reg.publish_source("x", SRC, A)
    reg.report_bad_source(reporter="x", holder="y", sha256=A, piece_index=1, reason="hash mismatch")
    reg.evict("banned", ban=True)
    reg.close()

    reg = open_registry(path)
    (match,) = reg.locate(SourceQuery(SRC), max_holders=10, policy=None, requester="")
    assert match.sha256 == A
    assert match.manifest == manifest_for(A, 3 * MiB)
    assert match.holders == ()
    stats = reg.stats()
    assert (stats.live_agents, stats.dead_agents, stats.banned_agents) == (0, 2, 1)
    assert (stats.holdings, stats.manifests, stats.sources, stats.bad_source_reports) == (0, 1, 1, 1)
    assert reg.heartbeat("x", 1, Load()) is HeartbeatAction.REGISTER
    with pytest.raises(PermissionDenied):
        reg.register(agent("banned"))

    # The bad mark on y survives: after both re-register, y is still not handed out for A.
    reg.register(agent("x"))
    reg.register(agent("y"))
    reg.sync("x", generation=1, full=True, holdings=[whole(A, 3 * MiB)], removed=())
    reg.sync("y", generation=1, full=True, holdings=[whole(A, 3 * MiB)], removed=())
    (match,) = reg.locate(DigestQuery(A), max_holders=10, policy=None, requester="")
    assert [h.agent.agent_id for h in match.holders] == ["x"]
    reg.close()


def test_a_conflicting_source_stays_unmapped_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    reg = open_registry(path)
    reg.register(agent("x"))
    reg.publish_source("x", SRC, A)
    with pytest.raises(FailedPrecondition):
        reg.publish_source("x", SRC, B)
    reg.close()
    reg = open_registry(path)
    reg.register(agent("x"))
    assert reg.locate(SourceQuery(SRC), max_holders=10, policy=None, requester="") == []
    with pytest.raises(FailedPrecondition):
        reg.publish_source("x", SRC, A)
    reg.close()


def test_cleared_marks_and_unbans_are_durable(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    reg = open_registry(path)
    reg.register(agent("x"))
    reg.register(agent("y"))
    reg.sync("y", generation=1, full=True, holdings=[whole(A)], removed=())
    reg.report_bad_source(reporter="x", holder="y", sha256=A, piece_index=0, reason="")
    reg.sync("y", generation=2, full=False, holdings=(), removed=[A])
    reg.evict("z", ban=True)
    reg.unban("z")
    reg.close()
    reg = open_registry(path)
    reg.register(agent("z"))
    reg.register(agent("y"))
    reg.sync("y", generation=1, full=True, holdings=[whole(A)], removed=())
    (match,) = reg.locate(DigestQuery(A), max_holders=10, policy=None, requester="")
    assert [h.agent.agent_id for h in match.holders] == ["y"]
    reg.close()


def test_swarms_are_swept_with_the_index_and_never_stored(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    clock = FakeClock()
    reg = open_registry(path, clock)
    for name in ("seed", "fetcher"):
        reg.register(agent(name))
    reg.announce(Announce("seed", A, 3 * MiB, MiB, b"\xe0", complete=True))
    reg.announce(Announce("fetcher", A, 3 * MiB, MiB, b"\x00"))
    assert (reg.stats().swarms, reg.stats().swarm_members) == (1, 2)

    clock.advance(3.5)
    reg.sweep()
    assert reg.stats().swarm_members == 1, "the member that stopped announcing is still listed"
    clock.advance(30)
    with pytest.raises(FailedPrecondition, match="not live"):
        reg.announce(Announce("fetcher", A, 3 * MiB, MiB, b"\x00"))
    reg.sweep()
    assert reg.stats().swarm_members == 0, "the complete member whose agent died is still listed"

    reg.register(agent("seed"))
    reg.announce(Announce("seed", A, 3 * MiB, MiB, b"\xe0", complete=True))
    reg.close()
    reg = open_registry(path, clock)
    assert (reg.stats().swarms, reg.stats().swarm_members) == (0, 0)
    reg.close()
