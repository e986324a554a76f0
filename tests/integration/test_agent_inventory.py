"""The agent's inventory on real directories: scanning, the hash cache, and the check that a
changed file is never served under its old digest."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.hashcache import HashCache
from agent.inventory import Inventory
from agent.manifest import manifest_of_bytes
from tests.integration.helpers import without_root_file_access
from tracker.model import MiB


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def cache(tmp_path: Path):
    c = HashCache(tmp_path / "state" / "hashcache.db")
    yield c
    c.close()


def digests(inventory: Inventory) -> set[str]:
    return set(inventory.snapshot()[1])


def test_new_modified_deleted_and_renamed_files(share: Path, cache: HashCache) -> None:
    a, b = b"a" * (MiB + 3), b"b" * 10
    (share / "a.bin").write_bytes(a)
    (share / "sub").mkdir()
    (share / "sub" / "b.bin").write_bytes(b)
    inv = Inventory([share], cache)
    report = inv.scan()
    assert (report.files, report.hashed) == (2, 2)
    assert digests(inv) == {sha(a), sha(b)}
    _, holdings = inv.snapshot()
    assert holdings[sha(a)].name == "a.bin"
    assert holdings[sha(a)].size == len(a)
    assert inv.manifest(sha(a)).piece_count == 2  # type: ignore[union-attr]

    generation = inv.generation
    (share / "sub" / "b.bin").write_bytes(b"changed")
    (share / "sub" / "b.bin").rename(share / "moved.bin")
    (share / "a.bin").rename(share / "renamed.bin")
    report = inv.scan()
    assert report.hashed == 1  # Only the changed file; the renamed one comes from the cache.
    assert report.from_cache == 1
    assert digests(inv) == {sha(a), sha(b"changed")}
    assert inv.generation > generation

    (share / "renamed.bin").unlink()
    inv.scan()
    assert digests(inv) == {sha(b"changed")}
    assert inv.open_blob(sha(a)) is None


def test_restart_rehashes_nothing(share: Path, tmp_path: Path) -> None:
    for i in range(20):
        (share / f"f{i}").write_bytes(os.urandom(1000 + i))
    first = HashCache(tmp_path / "c.db")
    inv = Inventory([share], first)
    inv.scan()
    assert inv.files_hashed == 20
    first.close()
    second = HashCache(tmp_path / "c.db")
    again = Inventory([share], second)
    report = again.scan()
    assert again.files_hashed == 0
    assert report.from_cache == 20
    assert digests(again) == digests(inv)
    assert again.scan().from_cache == 0  # Nothing changed, nothing looked up again.
    second.close()


def test_empty_file_is_shared(share: Path, cache: HashCache) -> None:
    (share / "empty").write_bytes(b"")
    inv = Inventory([share], cache)
    inv.scan()
    blob = inv.open_blob(sha(b""))
    assert blob is not None
    assert blob.size == 0
    blob.file.close()


def test_a_download_under_way_in_a_share_is_not_shared_until_it_is_done(
    share: Path, cache: HashCache
) -> None:
    (share / "big.iso.part").write_bytes(b"half")
    (share / "big.iso.part.lanpeer").write_bytes(b"{}")
    (share / "other.part").write_bytes(b"someone else's")
    inv = Inventory([share], cache)
    inv.scan()
    assert digests(inv) == {sha(b"someone else's")}
    (share / "big.iso.part.lanpeer").unlink()
    (share / "big.iso.part").rename(share / "big.iso")
    inv.scan()
    assert digests(inv) == {sha(b"someone else's"), sha(b"half")}


def test_symlinks_inside_the_share_are_followed_and_escapes_skipped(
    share: Path, tmp_path: Path, cache: HashCache, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not for peers")
    (share / "inside.bin").write_bytes(b"inside")
    (share / "link-in").symlink_to(share / "inside.bin")
    (share / "link-out").symlink_to(secret)
    (share / "dir-out").symlink_to(tmp_path)
    caplog.set_level(logging.WARNING)
    inv = Inventory([share], cache)
    inv.scan()
    assert digests(inv) == {sha(b"inside")}
    assert inv.open_blob(sha(b"not for peers")) is None
    assert sum("symlink out of its share" in r.message for r in caplog.records) == 1
    inv.scan()
    assert sum("symlink out of its share" in r.message for r in caplog.records) == 1  # Warned once.


def test_fifos_and_sockets_do_not_block_the_scan(share: Path, cache: HashCache) -> None:
    os.mkfifo(share / "pipe")
    (share / "real").write_bytes(b"real")
    inv = Inventory([share], cache)
    assert inv.scan().files == 1


def test_a_file_changed_after_hashing_is_withdrawn_not_served(share: Path, cache: HashCache) -> None:
    path = share / "data.bin"
    path.write_bytes(b"version one")
    inv = Inventory([share], cache)
    inv.scan()
    generation = inv.generation
    path.write_bytes(b"version two")  # Same size; a new mtime.
    assert inv.open_blob(sha(b"version one")) is None
    assert inv.generation > generation
    assert digests(inv) == set()
    inv.scan()
    blob = inv.open_blob(sha(b"version two"))
    assert blob is not None
    assert blob.file.read() == b"version two"
    blob.file.close()


def test_same_content_twice_is_one_holding_and_survives_one_copy_going(share: Path, cache: HashCache) -> None:
    (share / "a").write_bytes(b"same")
    (share / "b").write_bytes(b"same")
    inv = Inventory([share], cache)
    inv.scan()
    assert len(inv.snapshot()[1]) == 1
    (share / "a").unlink()
    inv.scan()
    blob = inv.open_blob(sha(b"same"))
    assert blob is not None
    blob.file.close()


def test_the_hashing_backlog_counts_down_as_files_are_hashed(
    share: Path, cache: HashCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, size in (("a", 1000), ("b", 2000), ("c", 3000)):
        (share / name).write_bytes(os.urandom(size))
    inv = Inventory([share], cache)
    seen = []
    hash_one = inv._hash_one

    def watched(*args):
        seen.append(inv.hashing_backlog)
        return hash_one(*args)

    monkeypatch.setattr(inv, "_hash_one", watched)
    assert inv.hashing_backlog == (0, 0)
    inv.scan()
    # The order of the files is the walk's; the counts go down by one file and its size.
    assert [files for files, _ in seen] == [3, 2, 1]
    assert seen[0][1] == 6000
    assert sorted(a - b for (_, a), (_, b) in zip(seen, [*seen[1:], (0, 0)], strict=True)) == [
        1000,
        2000,
        3000,
    ]
    assert inv.hashing_backlog == (0, 0)
    assert inv.shared() == (3, 6000)
    (share / "d").write_bytes((share / "a").read_bytes())
    inv.scan()
    assert inv.shared() == (3, 6000), "a second copy of a content is not counted again"
    (share / "b").unlink()
    inv.scan()
    assert inv.shared() == (2, 4000)


def test_a_missing_share_is_a_clear_error(tmp_path: Path, cache: HashCache) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Inventory([tmp_path / "nope"], cache)


_UNREADABLE_SCRIPT = textwrap.dedent(
    """
    import json, logging, sys
    from pathlib import Path
    from agent.hashcache import HashCache
    from agent.inventory import Inventory
    records = []
    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())
    logging.getLogger().addHandler(Keep())
    logging.getLogger().setLevel(logging.WARNING)
    share, state = Path(sys.argv[1]), Path(sys.argv[2])
    cache = HashCache(state / "c.db")
    inv = Inventory([share], cache)
    inv.scan()
    inv.scan()
    print(json.dumps({"digests": sorted(inv.snapshot()[1]), "warnings": records}))
    """
)


def test_unreadable_files_are_skipped_with_one_warning(tmp_path: Path) -> None:
    share, state = tmp_path / "share", tmp_path / "state"
    share.mkdir()
    state.mkdir()
    (share / "ok").write_bytes(b"ok")
    (share / "locked").write_bytes(b"locked")
    (share / "locked").chmod(0)
    result = subprocess.run(
        [sys.executable, "-c", _UNREADABLE_SCRIPT, str(share), str(state)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        preexec_fn=without_root_file_access,
    )
    out = json.loads(result.stdout)
    assert out["digests"] == [sha(b"ok")]
    locked = [w for w in out["warnings"] if "locked" in w]
    assert locked == [f"{share / 'locked'} cannot be read (Permission denied)"]


def test_downloads_finishing_together_are_all_adopted_and_listed(
    share: Path, cache: HashCache, tmp_path: Path
) -> None:
    listing = tmp_path / "state" / "fetched.json"
    inv = Inventory([share], cache, adopted_list=listing)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    files = []
    for i in range(16):
        data = f"download {i}".encode()
        path = downloads / f"{i}.bin"
        path.write_bytes(data)
        files.append((path, manifest_of_bytes(data)))
    with ThreadPoolExecutor(max_workers=16) as pool:
        for future in [pool.submit(inv.adopt, path, manifest) for path, manifest in files]:
            future.result()
    assert digests(inv) == {manifest.sha256 for _, manifest in files}
    assert sorted(json.loads(listing.read_text())) == sorted(str(path.resolve()) for path, _ in files)
