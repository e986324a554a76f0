"""What the tracker's mDNS/DNS-SD advert says: the service type, the TXT keys both sides
read, instance and cluster names. The tracker's Advertiser (tracker.advertise) and the
agent's TrackerFinder (agent.discovery) share it. No zeroconf here: commands that do not
use mDNS import this without its cost."""

from __future__ import annotations

from collections.abc import Sequence

from tracker.errors import InvalidArgument

SERVICE_TYPE = "_lanpeer._tcp.local."
# The version of TrackerService an advertised tracker speaks. Agents skip adverts of another.
PROTOCOL_VERSION = 1
DEFAULT_CLUSTER = "default"
# A DNS label, and so an instance name and a cluster name, holds at most 63 bytes.
MAX_LABEL_BYTES = 63
MAX_TXT_HOST_BYTES = 63

TXT_VERSION = "v"
TXT_CLUSTER = "cluster"
TXT_TLS = "tls"
TXT_ID = "id"
TXT_HOST = "host"


def check_cluster(name: str, what: str = "cluster") -> str:
    """A cluster name: 1 to 63 bytes of printable text without dots (it goes into a DNS label)."""
    size = len(name.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= MAX_LABEL_BYTES:
        raise InvalidArgument(f"{what}: {name!r} must be 1 to {MAX_LABEL_BYTES} bytes long")
    if not name.isprintable() or "." in name or name != name.strip():
        raise InvalidArgument(
            f"{what}: {name!r} must be printable, without dots or leading and trailing spaces"
        )
    return name


def check_interface_choices(choices: Sequence[str], what: str = "mdns_interfaces") -> tuple[str, ...]:
    for choice in choices:
        if not choice or choice != choice.strip() or not choice.isprintable():
            raise InvalidArgument(f"{what}: {choice!r} is not an interface name or address")
    return tuple(choices)


def truncate_utf8(text: str, limit: int) -> str:
    """The longest prefix of `text` that is at most `limit` bytes in UTF-8."""
    return text.encode("utf-8", "surrogatepass")[:limit].decode("utf-8", "ignore")


def txt_properties(cluster: str, tls: bool, tracker_id: str, host: str) -> dict[str, str]:
    return {
        TXT_VERSION: str(PROTOCOL_VERSION),
        TXT_CLUSTER: cluster,
        TXT_TLS: "1" if tls else "0",
        TXT_ID: tracker_id,
        TXT_HOST: truncate_utf8(host, MAX_TXT_HOST_BYTES),
    }


def instance_name(cluster: str, host: str) -> str:
    """The DNS-SD instance name a person reads in a service browser, within one label."""
    label = truncate_utf8(f"{cluster} tracker on {host}".replace(".", "-"), MAX_LABEL_BYTES)
    return f"{label}.{SERVICE_TYPE}"


def describe_interfaces(choices: Sequence[str]) -> str:
    return ", ".join(choices) if choices else "all interfaces"
