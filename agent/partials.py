"""Downloads under way, served by the range server while they run: every piece verified so
far is given to peers at once, which is what makes the agents of a LAN a swarm.

A PartialBlob is one download's part file and the pieces of it verified so far; the
downloader's threads mark pieces, the range server's reads take snapshots. PartialBlobs
is the daemon's blob store: complete content from the inventory first, then the ids of
downloads that have ended (aliases of complete content), then downloads under way.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from agent.rangeserver import BlobStore, OpenBlob, PieceMap
from tracker.model import bitmap_len, piece_count

# Aliases kept, the oldest forgotten first: enough for the downloads of a long while,
# bounded whatever the daemon runs.
MAX_ALIASES = 1000


class PartialBlob:
    """A download in progress whose verified pieces are served while it runs. Thread-safe:
    the downloader's threads mark pieces, the range server reads snapshots.

    The part file is opened at once and its descriptor kept until close(), so serving goes
    on across the rename of the part file to its final name.
    """

    def __init__(self, part: Path, size: int, piece_size: int, have: Iterable[int] = ()) -> None:
        if size < 0 or piece_size < 1:
            raise ValueError(f"partial blob: {size} bytes in pieces of {piece_size}")
        self.size = size
        self.piece_size = piece_size
        self._count = piece_count(size, piece_size)
        self._bitmap = bytearray(bitmap_len(self._count))
        self._lock = threading.Lock()
        for piece in have:
            self._mark(piece)
        self._fd: int | None = os.open(part, os.O_RDONLY)

    def verified(self, piece: int) -> None:
        """Serves `piece` from now on: its bytes are in the part file and match its hash."""
        with self._lock:
            self._mark(piece)

    def pieces(self) -> PieceMap:
        with self._lock:
            return PieceMap(self.piece_size, self._count, bytes(self._bitmap))

    def open(self) -> BinaryIO:
        """The part file, opened anew: every reader has a file offset of its own."""
        with self._lock:
            if self._fd is None:
                raise ValueError("the partial blob is closed")
            return open(f"/proc/self/fd/{self._fd}", "rb")

    def close(self) -> None:
        """Closes the part file; files open() gave stay open. Idempotent."""
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _mark(self, piece: int) -> None:
        if not 0 <= piece < self._count:
            raise IndexError(f"piece {piece} of a blob of {self._count} pieces")
        self._bitmap[piece >> 3] |= 0x80 >> (piece & 7)


class PartialBlobs:
    """What the daemon's range server serves: complete content from the inventory, and
    downloads in progress. A BlobStore; thread-safe.

    When a download ends, put its file in `complete`, call alias() for each of its ids
    other than its content's digest, then remove(): no request in between finds neither.
    """

    def __init__(self, complete: BlobStore) -> None:
        self._complete = complete
        self._lock = threading.Lock()
        # The downloads each id names, oldest first: the first is served.
        self._partials: dict[str, list[PartialBlob]] = {}
        self._aliases: OrderedDict[str, str] = OrderedDict()

    def add(self, blob_id: str, blob: PartialBlob) -> None:
        """Serves `blob` under `blob_id` (one blob may have several ids), instead of what an
        alias of `blob_id` named: that content may be gone, since it is downloaded again.
        When two downloads of one content run side by side, the one added first is served
        until removed."""
        with self._lock:
            self._aliases.pop(blob_id, None)
            named = self._partials.setdefault(blob_id, [])
            if blob not in named:
                named.append(blob)

    def alias(self, blob_id: str, sha256: str) -> None:
        """Serves `blob_id` as the complete content `sha256` from now on."""
        with self._lock:
            self._aliases[blob_id] = sha256
            self._aliases.move_to_end(blob_id)
            while len(self._aliases) > MAX_ALIASES:
                self._aliases.popitem(last=False)

    def remove(self, blob: PartialBlob) -> None:
        """Stops serving `blob` under every id naming it (aliases stay), then closes it."""
        with self._lock:
            for blob_id, named in list(self._partials.items()):
                if blob in named:
                    named.remove(blob)
                    if not named:
                        del self._partials[blob_id]
        blob.close()

    def open_blob(self, blob_id: str, /) -> OpenBlob | None:
        held = self._complete.open_blob(blob_id)
        if held is not None:
            return held
        with self._lock:
            target = self._aliases.get(blob_id)
            named = self._partials.get(blob_id)
            # remove() closes a blob only after dropping it here, so it is open now.
            if target is None and named:
                partial = named[0]
                return OpenBlob(blob_id, partial.size, partial.open(), partial.pieces())
        # Asked again without an alias: the download of this digest may have ended and
        # its file joined the complete content since the first look.
        return self._complete.open_blob(target or blob_id)
