"""Announces a running tracker over mDNS/DNS-SD, so that agents with no tracker configured
find it (see tracker.mdns for what the advert says), and the choice of interfaces the
agent's browsing shares."""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
from collections.abc import Iterable, Sequence

import ifaddr
from zeroconf import IPVersion, ServiceInfo, Zeroconf

from tracker.errors import InvalidArgument
from tracker.mdns import (
    SERVICE_TYPE,
    describe_interfaces,
    instance_name,
    txt_properties,
)

log = logging.getLogger(__name__)

# The goodbye is three packets a quarter of a second apart; this bounds the wait for them.
GOODBYE_TIMEOUT = 3.0


def interface_addresses(
    choices: Sequence[str], adapters: Iterable[ifaddr.Adapter] | None = None
) -> tuple[ipaddress.IPv4Interface, ...]:
    """The IPv4 addresses (with their networks) of the interfaces named or addressed in
    `choices`, or of every interface when `choices` is empty. mDNS runs over IPv4 here."""
    found = [
        (adapter, ipaddress.IPv4Interface(f"{ip.ip}/{ip.network_prefix}"))
        for adapter in (ifaddr.get_adapters() if adapters is None else adapters)
        for ip in adapter.ips
        if isinstance(ip.ip, str)
    ]
    if not choices:
        if not found:
            raise InvalidArgument("mDNS: this machine has no IPv4 address")
        return tuple(dict.fromkeys(address for _, address in found))
    chosen: list[ipaddress.IPv4Interface] = []
    for choice in choices:
        try:
            wanted = ipaddress.ip_address(choice)
        except ValueError:
            wanted = None
        if wanted is not None and wanted.version != 4:
            raise InvalidArgument(
                f"mDNS interface {choice}: give an IPv4 address or an interface name (mDNS runs over IPv4)"
            )
        if wanted is not None:
            matches = [address for _, address in found if address.ip == wanted]
            if not matches:
                raise InvalidArgument(
                    f"mDNS interface {choice}: no interface of this machine has that address"
                )
        else:
            names = {a.name for a, _ in found} | {str(a.nice_name) for a, _ in found}
            matches = [address for a, address in found if choice in (a.name, a.nice_name)]
            if not matches:
                raise InvalidArgument(
                    f"mDNS interface {choice}: no interface of that name has an IPv4 address "
                    f"(interfaces with one: {', '.join(sorted(names)) or 'none'})"
                )
        chosen += matches
    return tuple(dict.fromkeys(chosen))


def open_zeroconf(addresses: Sequence[ipaddress.IPv4Interface]) -> Zeroconf:
    """A Zeroconf that sends and listens on these addresses' interfaces only. Raises OSError
    when its sockets cannot be opened."""
    return Zeroconf(interfaces=[str(a.ip) for a in addresses], ip_version=IPVersion.V4Only)


def advertised_addresses(listen_host: str, ours: Sequence[ipaddress.IPv4Interface]) -> list[str]:
    """The addresses to put in the advert: the listen address when it names one, else the
    addresses of the interfaces mDNS runs on, loopback only when they are all loopback."""
    if listen_host not in ("", "0.0.0.0", "::"):
        return [listen_host]
    outside = [str(a.ip) for a in ours if not a.ip.is_loopback]
    return outside or [str(a.ip) for a in ours]


class Advertiser:
    """Registers the tracker's service while it runs and says goodbye when it stops.

    Registration probes for a unique name for about 1.5 s; it runs on zeroconf's own event
    loop, so `start()` returns at once and the tracker serves meanwhile. A name already
    taken is renamed ("... -2"). Any failure is one warning: the tracker keeps serving,
    without mDNS."""

    def __init__(
        self,
        *,
        cluster: str,
        port: int,
        tls: bool,
        listen_host: str,
        interfaces: tuple[str, ...],
        tracker_id: str,
        hostname: str,
    ) -> None:
        self._cluster = cluster
        self._port = port
        self._tls = tls
        self._listen_host = listen_host
        self._interfaces = interfaces
        self._tracker_id = tracker_id
        self._hostname = hostname
        self._zc: Zeroconf | None = None
        self._info: ServiceInfo | None = None
        self._registration: concurrent.futures.Future[None] | None = None

    @property
    def name(self) -> str | None:
        """The instance name once registered (it may differ from the one asked for)."""
        done = self._registration is not None and self._registration.done()
        if not done or self._info is None:
            return None
        return self._info.name

    def start(self) -> None:
        try:
            ours = interface_addresses(self._interfaces)
            zc = open_zeroconf(ours)
        except (InvalidArgument, OSError) as exc:
            log.warning("not advertising the tracker over mDNS: %s", exc)
            return
        self._info = ServiceInfo(
            SERVICE_TYPE,
            instance_name(self._cluster, self._hostname),
            port=self._port,
            properties=txt_properties(self._cluster, self._tls, self._tracker_id, self._hostname),
            # A host name of this tracker's own, so that its address records never merge with
            # those of another tracker on a machine of the same name.
            server=f"lanpeer-tracker-{self._tracker_id}.local.",
            parsed_addresses=advertised_addresses(self._listen_host, ours),
        )
        self._zc = zc
        assert zc.loop is not None
        self._registration = asyncio.run_coroutine_threadsafe(self._register(zc, self._info), zc.loop)
        self._registration.add_done_callback(self._registered)

    @staticmethod
    async def _register(zc: Zeroconf, info: ServiceInfo) -> None:
        announced = await zc.async_register_service(info, allow_name_change=True)
        await announced

    def _registered(self, future: concurrent.futures.Future[None]) -> None:
        """Runs on zeroconf's event loop thread: it only logs."""
        if future.cancelled() or self._info is None:
            return
        exc = future.exception()
        if exc is not None:
            log.warning("not advertising the tracker over mDNS: %s", str(exc) or type(exc).__name__)
            return
        log.info(
            "advertising the tracker over mDNS as %r (cluster %s, %s on %s)",
            self._info.name.removesuffix("." + SERVICE_TYPE),
            self._cluster,
            ", ".join(self._info.parsed_addresses()),
            describe_interfaces(self._interfaces),
        )

    def stop(self) -> None:
        """Says goodbye (so agents learn at once that this tracker is gone) and closes the
        sockets. Safe while registration is still probing, after it failed, and twice."""
        zc, info, registration = self._zc, self._info, self._registration
        self._zc = None
        if zc is None or info is None or registration is None:
            return
        if not registration.done():
            # Zeroconf.close() below says goodbye for anything the cancelled registration
            # managed to add.
            registration.cancel()
        elif not registration.cancelled() and registration.exception() is None:
            assert zc.loop is not None
            try:
                asyncio.run_coroutine_threadsafe(self._goodbye(zc, info), zc.loop).result(GOODBYE_TIMEOUT)
            except (concurrent.futures.TimeoutError, OSError, RuntimeError) as exc:
                log.warning("could not say goodbye over mDNS: %s", str(exc) or type(exc).__name__)
        zc.close()

    @staticmethod
    async def _goodbye(zc: Zeroconf, info: ServiceInfo) -> None:
        sent = await zc.async_unregister_service(info)
        await sent
