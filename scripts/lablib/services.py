"""lanpeer's programs on the lab's hosts: a tracker on `tracker`, agent daemons and `get`
on the lab machines, and a small counting origin (origin.py) on `origin`, each a process
inside its host's namespace, with its output in a log file, all stopped by `close()`.

    with Lab("lpt").up(hosts=3) as lab, Services(lab, workdir) as s:
        tracker = s.start_tracker()
        s.start_agent("host1", share=..., tracker=tracker)
        ...

Commands run as `python -m agent.cli ...` with this interpreter (the project's virtualenv),
and with no LANPEER_* variable from the environment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from scripts.lablib.lab import ORIGIN, TRACKER, Lab, LabError

ROOT = Path(__file__).resolve().parents[2]
TRACKER_PORT = 7070
AGENT_PORT = 7071
ORIGIN_PORT = 8000
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
POLL_SECONDS = 0.2
# Sets the host name in the UTS namespace `unshare --uts` made, then becomes the command.
HOSTNAME_SCRIPT = 'hostname "$1" && shift && exec "$@"'


@dataclass(slots=True)
class Proc:
    """A process started in the lab, and where its output goes."""

    name: str
    host: str
    process: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError as exc:
            return f"(cannot read {self.log}: {exc.strerror})"
        return "\n".join(text) or "(empty)"


@dataclass(frozen=True, slots=True)
class AgentProc:
    proc: Proc
    state_dir: Path
    share: Path


def clean_env() -> dict[str, str]:
    """This environment without LANPEER_* (no token, no tracker from the caller's shell),
    and with the repository importable (for scripts.lablib.origin)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANPEER_")}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Services:
    def __init__(self, lab: Lab, workdir: Path, *, python: str = sys.executable) -> None:
        self.lab = lab
        self.workdir = workdir
        self.python = python
        self.procs: list[Proc] = []
        self.env = clean_env()

    # ------------------------------------------------------------------------- processes

    def start(self, host: str, name: str, argv: Sequence[str], **popen: Any) -> Proc:
        """argv in the host's namespace, stdout and stderr to WORKDIR/NAME.log. Call it from
        the thread that will outlive the process (see die_with_parent)."""
        log = self.workdir / f"{name}.log"
        with log.open("ab") as out:
            popen.setdefault("stdout", out)
            popen.setdefault("stderr", out)
            popen.setdefault("env", self.env)
            process = self.lab.popen(host, argv, **popen)
        proc = Proc(name, host, process, log)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL after `timeout`; its exit status."""
        process = proc.process
        if process.poll() is None:
            with suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"lab: {proc.name} ignored SIGTERM; killing it", file=sys.stderr)
                process.kill()
                process.wait()
        return process.returncode

    def close(self) -> None:
        """Stops every process started, newest first."""
        for proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()

    def __enter__(self) -> Services:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def lanpeer(self, program: str, *args: str) -> list[str]:
        """The argv of `lanpeer-agent ARGS` (program 'agent') or `lanpeer-tracker ARGS`."""
        return [self.python, "-m", f"{program}.cli", *args]

    def run(self, host: str, argv: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return self.lab.run(host, argv, timeout=timeout, check=False, env=self.env)

    # ------------------------------------------------------------------------- the tracker

    def start_tracker(
        self,
        *,
        heartbeat_interval: float = 1.0,
        port: int = TRACKER_PORT,
        host: str = TRACKER,
        cluster: str | None = None,
        name: str = "tracker",
    ) -> str:
        """A tracker on `host` (the tracker host by default), open (no tokens); its
        HOST:PORT once it listens. With a cluster it advertises itself over mDNS, which
        stays inside the lab's namespaces; without one it does not."""
        address = self.lab.address_of(host)
        db = self.workdir / f"{name}.db"
        argv = self.lanpeer(
            "tracker",
            "run",
            "--listen",
            f"{address}:{port}",
            "--db",
            str(db),
            "--heartbeat-interval",
            f"{heartbeat_interval:g}",
            "--log-level",
            "info" if cluster is not None else "warning",
            *(["--cluster", cluster] if cluster is not None else ["--no-mdns"]),
        )
        if cluster is not None:
            # A host name of the machine's own, as on a real LAN: the advert's instance name
            # carries it, so trackers on two machines never share one.
            argv = ["unshare", "--uts", "--", "sh", "-c", HOSTNAME_SCRIPT, "sh", f"lab-{host}", *argv]
        proc = self.start(host, name, argv)
        self.wait_listening(proc, address, port)
        return f"{address}:{port}"

    def tracker_agents(self, tracker: str) -> list[dict[str, Any]]:
        """The agents the tracker knows: `lanpeer-tracker agents --json`, asked from its host."""
        host = next(h.name for h in self.lab.hosts.values() if tracker.startswith(h.address + ":"))
        done = self.run(host, self.lanpeer("tracker", "agents", "--json", "--tracker", tracker))
        if done.returncode != 0:
            raise LabError(f"lanpeer-tracker agents failed ({done.returncode}): {done.stderr.strip()}")
        agents: list[dict[str, Any]] = json.loads(done.stdout)["agents"]
        return agents

    def locate(self, tracker: str, query: str) -> list[dict[str, Any]]:
        """What the tracker knows about `query` (sha256:HEX, a URL or a name): its
        `lanpeer-tracker locate --json` matches, or [] for none."""
        done = self.run(TRACKER, self.lanpeer("tracker", "locate", query, "--json", "--tracker", tracker))
        if done.returncode not in (0, 1) or not done.stdout.strip():
            if done.returncode == 1 and not done.stdout.strip():
                return []
            raise LabError(
                f"lanpeer-tracker locate {query} failed ({done.returncode}): {done.stderr.strip()}"
            )
        matches: list[dict[str, Any]] = json.loads(done.stdout)["matches"]
        return matches

    def wait_for_holders(
        self, tracker: str, query: str, count: int, timeout: float = START_TIMEOUT, *, manifest: bool = True
    ) -> dict[str, Any]:
        """Waits until the tracker knows `count` live holders of `query` (and its manifest);
        the match."""
        deadline = time.monotonic() + timeout
        seen: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            seen = self.locate(tracker, query)
            for match in seen:
                live = [h for h in match["holders"] if h["state"] == "live" and h["complete"]]
                if len(live) >= count and (match["manifest"] is not None or not manifest):
                    return match
            time.sleep(POLL_SECONDS)
        raise LabError(
            f"the tracker did not list {count} live holders of {query} within {timeout:g} s: {seen}"
        )

    # ------------------------------------------------------------------------- agents

    def start_agent(
        self,
        host: str,
        *,
        share: Path,
        state_dir: Path,
        tracker: str | None,
        port: int = AGENT_PORT,
        extra: Sequence[str] = (),
        name: str | None = None,
        discover: bool = False,
        cluster: str | None = None,
    ) -> AgentProc:
        """`lanpeer-agent run` on the host, sharing `share`; returns once its control
        socket answers (and it reached the tracker, when one is given). With no tracker it
        looks for one over mDNS (of `cluster`, when given) if `discover`, else not at all.
        Keep state_dir short: the socket path in it must stay under 108 bytes."""
        argv = [
            "run",
            "--share",
            str(share),
            "--listen",
            f"0.0.0.0:{port}",
            "--state-dir",
            str(state_dir),
            "--log-level",
            "info",
            *extra,
        ]
        if tracker is not None:
            argv += ["--tracker", tracker]
        elif not discover:
            argv += ["--no-mdns"]
        if cluster is not None:
            argv += ["--cluster", cluster]
        proc = self.start(host, name or f"agent-{host}", self.lanpeer("agent", *argv))
        agent = AgentProc(proc, state_dir, share)
        self._wait(
            proc,
            lambda: self._agent_ready(agent, tracker is not None),
            f"agent on {host} to answer on its control socket",
        )
        return agent

    def agent_status(self, agent: AgentProc) -> dict[str, Any] | None:
        done = self.run(
            agent.proc.host, self.lanpeer("agent", "status", "--json", "--state-dir", str(agent.state_dir))
        )
        if done.returncode != 0:
            return None
        status: dict[str, Any] = json.loads(done.stdout)
        return status

    def _agent_ready(self, agent: AgentProc, want_tracker: bool) -> bool:
        if not (agent.state_dir / "agent.sock").exists():
            return False
        status = self.agent_status(agent)
        return status is not None and (status.get("tracker_connected", False) or not want_tracker)

    def get_argv(self, *args: str) -> list[str]:
        """`lanpeer-agent get ARGS`."""
        return self.lanpeer("agent", "get", *args)

    # ------------------------------------------------------------------------- the origin

    def start_python_origin(self, root: Path, *, port: int = ORIGIN_PORT) -> tuple[str, Path]:
        """scripts/lablib/origin.py on the origin host serving `root`; its base URL and the
        JSON file of its byte counts."""
        address = self.lab.address_of(ORIGIN)
        stats = self.workdir / "origin-stats.json"
        argv = [
            self.python,
            "-m",
            "scripts.lablib.origin",
            "--listen",
            f"{address}:{port}",
            "--root",
            str(root),
            "--stats",
            str(stats),
        ]
        proc = self.start(ORIGIN, "origin", argv)
        self.wait_listening(proc, address, port)
        return f"http://{address}:{port}", stats

    # ------------------------------------------------------------------------- waiting

    def wait_listening(self, proc: Proc, address: str, port: int) -> None:
        def listening() -> bool:
            done = self.lab.run(
                proc.host,
                [
                    self.python,
                    "-c",
                    "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1)",
                    address,
                    str(port),
                ],
                check=False,
            )
            return done.returncode == 0

        self._wait(proc, listening, f"{proc.name} to listen on {address}:{port}")

    def _wait(self, proc: Proc, ready: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.process.poll() is not None:
                raise LabError(
                    f"{proc.name} exited with status {proc.process.returncode} while waiting for {what}; "
                    f"its log ends:\n{proc.tail()}"
                )
            if ready():
                return
            time.sleep(POLL_SECONDS)
        raise LabError(f"timed out after {timeout:g} s waiting for {what}; its log ends:\n{proc.tail()}")
