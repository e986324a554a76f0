"""A `get` job as the CLI, the daemon and the downloader share it: what it asks for,
what it reports while it runs and at the end, and how that is shown. Kept light, so
that `lanpeer-agent get` handing a job to the daemon starts fast."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from agent.errors import AgentError
from agent.planner import Policy
from tracker.model import Manifest
from tracker.render import human_size, plural

if TYPE_CHECKING:
    from tqdm import tqdm


@dataclass(frozen=True, slots=True)
class Progress:
    size: int
    done_bytes: int
    peers_active: int
    origin_active: bool
    elapsed: float


@dataclass(frozen=True, slots=True)
class Summary:
    path: Path
    sha256: str
    size: int
    seconds: float
    bytes_from_peers: int
    bytes_from_origin: int
    resumed_bytes: int
    sources_used: tuple[str, ...]
    pieces_refetched: int
    # Bytes each source gave: agent ids, and "origin".
    bytes_by_source: dict[str, int] = field(default_factory=dict)
    # The verified manifest; known where the download ran, not to a client of the daemon.
    manifest: Manifest | None = None

    @property
    def origin_share(self) -> float:
        fetched = self.bytes_from_peers + self.bytes_from_origin
        return self.bytes_from_origin / fetched if fetched else 0.0


@dataclass(frozen=True, slots=True)
class GetRequest:
    source: str
    output: Path | None = None
    sha256: str | None = None
    tracker: str | None = None
    token: str | None = None
    tracker_tls_ca: Path | None = None
    agent_id: str = ""
    connections: int = 16
    use_origin: bool = True
    force: bool = False
    policy: Policy = Policy.PEERS_FIRST
    timeout: float = 10.0


class ProgressBar:
    """A tqdm bar on a terminal; nothing at all otherwise."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self._stream = stream
        self._enabled = enabled and stream.isatty()
        self._bar: tqdm[Any] | None = None

    def update(self, p: Progress) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            from tqdm import tqdm  # noqa: PLC0415 (slow to import; only on a terminal)

            self._bar = tqdm(
                total=p.size,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=self._stream,
                dynamic_ncols=True,
                initial=p.done_bytes,
                smoothing=0.1,
            )
        self._bar.update(p.done_bytes - self._bar.n)
        origin = ", origin" if p.origin_active else ""
        self._bar.set_postfix_str(f"{p.peers_active} peers{origin}", refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def summary_line(s: Summary) -> str:
    rate = s.size / s.seconds if s.seconds > 0 else 0.0
    fetched = s.bytes_from_peers + s.bytes_from_origin
    parts = [
        f"{s.path}: {human_size(s.size)} in {s.seconds:.1f} s ({human_size(int(rate))}/s)",
        f"peers {human_size(s.bytes_from_peers)}, origin {human_size(s.bytes_from_origin)} "
        f"({s.origin_share:.0%} from the origin)"
        if fetched
        else "nothing fetched",
        plural(len(s.sources_used), "source"),
    ]
    if s.resumed_bytes:
        parts.append(f"{human_size(s.resumed_bytes)} resumed")
    if s.pieces_refetched:
        parts.append(f"{s.pieces_refetched} pieces re-fetched")
    return "; ".join(parts)


def summary_json(s: Summary) -> dict[str, Any]:
    return {
        "path": str(s.path),
        "sha256": s.sha256,
        "size": s.size,
        "seconds": round(s.seconds, 3),
        "bytes_from_peers": s.bytes_from_peers,
        "bytes_from_origin": s.bytes_from_origin,
        "origin_share": round(s.origin_share, 4),
        "resumed_bytes": s.resumed_bytes,
        "sources_used": list(s.sources_used),
        "bytes_by_source": dict(sorted(s.bytes_by_source.items())),
        "pieces_refetched": s.pieces_refetched,
    }


class AlreadyThere(AgentError):
    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} is already there, with the expected content")
        self.path = path


def print_result(summary: Summary, *, as_json: bool, quiet: bool, out: TextIO = sys.stdout) -> None:
    if as_json:
        print(json.dumps(summary_json(summary), sort_keys=True), file=out)
    elif not quiet:
        print(summary_line(summary), file=out)
