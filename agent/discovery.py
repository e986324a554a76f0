"""Finding the tracker over mDNS/DNS-SD when none is configured.

The pure part reads one advert (`parse_advert`, `pick_address`) and chooses among those
visible (`choose_tracker`). `TrackerFinder` is the I/O: a zeroconf browser whose callbacks
only note which names changed, and a worker thread that resolves them, outside zeroconf's
threads, into the set of adverts the daemon and `lanpeer-agent discover` read.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from zeroconf import Error as ZeroconfError
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from agent.errors import AgentError
from tracker.advertise import interface_addresses, open_zeroconf
from tracker.errors import InvalidArgument
from tracker.mdns import (
    PROTOCOL_VERSION,
    SERVICE_TYPE,
    TXT_CLUSTER,
    TXT_HOST,
    TXT_ID,
    TXT_TLS,
    TXT_VERSION,
    check_cluster,
)

log = logging.getLogger(__name__)

RESOLVE_TIMEOUT = 3.0
MAX_TXT_VALUE = 255
# A segment has a handful of trackers; a flood of adverts (names) beyond these bounds is
# not kept, so it cannot grow the agent's memory.
MAX_ADVERTS = 64
MAX_IGNORED = 1024


class BadAdvert(AgentError):
    """An advert of the lanpeer service type that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Advert:
    """A tracker seen over mDNS. `appeared` is the clock time this tracker (this name and
    id) was first seen."""

    name: str
    cluster: str
    version: int
    tls: bool
    tracker_id: str
    host: str
    address: str
    port: int
    appeared: float

    @property
    def target(self) -> str:
        """HOST:PORT for the tracker client."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Choice:
    """The tracker to use, or None and why. `blocking` reasons need a person to act (pick a
    cluster, trust a CA); the others only mean nothing suitable answered yet."""

    advert: Advert | None
    reason: str = ""
    blocking: bool = False


# ----------------------------------------------------------------------------- the pure part


def pick_address(addresses: Iterable[str], ours: Sequence[ipaddress.IPv4Interface]) -> str | None:
    """The advertised address to connect to: one on a subnet of an interface we browse on
    first, then any other routable one. Loopback only when we browse on loopback alone, since
    a loopback address advertised by another machine would lead back to this one."""
    loopback_ok = bool(ours) and all(a.ip.is_loopback for a in ours)
    near: list[str] = []
    far: list[str] = []
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if address.is_unspecified or address.is_multicast or address.is_link_local:
            continue
        if address.is_loopback and not loopback_ok:
            continue
        on_our_subnet = any(address in a.network for a in ours)
        (near if on_our_subnet else far).append(str(address))
    candidates = near + far
    return candidates[0] if candidates else None


def _text(properties: Mapping[bytes, bytes | None], key: str) -> str | None:
    value = properties.get(key.encode())
    if value is None:
        return None
    if len(value) > MAX_TXT_VALUE:
        raise BadAdvert(f"{key} is too long")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadAdvert(f"{key} is not UTF-8") from None
    if not text.isprintable():
        raise BadAdvert(f"{key} holds control characters")
    return text


def parse_advert(
    name: str,
    properties: Mapping[bytes, bytes | None],
    addresses: Iterable[str],
    port: int | None,
    ours: Sequence[ipaddress.IPv4Interface],
    appeared: float,
) -> Advert:
    """Reads a resolved service into an Advert; BadAdvert when it is not a usable one."""
    if port is None or not 1 <= port <= 65535:
        raise BadAdvert("no port")
    version_text = _text(properties, TXT_VERSION)
    if version_text is None or not version_text.isdigit() or len(version_text) > 6:
        raise BadAdvert(f"no protocol version (v={version_text!r})")
    cluster = _text(properties, TXT_CLUSTER)
    if cluster is None:
        raise BadAdvert("no cluster")
    try:
        check_cluster(cluster)
    except InvalidArgument as exc:
        raise BadAdvert(str(exc)) from None
    tls = _text(properties, TXT_TLS)
    if tls not in ("0", "1"):
        raise BadAdvert(f"tls is {tls!r}, not 0 or 1")
    tracker_id = _text(properties, TXT_ID)
    if not tracker_id or len(tracker_id) > 64:
        raise BadAdvert("no tracker id")
    address = pick_address(addresses, ours)
    if address is None:
        raise BadAdvert("no address this machine can reach")
    return Advert(
        name=name.removesuffix("." + SERVICE_TYPE),
        cluster=cluster,
        version=int(version_text),
        tls=tls == "1",
        tracker_id=tracker_id,
        host=_text(properties, TXT_HOST) or "",
        address=address,
        port=port,
        appeared=appeared,
    )


def _same(a: Advert, b: Advert) -> bool:
    return a.name == b.name and a.tracker_id == b.tracker_id


def choose_tracker(
    adverts: Iterable[Advert],
    cluster: str | None,
    current: Advert | None = None,
    *,
    current_reachable: bool = True,
    tls: bool = False,
) -> Choice:
    """The tracker an agent should report to among those visible.

    Only trackers of `cluster` (any, when None, as long as there is a single cluster), of
    this protocol version, and whose TLS setting matches the agent's (`tls`: it trusts a CA)
    qualify. The current tracker is kept while it is advertised and reachable; otherwise
    the most recently appeared one wins (a tracker that moved or restarted elsewhere). An
    unreachable current tracker is left only for one that appeared after it, so that two
    unreachable trackers are not taken in turns."""
    visible = list(adverts)
    where = f" of cluster {cluster}" if cluster else ""
    if not visible:
        return Choice(None, f"no tracker{where} answers over mDNS")
    pool = [a for a in visible if a.cluster == cluster] if cluster else visible
    if not pool:
        others = ", ".join(sorted({a.cluster for a in visible}))
        return Choice(None, f"no tracker of cluster {cluster} is visible (clusters visible: {others})")
    compatible = [a for a in pool if a.version == PROTOCOL_VERSION]
    if not compatible:
        versions = ", ".join(sorted({f"v{a.version}" for a in pool}))
        return Choice(
            None,
            f"the trackers{where} visible speak protocol {versions}; this agent speaks v{PROTOCOL_VERSION}",
            blocking=True,
        )
    clusters = sorted({a.cluster for a in compatible})
    if cluster is None and len(clusters) > 1:
        return Choice(
            None, f"several clusters visible: {', '.join(clusters)}; pick one with --cluster", blocking=True
        )
    usable = [a for a in compatible if a.tls == tls]
    if not usable:
        found = compatible[0]
        if found.tls:
            why = f"the tracker{where} at {found.target} uses TLS; give --tracker-tls-ca to trust it"
        else:
            why = f"the tracker{where} at {found.target} does not use TLS, but --tracker-tls-ca asks for it"
        return Choice(None, why, blocking=True)
    newest_first = sorted(usable, key=lambda a: (-a.appeared, a.name))
    still = next((a for a in usable if current is not None and _same(a, current)), None)
    if still is None:
        return Choice(newest_first[0])
    if current_reachable:
        return Choice(still)
    newer = [a for a in newest_first if a.appeared > still.appeared]
    return Choice(newer[0] if newer else still)


def newer_rival(adverts: Iterable[Advert], current: Advert) -> bool:
    """Whether a tracker of the current one's cluster, elsewhere, appeared after it."""
    return any(
        a.cluster == current.cluster and a.target != current.target and a.appeared > current.appeared
        for a in adverts
    )


# ----------------------------------------------------------------------------- the I/O


def accepts_connections(target: str, timeout: float) -> bool:
    """Whether HOST:PORT accepts a TCP connection within `timeout` seconds: a tracker that
    crashed refuses it at once, a machine that vanished lets it time out."""
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except OSError:
        return False


class TrackerFinder:
    """Browses for trackers on the chosen interfaces (names or IPv4 addresses; all when
    empty) and keeps the adverts seen, resolved and checked, until `stop()`."""

    def __init__(
        self,
        interfaces: tuple[str, ...] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
        resolve_timeout: float = RESOLVE_TIMEOUT,
    ) -> None:
        self.interfaces = interfaces
        self._clock = clock
        self._resolve_timeout = resolve_timeout
        self._changed = threading.Condition()
        self._pending: dict[str, ServiceStateChange] = {}
        self._adverts: dict[str, Advert] = {}
        self._generation = 0
        self._stopping = False
        self._ignored: dict[str, str] = {}
        self._zc: Zeroconf | None = None
        self._browser: ServiceBrowser | None = None
        self._worker: threading.Thread | None = None
        self._ours: tuple[ipaddress.IPv4Interface, ...] = ()

    def start(self) -> None:
        """Opens the mDNS sockets and starts browsing; AgentError when that cannot be done."""
        try:
            self._ours = interface_addresses(self.interfaces)
            self._zc = open_zeroconf(self._ours)
        except (InvalidArgument, OSError) as exc:
            raise AgentError(f"cannot browse for trackers over mDNS: {exc}") from None
        # The browser's callbacks only queue names, so the worker may start after it.
        self._browser = ServiceBrowser(self._zc, SERVICE_TYPE, handlers=[self._on_change])
        self._worker = threading.Thread(target=self._work, name="mdns-resolver", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._worker is not None:
            self._worker.join()
        if self._browser is not None:
            self._browser.cancel()
        if self._zc is not None:
            self._zc.close()
        self._worker = self._browser = self._zc = None

    def adverts(self) -> tuple[Advert, ...]:
        with self._changed:
            return tuple(self._adverts.values())

    def wait_for_change(self, seen: int, timeout: float) -> int:
        """Waits until the adverts differ from generation `seen`, or `timeout` passes; the
        generation now."""
        with self._changed:
            self._changed.wait_for(lambda: self._generation != seen or self._stopping, timeout)
            return self._generation

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        """Runs on zeroconf's browser thread, which must never wait: it only takes note."""
        with self._changed:
            self._pending[name] = state_change
            self._changed.notify_all()

    def _work(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._pending) or self._stopping)
                if self._stopping:
                    return
                pending, self._pending = self._pending, {}
            for name, state_change in pending.items():
                advert = None if state_change is ServiceStateChange.Removed else self._resolve(name)
                with self._changed:
                    old = self._adverts.pop(name, None)
                    if advert is not None and len(self._adverts) >= MAX_ADVERTS:
                        log.warning(
                            "more than %d lanpeer trackers advertised; ignoring %r", MAX_ADVERTS, name
                        )
                        advert = None
                    if advert is not None:
                        if old is not None and old.tracker_id == advert.tracker_id:
                            advert = dataclasses.replace(advert, appeared=old.appeared)
                        self._adverts[name] = advert
                    if advert != old:
                        self._generation += 1
                        self._changed.notify_all()

    def _resolve(self, name: str) -> Advert | None:
        assert self._zc is not None
        try:
            info = ServiceInfo(SERVICE_TYPE, name)
            if not info.request(self._zc, self._resolve_timeout * 1000):
                log.debug("mDNS: %s did not resolve", name)
                return None
            return parse_advert(
                name,
                info.properties,
                info.parsed_addresses(IPVersion.All),
                info.port,
                self._ours,
                self._clock(),
            )
        except BadAdvert as exc:
            if self._ignored.get(name) != str(exc):
                if len(self._ignored) >= MAX_IGNORED:
                    self._ignored.clear()
                self._ignored[name] = str(exc)
                log.info("ignoring the mDNS advert %r: %s", name, exc)
            return None
        except (ZeroconfError, RuntimeError, OSError) as exc:
            log.debug("mDNS: cannot resolve %s: %s", name, exc)
            return None
