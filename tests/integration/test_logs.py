"""Logs of the real commands: `--log-format json` gives one JSON object a line, and no
token, URL password or URL signature appears in a log line or an error, even at debug level."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import agent_info, eventually
from tests.integration.origin import Origin
from tests.integration.test_admin_cli import clean_env
from tests.integration.test_run_cli import RunningTracker

CLUSTER_SECRET = "cluster-s3cret-4a1f"
ADMIN_SECRET = "admin-s3cret-77b2"
URL_PASSWORD = "pw-s3cret-9c0e"
URL_SIGNATURE = "sig-s3cret-d41d"
SECRETS = (CLUSTER_SECRET, ADMIN_SECRET, URL_PASSWORD, URL_SIGNATURE)


def json_lines(log: str) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    return entries


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_tracker_json_logs_from_its_config_file_carry_no_token(clients, tmp_path: Path) -> None:
    (tmp_path / "cluster").write_text(CLUSTER_SECRET)
    (tmp_path / "admin").write_text(ADMIN_SECRET)
    config = tmp_path / "tracker.toml"
    config.write_text(
        f'listen = "127.0.0.1:0"\ndb = "{tmp_path}/tracker.db"\ntoken_file = "{tmp_path}/cluster"\n'
        f'admin_token_file = "{tmp_path}/admin"\nlog_format = "json"\nlog_level = "debug"\n'
    )
    running = RunningTracker("--config", str(config))
    try:
        _use_and_stop(running, clients)
    finally:
        running.close()
    entries = json_lines(running.log)
    assert any("agent alpha registered" in e["message"] for e in entries)
    assert entries[-1]["message"] == "tracker stopped"
    assert_no_secret(running.log)


def _use_and_stop(running: RunningTracker, clients: Any) -> None:
    port = running.wait_for_port()
    client = clients.agent_api(f"127.0.0.1:{port}", token=CLUSTER_SECRET)
    client.register(agent_info("alpha"))
    refused = clients.agent_api(f"127.0.0.1:{port}", token="wrong-" + CLUSTER_SECRET)
    with pytest.raises(Exception, match="token"):
        refused.register(agent_info("beta"))
    running.proc.send_signal(signal.SIGTERM)
    assert running.finish(timeout=10) == 0


def test_agent_json_logs_and_errors_carry_no_secret(trackers, tmp_path: Path) -> None:
    tracker = trackers.start(cluster_token=CLUSTER_SECRET)
    (tmp_path / "cluster").write_text(CLUSTER_SECRET)
    data = os.urandom(300_000)
    share = tmp_path / "share"
    share.mkdir()
    with Origin() as origin, tempfile.TemporaryDirectory(prefix="lp-", dir="/tmp") as state:
        origin.add("/data.bin", data)
        env = {**clean_env(), "LANPEER_TOKEN": CLUSTER_SECRET}
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent.cli",
                "run",
                "--share",
                str(share),
                "--tracker",
                tracker.address,
                "--listen",
                "127.0.0.1:0",
                "--state-dir",
                state,
                "--log-format",
                "json",
                "--log-level",
                "debug",
            ],
            stderr=subprocess.PIPE,
            env=env,
        )
        log = ""
        assert agent.stderr is not None
        stderr = agent.stderr
        try:

            def read_log() -> str:
                nonlocal log
                while select.select([stderr], [], [], 0.05)[0]:
                    chunk = os.read(stderr.fileno(), 65536)
                    if not chunk:
                        break
                    log += chunk.decode()
                return log

            eventually(lambda: re.search(r"agent \S+ serving", read_log()), what="the agent to start")
            secret_url = (
                origin.url("/data.bin").replace("http://", f"http://user:{URL_PASSWORD}@")
                + f"?X-Amz-Signature={URL_SIGNATURE}&v=1"
            )
            ok = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "agent.cli",
                    "get",
                    secret_url,
                    "-o",
                    str(tmp_path / "out.bin"),
                    "--state-dir",
                    state,
                    "--verbose",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
                check=False,
            )
            assert ok.returncode == 0, ok.stderr
            assert (tmp_path / "out.bin").read_bytes() == data
            missing = secret_url.replace("/data.bin", "/missing.bin")
            failed = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "agent.cli",
                    "get",
                    missing,
                    "-o",
                    str(tmp_path / "missing.bin"),
                    "--no-daemon",
                    "--verbose",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
                check=False,
            )
            assert failed.returncode == 1
            assert "missing.bin" in failed.stderr
            for output in (ok.stdout, ok.stderr, failed.stdout, failed.stderr):
                assert_no_secret(output)
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(timeout=15) == 0
            time.sleep(0.1)
            read_log()
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
            stderr.close()
    entries = json_lines(log)
    assert any("data.bin" in e["message"] for e in entries), log
    assert_no_secret(log)
