"""Wiring of the agent daemon: inventory, range server, reporter and, with no tracker
configured, the mDNS discovery that finds and follows one, started and stopped in the
right order."""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from agent import __version__
from agent.config import AgentConfig
from agent.discovery import Advert, TrackerFinder, accepts_connections, choose_tracker, newer_rival
from agent.errors import AgentError, ConfigError, OutputNotWritable
from agent.get import get
from agent.hashcache import HashCache
from agent.identity import load_agent_id
from agent.inventory import Inventory
from agent.job import GetRequest, Progress, Summary
from agent.localapi import SOCKET_NAME, AgentStatus, DownloadView, LocalApiServer, TrackerSource
from agent.metrics import AgentFigures, AgentMetrics
from agent.partials import PartialBlob, PartialBlobs
from agent.rangeserver import RangeServer, RangeServerConfig
from agent.reporter import Reporter
from agent.traffic import Traffic
from tracker.client import TrackerClient
from tracker.errors import InvalidArgument, TrackerError
from tracker.mdns import describe_interfaces
from tracker.model import AgentInfo, Fetched, Load, check_http_url, split_host_port

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 5.0
# How often the choice of a tracker found over mDNS is looked at again when no advert
# changes: an advert that stays while its tracker stops answering is left this way.
FOLLOW_CHECK_SECONDS = 2.0
# Browsing hears most answers within this time; the first choice waits for it, so that an
# agent asked for no cluster sees every cluster on the segment before it picks "the only one".
SETTLE_SECONDS = 2.0
# How long a connection to the current tracker may take when a newer one of its cluster shows.
PROBE_TIMEOUT_SECONDS = 1.0


def lan_address(toward: str | None) -> str:
    """The address peers can reach this machine at: the one it uses to reach the tracker,
    else the one its host name resolves to, else loopback. Connecting a UDP socket sends
    nothing; it only asks the kernel for a route."""
    if toward is not None:
        host, port = split_host_port(toward, "tracker")
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((host or "127.0.0.1", port))
                return str(probe.getsockname()[0])
        except OSError:
            pass
    try:
        address = socket.gethostbyname(socket.gethostname())
        if not ipaddress.ip_address(address).is_loopback:
            return address
    except (OSError, ValueError):
        pass
    return "127.0.0.1"


def advertised_url(config: AgentConfig, port: int, toward: str | None) -> str:
    """The base URL peers fetch from: the configured one, else the listen address, else
    the address this machine reaches the tracker (`toward`) from."""
    if config.advertise_url:
        try:
            return check_http_url(config.advertise_url, "advertise_url").rstrip("/")
        except InvalidArgument as exc:
            raise ConfigError(str(exc)) from None
    host, _ = split_host_port(config.listen, "listen")
    if host in ("", "0.0.0.0", "::"):
        host = lan_address(toward)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class Daemon:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        try:
            config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise AgentError(
                f"cannot create the state directory {config.state_dir}: {exc.strerror}"
            ) from None
        self.agent_id = load_agent_id(config.state_dir)
        self.cache = HashCache(config.state_dir / "hashcache.db")
        self.inventory = Inventory(
            config.shares,
            self.cache,
            rescan_interval=config.rescan_interval,
            adopted_list=config.state_dir / "fetched.json",
        )
        # What the range server serves: shared and fetched files, and downloads under way.
        self.blobs = PartialBlobs(self.inventory)
        # What this daemon's downloads fetched since it started, for the metrics and the tracker.
        self.traffic = Traffic()
        self.metrics = AgentMetrics(self.figures)
        host, port = split_host_port(config.listen, "listen")
        self.server = RangeServer(
            RangeServerConfig(
                host=host,
                port=port,
                token=config.token,
                max_uploads=config.max_uploads,
                upload_limit=config.upload_limit,
            ),
            self.blobs,
            metrics=self.metrics.render,
        )
        self.reporter: Reporter | None = None
        self.base_url = ""
        # The tracker in use and how it was found; the follower thread changes them.
        self._tracker_lock = threading.Lock()
        self._tracker = config.tracker
        self._tracker_source = TrackerSource.CONFIGURED if config.tracker else TrackerSource.NONE
        self._advert: Advert | None = None
        self._discovery_note = ""
        self.finder: TrackerFinder | None = None
        self._follower: threading.Thread | None = None
        self._stop_following = threading.Event()
        self.api = LocalApiServer(self, config.state_dir / SOCKET_NAME)
        self._downloads: dict[int, DownloadView] = {}
        self._downloads_lock = threading.Lock()
        self._next_download = 0
        self._stopped = False

    def load(self) -> Load:
        with self._downloads_lock:
            downloads = len(self._downloads)
        return Load(active_uploads=self.server.active_uploads, active_downloads=downloads)

    def fetched(self) -> Fetched:
        return self.traffic.totals().fetched

    def figures(self) -> AgentFigures:
        """What the metrics show, read from the parts that count it."""
        shared_files, shared_bytes = self.inventory.shared()
        backlog_files, backlog_bytes = self.inventory.hashing_backlog
        with self._downloads_lock:
            downloads = len(self._downloads)
        return AgentFigures(
            served_bytes=self.server.bytes_served,
            active_uploads=self.server.active_uploads,
            max_uploads=self.config.max_uploads,
            uploads_refused=self.server.uploads_refused,
            active_downloads=downloads,
            traffic=self.traffic.totals(),
            shared_files=shared_files,
            shared_bytes=shared_bytes,
            hashing_backlog_files=backlog_files,
            hashing_backlog_bytes=backlog_bytes,
            hashed_files=self.inventory.files_hashed,
            hashed_bytes=self.inventory.bytes_hashed,
            tracker_connected=self.reporter is not None and self.reporter.connected,
        )

    def start(self) -> None:
        try:
            self.server.start()
        except OSError as exc:
            reason = "the address is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise AgentError(f"cannot listen on {self.config.listen}: {reason}") from None
        self.base_url = advertised_url(self.config, self.server.port, self.config.tracker)
        log.info(
            "agent %s serving %s at %s",
            self.agent_id,
            ", ".join(str(r) for r in self.inventory.roots),
            self.base_url,
        )
        self.inventory.start()
        self.api.start()
        if self.config.tracker is not None:
            try:
                self.reporter = self._reporter_for(self.config.tracker, self.base_url)
            except (TrackerError, InvalidArgument) as exc:
                self.stop()
                raise AgentError(str(exc)) from None
            self.reporter.start()
        elif self.config.mdns:
            self._start_discovery()
        else:
            log.warning(
                "no tracker configured and mDNS is off: serving, but no peer will learn of this machine"
            )

    def _reporter_for(self, tracker: str, base_url: str) -> Reporter:
        client = TrackerClient(
            tracker, token=self.config.token, tls_ca=self.config.tracker_tls_ca, timeout=5.0
        )
        hostname = socket.gethostname()[:255] or "unknown"
        info = AgentInfo(self.agent_id, hostname, base_url, __version__)
        return Reporter(client, info, self.inventory, self.load, fetched=self.fetched)

    # ----------------------------------------------------------------- finding the tracker

    def _start_discovery(self) -> None:
        """Browses for the tracker in the background: the daemon serves meanwhile."""
        finder = TrackerFinder(self.config.mdns_interfaces)
        try:
            finder.start()
        except AgentError as exc:
            log.warning("%s; serving, but no peer will learn of this machine", exc)
            with self._tracker_lock:
                self._discovery_note = str(exc)
            return
        self.finder = finder
        with self._tracker_lock:
            self._discovery_note = choose_tracker((), self.config.cluster).reason
        log.info(
            "no tracker configured: looking for one over mDNS on %s (%s)",
            describe_interfaces(self.config.mdns_interfaces),
            f"cluster {self.config.cluster}" if self.config.cluster else "any cluster",
        )
        if self.config.token is not None and self.config.tracker_tls_ca is None:
            log.warning(
                "the cluster token goes to whichever tracker answers over mDNS, in plaintext; "
                "use TLS (--tracker-tls-ca) or --tracker to be sure only yours gets it"
            )
        self._follower = threading.Thread(target=self._follow, name="tracker-follower", daemon=True)
        self._follower.start()

    def _follow(self) -> None:
        """Reports to the tracker mDNS shows, and moves to another when it goes away (a
        goodbye, or a newer advert while the current one does not answer)."""
        assert self.finder is not None
        seen = -1
        said = choose_tracker((), self.config.cluster).reason
        # An agent told its cluster has no other cluster to wait for.
        if self._stop_following.wait(0 if self.config.cluster else SETTLE_SECONDS):
            return
        while True:
            seen = self.finder.wait_for_change(seen, FOLLOW_CHECK_SECONDS)
            if self._stop_following.is_set():
                return
            with self._tracker_lock:
                current, reporter = self._advert, self.reporter
            adverts = self.finder.adverts()
            reachable = reporter is None or not reporter.away
            if reachable and current is not None and newer_rival(adverts, current):
                # A tracker of the cluster appeared elsewhere: the current one may have died
                # without a goodbye. One connection tells, rather than the next heartbeat.
                reachable = accepts_connections(current.target, PROBE_TIMEOUT_SECONDS)
                if not reachable:
                    log.info(
                        "cannot reach the tracker at %s, and another of cluster %s appeared",
                        current.target,
                        current.cluster,
                    )
            choice = choose_tracker(
                adverts,
                self.config.cluster,
                current,
                current_reachable=reachable,
                tls=self.config.tracker_tls_ca is not None,
            )
            with self._tracker_lock:
                self._discovery_note = choice.reason
            if choice.advert is None:
                if choice.reason != said:
                    said = choice.reason
                    still = f"; staying with {current.target}" if current is not None else ""
                    log.log(logging.ERROR if choice.blocking else logging.INFO, "%s%s", said, still)
                continue
            said = ""
            if current is not None and choice.advert.target == current.target:
                with self._tracker_lock:
                    self._advert = choice.advert
                continue
            self._switch(choice.advert)

    def _switch(self, advert: Advert) -> None:
        """Stops reporting to the old tracker (gone: no leave) and starts with `advert`."""
        with self._tracker_lock:
            old, self.reporter = self.reporter, None
        if old is not None:
            old.stop(leave=False)
        base_url = advertised_url(self.config, self.server.port, advert.target)
        try:
            reporter: Reporter | None = self._reporter_for(advert.target, base_url)
        except (TrackerError, InvalidArgument) as exc:
            log.error("cannot use the tracker found at %s: %s", advert.target, exc)
            reporter = None
        with self._tracker_lock:
            self._advert = advert
            self._tracker = advert.target
            self._tracker_source = TrackerSource.MDNS
            self.reporter = reporter
            moved = base_url != self.base_url
            self.base_url = base_url
        log.info(
            "found the tracker of cluster %s at %s over mDNS (%r on %s)",
            advert.cluster,
            advert.target,
            advert.name,
            advert.host or "an unnamed host",
        )
        if moved:
            log.info("peers now fetch from this agent at %s", base_url)
        if reporter is not None:
            reporter.start()

    def stop(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Tells the tracker first, so no peer is sent here any more, then lets uploads
        under way finish within `grace` seconds. Stopping twice does nothing more."""
        if self._stopped:
            return
        self._stopped = True
        self.api.stop()
        self._stop_following.set()
        if self.finder is not None:
            self.finder.stop()
        if self._follower is not None:
            self._follower.join()
        with self._tracker_lock:
            reporter = self.reporter
        if reporter is not None:
            reporter.stop(leave=True)
        self.server.stop(grace)
        self.inventory.stop()
        self.cache.close()
        log.info("agent stopped")

    # ----------------------------------------------------------------- the local API

    def fetch(
        self, request: GetRequest, on_progress: Callable[[Progress], None], cancelled: threading.Event
    ) -> Summary:
        """Runs a download for `lanpeer-agent get`, then serves the file and tells the
        tracker what it is, so the next machine gets it from here."""
        if request.output is not None:
            _check_writable(request.output)
        with self._tracker_lock:
            tracker = self._tracker
        request = dataclasses.replace(
            request,
            tracker=tracker,
            token=self.config.token,
            tracker_tls_ca=self.config.tracker_tls_ca,
            agent_id=self.agent_id,
        )
        with self._downloads_lock:
            key = self._next_download
            self._next_download += 1
            self._downloads[key] = DownloadView(request.source, str(request.output or ""), None)

        def progress(p: Progress) -> None:
            with self._downloads_lock:
                self._downloads[key] = DownloadView(request.source, str(request.output or ""), p)
            on_progress(p)

        sharing = _DownloadSharing(self.blobs)
        try:
            fetched = get(request, progress, cancelled, sharing, self.traffic)
        except BaseException:
            sharing.withdraw(None)
            raise
        finally:
            with self._downloads_lock:
                del self._downloads[key]
        summary = fetched.summary
        if summary.manifest is not None:
            self.inventory.adopt(summary.path, summary.manifest)
            with self._tracker_lock:
                reporter = self.reporter
            if reporter is not None:
                reporter.publish(summary.manifest, fetched.source)
        sharing.withdraw(summary.sha256)
        return summary

    def status(self) -> AgentStatus:
        files, bytes_held = self.inventory.shared()
        with self._downloads_lock:
            downloads = tuple(self._downloads.values())
        with self._tracker_lock:
            reporter, advert = self.reporter, self._advert
            tracker, source, note = self._tracker, self._tracker_source, self._discovery_note
            base_url = self.base_url
        return AgentStatus(
            agent_id=self.agent_id,
            version=__version__,
            base_url=base_url,
            shares=tuple(str(root) for root in self.inventory.roots),
            files=files,
            bytes_held=bytes_held,
            active_uploads=self.server.active_uploads,
            bytes_served=self.server.bytes_served,
            tracker=tracker or "",
            tracker_connected=reporter is not None and reporter.connected,
            downloads=downloads,
            tracker_source=source,
            cluster=advert.cluster if advert is not None else self.config.cluster or "",
            discovery_note=note,
        )


def _check_writable(output: Path) -> None:
    """Refuses a download into a directory this process may not write to before anything
    starts, so that `get` can fetch it itself instead."""
    directory = output if output.is_dir() else output.parent
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputNotWritable(str(directory))


class _DownloadSharing:
    """Serves one download's verified pieces while it runs (see agent.download.Sharing)."""

    def __init__(self, blobs: PartialBlobs) -> None:
        self._blobs = blobs
        self._blob: PartialBlob | None = None
        self._ids: tuple[str, ...] = ()

    def offer(
        self, ids: tuple[str, ...], part: Path, size: int, piece_size: int, have: frozenset[int]
    ) -> None:
        self.withdraw(None)
        self._blob = PartialBlob(part, size, piece_size, have)
        self._ids = ids
        for blob_id in ids:
            self._blobs.add(blob_id, self._blob)

    def verified(self, piece: int) -> None:
        if self._blob is not None:
            self._blob.verified(piece)

    def withdraw(self, sha256: str | None) -> None:
        """Stops serving the part file; when the download finished as `sha256`, its other
        ids (the swarm's) go on naming the finished file."""
        if self._blob is None:
            return
        if sha256 is not None:
            for blob_id in self._ids:
                if blob_id != sha256:
                    self._blobs.alias(blob_id, sha256)
        self._blobs.remove(self._blob)
        self._blob = None
