"""The lab itself: hosts in namespaces on one bridge, isolated from the root namespace,
links capped both ways, and nothing left behind by `down`, even after a failed `up`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from scripts.lablib import Lab, LabError, namespaces
from scripts.lablib.lab import Host
from tests.lab.conftest import lab_prefix, lab_skip_reason

REASON = lab_skip_reason()
pytestmark = [pytest.mark.skipif(REASON is not None, reason=REASON or "")]

MiB = 1024 * 1024

# Reads one TCP connection to its end; prints the bytes and the seconds from the first byte.
SINK = """
import json, socket, sys, time
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
conn, _ = server.accept()
got, first = 0, None
while data := conn.recv(1 << 20):
    first = first or time.monotonic()
    got += len(data)
print(json.dumps({"bytes": got, "seconds": time.monotonic() - first}), flush=True)
"""

# Accepts connections on the host's address and on loopback until killed.
ACCEPT = """
import socket, sys
server = socket.create_server(("", int(sys.argv[2])))
print("ready", flush=True)
while True:
    server.accept()[0].close()
"""

SEND = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30) as s:
    s.sendall(bytes(int(sys.argv[3])))
"""


def root_view() -> tuple[str, str, list[str]]:
    """The root namespace's addresses, routes and link names."""
    addrs = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return addrs, routes, sorted(line.split(":")[1].strip() for line in links.splitlines())


def goodput_mbit(lab: Lab, sender: str, receiver: str, size: int) -> float:
    """Sends `size` bytes over TCP from one host to another; the receiver's rate in Mbit/s."""
    address = lab.address_of(receiver)
    sink = lab.popen(receiver, [sys.executable, "-c", SINK, address, "9000"], stdout=subprocess.PIPE)
    try:
        assert sink.stdout is not None
        assert sink.stdout.readline().strip() == b"ready"
        lab.run(sender, [sys.executable, "-c", SEND, address, "9000", str(size)], timeout=30)
        result = json.loads(sink.stdout.readline())
    finally:
        sink.kill()
        sink.wait()
    assert result["bytes"] == size
    return float(size * 8 / result["seconds"] / 1e6)


def test_up_makes_isolated_hosts_on_one_switch_and_down_removes_everything(
    make_lab: Callable[..., Lab],
) -> None:
    before = root_view()
    lab = make_lab(2, lan="100mbit", origin_rate="50mbit")
    assert set(lab.hosts) == {"origin", "tracker", "host1", "host2"}
    assert lab.lab_hosts == ["host1", "host2"]
    made = {lab.switch, *(h.netns for h in lab.hosts.values())}
    assert made <= set(namespaces())
    for host in lab.hosts.values():
        addrs = lab.run(host.name, ["ip", "-o", "-4", "addr"]).stdout
        assert f"inet {host.address}/24" in addrs
        assert host.address.startswith("10.77.0.")
        assert ",UP," in lab.run(host.name, ["ip", "-o", "link", "show", "lo"]).stdout
    # Every host reaches host2 through the switch, and host2 reaches its own loopback.
    target = lab.address_of("host2")
    server = lab.popen("host2", [sys.executable, "-c", ACCEPT, target, "9001"], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == b"ready"
        for name in ("origin", "tracker", "host1"):
            lab.wait_for_port(name, target, 9001, timeout=5)
        lab.wait_for_port("host2", "127.0.0.1", 9001, timeout=5)
    finally:
        server.kill()
        server.wait()
    assert goodput_mbit(lab, "host1", "host2", 256 * 1024) > 0
    # Nothing of the lab shows in the root namespace.
    assert root_view() == before
    assert "10.77." not in before[0] + before[1]

    removed = lab.down()
    assert set(removed) == made
    assert lab.down() == []  # Twice is fine.
    assert not made & set(namespaces())
    assert not lab.state_path.exists()
    assert root_view() == before


def test_a_failed_up_removes_what_it_made() -> None:
    class Failing(Lab):
        def _add_host(self, host: Host) -> None:
            if host.name == "host2":
                raise LabError("injected failure")
            super()._add_host(host)

    lab = Failing(lab_prefix(7))
    with pytest.raises(LabError, match="injected"):
        lab.up(3)
    assert lab.leftovers() == []
    assert not lab.state_path.exists()


def test_bad_input_fails_before_anything_is_made() -> None:
    lab = Lab(lab_prefix(8))
    with pytest.raises(LabError, match="not a rate"):
        lab.up(2, lan="fast")
    with pytest.raises(LabError, match="not a host"):
        lab.up(2, rates={"host9": "10mbit"})
    with pytest.raises(LabError, match="prefix"):
        Lab("Bad-Prefix")
    with pytest.raises(LabError, match="private"):
        Lab(lab_prefix(8), subnet="8.8.8.0/24")
    assert lab.leftovers() == []


def test_a_second_up_with_the_same_prefix_is_refused(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(1)
    with pytest.raises(LabError, match="already up"):
        Lab(lab.prefix).up(1)
    assert set(Lab.attach(lab.prefix).hosts) == set(lab.hosts)


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_links_are_capped_in_each_direction(make_lab: Callable[..., Lab], direction: str) -> None:
    lab = make_lab(2, lan="unlimited")
    if direction == "upload":
        lab.set_rate("host1", up="20mbit")
    else:
        lab.set_rate("host2", down="20mbit")
    rate = goodput_mbit(lab, "host1", "host2", 4 * MiB)
    # TCP/IP headers take about 4.4% of each full frame; tbf's first burst adds a little.
    assert 0.85 * 20 <= rate <= 1.03 * 20, rate
    lab.set_rate("host1", up="unlimited")
    lab.set_rate("host2", down="unlimited")
    assert goodput_mbit(lab, "host1", "host2", 16 * MiB) > 100
