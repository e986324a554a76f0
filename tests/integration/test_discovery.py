"""Tracker discovery over mDNS on loopback: the tracker's advert, `lanpeer-agent discover`,
and an agent daemon that finds its tracker, follows it when it moves, and ignores adverts
it cannot use.

Every Zeroconf here is bound to 127.0.0.1 (never another interface), and every test uses
cluster names of its own: other test runs on this machine may advertise on loopback too."""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from zeroconf import IPVersion, ServiceInfo, Zeroconf

from agent import discovery
from agent.daemon import Daemon
from agent.discovery import Advert, TrackerFinder, accepts_connections
from agent.localapi import TrackerSource
from tests.integration.conftest import Clients, TlsFiles, Tracker, Trackers
from tests.integration.helpers import eventually
from tracker.mdns import SERVICE_TYPE, txt_properties

LOOPBACK = ("127.0.0.1",)
FIND_TIMEOUT = 15.0


def cluster_name(label: str = "c") -> str:
    return f"t{label}-{secrets.token_hex(4)}"


def mdns_tracker(trackers: Trackers, cluster: str, db: Path | None = None, **settings: Any) -> Tracker:
    if db is not None:
        settings["db"] = db
    return trackers.start(cluster=cluster, mdns=True, mdns_interfaces=LOOPBACK, **settings)


@pytest.fixture
def finder() -> Iterator[TrackerFinder]:
    found = TrackerFinder(LOOPBACK)
    found.start()
    yield found
    found.stop()


def of_cluster(finder: TrackerFinder, cluster: str) -> list[Advert]:
    return [a for a in finder.adverts() if a.cluster == cluster]


def registered(clients: Clients, tracker: Tracker, daemon: Daemon) -> bool:
    admin = clients.admin_api(tracker)
    return any(a.agent.agent_id == daemon.agent_id and a.live for a in admin.agents())


def discover(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANPEER_")}
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "discover", "--mdns-interface", "127.0.0.1", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_the_advert_is_found_and_a_stopping_tracker_says_goodbye(
    trackers: Trackers, finder: TrackerFinder
) -> None:
    cluster = cluster_name()
    started = time.monotonic()
    tracker = mdns_tracker(trackers, cluster)
    # Probing the name takes about 1.5 s; the server does not wait for it.
    assert time.monotonic() - started < 1.0
    (advert,) = eventually(lambda: of_cluster(finder, cluster), FIND_TIMEOUT, "the advert")
    assert advert.target == tracker.address
    assert (advert.tls, advert.version, advert.name) == (False, 1, f"{cluster} tracker on {advert.host}")
    trackers.stop(tracker)
    eventually(lambda: not of_cluster(finder, cluster), FIND_TIMEOUT, "the goodbye")


def test_a_second_tracker_of_the_same_name_is_renamed(trackers: Trackers, finder: TrackerFinder) -> None:
    cluster = cluster_name()
    first = mdns_tracker(trackers, cluster)
    eventually(lambda: of_cluster(finder, cluster), FIND_TIMEOUT, "the first advert")
    second = mdns_tracker(trackers, cluster, db=trackers.db.with_name("second.db"))
    both = eventually(lambda: len(of_cluster(finder, cluster)) == 2 and of_cluster(finder, cluster))
    assert {a.target for a in both} == {first.address, second.address}
    assert len({a.name for a in both}) == 2


def test_discover_lists_the_trackers_and_fails_when_none_answers(trackers: Trackers) -> None:
    cluster = cluster_name()
    tracker = mdns_tracker(trackers, cluster)
    done = discover("--cluster", cluster, "--json", "--timeout", "3")
    assert done.returncode == 0, done.stderr
    (listed,) = json.loads(done.stdout)["trackers"]
    assert listed["address"] == tracker.address
    assert (listed["cluster"], listed["tls"], listed["protocol_version"]) == (cluster, False, 1)

    table = discover("--cluster", cluster, "--timeout", "2")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == ["CLUSTER", "ADDRESS", "TLS", "PROTOCOL", "HOST", "NAME"]
    assert row.split()[:4] == [cluster, tracker.address, "no", "v1"]

    nobody = discover("--cluster", cluster_name("none"), "--timeout", "1")
    assert nobody.returncode == 1
    assert nobody.stdout == ""
    assert nobody.stderr.startswith("No lanpeer tracker of cluster tnone-")
    assert nobody.stderr.endswith("answered on 127.0.0.1 within 1 s.\n")


def test_a_daemon_without_tracker_finds_one_and_says_how(
    trackers: Trackers, daemons: Callable[..., Daemon], share: Path, clients: Clients
) -> None:
    cluster = cluster_name()
    tracker = mdns_tracker(trackers, cluster, heartbeat_interval=1.0)
    started = time.monotonic()
    daemon = daemons(shares=(share,), mdns=True, mdns_interfaces=LOOPBACK, cluster=cluster)
    assert time.monotonic() - started < 2.0
    eventually(lambda: registered(clients, tracker, daemon), FIND_TIMEOUT, "the agent to register")
    status = daemon.status()
    assert (status.tracker, status.tracker_source, status.cluster) == (
        tracker.address,
        TrackerSource.MDNS,
        cluster,
    )
    assert status.discovery_note == ""
    assert daemon.base_url.startswith("http://127.0.0.1:")


def test_a_configured_tracker_wins_over_mdns(
    trackers: Trackers, daemons: Callable[..., Daemon], share: Path, clients: Clients
) -> None:
    cluster = cluster_name()
    advertised = mdns_tracker(trackers, cluster)
    configured = trackers.start(db=trackers.db.with_name("configured.db"))
    daemon = daemons(
        shares=(share,), tracker=configured.address, mdns=True, mdns_interfaces=LOOPBACK, cluster=cluster
    )
    eventually(lambda: registered(clients, configured, daemon), FIND_TIMEOUT, "the agent to register")
    assert daemon.finder is None
    assert daemon.status().tracker_source is TrackerSource.CONFIGURED
    time.sleep(2.5)  # Enough for the advert to have been seen, were anyone looking.
    assert not registered(clients, advertised, daemon)


def test_the_daemon_follows_its_tracker_to_another_address(
    trackers: Trackers, daemons: Callable[..., Daemon], share: Path, clients: Clients, tmp_path: Path
) -> None:
    cluster = cluster_name()
    first = mdns_tracker(trackers, cluster, heartbeat_interval=1.0)
    daemon = daemons(shares=(share,), mdns=True, mdns_interfaces=LOOPBACK, cluster=cluster)
    eventually(lambda: registered(clients, first, daemon), FIND_TIMEOUT, "the agent to register")
    trackers.stop(first)
    second = mdns_tracker(trackers, cluster, db=tmp_path / "second.db", heartbeat_interval=1.0)
    assert second.address != first.address
    eventually(lambda: registered(clients, second, daemon), FIND_TIMEOUT, "the agent to move")
    assert daemon.status().tracker == second.address


def test_an_agent_asked_for_no_cluster_joins_none_of_several(
    trackers: Trackers,
    daemons: Callable[..., Daemon],
    share: Path,
    clients: Clients,
    tmp_path: Path,
    finder: TrackerFinder,
) -> None:
    a, b = cluster_name("a"), cluster_name("b")
    first = mdns_tracker(trackers, a)
    second = mdns_tracker(trackers, b, db=tmp_path / "b.db")
    eventually(lambda: of_cluster(finder, a) and of_cluster(finder, b), FIND_TIMEOUT, "both adverts")
    daemon = daemons(shares=(share,), mdns=True, mdns_interfaces=LOOPBACK)

    def explained() -> bool:
        note = daemon.status().discovery_note
        return note.startswith("several clusters visible:") and a in note and b in note

    eventually(explained, FIND_TIMEOUT, "the daemon to explain")
    assert daemon.status().tracker == ""
    assert not registered(clients, first, daemon) and not registered(clients, second, daemon)


def test_a_tls_tracker_needs_the_agent_to_trust_a_ca(
    trackers: Trackers, daemons: Callable[..., Daemon], share: Path, clients: Clients, tls_files: TlsFiles
) -> None:
    cluster = cluster_name()
    tracker = mdns_tracker(trackers, cluster, tls_cert=tls_files.cert, tls_key=tls_files.key)
    untrusting = daemons(shares=(share,), mdns=True, mdns_interfaces=LOOPBACK, cluster=cluster)
    eventually(
        lambda: "uses TLS; give --tracker-tls-ca" in untrusting.status().discovery_note,
        FIND_TIMEOUT,
        "the refusal",
    )
    trusting = daemons(
        shares=(share,),
        mdns=True,
        mdns_interfaces=LOOPBACK,
        cluster=cluster,
        tracker_tls_ca=tls_files.cert,
    )
    admin = clients.admin_api(tracker, tls_ca=tls_files.cert)
    eventually(
        lambda: trusting.agent_id in {a.agent.agent_id for a in admin.agents()},
        FIND_TIMEOUT,
        "the agent to register over TLS",
    )
    assert untrusting.status().tracker == ""


def test_garbled_adverts_are_ignored(trackers: Trackers, finder: TrackerFinder) -> None:
    cluster = cluster_name()
    good = mdns_tracker(trackers, cluster)
    zc = Zeroconf(interfaces=list(LOOPBACK), ip_version=IPVersion.V4Only)
    props = txt_properties(cluster, False, "bad", "garbler")
    hostile: list[tuple[str, dict[str, Any], int]] = [
        ("port zero", props, 0),
        ("no version", {k: v for k, v in props.items() if k != "v"}, 7070),
        ("bad version", {**props, "v": "one"}, 7070),
        ("long cluster", {**props, "cluster": "x" * 200}, 7070),
        ("bad tls", {**props, "tls": "maybe"}, 7070),
        ("no txt", {}, 7070),
        ("binary", {"v": b"\xff", "cluster": b"\x00\x01"}, 7070),
    ]
    infos = [
        ServiceInfo(
            SERVICE_TYPE,
            f"{cluster} {label}.{SERVICE_TYPE}",
            port=port,
            properties=properties,
            server=f"garbled-{i}-{cluster}.local.",
            parsed_addresses=["127.0.0.1"],
        )
        for i, (label, properties, port) in enumerate(hostile)
    ]
    try:
        for info in infos:
            # No probing: the names are this test's own.
            zc.register_service(info, cooperating_responders=True)
        eventually(lambda: of_cluster(finder, cluster), FIND_TIMEOUT, "the good advert")
        time.sleep(1.0)
        (only,) = of_cluster(finder, cluster)
        assert only.target == good.address
        garbled = {info.name.removesuffix("." + SERVICE_TYPE) for info in infos}
        assert not [a for a in finder.adverts() if a.name in garbled]
    finally:
        for info in infos:
            zc.unregister_service(info)
        zc.close()


def test_a_flood_of_adverts_is_not_kept_beyond_the_bound(
    monkeypatch: pytest.MonkeyPatch, finder: TrackerFinder, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(discovery, "MAX_ADVERTS", 2)
    cluster = cluster_name("flood")
    zc = Zeroconf(interfaces=list(LOOPBACK), ip_version=IPVersion.V4Only)
    infos = [
        ServiceInfo(
            SERVICE_TYPE,
            f"{cluster} {i}.{SERVICE_TYPE}",
            port=7070 + i,
            properties=txt_properties(cluster, False, f"id{i}", "flooder"),
            server=f"flood-{i}-{cluster}.local.",
            parsed_addresses=["127.0.0.1"],
        )
        for i in range(4)
    ]
    try:
        with caplog.at_level(logging.WARNING, logger="agent.discovery"):
            for info in infos:
                zc.register_service(info, cooperating_responders=True)
            eventually(lambda: "ignoring" in caplog.text, FIND_TIMEOUT, "the bound to be reached")
        assert len(finder.adverts()) <= 2
    finally:
        for info in infos:
            zc.unregister_service(info)
        zc.close()


def test_a_closed_port_does_not_accept_connections() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        target = f"127.0.0.1:{listening.getsockname()[1]}"
        assert accepts_connections(target, 1.0)
    assert not accepts_connections(target, 1.0)
