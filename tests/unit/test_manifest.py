"""Hashing content into manifests, and the hash cache."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from agent.hashcache import FileKey, HashCache
from agent.manifest import ContentChanged, ManifestBuilder, manifest_of_bytes
from tracker.model import MiB


@pytest.mark.parametrize("size", [0, 1, MiB - 1, MiB, MiB + 1, 3 * MiB + 17])
def test_manifest_matches_a_reference(size: int) -> None:
    data = os.urandom(size)
    m = manifest_of_bytes(data)
    assert m.sha256 == hashlib.sha256(data).hexdigest()
    assert m.piece_size == MiB
    expected = [hashlib.sha256(data[i : i + MiB]).digest() for i in range(0, size, MiB)]
    assert [m.piece_hash(i) for i in range(m.piece_count)] == expected


def test_pieces_spanning_several_blocks_hash_the_same() -> None:
    data = os.urandom(2 * MiB + 5)
    with ManifestBuilder(block_size=64 * 1024) as builder:
        assert builder.build(io.BytesIO(data), len(data)) == manifest_of_bytes(data)


def test_content_that_grows_or_shrinks_is_noticed() -> None:
    with ManifestBuilder() as builder:
        with pytest.raises(ContentChanged, match="early"):
            builder.build(io.BytesIO(b"abc"), 4)
        with pytest.raises(ContentChanged, match="grew"):
            builder.build(io.BytesIO(b"abcde"), 4)


def test_hash_cache_round_trip_and_pruning(tmp_path: Path) -> None:
    cache = HashCache(tmp_path / "state" / "cache.db")
    m = manifest_of_bytes(b"x" * (MiB + 1))
    key, other = FileKey(1, 2, m.size, 3), FileKey(1, 9, m.size, 3)
    cache.put(key, m)
    cache.put(other, m)
    assert cache.get(key) == m
    assert cache.get(FileKey(1, 2, m.size, 4)) is None
    assert cache.keep_only([key]) == 1
    assert cache.get(other) is None
    cache.close()
    reopened = HashCache(tmp_path / "state" / "cache.db")
    assert reopened.get(key) == m
    reopened.close()
