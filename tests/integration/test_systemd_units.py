"""The systemd units, sysusers file and example configs in scripts/systemd: each unit passes
`systemd-analyze verify` (which would also fail on a misspelled directive), keeps its
hardening, and agrees with the example config about where the state lives."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path

import pytest

from agent import config as agent_config
from tracker import config as tracker_config
from tracker.configfile import Convert, read_file

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "scripts" / "systemd"
INSTALLED_BIN = "/usr/local/bin"
DAEMONS = ("lanpeer-agent", "lanpeer-tracker")

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
SYSTEMD_SYSUSERS = shutil.which("systemd-sysusers")
needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")

# The highest `systemd-analyze security` exposure the units may have (0 to 10; the agent
# is at 1.4, the tracker at 1.3). A unit that loses its hardening goes over it.
MAX_EXPOSURE = 2.0


def systemd_env(level: str = "warning") -> dict[str, str]:
    """Messages on stderr (not the journal, which systemd tools pick when stderr is a
    journal stream), at a level that shows every warning about a unit file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYSTEMD_")}
    env.update(SYSTEMD_LOG_LEVEL=level, SYSTEMD_LOG_TARGET="console", SYSTEMD_LOG_COLOR="0")
    env.update(SYSTEMD_PAGER="", SYSTEMD_COLORS="0")
    return env


def run(args: list[str], level: str = "warning") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=60, env=systemd_env(level), check=False
    )


@functools.cache
def analyze_help(command: str) -> str:
    assert SYSTEMD_ANALYZE is not None
    return run([SYSTEMD_ANALYZE, command, "--help"]).stdout


def entry_point(name: str) -> Path:
    """The console script this test environment installed (verify checks that ExecStart's
    program exists and is executable)."""
    script = Path(sys.executable).with_name(name)
    if script.exists():
        return script
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed in this environment")
    return Path(found)


def unit_text(daemon: str) -> str:
    return (UNITS / f"{daemon}.service").read_text()


def install_unit(tmp_path: Path, daemon: str, text: str | None = None) -> Path:
    """Writes the unit into tmp_path with ExecStart pointed at this environment's script."""
    text = unit_text(daemon) if text is None else text
    installed = f"ExecStart={INSTALLED_BIN}/{daemon} "
    assert installed in text, f"{daemon}.service does not start {INSTALLED_BIN}/{daemon}"
    path = tmp_path / f"{daemon}.service"
    path.write_text(text.replace(installed, f"ExecStart={entry_point(daemon)} "))
    return path


def verify(unit: Path) -> tuple[int, list[str]]:
    """Runs `systemd-analyze verify` on one unit file: its exit status and every line of
    output about that file. Unknown directives and unparsable values are only warnings
    (exit status 0), so the lines matter as much as the status."""
    assert SYSTEMD_ANALYZE is not None
    args = [SYSTEMD_ANALYZE, "verify", "--man=no"]
    if "--recursive-errors" in analyze_help("verify"):
        # Warnings about units of this machine that ours name (multi-user.target, ...)
        # are not ours to fail on.
        args.append("--recursive-errors=no")
    result = run([*args, str(unit)])
    lines = (result.stdout + result.stderr).splitlines()
    return result.returncode, [line for line in lines if unit.name in line]


def directives(text: str, key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", text, flags=re.MULTILINE)


# ----------------------------------------------------------------------------- verify


@needs_analyze
@pytest.mark.parametrize("daemon", DAEMONS)
def test_unit_passes_systemd_analyze_verify(tmp_path: Path, daemon: str) -> None:
    status, problems = verify(install_unit(tmp_path, daemon))
    assert (status, problems) == (0, [])


@needs_analyze
@pytest.mark.parametrize(
    ("good", "bad", "reported"),
    [
        ("ProtectSystem=strict", "ProtectSystm=strict", "Unknown key"),
        ("UMask=0007", "UMask=banana", "Failed to parse"),
        ("RestrictNamespaces=yes", "RestrictNamespaces=sometimes", "Failed to parse"),
    ],
)
def test_verify_reports_a_broken_directive(tmp_path: Path, good: str, bad: str, reported: str) -> None:
    text = unit_text("lanpeer-agent")
    assert good in text
    unit = install_unit(tmp_path, "lanpeer-agent", text.replace(good, bad))
    line_number = unit.read_text().splitlines().index(bad) + 1
    _, problems = verify(unit)
    assert any(f"{unit}:{line_number}: {reported}" in line for line in problems), problems


@needs_analyze
def test_verify_fails_when_the_program_is_missing(tmp_path: Path) -> None:
    unit = install_unit(tmp_path, "lanpeer-agent")
    text = re.sub(r"^ExecStart=\S+", "ExecStart=/nonexistent/lanpeer-agent", unit.read_text(), flags=re.M)
    unit.write_text(text)
    status, problems = verify(unit)
    assert status != 0
    assert any("/nonexistent/lanpeer-agent" in line for line in problems), problems


@needs_analyze
@pytest.mark.parametrize("daemon", DAEMONS)
def test_unit_exposure_stays_low(tmp_path: Path, daemon: str) -> None:
    if "--offline" not in analyze_help("security"):
        pytest.skip("this systemd-analyze cannot review a unit file offline (systemd < 250)")
    assert SYSTEMD_ANALYZE is not None
    unit = install_unit(tmp_path, daemon)
    result = run([SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)])
    exposure = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert exposure is not None, result.stdout + result.stderr
    assert float(exposure.group(1)) <= MAX_EXPOSURE, result.stdout


# ----------------------------------------------------------------------------- what the units say


@pytest.mark.parametrize("daemon", DAEMONS)
def test_unit_runs_hardened_as_lanpeer(daemon: str) -> None:
    text = unit_text(daemon)
    for key, value in [
        ("User", "lanpeer"),
        ("Group", "lanpeer"),
        ("Restart", "on-failure"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6 AF_NETLINK"),
        ("WantedBy", "multi-user.target"),
    ]:
        assert directives(text, key) == [value], key
    config = f"/etc/lanpeer/{daemon.removeprefix('lanpeer-')}.toml"
    assert directives(text, "ExecStart") == [f"{INSTALLED_BIN}/{daemon} run --config {config}"]


def test_agent_unit_outlasts_the_shutdown_grace() -> None:
    from agent.daemon import SHUTDOWN_GRACE_SECONDS  # noqa: PLC0415

    (timeout,) = directives(unit_text("lanpeer-agent"), "TimeoutStopSec")
    assert float(timeout.removesuffix("s")) >= 2 * SHUTDOWN_GRACE_SECONDS


def test_agent_unit_opens_its_state_directory_to_group_lanpeer_only() -> None:
    text = unit_text("lanpeer-agent")
    assert directives(text, "StateDirectoryMode") == ["0750"]
    assert directives(text, "UMask") == ["0007"]
    assert directives(text, "ProtectHome") == ["read-only"]


# ----------------------------------------------------------------------------- sysusers


@pytest.mark.skipif(SYSTEMD_SYSUSERS is None, reason="systemd-sysusers is not installed")
def test_sysusers_creates_the_lanpeer_user_and_group(tmp_path: Path) -> None:
    assert SYSTEMD_SYSUSERS is not None
    (tmp_path / "etc").mkdir()
    result = run(
        [SYSTEMD_SYSUSERS, "--dry-run", f"--root={tmp_path}", str(UNITS / "lanpeer.sysusers")], level="info"
    )
    assert result.returncode == 0, result.stderr
    assert "Creating group 'lanpeer'" in result.stderr
    assert "Creating user 'lanpeer'" in result.stderr
    assert not (tmp_path / "etc" / "passwd").exists()


# ----------------------------------------------------------------------------- example configs


def commented_examples(path: Path) -> dict[str, object]:
    """The `# key = value` lines: what an administrator gets by removing the `# `."""
    examples: dict[str, object] = {}
    for line in path.read_text().splitlines():
        matched = re.fullmatch(r"#\s?([a-z_]+ = .+)", line)
        if matched:
            examples.update(tomllib.loads(matched.group(1)))
    return examples


def state_directory(daemon: str) -> Path:
    (name,) = directives(unit_text(daemon), "StateDirectory")
    return Path("/var/lib") / name


@pytest.mark.parametrize(
    ("name", "keys", "unit"),
    [
        ("agent.toml", agent_config.FILE_KEYS, "lanpeer-agent"),
        ("tracker.toml", tracker_config.FILE_KEYS, "lanpeer-tracker"),
    ],
)
def test_example_config_sets_or_shows_every_key(name: str, keys: Mapping[str, Convert], unit: str) -> None:
    path = UNITS / name
    values = {key: s.value for key, s in read_file(path, keys, ValueError).items()}
    state = values.get("state_dir") or values["db"].parent
    assert state == state_directory(unit)
    examples = commented_examples(path)
    assert set(examples) == set(keys) - set(values)
    for key, value in examples.items():
        keys[key](value)
