"""The control file of a download in progress: which pieces of `PATH.part` are verified,
so that a download killed at any moment resumes with only what was not checkpointed.

A checkpoint flushes the data file first, then replaces the control file atomically (write
a temporary file, fsync it, rename it over the old one): a piece is recorded only once its
bytes are on disk, and a crash leaves either the old record or the new one, never half.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracker.errors import InvalidArgument
from tracker.model import MIN_PIECE_SIZE, check_sha256

FORMAT = 1


@dataclass(frozen=True, slots=True)
class ControlState:
    """What identifies the download, and what of it is done."""

    # What the bytes must be: a digest when known, else the origin's URL and validator.
    identity: dict[str, Any]
    size: int
    piece_size: int
    done: frozenset[int]
    # Piece digests the download computed itself (content with no known manifest), hex.
    piece_hashes: dict[int, str]


def control_path(part: Path) -> Path:
    return part.with_name(part.name + ".lanpeer")


def load(path: Path) -> ControlState | None:
    """The saved state, or None when there is none or it is unreadable (then the download
    simply starts over)."""
    try:
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT:
            return None
        size, piece_size = int(raw["size"]), int(raw["piece_size"])
        if size < 0 or piece_size < MIN_PIECE_SIZE:
            return None
        pieces = -(-size // piece_size)
        done = frozenset(int(p) for p in raw["done"])
        hashes = {int(k): check_sha256(str(v)) for k, v in raw.get("piece_hashes", {}).items()}
        if any(not 0 <= p < pieces for p in done | hashes.keys()):
            return None
        identity = raw["identity"]
        if not isinstance(identity, dict):
            return None
        return ControlState(identity, size, piece_size, done, hashes)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, InvalidArgument):
        return None


def save(path: Path, state: ControlState) -> None:
    payload = {
        "format": FORMAT,
        "identity": state.identity,
        "size": state.size,
        "piece_size": state.piece_size,
        "done": sorted(state.done),
        "piece_hashes": {str(k): v for k, v in sorted(state.piece_hashes.items())},
    }
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(payload, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".tmp")):
        p.unlink(missing_ok=True)
