"""Tracker discovery over mDNS across the lab's machines: agents started without a tracker
address find it, follow it to another machine, and pick theirs among two clusters. The
multicast stays on the lab's bridge, inside namespaces the lab made."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scripts.lablib import Lab
from scripts.lablib.lab import ORIGIN
from scripts.lablib.services import AgentProc, Services
from tests.integration.helpers import eventually
from tests.lab.conftest import lab_skip_reason

REASON = lab_skip_reason()
pytestmark = [pytest.mark.skipif(REASON is not None, reason=REASON or "")]

FIND_TIMEOUT = 20.0
AMBIGUOUS = "several clusters visible: a, b; pick one with --cluster"


def wait_until(check: Callable[[], Any], what: str, timeout: float = FIND_TIMEOUT) -> Any:
    # Each check runs a command in the lab: a few a second are enough.
    return eventually(check, timeout, what, poll=0.2)


def live_agents(s: Services, tracker: str) -> set[str]:
    return {a["agent_id"] for a in s.tracker_agents(tracker) if a["live"]}


def agent_id(s: Services, agent: AgentProc) -> str:
    status = s.agent_status(agent)
    assert status is not None
    return str(status["agent_id"])


def start_agents(s: Services, workdir: Path, hosts: dict[str, str | None]) -> dict[str, AgentProc]:
    """An agent on each host with no tracker address, looking for that host's cluster."""
    agents = {}
    for host, cluster in hosts.items():
        share = workdir / f"share-{host}"
        share.mkdir()
        agents[host] = s.start_agent(
            host, share=share, state_dir=workdir / host, tracker=None, discover=True, cluster=cluster
        )
    return agents


def test_agents_find_the_tracker_and_follow_it_to_other_machines(
    make_lab: Callable[..., Lab], services: Callable[[Lab], Services], workdir: Path
) -> None:
    lab = make_lab(3)
    s = services(lab)
    first = s.start_tracker(cluster="lab1", name="tracker-a")
    agents = start_agents(s, workdir, {"host1": None, "host2": "lab1"})
    ids = {agent_id(s, a) for a in agents.values()}
    wait_until(lambda: live_agents(s, first) == ids, "both agents to register")
    status = s.agent_status(agents["host1"])
    assert status is not None
    assert (status["tracker"], status["tracker_source"], status["cluster"]) == (
        first,
        "TRACKER_SOURCE_MDNS",
        "lab1",
    )

    # A clean stop says goodbye; the tracker comes back on host3, with a database of its own.
    s.stop(next(p for p in s.procs if p.name == "tracker-a"))
    second = s.start_tracker(cluster="lab1", host="host3", name="tracker-b")
    wait_until(lambda: live_agents(s, second) == ids, "both agents to move to host3")

    # A crash says nothing: the old advert lingers in the agents' caches, unanswered, and the
    # tracker that appears after it wins.
    crashed = next(p for p in s.procs if p.name == "tracker-b")
    crashed.process.send_signal(signal.SIGKILL)
    crashed.process.wait()
    third = s.start_tracker(cluster="lab1", host=ORIGIN, name="tracker-c")
    wait_until(lambda: live_agents(s, third) == ids, "both agents to move to the origin host")
    moved = s.agent_status(agents["host2"])
    assert moved is not None and moved["tracker"] == third and moved["tracker_connected"]
    for agent in agents.values():
        assert agent.proc.process.poll() is None


def test_two_clusters_on_one_segment(
    make_lab: Callable[..., Lab], services: Callable[[Lab], Services], workdir: Path
) -> None:
    lab = make_lab(3)
    s = services(lab)
    a = s.start_tracker(cluster="a", name="tracker-a")
    b = s.start_tracker(cluster="b", host="host3", name="tracker-b")

    listed = s.run("host1", s.lanpeer("agent", "discover", "--json", "--timeout", "3"))
    assert listed.returncode == 0, listed.stderr
    trackers = {t["cluster"]: t["address"] for t in json.loads(listed.stdout)["trackers"]}
    assert trackers == {"a": a, "b": b}

    agents = start_agents(s, workdir, {"host1": "a", "host2": "b", "host3": None})
    wait_until(lambda: live_agents(s, a) == {agent_id(s, agents["host1"])}, "host1 to join cluster a")
    wait_until(lambda: live_agents(s, b) == {agent_id(s, agents["host2"])}, "host2 to join cluster b")

    def undecided() -> dict[str, Any] | None:
        status = s.agent_status(agents["host3"])
        return status if status and status.get("discovery_note") == AMBIGUOUS else None

    status = wait_until(undecided, "host3's agent to say why it joins neither")
    assert status.get("tracker", "") == ""
    shown = s.run("host3", s.lanpeer("agent", "status", "--state-dir", str(agents["host3"].state_dir)))
    assert "several clusters visible: a, b" in shown.stdout
    log = agents["host3"].proc.log.read_text()
    assert f"ERROR agent.daemon: {AMBIGUOUS}" in log
    assert agent_id(s, agents["host3"]) not in live_agents(s, a) | live_agents(s, b)
