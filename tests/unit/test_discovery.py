"""The pure part of tracker discovery: reading an advert, picking its address, choosing a
tracker among those visible, and the names and addresses a tracker advertises."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import ifaddr
import pytest

from agent.discovery import (
    Advert,
    BadAdvert,
    choose_tracker,
    newer_rival,
    parse_advert,
    pick_address,
)
from tracker.advertise import advertised_addresses, interface_addresses
from tracker.errors import InvalidArgument
from tracker.mdns import (
    MAX_LABEL_BYTES,
    PROTOCOL_VERSION,
    SERVICE_TYPE,
    check_cluster,
    instance_name,
    txt_properties,
)

LAN = (ipaddress.IPv4Interface("10.77.0.11/24"), ipaddress.IPv4Interface("127.0.0.1/8"))
LOOPBACK_ONLY = (ipaddress.IPv4Interface("127.0.0.1/8"),)


def advert(name: str, cluster: str = "lab1", appeared: float = 0.0, **fields: object) -> Advert:
    values: dict[str, object] = {
        "name": name,
        "cluster": cluster,
        "version": PROTOCOL_VERSION,
        "tls": False,
        "tracker_id": f"id-{name}",
        "host": "h",
        "address": "10.77.0.3",
        "port": 7070,
        "appeared": appeared,
    }
    values.update(fields)
    return Advert(**values)  # type: ignore[arg-type]


def txt(**values: str | bytes | None) -> dict[bytes, bytes | None]:
    props: dict[bytes, bytes | None] = {
        k.encode(): v.encode() for k, v in txt_properties("lab1", False, "abc", "tracker-host").items()
    }
    for key, value in values.items():
        if value is None:
            props.pop(key.encode(), None)
        else:
            props[key.encode()] = value.encode() if isinstance(value, str) else value
    return props


# ----------------------------------------------------------------------------- reading adverts


def test_an_advert_round_trips_through_its_txt_record() -> None:
    found = parse_advert(instance_name("lab1", "tracker-host"), txt(), ["10.77.0.3"], 7070, LAN, 5.0)
    assert found == Advert(
        name="lab1 tracker on tracker-host",
        cluster="lab1",
        version=PROTOCOL_VERSION,
        tls=False,
        tracker_id="abc",
        host="tracker-host",
        address="10.77.0.3",
        port=7070,
        appeared=5.0,
    )
    assert found.target == "10.77.0.3:7070"
    assert replace(found, address="fd00::3").target == "[fd00::3]:7070"


@pytest.mark.parametrize(
    ("properties", "port", "addresses", "why"),
    [
        (txt(), None, ["10.77.0.3"], "no port"),
        (txt(), 0, ["10.77.0.3"], "no port"),
        (txt(v=None), 7070, ["10.77.0.3"], "no protocol version"),
        (txt(v="one"), 7070, ["10.77.0.3"], "no protocol version"),
        (txt(v="1" * 40), 7070, ["10.77.0.3"], "no protocol version"),
        (txt(cluster=None), 7070, ["10.77.0.3"], "no cluster"),
        (txt(cluster="x" * 64), 7070, ["10.77.0.3"], "1 to 63 bytes"),
        (txt(cluster="a.b"), 7070, ["10.77.0.3"], "without dots"),
        (txt(cluster=b"\xff\xfe"), 7070, ["10.77.0.3"], "not UTF-8"),
        (txt(cluster="a\x00b"), 7070, ["10.77.0.3"], "control characters"),
        (txt(cluster="x" * 300), 7070, ["10.77.0.3"], "too long"),
        (txt(tls="maybe"), 7070, ["10.77.0.3"], "tls"),
        (txt(id=None), 7070, ["10.77.0.3"], "no tracker id"),
        (txt(), 7070, [], "no address"),
        (txt(), 7070, ["127.0.0.1", "not an address", "224.0.0.251", "0.0.0.0"], "no address"),
    ],
)
def test_unusable_adverts_are_refused_with_a_reason(
    properties: dict[bytes, bytes | None], port: int | None, addresses: list[str], why: str
) -> None:
    with pytest.raises(BadAdvert, match=why):
        parse_advert(f"x.{SERVICE_TYPE}", properties, addresses, port, LAN, 0.0)


def test_another_protocol_version_is_read_for_the_choice_to_explain() -> None:
    found = parse_advert(f"x.{SERVICE_TYPE}", txt(v="2"), ["10.77.0.3"], 7070, LAN, 0.0)
    assert found.version == 2


def test_the_address_on_our_subnet_is_preferred_and_loopback_only_on_loopback() -> None:
    assert pick_address(["192.168.9.9", "10.77.0.3"], LAN) == "10.77.0.3"
    assert pick_address(["192.168.9.9"], LAN) == "192.168.9.9"
    assert pick_address(["127.0.0.1", "fe80::1"], LAN) is None
    assert pick_address(["127.0.0.1"], LOOPBACK_ONLY) == "127.0.0.1"
    assert pick_address(["fd00::3"], LAN) == "fd00::3"


# ----------------------------------------------------------------------------- choosing


def test_nothing_visible_is_no_choice_but_not_a_problem() -> None:
    choice = choose_tracker([], "lab1")
    assert choice.advert is None and not choice.blocking
    assert "lab1" in choice.reason


def test_the_only_tracker_is_chosen_without_a_cluster() -> None:
    only = advert("t1")
    assert choose_tracker([only], None).advert == only


def test_several_clusters_without_one_asked_for_is_no_choice_with_the_names() -> None:
    choice = choose_tracker([advert("t1", "b"), advert("t2", "a")], None)
    assert choice.advert is None and choice.blocking
    assert choice.reason == "several clusters visible: a, b; pick one with --cluster"


def test_the_cluster_asked_for_picks_its_tracker() -> None:
    a, b = advert("t1", "a"), advert("t2", "b")
    assert choose_tracker([a, b], "b").advert == b
    missing = choose_tracker([a, b], "c")
    assert missing.advert is None and "clusters visible: a, b" in missing.reason


def test_another_protocol_version_is_skipped_and_explained() -> None:
    old, new = advert("t1", version=PROTOCOL_VERSION), advert("t2", version=PROTOCOL_VERSION + 1, appeared=9)
    assert choose_tracker([old, new], "lab1").advert == old
    choice = choose_tracker([new], "lab1")
    assert choice.advert is None and choice.blocking and f"v{PROTOCOL_VERSION + 1}" in choice.reason


def test_tls_must_match_what_the_agent_trusts() -> None:
    secure = advert("t1", tls=True)
    refused = choose_tracker([secure], "lab1", tls=False)
    assert refused.advert is None and refused.blocking and "--tracker-tls-ca" in refused.reason
    assert choose_tracker([secure], "lab1", tls=True).advert == secure
    plain = choose_tracker([advert("t2")], "lab1", tls=True)
    assert plain.advert is None and "does not use TLS" in plain.reason


def test_the_current_tracker_is_kept_while_advertised_and_reachable() -> None:
    current, newer = advert("t1", appeared=1), advert("t2", appeared=2)
    assert choose_tracker([current, newer], "lab1", current).advert == current
    # A fresh copy of the current advert (its address changed) is returned.
    moved = replace(current, address="10.77.0.4")
    assert choose_tracker([moved, newer], "lab1", current).advert == moved


def test_a_tracker_that_restarted_elsewhere_is_followed() -> None:
    old = advert("t1", appeared=1)
    restarted = advert("t1", appeared=5, tracker_id="new-id", address="10.77.0.13")
    assert choose_tracker([restarted], "lab1", old).advert == restarted
    # Gone (a goodbye): the newest one of the cluster.
    assert choose_tracker([advert("t2", appeared=3), advert("t3", appeared=4)], "lab1", old).advert == advert(
        "t3", appeared=4
    )


def test_an_unreachable_tracker_is_left_only_for_a_newer_one() -> None:
    old, stale_rival, newer = advert("t1", appeared=2), advert("t0", appeared=1), advert("t2", appeared=3)
    assert choose_tracker([old, stale_rival], "lab1", old, current_reachable=False).advert == old
    assert choose_tracker([old, stale_rival, newer], "lab1", old, current_reachable=False).advert == newer


# ----------------------------------------------------------------------------- the tracker's side


def test_cluster_names_are_dns_label_sized_printable_and_dotless() -> None:
    assert check_cluster("lab 1") == "lab 1"
    assert check_cluster("x" * 63) == "x" * 63
    for bad in ("", "x" * 64, "a.b", "tab\there", " padded"):
        with pytest.raises(InvalidArgument):
            check_cluster(bad)


def test_instance_names_fit_one_label() -> None:
    name = instance_name("c" * 63, "host.example.org")
    label = name.removesuffix("." + SERVICE_TYPE)
    assert len(label.encode()) == MAX_LABEL_BYTES
    assert "." not in label
    assert instance_name("lab1", "büro.local") == f"lab1 tracker on büro-local.{SERVICE_TYPE}"


def adapters() -> list[ifaddr.Adapter]:
    return [
        ifaddr.Adapter("lo", "lo", [ifaddr.IP("127.0.0.1", 8, "lo"), ifaddr.IP(("::1", 0, 0), 128, "lo")]),
        ifaddr.Adapter("eth0", "eth0", [ifaddr.IP("10.77.0.3", 24, "eth0")]),
        ifaddr.Adapter("eth1", "eth1", [ifaddr.IP("192.168.5.1", 16, "eth1")]),
        ifaddr.Adapter("v6only", "v6only", [ifaddr.IP(("fd00::1", 0, 0), 64, "v6only")]),
    ]


def test_interfaces_are_chosen_by_name_or_address() -> None:
    every = interface_addresses((), adapters())
    assert [str(a) for a in every] == ["127.0.0.1/8", "10.77.0.3/24", "192.168.5.1/16"]
    assert [str(a) for a in interface_addresses(("eth1", "10.77.0.3"), adapters())] == [
        "192.168.5.1/16",
        "10.77.0.3/24",
    ]
    for bad, why in (
        ("eth9", "no interface of that name"),
        ("v6only", "no interface of that name"),
        ("10.9.9.9", "no interface of this machine"),
        ("fd00::1", "IPv4"),
    ):
        with pytest.raises(InvalidArgument, match=why):
            interface_addresses((bad,), adapters())


def test_a_tracker_advertises_its_listen_address_or_its_interfaces_outside_loopback() -> None:
    every = interface_addresses((), adapters())
    assert advertised_addresses("10.77.0.3", every) == ["10.77.0.3"]
    assert advertised_addresses("0.0.0.0", every) == ["10.77.0.3", "192.168.5.1"]
    assert advertised_addresses("", interface_addresses(("lo",), adapters())) == ["127.0.0.1"]


def test_a_newer_tracker_of_the_cluster_elsewhere_is_a_rival() -> None:
    current = advert("old", appeared=5.0)
    assert not newer_rival([current], current)
    assert not newer_rival([current, advert("older", appeared=1.0, address="10.77.0.9")], current)
    assert not newer_rival([current, advert("other", "lab2", appeared=9.0, address="10.77.0.9")], current)
    # Restarted at the same address: the reporter follows it there without a switch.
    assert not newer_rival([current, advert("same", appeared=9.0)], current)
    assert newer_rival([current, advert("new", appeared=9.0, address="10.77.0.9")], current)
