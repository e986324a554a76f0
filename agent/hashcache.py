"""A cache of manifests in SQLite, keyed by what identifies an unchanged file:
(device, inode, size, mtime in ns). A restart or a rescan never re-hashes a file whose
key is in the cache."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.errors import AgentError
from tracker.errors import InvalidArgument
from tracker.model import Manifest

_SCHEMA = """
CREATE TABLE IF NOT EXISTS manifests (
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    piece_size INTEGER NOT NULL,
    piece_hashes BLOB NOT NULL,
    PRIMARY KEY (dev, ino, size, mtime_ns)
);
"""


@dataclass(frozen=True, slots=True)
class FileKey:
    """What must not change for a file's manifest to still hold."""

    dev: int
    ino: int
    size: int
    mtime_ns: int


class HashCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise AgentError(f"cannot open the hash cache {path}: {exc}") from exc

    def get(self, key: FileKey) -> Manifest | None:
        with self._lock:
            row = self._db.execute(
                "SELECT sha256, piece_size, piece_hashes FROM manifests "
                "WHERE dev = ? AND ino = ? AND size = ? AND mtime_ns = ?",
                (key.dev, key.ino, key.size, key.mtime_ns),
            ).fetchone()
        if row is None:
            return None
        try:
            return Manifest(row[0], key.size, row[1], bytes(row[2]))
        except InvalidArgument:
            return None  # A damaged row is a cache miss: the file is hashed again.

    def put(self, key: FileKey, manifest: Manifest) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO manifests VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key.dev,
                    key.ino,
                    key.size,
                    key.mtime_ns,
                    manifest.sha256,
                    manifest.piece_size,
                    manifest.piece_hashes,
                ),
            )

    def keep_only(self, keys: Iterable[FileKey]) -> int:
        """Forgets every entry but `keys`; returns how many went."""
        wanted = {(k.dev, k.ino, k.size, k.mtime_ns) for k in keys}
        with self._lock:
            rows = self._db.execute("SELECT dev, ino, size, mtime_ns FROM manifests").fetchall()
            stale = [row for row in rows if tuple(row) not in wanted]
            if stale:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "DELETE FROM manifests WHERE dev = ? AND ino = ? AND size = ? AND mtime_ns = ?", stale
                )
                self._db.execute("COMMIT")
        return len(stale)

    def close(self) -> None:
        with self._lock:
            self._db.close()
