"""`lanpeer-agent get` end to end: a real origin, real agents, a real tracker."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.daemon import Daemon
from tests.integration.conftest import Trackers
from tests.integration.helpers import eventually, without_root_file_access
from tests.integration.origin import Origin
from tracker.model import AgentInfo, DigestQuery, MiB

CONTENT = os.urandom(5 * MiB + 123)
DIGEST = hashlib.sha256(CONTENT).hexdigest()


def lanpeer_agent(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANPEER_")}
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def get_json(*args: str) -> dict[str, Any]:
    result = lanpeer_agent("get", "--json", "--no-daemon", *args)
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def live_holders(admin: Any, digest: str) -> list[str]:
    return [
        view.agent.agent_id
        for match in admin.inspect(DigestQuery(digest))
        for view, state in match.holders
        if state.value == "live"
    ]


def test_a_cold_url_comes_from_the_origin_in_parallel_ranges(origin: Origin, tmp_path: Path) -> None:
    origin.add("/data.bin", CONTENT)
    out = tmp_path / "data.bin"
    summary = get_json(origin.url("/data.bin"), "-o", str(out))
    assert out.read_bytes() == CONTENT
    assert summary["sha256"] == DIGEST
    assert summary["bytes_from_origin"] == len(CONTENT)
    assert summary["bytes_from_peers"] == 0
    assert origin.bytes_served("/data.bin") == len(CONTENT)
    assert origin.request_count("/data.bin") >= 6  # A HEAD and one range per piece.
    assert not out.with_name("data.bin.part").exists()


def test_peers_serve_a_known_file_and_the_origin_serves_nothing(
    origin: Origin, trackers: Trackers, daemons: Callable[..., Daemon], clients: Any, tmp_path: Path
) -> None:
    tracker = trackers.start(heartbeat_interval=1.0)
    origin.add("/data.bin", CONTENT)
    seeds = []
    for i in range(2):
        share = tmp_path / f"seed{i}"
        share.mkdir()
        (share / "data.bin").write_bytes(CONTENT)
        seeds.append(daemons(shares=(share,), tracker=tracker.address))
    admin = clients.admin_api(tracker)
    eventually(lambda: len(live_holders(admin, DIGEST)) == 2, what="both seeds")
    served_before = origin.bytes_served("/data.bin")

    out = tmp_path / "second.bin"
    summary = get_json(
        "--tracker", tracker.address, origin.url("/data.bin"), "-o", str(out), "--sha256", DIGEST
    )
    assert out.read_bytes() == CONTENT
    assert summary["bytes_from_peers"] == len(CONTENT)
    assert summary["bytes_from_origin"] == 0
    assert set(summary["sources_used"]) <= {s.agent_id for s in seeds}
    assert origin.bytes_served("/data.bin") == served_before  # Only a HEAD.


def test_a_digest_or_name_is_fetched_from_peers_alone(
    trackers: Trackers, daemons: Callable[..., Daemon], clients: Any, tmp_path: Path
) -> None:
    tracker = trackers.start(heartbeat_interval=1.0)
    share = tmp_path / "seed"
    share.mkdir()
    (share / "data.bin").write_bytes(CONTENT)
    daemons(shares=(share,), tracker=tracker.address)
    eventually(lambda: live_holders(clients.admin_api(tracker), DIGEST), what="the seed")
    by_digest = get_json("--tracker", tracker.address, f"sha256:{DIGEST}", "-o", str(tmp_path / "a"))
    assert by_digest["bytes_from_peers"] == len(CONTENT)
    by_name = get_json("--tracker", tracker.address, "name:data.bin", "-o", str(tmp_path))
    assert Path(by_name["path"]) == tmp_path / "data.bin"
    assert (tmp_path / "data.bin").read_bytes() == CONTENT


def test_a_corrupt_peer_is_detected_reported_and_routed_around(
    trackers: Trackers, daemons: Callable[..., Daemon], clients: Any, tmp_path: Path
) -> None:
    tracker = trackers.start(heartbeat_interval=1.0)
    honest, liar = tmp_path / "honest", tmp_path / "liar"
    for share in (honest, liar):
        share.mkdir()
        (share / "data.bin").write_bytes(CONTENT)
    daemons(shares=(honest,), tracker=tracker.address)
    bad = daemons(shares=(liar,), tracker=tracker.address)
    admin = clients.admin_api(tracker)
    eventually(lambda: len(live_holders(admin, DIGEST)) == 2, what="both holders")
    # Rot the liar's copy behind its back: same size and mtime, different bytes.
    path = liar / "data.bin"
    st = path.stat()
    with open(path, "r+b") as f:
        f.write(b"\xff" * (5 * MiB))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    state = tmp_path / "downloader-state"
    state.mkdir()
    (state / "agent-id").write_text("downloader\n")
    # The downloader must be registered for its report to count.
    reporter = clients.agent_api(tracker)
    reporter.register(AgentInfo("downloader", "me", "http://127.0.0.1:9", ""))
    out = tmp_path / "out.bin"
    summary = get_json(
        "--tracker", tracker.address, f"sha256:{DIGEST}", "-o", str(out), "--state-dir", str(state)
    )
    assert out.read_bytes() == CONTENT
    assert summary["bytes_from_peers"] == len(CONTENT)
    agents = {a.agent.agent_id: a for a in admin.agents()}
    # Both holders get pieces at once (six pieces, four connections each): the liar is caught.
    assert agents[bad.agent_id].bad_source_reports == 1
    assert summary["pieces_refetched"] >= 1
    assert bad.agent_id not in live_holders(admin, DIGEST)


def test_an_origin_without_ranges_is_fetched_as_one_stream(origin: Origin, tmp_path: Path) -> None:
    origin.add("/plain.bin", CONTENT, ranges=False)
    out = tmp_path / "plain.bin"
    summary = get_json(origin.url("/plain.bin"), "-o", str(out))
    assert out.read_bytes() == CONTENT
    assert summary["bytes_from_origin"] == len(CONTENT)
    assert origin.bytes_served("/plain.bin") == len(CONTENT)


def test_a_file_that_changes_at_the_origin_mid_download_starts_over(origin: Origin, tmp_path: Path) -> None:
    new = os.urandom(len(CONTENT))
    origin.add("/moving.bin", CONTENT, change_after_bytes=2 * MiB, changed_content=new)
    out = tmp_path / "moving.bin"
    result = lanpeer_agent(
        "get", "--no-daemon", "--json", origin.url("/moving.bin"), "-o", str(out), "--connections", "2"
    )
    assert out.read_bytes() == new
    assert "changed" in result.stderr and "starting again" in result.stderr


def test_sha256_mismatch_fails_and_leaves_nothing_at_the_path(origin: Origin, tmp_path: Path) -> None:
    origin.add("/data.bin", CONTENT)
    out = tmp_path / "data.bin"
    wrong = hashlib.sha256(b"other").hexdigest()
    result = lanpeer_agent(
        "get", "--no-daemon", origin.url("/data.bin"), "-o", str(out), "--sha256", wrong, check=False
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and wrong in result.stderr
    assert not out.exists()


def test_an_existing_different_file_needs_force(origin: Origin, tmp_path: Path) -> None:
    origin.add("/data.bin", CONTENT)
    out = tmp_path / "data.bin"
    out.write_bytes(b"precious")
    result = lanpeer_agent("get", "--no-daemon", origin.url("/data.bin"), "-o", str(out), check=False)
    assert result.returncode == 1 and "--force" in result.stderr
    assert out.read_bytes() == b"precious"
    lanpeer_agent("get", "--no-daemon", "--quiet", "--force", origin.url("/data.bin"), "-o", str(out))
    assert out.read_bytes() == CONTENT
    again = lanpeer_agent("get", "--no-daemon", origin.url("/data.bin"), "-o", str(out), "--sha256", DIGEST)
    assert "already there" in again.stderr


def test_no_origin_and_no_peer_is_one_clear_line(origin: Origin, tmp_path: Path) -> None:
    origin.add("/data.bin", CONTENT)
    result = lanpeer_agent(
        "get", "--no-daemon", "--no-origin", origin.url("/data.bin"), "-o", str(tmp_path / "x"), check=False
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "origin is not used" in result.stderr


def test_a_killed_download_resumes_from_its_checkpoint(origin: Origin, tmp_path: Path) -> None:
    origin.add("/slow.bin", CONTENT, rate_limit=MiB // 2)
    out = tmp_path / "slow.bin"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "get",
            "--no-daemon",
            "--quiet",
            origin.url("/slow.bin"),
            "-o",
            str(out),
            "--connections",
            "2",
        ],
    )
    control = out.with_name("slow.bin.part.lanpeer")
    try:
        eventually(
            lambda: control.exists() and json.loads(control.read_text())["done"],
            timeout=20,
            what="a checkpoint",
        )
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    first_run = origin.bytes_served("/slow.bin")
    summary = get_json(origin.url("/slow.bin"), "-o", str(out), "--connections", "4")
    assert out.read_bytes() == CONTENT
    assert summary["resumed_bytes"] >= MiB
    # Only what was not checkpointed is fetched again.
    assert first_run + summary["bytes_from_origin"] < len(CONTENT) + first_run
    assert summary["bytes_from_origin"] == len(CONTENT) - summary["resumed_bytes"]


def test_get_through_the_daemon_shares_the_file_with_the_next_machine(
    origin: Origin, trackers: Trackers, daemons: Callable[..., Daemon], clients: Any, tmp_path: Path
) -> None:
    tracker = trackers.start(heartbeat_interval=1.0)
    origin.add("/release.tar", CONTENT)
    share = tmp_path / "share"
    share.mkdir()
    first = daemons(shares=(share,), tracker=tracker.address)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    result = lanpeer_agent(
        "get",
        "--json",
        "--state-dir",
        str(first.config.state_dir),
        origin.url("/release.tar"),
        "-o",
        str(downloads / "release.tar"),
    )
    assert json.loads(result.stdout)["bytes_from_origin"] == len(CONTENT)
    admin = clients.admin_api(tracker)
    # The daemon serves what it fetched, and the tracker maps the URL to it.
    eventually(lambda: live_holders(admin, DIGEST) == [first.agent_id], what="the daemon to share it")
    before = origin.bytes_served("/release.tar")
    out = tmp_path / "next.tar"
    summary = get_json("--tracker", tracker.address, origin.url("/release.tar"), "-o", str(out))
    assert out.read_bytes() == CONTENT
    assert summary["bytes_from_peers"] == len(CONTENT)
    assert origin.bytes_served("/release.tar") == before

    status = json.loads(lanpeer_agent("status", "--json", "--state-dir", str(first.config.state_dir)).stdout)
    assert status["agent_id"] == first.agent_id
    assert status["tracker_connected"] is True
    text = lanpeer_agent("status", "--state-dir", str(first.config.state_dir)).stdout
    assert f"metrics     {first.base_url}/metrics\n" in text
    assert f"tracker     {tracker.address} (connected)\n" in text


def test_a_directory_the_daemon_may_not_write_to_is_fetched_by_get_itself(
    origin: Origin, tmp_path: Path
) -> None:
    origin.add("/release.tar", CONTENT)
    share, state = tmp_path / "share", Path(tempfile.mkdtemp(prefix="lp-", dir="/tmp"))
    share.mkdir()
    # The daemon runs as a user who may not write to the user's directory (as a hardened
    # system service does); `get` is the user, who may.
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "run",
            "--no-mdns",
            "--share",
            str(share),
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            str(state),
        ],
        stderr=subprocess.DEVNULL,
        preexec_fn=without_root_file_access,  # noqa: PLW1509 (the child only calls prctl)
    )
    try:
        eventually((state / "agent.sock").exists, what="the daemon's socket")
        mine = tmp_path / "mine"
        mine.mkdir(mode=0o555)
        result = lanpeer_agent(
            "get", "--state-dir", str(state), origin.url("/release.tar"), "-o", str(mine / "r.tar")
        )
        assert f"the agent daemon may not write to {mine}; fetching it here instead" in result.stderr
        assert (mine / "r.tar").read_bytes() == CONTENT
        status = json.loads(lanpeer_agent("status", "--json", "--state-dir", str(state)).stdout)
        assert status.get("files", 0) == 0
        assert "downloads" not in status
    finally:
        daemon.terminate()
        daemon.wait(timeout=15)
        shutil.rmtree(state, ignore_errors=True)


def seeds(
    count: int, tracker: Any, daemons: Callable[..., Daemon], tmp_path: Path, **settings: Any
) -> list[Daemon]:
    started = []
    for i in range(count):
        share = tmp_path / f"holder{i}"
        share.mkdir()
        (share / "data.bin").write_bytes(CONTENT)
        started.append(daemons(shares=(share,), tracker=tracker.address, **settings))
    return started


def test_three_holders_each_serve_part_and_the_origin_serves_nothing(
    origin: Origin, trackers: Trackers, daemons: Callable[..., Daemon], clients: Any, tmp_path: Path
) -> None:
    tracker = trackers.start(heartbeat_interval=1.0)
    origin.add("/data.bin", CONTENT)
    holders = seeds(3, tracker, daemons, tmp_path)
    eventually(lambda: len(live_holders(clients.admin_api(tracker), DIGEST)) == 3, what="three holders")
    summary = get_json(
        "--tracker",
        tracker.address,
        origin.url("/data.bin"),
        "--sha256",
        DIGEST,
        "-o",
        str(tmp_path / "out"),
        "--connections",
        "6",
    )
    by_source = summary["bytes_by_source"]
    assert set(by_source) == {h.agent_id for h in holders}
    assert all(count >= MiB for count in by_source.values())
    assert sum(by_source.values()) == len(CONTENT)
    assert origin.bytes_served("/data.bin") == 0


def test_a_holder_killed_mid_download_costs_only_a_retry(
    origin: Origin, trackers: Trackers, daemons: Callable[..., Daemon], clients: Any, tmp_path: Path
) -> None:
    tracker = trackers.start(heartbeat_interval=1.0)
    origin.add("/data.bin", CONTENT)
    doomed, survivor = seeds(2, tracker, daemons, tmp_path, upload_limit=MiB)
    eventually(lambda: len(live_holders(clients.admin_api(tracker), DIGEST)) == 2, what="two holders")
    out = tmp_path / "out.bin"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "get",
            "--no-daemon",
            "--json",
            "--tracker",
            tracker.address,
            "--sha256",
            DIGEST,
            origin.url("/data.bin"),
            "-o",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    eventually(lambda: doomed.server.bytes_served > 0, what="the doomed holder to start serving")
    doomed.stop(grace=0.0)
    stdout, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    summary = json.loads(stdout)
    assert out.read_bytes() == CONTENT
    assert summary["bytes_by_source"].get(survivor.agent_id, 0) > 0


def test_with_the_tracker_down_the_origin_alone_serves(origin: Origin, tmp_path: Path) -> None:
    origin.add("/data.bin", CONTENT)
    result = lanpeer_agent(
        "get",
        "--no-daemon",
        "--json",
        "--tracker",
        "127.0.0.1:1",
        origin.url("/data.bin"),
        "-o",
        str(tmp_path / "out"),
    )
    assert json.loads(result.stdout)["bytes_from_origin"] == len(CONTENT)
    assert "cannot reach the tracker" in result.stderr


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_is_one_clear_line(origin: Origin, small_disk: Path) -> None:
    origin.add("/data.bin", CONTENT)
    out = small_disk / "data.bin"
    result = lanpeer_agent("get", "--no-daemon", origin.url("/data.bin"), "-o", str(out), check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "No space left on device" in result.stderr
    assert not out.exists()


def test_a_digest_published_beside_the_file_is_checked(origin: Origin, tmp_path: Path) -> None:
    origin.add("/release.tar", CONTENT)
    origin.add("/release.tar.sha256", f"{DIGEST}  release.tar\n".encode())
    out = tmp_path / "release.tar"
    assert get_json(origin.url("/release.tar"), "-o", str(out))["sha256"] == DIGEST

    # A file whose published digest is not its own never appears at PATH.
    origin.add("/other.tar", CONTENT[::-1])
    origin.add("/other.tar.sha256", f"SHA256 (other.tar) = {DIGEST}\n".encode())
    bad = tmp_path / "other.tar"
    result = lanpeer_agent("get", "--no-daemon", origin.url("/other.tar"), "-o", str(bad), check=False)
    assert result.returncode == 1
    assert f"not the expected {DIGEST}" in result.stderr
    assert not bad.exists()
