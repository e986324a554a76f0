"""Wiring: builds the store, index, registry and gRPC server from a TrackerConfig."""

from __future__ import annotations

import errno
import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc

from lanpeer.v1 import admin_pb2_grpc, tracker_pb2_grpc
from tracker.advertise import Advertiser
from tracker.errors import InvalidArgument, TrackerError
from tracker.index import Index
from tracker.mdns import DEFAULT_CLUSTER, check_cluster, check_interface_choices
from tracker.model import split_host_port
from tracker.policy import DEFAULT_POLICY, policy_named
from tracker.registry import Registry
from tracker.service import TrackerAdminServicer, TrackerServicer
from tracker.store import Store
from tracker.swarm import Swarms
from tracker.wire import CHANNEL_OPTIONS

log = logging.getLogger(__name__)

SWEEP_EVERY_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    db: Path
    listen: str = "0.0.0.0:7070"
    cluster_token: str | None = None
    admin_token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    heartbeat_interval: float = 10.0
    handout_policy: str = DEFAULT_POLICY
    workers: int = 16
    # The name agents pick this tracker by when several share a LAN segment.
    cluster: str = DEFAULT_CLUSTER
    # Advertise over mDNS/DNS-SD; off by default here, on by default in `lanpeer-tracker run`.
    mdns: bool = False
    # The interfaces (names or IPv4 addresses) the advert goes out on; empty is all of them.
    mdns_interfaces: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            check_cluster(self.cluster)
            check_interface_choices(self.mdns_interfaces, "--mdns-interface")
        except InvalidArgument as exc:
            raise TrackerError(str(exc)) from None
        if (self.tls_cert is None) != (self.tls_key is None):
            raise TrackerError("TLS needs both --tls-cert and --tls-key")
        if not 0.05 <= self.heartbeat_interval <= 3600:
            raise TrackerError("the heartbeat interval must be between 0.05 and 3600 seconds")
        policy_named(self.handout_policy)


class _AddressTaken(Exception):
    pass


def _check_free(address: str) -> None:
    """Binds the address once with a plain socket, so that a busy or foreign address gets
    the system's own reason rather than gRPC's generic "Failed to bind"."""
    host, port = split_host_port(address, "listen")
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise _AddressTaken(f"{host!r} does not resolve ({exc.strerror})") from None
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            reason = "the address is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise _AddressTaken(reason) from None


class TrackerServer:
    """A running tracker. `port` is the bound port (useful with port 0)."""

    def __init__(
        self,
        config: TrackerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        index = Index(
            heartbeat_interval=config.heartbeat_interval,
            policy=policy_named(config.handout_policy),
            clock=clock,
            rng=rng,
        )
        self.registry = Registry(index, Store(config.db), Swarms(rng=rng))
        self._executor = futures.ThreadPoolExecutor(
            max_workers=config.workers, thread_name_prefix="tracker-rpc"
        )
        self._server = grpc.server(
            self._executor,
            options=(*CHANNEL_OPTIONS, ("grpc.so_reuseport", 0)),
        )
        tracker_pb2_grpc.add_TrackerServiceServicer_to_server(  # type: ignore[no-untyped-call]
            TrackerServicer(self.registry, config.cluster_token), self._server
        )
        admin_pb2_grpc.add_TrackerAdminServiceServicer_to_server(  # type: ignore[no-untyped-call]
            TrackerAdminServicer(self.registry, config.admin_token), self._server
        )
        self.port = self._bind()
        self._stopped = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="tracker-sweeper", daemon=True)
        self.advertiser: Advertiser | None = None
        if config.mdns:
            self.advertiser = Advertiser(
                cluster=config.cluster,
                port=self.port,
                tls=config.tls_cert is not None,
                listen_host=split_host_port(config.listen, "listen")[0],
                interfaces=config.mdns_interfaces,
                tracker_id=f"{(rng or random.SystemRandom()).getrandbits(64):016x}",
                hostname=socket.gethostname() or "unknown",
            )

    def _bind(self) -> int:
        address = self.config.listen
        try:
            _check_free(address)
            if self.config.tls_cert is not None and self.config.tls_key is not None:
                credentials = grpc.ssl_server_credentials(
                    [(self.config.tls_key.read_bytes(), self.config.tls_cert.read_bytes())]
                )
                port = self._server.add_secure_port(address, credentials)
            else:
                port = self._server.add_insecure_port(address)
        except _AddressTaken as exc:
            self.registry.close()
            raise TrackerError(f"cannot listen on {address}: {exc}") from None
        except OSError as exc:
            self.registry.close()
            raise TrackerError(f"cannot read the TLS key pair: {exc}") from exc
        except RuntimeError as exc:
            self.registry.close()
            raise TrackerError(f"cannot listen on {address}: {exc}") from exc
        if port == 0:
            self.registry.close()
            raise TrackerError(f"cannot listen on {address}: the address is in use or not valid")
        return int(port)

    @property
    def address(self) -> str:
        host = self.config.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    def start(self) -> None:
        self._server.start()
        self._sweeper.start()
        scheme = "TLS" if self.config.tls_cert else "plaintext"
        log.info("tracker listening on %s (%s)", self.address, scheme)
        if self.advertiser is not None:
            self.advertiser.start()
        if self.config.cluster_token is None:
            log.warning(
                "no cluster token configured: any machine that can reach this port may act as an agent"
            )
        if self.config.admin_token is None:
            log.warning(
                "no admin token configured: any machine that can reach this port may use the admin API"
            )

    def _sweep_loop(self) -> None:
        while not self._stopped.wait(SWEEP_EVERY_SECONDS):
            self.registry.sweep()

    def stop(self, grace: float = 2.0) -> None:
        """Stops taking calls, lets those under way finish within `grace` seconds, and
        closes the store. The mDNS goodbye goes first, so agents stop coming here."""
        if self.advertiser is not None:
            self.advertiser.stop()
        self._stopped.set()
        self._server.stop(grace).wait()
        self._executor.shutdown(wait=True)
        if self._sweeper.is_alive():
            self._sweeper.join()
        self.registry.close()
        log.info("tracker stopped")
