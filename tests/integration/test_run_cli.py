"""`lanpeer-tracker run` as a subprocess: it serves, logs, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from tests.integration.helpers import holder_ids, make_blob
from tests.integration.test_admin_cli import clean_env, lanpeer_tracker
from tracker.errors import Unauthenticated

DATASET = make_blob("dataset.tar", 5000)
LOG_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
LISTENING = re.compile(r"tracker listening on 127\.0\.0\.1:(\d+)")


class RunningTracker:
    """A `lanpeer-tracker run` child process whose stderr is read as it comes."""

    def __init__(self, *args: str) -> None:
        # Metrics on a free loopback port, rather than the default 0.0.0.0:7072 that
        # trackers run side by side would contend for; a test may give its own after.
        self.proc = subprocess.Popen(
            [*lanpeer_tracker(), "run", "--no-mdns", "--metrics-listen", "127.0.0.1:0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(),
        )
        self.log = ""

    def _read(self, timeout: float) -> bool:
        """Reads what stderr has within `timeout`; False at end of file."""
        assert self.proc.stderr is not None
        ready, _, _ = select.select([self.proc.stderr], [], [], timeout)
        if not ready:
            return True
        chunk = os.read(self.proc.stderr.fileno(), 65536)
        self.log += chunk.decode()
        return bool(chunk)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 10.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while not (match := pattern.search(self.log)):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(remaining):
                pytest.fail(f"the tracker never logged {pattern.pattern!r}; its log:\n{self.log}")
        return match

    def wait_for_port(self) -> int:
        return int(self.wait_for(LISTENING).group(1))

    def finish(self, timeout: float) -> int:
        """Waits for the process to exit and reads the rest of its log."""
        returncode = self.proc.wait(timeout)
        while self._read(1.0):
            pass
        return returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def run_tracker() -> Iterator[Callable[..., RunningTracker]]:
    started: list[RunningTracker] = []

    def start(*args: str) -> RunningTracker:
        running = RunningTracker(*args)
        started.append(running)
        return running

    yield start
    for running in started:
        running.close()


def error_lines(log: str) -> list[str]:
    """What the process printed on stderr besides its log records."""
    return [line for line in log.splitlines() if not LOG_RECORD.match(line)]


def test_run_serves_until_sigterm_then_exits_0(run_tracker, clients, tmp_path):
    running = run_tracker("--listen", "127.0.0.1:0", "--db", str(tmp_path / "tracker.db"))
    port = running.wait_for_port()

    agent = clients.agent(f"127.0.0.1:{port}", "alpha").join(DATASET.whole())
    assert holder_ids(clients.agent_api(f"127.0.0.1:{port}"), DATASET.sha256) == [agent.id]
    assert clients.admin_api(f"127.0.0.1:{port}").stats().live_agents == 1
    clients.close()

    running.proc.send_signal(signal.SIGTERM)

    assert running.finish(timeout=5) == 0
    assert "SIGTERM received" in running.log
    assert "tracker stopped" in running.log
    assert "Traceback" not in running.log
    assert (tmp_path / "tracker.db").exists()


def test_run_warns_when_no_token_is_configured(run_tracker, tmp_path):
    running = run_tracker("--listen", "127.0.0.1:0", "--db", str(tmp_path / "tracker.db"))
    running.wait_for(re.compile(r"WARNING .*no cluster token configured"))
    running.wait_for(re.compile(r"WARNING .*no admin token configured"))


def test_run_with_token_files_requires_them_and_does_not_warn(run_tracker, clients, tmp_path):
    (tmp_path / "cluster").write_text("cluster-s3cret\n")
    (tmp_path / "admin").write_text("admin-s3cret\n")
    running = run_tracker(
        *("--listen", "127.0.0.1:0", "--db", str(tmp_path / "tracker.db")),
        *("--token-file", str(tmp_path / "cluster"), "--admin-token-file", str(tmp_path / "admin")),
    )
    target = f"127.0.0.1:{running.wait_for_port()}"

    clients.agent(target, "alpha", token="cluster-s3cret").join()
    assert clients.admin_api(target, token="admin-s3cret").stats().live_agents == 1
    with pytest.raises(Unauthenticated):
        clients.admin_api(target).stats()
    clients.close()
    running.proc.send_signal(signal.SIGTERM)
    assert running.finish(timeout=5) == 0
    assert "token configured" not in running.log


def test_run_on_the_same_database_again_keeps_what_is_durable(run_tracker, clients, tmp_path):
    db = str(tmp_path / "tracker.db")
    first = run_tracker("--listen", "127.0.0.1:0", "--db", db)
    target = f"127.0.0.1:{first.wait_for_port()}"
    agent = clients.agent(target, "alpha").join(DATASET.whole())
    agent.client.publish_manifest(agent.id, DATASET.manifest)
    clients.close()
    first.proc.send_signal(signal.SIGTERM)
    assert first.finish(timeout=5) == 0

    second = run_tracker("--listen", "127.0.0.1:0", "--db", db)
    target = f"127.0.0.1:{second.wait_for_port()}"

    assert "restored 1 agents, 1 manifests" in second.log
    stats = clients.admin_api(target).stats()
    assert (stats.manifests, stats.dead_agents, stats.live_agents) == (1, 1, 0)


def test_run_on_a_busy_port_exits_1_saying_the_address_is_in_use(run_tracker, busy_port, tmp_path):
    running = run_tracker("--listen", f"127.0.0.1:{busy_port}", "--db", str(tmp_path / "tracker.db"))

    assert running.finish(timeout=10) == 1

    assert "Traceback" not in running.log
    (line,) = [line for line in running.log.splitlines() if line.startswith("lanpeer-tracker:")]
    assert f"127.0.0.1:{busy_port}" in line
    assert "in use" in line.lower(), f"the one error line does not say why: {line!r}"


def test_run_on_a_busy_port_prints_one_error_line_and_nothing_else(run_tracker, busy_port, tmp_path):
    running = run_tracker("--listen", f"127.0.0.1:{busy_port}", "--db", str(tmp_path / "tracker.db"))

    assert running.finish(timeout=10) == 1

    errors = error_lines(running.log)
    assert len(errors) == 1, f"expected one error line besides the log records, got:\n{running.log}"
    assert errors[0].startswith("lanpeer-tracker: ")


def test_two_trackers_cannot_share_one_port(run_tracker, tmp_path):
    first = run_tracker("--listen", "127.0.0.1:0", "--db", str(tmp_path / "first.db"))
    port = first.wait_for_port()

    second = run_tracker("--listen", f"127.0.0.1:{port}", "--db", str(tmp_path / "second.db"))

    assert second.finish(timeout=10) == 1
    assert "Traceback" not in second.log
    (line,) = [line for line in second.log.splitlines() if line.startswith("lanpeer-tracker:")]
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert first.proc.poll() is None, "the first tracker must keep running"
    first.proc.send_signal(signal.SIGTERM)
    assert first.finish(timeout=5) == 0


def test_run_with_an_unreadable_database_exits_1_with_one_line(run_tracker, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    running = run_tracker("--listen", "127.0.0.1:0", "--db", str(not_a_dir / "tracker.db"))

    assert running.finish(timeout=10) == 1

    assert "Traceback" not in running.log
    (line,) = error_lines(running.log)
    assert line.startswith("lanpeer-tracker: ")
    assert str(not_a_dir / "tracker.db") in line


def test_run_with_a_missing_token_file_exits_1_with_one_line(run_tracker, tmp_path):
    missing = tmp_path / "missing-token"
    running = run_tracker(
        *("--listen", "127.0.0.1:0", "--db", str(tmp_path / "t.db")), *("--token-file", str(missing))
    )

    assert running.finish(timeout=10) == 1

    (line,) = error_lines(running.log)
    assert line == f"lanpeer-tracker: cannot read the token file {missing}: No such file or directory"


def test_sigint_stops_it_too(run_tracker, tmp_path):
    running = run_tracker("--listen", "127.0.0.1:0", "--db", str(tmp_path / "tracker.db"))
    running.wait_for_port()
    running.proc.send_signal(signal.SIGINT)
    assert running.finish(timeout=5) == 0
    assert "tracker stopped" in running.log
