"""What this machine holds: the files under the shared directories, each with its manifest.

A background thread walks the shares, takes manifests from the hash cache where a file is
unchanged and hashes the rest, one file at a time, so serving never waits for hashing.
Each change bumps a generation number and wakes whoever waits for changes (the reporter).

Safety: a symlink is followed only when its target lies inside the same share, symlinked
directories are not entered, and only regular files are served. A file is served under a
digest only while its (device, inode, size, mtime) are those it had when it was hashed; a
file found changed is withdrawn at once and hashed again.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.errors import ConfigError
from agent.hashcache import FileKey, HashCache
from agent.manifest import ContentChanged, ManifestBuilder
from agent.rangeserver import OpenBlob
from tracker.errors import InvalidArgument
from tracker.model import Holding, Manifest, check_name
from tracker.render import human_size, plural

log = logging.getLogger(__name__)

PROGRESS_EVERY_SECONDS = 10.0
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class SharedFile:
    path: Path
    key: FileKey
    manifest: Manifest


@dataclass(frozen=True, slots=True)
class ScanReport:
    files: int
    hashed: int
    from_cache: int
    withdrawn: int
    skipped: int
    seconds: float


def key_of(st: os.stat_result) -> FileKey:
    return FileKey(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class Inventory:
    def __init__(
        self,
        shares: Sequence[Path],
        cache: HashCache,
        *,
        rescan_interval: float = 60.0,
        adopted_list: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        roots = []
        for share in shares:
            root = share.expanduser().resolve()
            if not root.is_dir():
                raise ConfigError(f"shared directory {share} does not exist or is not a directory")
            roots.append(root)
        self.roots = tuple(dict.fromkeys(roots))
        self._cache = cache
        self._rescan_interval = rescan_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._files: dict[Path, SharedFile] = {}
        self._by_digest: dict[str, dict[Path, SharedFile]] = {}
        # The bytes of the distinct contents in _by_digest, each counted once.
        self._shared_bytes = 0
        # Files, and their bytes, the scan under way has yet to hash.
        self._backlog = (0, 0)
        self._generation = 0
        self._warned: dict[Path, str] = {}
        self._rescan_now = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.files_hashed = 0
        self.bytes_hashed = 0
        self.scans = 0
        # Files fetched by this agent outside its shares, served too while unchanged.
        self._adopted_list = adopted_list
        self._adopted: set[Path] = self._load_adopted()

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="inventory", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._rescan_now.set()
        if self._thread is not None:
            self._thread.join()
        with self._changed:
            self._changed.notify_all()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.scan()
            except Exception:
                log.exception("scan of the shared directories failed; retrying later")
            self._rescan_now.wait(self._rescan_interval)
            self._rescan_now.clear()

    # ----------------------------------------------------------------- reading

    @property
    def generation(self) -> int:
        with self._lock:
            return self._generation

    def snapshot(self) -> tuple[int, dict[str, Holding]]:
        """The generation and one holding per distinct content."""
        with self._lock:
            holdings = {}
            for digest, files in self._by_digest.items():
                first = min(files)
                name = first.name if _valid_name(first.name) else ""
                holdings[digest] = Holding(digest, files[first].key.size, name)
            return self._generation, holdings

    def shared(self) -> tuple[int, int]:
        """How many distinct contents are served, and their bytes (each counted once)."""
        with self._lock:
            return len(self._by_digest), self._shared_bytes

    @property
    def hashing_backlog(self) -> tuple[int, int]:
        """Files, and their bytes, that the scan under way has yet to hash."""
        return self._backlog

    def wait_for_change(self, generation: int, timeout: float, stop: threading.Event | None = None) -> int:
        """Blocks until the generation differs from `generation`, the timeout passes, or
        `stop` is set (then call wake())."""
        with self._changed:
            self._changed.wait_for(
                lambda: (
                    self._generation != generation
                    or self._stopping.is_set()
                    or (stop is not None and stop.is_set())
                ),
                timeout,
            )
            return self._generation

    def wake(self) -> None:
        """Wakes whoever waits in wait_for_change, to look at its stop event."""
        with self._changed:
            self._changed.notify_all()

    def manifest(self, sha256: str) -> Manifest | None:
        with self._lock:
            files = self._by_digest.get(sha256)
            return next(iter(files.values())).manifest if files else None

    def open_blob(self, sha256: str) -> OpenBlob | None:
        """Opens a file holding `sha256`, checked to be unchanged since it was hashed."""
        with self._lock:
            candidates = list(self._by_digest.get(sha256, {}).values())
        for shared in candidates:
            try:
                fd = os.open(shared.path, _OPEN_FLAGS)
            except OSError as exc:
                self._withdraw(shared, f"cannot be opened ({exc.strerror})")
                continue
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or key_of(st) != shared.key:
                os.close(fd)
                self._withdraw(shared, "changed since it was hashed")
                self._rescan_now.set()
                continue
            return OpenBlob(sha256=sha256, size=shared.key.size, file=os.fdopen(fd, "rb"))
        return None

    # ----------------------------------------------------------------- adopting

    def adopt(self, path: Path, manifest: Manifest) -> None:
        """Serves a file this agent has just fetched and verified, wherever it lies, for as
        long as it stays unchanged."""
        path = path.resolve()
        st = os.stat(path)
        key = key_of(st)
        if not stat.S_ISREG(st.st_mode) or key.size != manifest.size:
            log.warning("%s changed before it could be shared", path)
            return
        self._cache.put(key, manifest)
        if not any(path.is_relative_to(root) for root in self.roots):
            with self._lock:
                self._adopted.add(path)
            self._save_adopted()
        self._add(SharedFile(path, key, manifest))

    def _load_adopted(self) -> set[Path]:
        if self._adopted_list is None:
            return set()
        try:
            return {Path(p) for p in json.loads(self._adopted_list.read_text()) if isinstance(p, str)}
        except (OSError, ValueError, TypeError):
            return set()

    def _save_adopted(self) -> None:
        """Writes the adopted files' list. Downloads that finish together save one after
        the other, each the list as it is when its turn comes, so the last write is the
        latest list."""
        if self._adopted_list is None:
            return
        with self._save_lock:
            with self._lock:
                adopted = sorted(self._adopted)
            tmp = self._adopted_list.with_suffix(".tmp")
            tmp.write_text(json.dumps([str(p) for p in adopted]))
            tmp.replace(self._adopted_list)

    def _walk_adopted(self, seen: dict[Path, os.stat_result]) -> None:
        with self._lock:
            adopted = list(self._adopted)
        gone = []
        for path in adopted:
            try:
                st = os.lstat(path)
            except OSError:
                st = None
            if st is None or not stat.S_ISREG(st.st_mode):
                gone.append(path)
            else:
                seen.setdefault(path, st)
        if gone:
            with self._lock:
                self._adopted.difference_update(gone)
            self._save_adopted()

    # ----------------------------------------------------------------- changing

    def _add(self, *files: SharedFile) -> None:
        """Adds files in one step: one new generation, one wake-up, however many."""
        with self._changed:
            for shared in files:
                old = self._files.get(shared.path)
                if old is not None:
                    self._unlink(old)
                self._files[shared.path] = shared
                if shared.manifest.sha256 not in self._by_digest:
                    self._shared_bytes += shared.key.size
                self._by_digest.setdefault(shared.manifest.sha256, {})[shared.path] = shared
            self._bump()

    def _withdraw(self, shared: SharedFile, why: str) -> None:
        with self._changed:
            if self._files.get(shared.path) is not shared:
                return  # Already replaced or withdrawn.
            del self._files[shared.path]
            self._unlink(shared)
            self._bump()
        log.info("withdrew %s: %s", shared.path, why)

    def _unlink(self, shared: SharedFile) -> None:
        files = self._by_digest[shared.manifest.sha256]
        del files[shared.path]
        if not files:
            del self._by_digest[shared.manifest.sha256]
            self._shared_bytes -= shared.key.size

    def _bump(self) -> None:
        self._generation += 1
        self._changed.notify_all()

    # ----------------------------------------------------------------- scanning

    def scan(self) -> ScanReport:
        """Walks every share once, bringing the inventory up to date."""
        started = self._clock()
        seen: dict[Path, os.stat_result] = {}
        skipped = 0
        for root in self.roots:
            for path, st in self._walk(root):
                seen[path] = st
        self._walk_adopted(seen)
        with self._lock:
            known = dict(self._files)
        withdrawn = 0
        for path, shared in known.items():
            st_now = seen.get(path)
            if st_now is None or key_of(st_now) != shared.key:
                self._withdraw(shared, "deleted" if st_now is None else "changed")
                withdrawn += 1
        to_hash: list[tuple[Path, FileKey]] = []
        cached_files: list[SharedFile] = []
        for path, st in seen.items():
            key = key_of(st)
            previous = known.get(path)
            if previous is not None and previous.key == key:
                continue
            cached = self._cache.get(key)
            if cached is not None:
                cached_files.append(SharedFile(path, key, cached))
            else:
                to_hash.append((path, key))
        from_cache = len(cached_files)
        if cached_files:
            self._add(*cached_files)
        hashed = 0
        if to_hash:
            hashed, failed = self._hash_all(to_hash)
            skipped += failed
        if not self._stopping.is_set():
            self._cache.keep_only(key_of(st) for st in seen.values())
        report = ScanReport(
            files=len(seen),
            hashed=hashed,
            from_cache=from_cache,
            withdrawn=withdrawn,
            skipped=skipped,
            seconds=self._clock() - started,
        )
        self.scans += 1
        if self._stopping.is_set():
            log.info("scan interrupted by the stop: %d of %d files to hash were hashed", hashed, len(to_hash))
        elif hashed or withdrawn or self.scans == 1:
            log.info(
                "scan: %s (%d hashed, %d from the cache, %d withdrawn) in %.1f s",
                plural(report.files, "file"),
                report.hashed,
                report.from_cache,
                report.withdrawn,
                report.seconds,
            )
        return report

    def _walk(self, root: Path) -> Iterator[tuple[Path, os.stat_result]]:
        def warn_dir(exc: OSError) -> None:
            self._warn_once(Path(exc.filename or root), f"cannot list it ({exc.strerror})")

        for dirpath, _dirnames, filenames in os.walk(root, onerror=warn_dir, followlinks=False):
            names = set(filenames)
            for filename in filenames:
                if _is_download_in_progress(filename, names):
                    continue
                path = Path(dirpath, filename)
                try:
                    lst = os.lstat(path)
                    if stat.S_ISLNK(lst.st_mode):
                        target = Path(os.path.realpath(path))
                        if not target.is_relative_to(root):
                            self._warn_once(path, f"is a symlink out of its share ({target}); skipped")
                            continue
                        st = os.stat(path)
                    else:
                        st = lst
                except OSError as exc:
                    self._warn_once(path, f"cannot be read ({exc.strerror})")
                    continue
                if stat.S_ISREG(st.st_mode):
                    yield path, st

    def _hash_all(self, to_hash: list[tuple[Path, FileKey]]) -> tuple[int, int]:
        total_bytes = sum(key.size for _, key in to_hash)
        log.info("hashing %s (%s)", plural(len(to_hash), "file"), human_size(total_bytes))
        hashed = failed = done_bytes = 0
        last_report = self._clock()
        self._backlog = (len(to_hash), total_bytes)
        try:
            with ManifestBuilder() as builder:
                for i, (path, key) in enumerate(to_hash):
                    if self._stopping.is_set():
                        break
                    manifest = self._hash_one(builder, path, key)
                    if manifest is None:
                        failed += 1
                    else:
                        self._cache.put(key, manifest)
                        self._add(SharedFile(path, key, manifest))
                        hashed += 1
                    done_bytes += key.size
                    self._backlog = (len(to_hash) - i - 1, total_bytes - done_bytes)
                    if self._clock() - last_report >= PROGRESS_EVERY_SECONDS:
                        last_report = self._clock()
                        log.info(
                            "hashing: %d of %d files, %s of %s",
                            i + 1,
                            len(to_hash),
                            human_size(done_bytes),
                            human_size(total_bytes),
                        )
        finally:
            self._backlog = (0, 0)
        return hashed, failed

    def _hash_one(self, builder: ManifestBuilder, path: Path, key: FileKey) -> Manifest | None:
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as exc:
            self._warn_once(path, f"cannot be read ({exc.strerror})")
            return None
        with os.fdopen(fd, "rb", buffering=0) as f:
            if key_of(os.fstat(fd)) != key:
                return None  # Changed since the walk; the next scan takes it.
            try:
                manifest = builder.build(f, key.size)
            except ContentChanged:
                return None
            except OSError as exc:
                self._warn_once(path, f"cannot be read ({exc.strerror})")
                return None
            if key_of(os.fstat(fd)) != key:
                return None
        self.files_hashed += 1
        self.bytes_hashed += key.size
        self._warned.pop(path, None)
        return manifest

    def _warn_once(self, path: Path, why: str) -> None:
        if self._warned.get(path) != why:
            self._warned[path] = why
            log.warning("%s %s", path, why)


def _valid_name(name: str) -> bool:
    try:
        check_name(name)
    except InvalidArgument:
        return False
    return True


def _is_download_in_progress(name: str, names: set[str]) -> bool:
    """A download into a shared directory (PATH.part, and its control file PATH.part.lanpeer)
    is not shared until it is finished: its pieces are served from the download itself."""
    return name.endswith(".part.lanpeer") or (name.endswith(".part") and f"{name}.lanpeer" in names)
