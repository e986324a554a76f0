"""Starting and stopping the in-process TrackerServer."""

from __future__ import annotations

import threading
import time

import pytest

from tests.integration.helpers import agent_info
from tracker.client import TrackerClient
from tracker.errors import TrackerError, TrackerUnavailable
from tracker.server import TrackerConfig, TrackerServer


def test_stop_ends_every_thread_the_tracker_started(tmp_path):
    before = set(threading.enumerate())

    def tracker_threads() -> list[str]:
        return [t.name for t in set(threading.enumerate()) - before if t.name.startswith("tracker-")]

    server = TrackerServer(TrackerConfig(db=tmp_path / "tracker.db", listen="127.0.0.1:0"))
    server.start()
    with TrackerClient(server.address, timeout=5) as client:
        client.register(agent_info("alpha"))
    assert tracker_threads(), "the server runs its calls on tracker-rpc threads"

    server.stop()

    deadline = time.monotonic() + 0.5
    while tracker_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    # The server object is still referenced, as it is by whoever embeds the tracker.
    assert tracker_threads() == [], "TrackerServer.stop() left its worker threads running"


def test_a_stopped_tracker_does_not_answer(trackers, clients):
    tracker = trackers.start()
    client = clients.agent_api(tracker, timeout=2.0)
    client.register(agent_info("alpha"))
    trackers.stop(tracker)
    with pytest.raises(TrackerUnavailable):
        client.register(agent_info("alpha"))


def test_two_trackers_cannot_share_one_port(trackers, tmp_path):
    first = trackers.start()
    config = TrackerConfig(db=tmp_path / "second.db", listen=f"127.0.0.1:{first.port}")
    with pytest.raises(TrackerError, match=f"cannot listen on 127.0.0.1:{first.port}"):
        trackers.start_with(config)


def test_a_restart_on_the_same_database_serves_on_a_new_port(trackers, clients):
    first = trackers.start()
    clients.agent(first, "alpha").join()
    second = trackers.restart(first)
    assert second.config.db == first.config.db
    assert [a.agent.agent_id for a in clients.admin_api(second).agents()] == ["alpha"]


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"heartbeat_interval": 0.0}, "heartbeat_interval"),
        ({"heartbeat_interval": 7200.0}, "heartbeat_interval"),
        ({"handout_policy": "nearest"}, "nearest"),
    ],
    ids=["interval 0", "interval 2 h", "unknown policy"],
)
def test_a_bad_configuration_is_refused_before_anything_starts(tmp_path, overrides, says):
    with pytest.raises(TrackerError, match=says):
        TrackerConfig(db=tmp_path / "tracker.db", listen="127.0.0.1:0", **overrides)
    assert not (tmp_path / "tracker.db").exists()
