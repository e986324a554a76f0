"""The agent daemon with a real tracker: it registers, reports its files, serves them by
digest, survives the tracker going away, and stops cleanly."""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.daemon import Daemon
from tests.integration.conftest import Trackers
from tests.integration.helpers import eventually
from tracker.client import AdminClient
from tracker.model import DigestQuery, MiB, NameQuery

TOKEN = "s3cret-cluster-token"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def get(base_url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def live_ids(admin: AdminClient) -> set[str]:
    return {a.agent.agent_id for a in admin.agents() if a.live}


def holders(admin: AdminClient, digest: str) -> list[str]:
    matches = admin.inspect(DigestQuery(digest))
    return [view.agent.agent_id for m in matches for view, state in m.holders if state.value == "live"]


def test_agent_reports_its_files_and_serves_them_with_the_token(
    share: Path, trackers: Trackers, daemons: Callable[..., Daemon], clients: Any
) -> None:
    tracker = trackers.start(heartbeat_interval=1.0, cluster_token=TOKEN)
    data = os.urandom(3 * MiB + 5)
    (share / "dataset.tar").write_bytes(data)
    daemon = daemons(shares=(share,), tracker=tracker.address, token=TOKEN)
    admin = clients.admin_api(tracker)

    eventually(lambda: holders(admin, sha(data)) == [daemon.agent_id], what="the file to be located")
    # The manifest is published right after the inventory sync, in a call of its own.
    eventually(
        lambda: all(m.manifest is not None for m in admin.inspect(NameQuery("dataset.tar"))),
        what="the manifest to be published",
    )
    (match,) = admin.inspect(NameQuery("dataset.tar"))
    assert match.manifest is not None and match.manifest.piece_count == 4
    ((view, _),) = match.holders
    assert view.agent.base_url == daemon.base_url

    path = f"/v1/blobs/{sha(data)}"
    status, _, _ = get(daemon.base_url, path)
    assert status == 401
    status, headers, body = get(
        daemon.base_url, path, {"Authorization": f"Bearer {TOKEN}", "Range": f"bytes={MiB - 1}-{MiB}"}
    )
    assert status == 206
    assert body == data[MiB - 1 : MiB + 1]
    assert headers["ETag"] == f'"{sha(data)}"'
    assert get(daemon.base_url, "/v1/health")[0] == 200


def test_new_and_deleted_files_reach_the_tracker_as_deltas(
    share: Path, trackers: Trackers, daemons: Callable[..., Daemon], clients: Any
) -> None:
    tracker = trackers.start(heartbeat_interval=1.0)
    daemon = daemons(shares=(share,), tracker=tracker.address)
    admin = clients.admin_api(tracker)
    eventually(lambda: daemon.agent_id in live_ids(admin), what="the agent to register")
    (share / "late.bin").write_bytes(b"arrived later")
    eventually(lambda: holders(admin, sha(b"arrived later")) == [daemon.agent_id], what="the new file")
    registrations = daemon.reporter.registrations  # type: ignore[union-attr]
    (share / "late.bin").unlink()
    eventually(lambda: admin.inspect(DigestQuery(sha(b"arrived later"))) == [], what="the withdrawal")
    assert daemon.reporter.registrations == registrations  # type: ignore[union-attr]


def test_tracker_restart_and_outage(
    share: Path, trackers: Trackers, daemons: Callable[..., Daemon], clients: Any
) -> None:
    tracker = trackers.start(heartbeat_interval=1.0)
    (share / "f.bin").write_bytes(b"payload")
    daemon = daemons(shares=(share,), tracker=tracker.address)
    eventually(lambda: holders(clients.admin_api(tracker), sha(b"payload")), what="the first report")

    port = tracker.port
    trackers.stop(tracker)
    # With the tracker down the agent keeps serving.
    status, _, body = get(daemon.base_url, f"/v1/blobs/{sha(b'payload')}")
    assert (status, body) == (200, b"payload")

    time.sleep(1.5)  # Let the agent notice the outage and back off.
    restarted = trackers.start_with(dataclasses.replace(tracker.config, listen=f"127.0.0.1:{port}"))
    admin = clients.admin_api(restarted)
    started = time.monotonic()
    eventually(lambda: holders(admin, sha(b"payload")) == [daemon.agent_id], what="re-registration")
    # Back within about two heartbeat intervals of the restart, plus the back-off in force.
    assert time.monotonic() - started < 2 * 1.0 + 2.5


def test_eviction_is_followed_by_a_new_registration(
    share: Path, trackers: Trackers, daemons: Callable[..., Daemon], clients: Any
) -> None:
    tracker = trackers.start(heartbeat_interval=1.0)
    (share / "f.bin").write_bytes(b"evict me")
    daemon = daemons(shares=(share,), tracker=tracker.address)
    admin = clients.admin_api(tracker)
    eventually(lambda: holders(admin, sha(b"evict me")), what="the first report")
    admin.evict(daemon.agent_id)
    eventually(lambda: holders(admin, sha(b"evict me")) == [daemon.agent_id], what="re-registration")


def test_without_a_tracker_the_agent_still_serves(share: Path, daemons: Callable[..., Daemon]) -> None:
    (share / "solo.bin").write_bytes(b"solo")
    daemon = daemons(shares=(share,))
    eventually(lambda: daemon.inventory.open_blob(sha(b"solo")), what="the scan")
    assert get(daemon.base_url, f"/v1/blobs/{sha(b'solo')}")[2] == b"solo"


def test_the_state_directory_decides_who_reaches_the_control_socket(
    share: Path, daemons: Callable[..., Daemon]
) -> None:
    daemon = daemons(shares=(share,))
    assert stat.S_IMODE(daemon.config.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(daemon.api.socket_path.stat().st_mode) == 0o660
    # A state directory made by someone else (a system install's 0750) keeps its mode.
    shared_dir = daemon.config.state_dir.with_name("shared")
    shared_dir.mkdir(mode=0o750)
    other = daemons(shares=(share,), state_dir=shared_dir)
    assert stat.S_IMODE(shared_dir.stat().st_mode) == 0o750
    assert stat.S_IMODE(other.api.socket_path.stat().st_mode) == 0o660


def test_agent_id_is_kept_across_restarts(
    share: Path, tmp_path: Path, daemons: Callable[..., Daemon]
) -> None:
    first = daemons(shares=(share,), state_dir=tmp_path / "kept")
    agent_id = first.agent_id
    first.stop(grace=0.5)
    second = Daemon(AgentConfig(shares=(share,), state_dir=tmp_path / "kept", listen="127.0.0.1:0"))
    assert second.agent_id == agent_id
    second.cache.close()


# ----------------------------------------------------------------------------- the real command


def start_agent_process(
    args: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--no-mdns", *args],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 15
    for line in process.stderr:
        found = re.search(r"serving .* at (http://\S+)", line)
        if found:
            return process, found.group(1)
        if time.monotonic() > deadline:
            break
    process.kill()
    process.wait()
    pytest.fail("the agent did not start")


def test_sigterm_lets_an_upload_finish_and_tells_the_tracker(
    share: Path, tmp_path: Path, trackers: Trackers, clients: Any
) -> None:
    tracker = trackers.start(heartbeat_interval=1.0)
    data = os.urandom(4 * MiB)
    (share / "big.bin").write_bytes(data)
    process, base_url = start_agent_process(
        [
            "--share",
            str(share),
            "--tracker",
            tracker.address,
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            str(tmp_path / "state"),
            "--upload-limit",
            "4MiB/s",
        ]
    )
    try:
        admin = clients.admin_api(tracker)
        eventually(lambda: holders(admin, sha(data)), what="the report")
        host, port = base_url.removeprefix("http://").rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", f"/v1/blobs/{sha(data)}", headers={"Range": f"bytes=0-{2 * MiB - 1}"})
        response = conn.getresponse()
        process.send_signal(signal.SIGTERM)
        body = response.read()  # About half a second at 4 MiB/s: inside the grace period.
        conn.close()
        assert body == data[: 2 * MiB]
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None
        log = process.stderr.read()
        assert "told the tracker this agent is leaving" in log
        assert "Traceback" not in log
        assert holders(admin, sha(data)) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def test_bad_settings_are_one_line_and_exit_1(tmp_path: Path) -> None:
    for args, message in (
        (["--share", str(tmp_path / "absent")], "does not exist"),
        ([], "nothing to share"),
        (["--share", str(tmp_path), "--tracker", "nope"], "not HOST:PORT"),
        (["--share", str(tmp_path), "--config", str(tmp_path / "none.toml")], "cannot read the config file"),
    ):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "agent.cli",
                "run",
                "--no-mdns",
                "--state-dir",
                str(tmp_path / "s"),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 1, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert message in result.stderr


def test_stopping_does_not_wait_for_the_next_heartbeat(
    share: Path, trackers: Trackers, daemons: Callable[..., Daemon], clients: Any
) -> None:
    tracker = trackers.start(heartbeat_interval=30.0)
    daemon = daemons(shares=(share,), tracker=tracker.address)
    eventually(lambda: daemon.agent_id in live_ids(clients.admin_api(tracker)), what="registration")
    started = time.monotonic()
    daemon.stop(grace=0.5)
    assert time.monotonic() - started < 3.0
    assert daemon.agent_id not in live_ids(clients.admin_api(tracker))
