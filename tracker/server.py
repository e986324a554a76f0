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
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import start_http_server

from lanpeer.v1 import admin_pb2_grpc, tracker_pb2_grpc
from tracker.advertise import Advertiser
from tracker.errors import InvalidArgument, TrackerError
from tracker.index import Index
from tracker.mdns import DEFAULT_CLUSTER, check_cluster, check_interface_choices
from tracker.metrics import TrackerMetrics
from tracker.model import split_host_port
from tracker.policy import DEFAULT_POLICY, policy_named
from tracker.process import LOG_FORMATS, LOG_LEVELS
from tracker.registry import Registry
from tracker.service import TrackerAdminServicer, TrackerServicer
from tracker.store import Store
from tracker.swarm import Swarms
from tracker.wire import CHANNEL_OPTIONS

log = logging.getLogger(__name__)

SWEEP_EVERY_SECONDS = 60.0
DEFAULT_METRICS_LISTEN = "0.0.0.0:7072"
DEFAULT_LISTEN = "0.0.0.0:7070"
DEFAULT_HEARTBEAT_INTERVAL = 10.0


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    db: Path
    listen: str = DEFAULT_LISTEN
    cluster_token: str | None = None
    admin_token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    handout_policy: str = DEFAULT_POLICY
    workers: int = 16
    log_level: str = "info"
    log_format: str = "text"
    # Where to serve the Prometheus metrics over HTTP (GET /metrics); None serves none.
    metrics_listen: str | None = None
    # The name agents pick this tracker by when several share a LAN segment.
    cluster: str = DEFAULT_CLUSTER
    # Advertise over mDNS/DNS-SD; off by default here, on by default in `lanpeer-tracker run`.
    mdns: bool = False
    # The interfaces (names or IPv4 addresses) the advert goes out on; empty is all of them.
    mdns_interfaces: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            if self.metrics_listen is not None:
                split_host_port(self.metrics_listen, "metrics_listen")
            check_cluster(self.cluster)
            check_interface_choices(self.mdns_interfaces)
        except InvalidArgument as exc:
            raise TrackerError(str(exc)) from None
        if (self.tls_cert is None) != (self.tls_key is None):
            raise TrackerError("tls_cert and tls_key go together: TLS needs both --tls-cert and --tls-key")
        if not 0.05 <= self.heartbeat_interval <= 3600:
            raise TrackerError(
                f"heartbeat_interval: {self.heartbeat_interval} is not between 0.05 and 3600 seconds"
            )
        try:
            policy_named(self.handout_policy)
        except TrackerError as exc:
            raise TrackerError(f"handout_policy: {exc}") from None
        if self.log_level not in LOG_LEVELS:
            raise TrackerError(f"log_level: {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        if self.log_format not in LOG_FORMATS:
            raise TrackerError(f"log_format: {self.log_format!r} is not one of {', '.join(LOG_FORMATS)}")


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
        self.metrics = TrackerMetrics(self.registry.stats)
        self._executor = futures.ThreadPoolExecutor(
            max_workers=config.workers, thread_name_prefix="tracker-rpc"
        )
        self._server = grpc.server(
            self._executor,
            options=(*CHANNEL_OPTIONS, ("grpc.so_reuseport", 0)),
        )
        tracker_pb2_grpc.add_TrackerServiceServicer_to_server(  # type: ignore[no-untyped-call]
            TrackerServicer(self.registry, config.cluster_token, self.metrics), self._server
        )
        admin_pb2_grpc.add_TrackerAdminServiceServicer_to_server(  # type: ignore[no-untyped-call]
            TrackerAdminServicer(self.registry, config.admin_token), self._server
        )
        self.port = self._bind()
        self._metrics_server = self._serve_metrics()
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

    def _serve_metrics(self) -> tuple[WSGIServer, threading.Thread] | None:
        """Starts prometheus_client's HTTP server for the metrics; it serves at once, from
        a thread of its own."""
        address = self.config.metrics_listen
        if address is None:
            return None
        host, port = split_host_port(address, "metrics listen")
        try:
            return start_http_server(port, host or "0.0.0.0", registry=self.metrics.registry)
        except OSError as exc:
            self._server.stop(None)
            self.registry.close()
            reason = "the address is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise TrackerError(f"cannot serve metrics on {address}: {reason}") from None

    @property
    def address(self) -> str:
        host = self.config.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    @property
    def metrics_address(self) -> str | None:
        """HOST:PORT of the metrics endpoint, with the bound port; None when not served."""
        if self._metrics_server is None or self.config.metrics_listen is None:
            return None
        host = self.config.metrics_listen.rsplit(":", 1)[0]
        return f"{host}:{self._metrics_server[0].server_port}"

    def start(self) -> None:
        self._server.start()
        self._sweeper.start()
        scheme = "TLS" if self.config.tls_cert else "plaintext"
        log.info("tracker listening on %s (%s)", self.address, scheme)
        if self.metrics_address is not None:
            log.info("metrics at http://%s/metrics", self.metrics_address)
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
        if self._metrics_server is not None:
            httpd, thread = self._metrics_server
            httpd.shutdown()
            httpd.server_close()
            thread.join()
        self._server.stop(grace).wait()
        self._executor.shutdown(wait=True)
        if self._sweeper.is_alive():
            self._sweeper.join()
        self.registry.close()
        log.info("tracker stopped")
