"""The tracker's durable state in SQLite (WAL): agents it has seen, bans, manifests,
origin mappings and bad-source marks. Holdings and liveness are soft state and are
never stored: they come back as agents register and re-sync."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tracker.errors import TrackerError
from tracker.model import AgentInfo, BadMark, Manifest, SourceRef, Validator

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE agents (
    agent_id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    base_url TEXT NOT NULL,
    version TEXT NOT NULL,
    bad_reports INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE bans (
    agent_id TEXT PRIMARY KEY
);
CREATE TABLE manifests (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    piece_size INTEGER NOT NULL,
    piece_hashes BLOB NOT NULL
);
-- sha256 is NULL for a URL whose validator named two different contents.
CREATE TABLE sources (
    url TEXT NOT NULL,
    validator_key TEXT NOT NULL,
    etag TEXT NOT NULL,
    last_modified TEXT NOT NULL,
    content_length INTEGER NOT NULL,
    sha256 TEXT,
    PRIMARY KEY (url, validator_key)
);
CREATE TABLE bad_marks (
    holder_agent_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    reports INTEGER NOT NULL,
    last_reason TEXT NOT NULL,
    PRIMARY KEY (holder_agent_id, sha256)
);
"""


class StoreError(TrackerError):
    """The database could not be opened, read or written."""


@dataclass(frozen=True, slots=True)
class StoredAgent:
    info: AgentInfo
    bad_reports: int


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the tracker database {path}: {exc}") from exc

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            return
        if version != 0:
            raise StoreError(f"{self.path} has schema version {version}; this tracker knows {SCHEMA_VERSION}")
        self._db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            if self._db.in_transaction:
                yield self._db
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"tracker database {self.path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    # ----------------------------------------------------------------- reads

    def agents(self) -> list[StoredAgent]:
        rows = self._db.execute("SELECT agent_id, hostname, base_url, version, bad_reports FROM agents")
        return [StoredAgent(AgentInfo(*row[:4]), row[4]) for row in rows]

    def bans(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT agent_id FROM bans")]

    def manifests(self) -> Iterator[Manifest]:
        rows = self._db.execute("SELECT sha256, size, piece_size, piece_hashes FROM manifests")
        for sha256, size, piece_size, hashes in rows:
            yield Manifest(sha256, size, piece_size, bytes(hashes))

    def sources(self) -> Iterator[tuple[SourceRef, str | None]]:
        rows = self._db.execute("SELECT url, etag, last_modified, content_length, sha256 FROM sources")
        for url, etag, last_modified, content_length, sha256 in rows:
            yield SourceRef(url, Validator(etag, last_modified, content_length)), sha256

    def bad_marks(self) -> list[BadMark]:
        rows = self._db.execute("SELECT holder_agent_id, sha256, reports, last_reason FROM bad_marks")
        return [BadMark(*row) for row in rows]

    # ----------------------------------------------------------------- writes

    def save_agent(self, info: AgentInfo) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO agents (agent_id, hostname, base_url, version) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (agent_id) DO UPDATE SET hostname = excluded.hostname, "
                "base_url = excluded.base_url, version = excluded.version",
                (info.agent_id, info.hostname, info.base_url, info.version),
            )

    def evict_agent(self, agent_id: str, *, ban: bool) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM bad_marks WHERE holder_agent_id = ?", (agent_id,))
            if ban:
                db.execute("INSERT OR IGNORE INTO bans (agent_id) VALUES (?)", (agent_id,))
            else:
                db.execute("DELETE FROM agents WHERE agent_id = ?", (agent_id,))

    def unban(self, agent_id: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM bans WHERE agent_id = ?", (agent_id,))

    def save_manifest(self, manifest: Manifest) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO manifests (sha256, size, piece_size, piece_hashes) "
                "VALUES (?, ?, ?, ?)",
                (manifest.sha256, manifest.size, manifest.piece_size, manifest.piece_hashes),
            )

    def save_source(self, source: SourceRef, sha256: str | None) -> None:
        """Maps the source to `sha256`, or marks it conflicted when sha256 is None."""
        v = source.validator
        with self._transaction() as db:
            db.execute(
                "INSERT INTO sources (url, validator_key, etag, last_modified, content_length, sha256) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (url, validator_key) "
                "DO UPDATE SET sha256 = excluded.sha256",
                (source.url, v.key, v.etag, v.last_modified, v.content_length, sha256),
            )

    def save_bad_mark(self, mark: BadMark, holder_reports: int) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO bad_marks (holder_agent_id, sha256, reports, last_reason) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (holder_agent_id, sha256) "
                "DO UPDATE SET reports = excluded.reports, last_reason = excluded.last_reason",
                (mark.holder_agent_id, mark.sha256, mark.reports, mark.last_reason),
            )
            db.execute(
                "UPDATE agents SET bad_reports = ? WHERE agent_id = ?",
                (holder_reports, mark.holder_agent_id),
            )

    def delete_bad_marks(self, keys: tuple[tuple[str, str], ...]) -> None:
        if not keys:
            return
        with self._transaction() as db:
            db.executemany("DELETE FROM bad_marks WHERE holder_agent_id = ? AND sha256 = ?", keys)
