"""Hashing content into a manifest: the whole-file SHA-256 and each piece's, in one pass.

Every byte is hashed twice (once for the file, once for its piece), so the two hashes run
on two threads: hashlib releases the GIL for large buffers, and on a machine with two
cores the pass runs about as fast as a single SHA-256.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from tracker.model import MIN_PIECE_SIZE, Manifest, piece_size_for

BLOCK_SIZE = MIN_PIECE_SIZE  # Every piece size is a multiple of it.


class Readable(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...

    def read(self, size: int = -1, /) -> bytes | None: ...


class ContentChanged(Exception):
    """The file grew or shrank while it was being hashed."""


class ManifestBuilder:
    """Hashes one file. Reusable: the helper thread lives as long as the builder."""

    def __init__(self, block_size: int = BLOCK_SIZE) -> None:
        if block_size <= 0 or MIN_PIECE_SIZE % block_size:
            raise ValueError("the block size must divide the smallest piece size")
        self._block_size = block_size
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="piece-hasher")
        self._views = (memoryview(bytearray(block_size)), memoryview(bytearray(block_size)))

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> ManifestBuilder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def build(self, f: Readable, size: int) -> Manifest:
        """Reads exactly `size` bytes from `f`; raises ContentChanged if there are more or fewer.

        Two buffers take turns: while the helper thread hashes a block into its piece digest,
        this thread hashes it into the file digest and reads the next block into the other."""
        piece_size = piece_size_for(size)
        whole = hashlib.sha256()
        piece = hashlib.sha256()
        piece_hashes: list[bytes] = []
        blocks = _blocks(size, piece_size, self._block_size)
        turn = 0
        current = self._read(f, turn, next(blocks, None))
        while current is not None:
            block, ends_piece = current
            side = self._pool.submit(piece.update, block)
            whole.update(block)
            turn ^= 1
            current = self._read(f, turn, next(blocks, None))
            side.result()
            if ends_piece:
                piece_hashes.append(piece.digest())
                piece = hashlib.sha256()
        if f.read(1):
            raise ContentChanged("grew while being hashed")
        return Manifest(whole.hexdigest(), size, piece_size, b"".join(piece_hashes))

    def _read(self, f: Readable, turn: int, block: tuple[int, bool] | None) -> tuple[memoryview, bool] | None:
        if block is None:
            return None
        length, ends_piece = block
        view = self._views[turn][:length]
        done = 0
        while done < length:
            n = f.readinto(view[done:])
            if not n:
                raise ContentChanged(f"ended {length - done} bytes early")
            done += n
        return view, ends_piece


def _blocks(size: int, piece_size: int, block_size: int) -> Iterator[tuple[int, bool]]:
    """The length of each block to read, and whether it ends a piece."""
    offset = 0
    while offset < size:
        piece_end = min(offset - offset % piece_size + piece_size, size)
        length = min(block_size, piece_end - offset)
        offset += length
        yield length, offset == piece_end


def manifest_of_bytes(data: bytes) -> Manifest:
    """The manifest of in-memory content; for tests and small payloads."""
    with ManifestBuilder() as builder:
        return builder.build(io.BytesIO(data), len(data))
