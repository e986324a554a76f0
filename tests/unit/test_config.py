"""agent.toml and tracker.toml: parsing, errors that name the file, line and key, the merge
of defaults, file and flags, and `config --print`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tomllib
from pathlib import Path

import pytest

from agent import cli as agent_cli
from agent import config as agent_config
from agent.config import FILE_KEYS, AgentConfig
from agent.errors import ConfigError
from tracker import cli as tracker_cli
from tracker import config as tracker_config
from tracker.configfile import read_file
from tracker.errors import TrackerError
from tracker.process import JsonFormatter, TextFormatter, redact


def write(tmp_path: Path, text: str, name: str = "agent.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def flag_keys(parser: argparse.ArgumentParser) -> set[str]:
    """The destinations of a parser's options but --help and --config: the keys its config
    file must have."""
    return {a.dest for a in parser._actions if a.option_strings and a.dest not in ("help", "config")}


def run_parser(build) -> argparse.ArgumentParser:
    commands = next(a for a in build()._actions if a.dest == "command")
    run: argparse.ArgumentParser = commands.choices["run"]
    return run


@pytest.mark.parametrize(
    ("build", "keys"),
    [(agent_cli.build_parser, agent_config.FILE_KEYS), (tracker_cli.build_parser, tracker_config.FILE_KEYS)],
    ids=["agent", "tracker"],
)
def test_every_run_flag_has_a_key_and_every_key_a_flag(build, keys) -> None:
    assert flag_keys(run_parser(build)) == set(keys)


def test_every_agent_key_is_read_and_checked(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'share = ["/srv/a", "/srv/b"]\ntracker = "t:7070"\nlisten = "0.0.0.0:9"\n'
        'advertise_url = "http://me:9"\nstate_dir = "/var/lib/x"\ntoken_file = "/etc/tok"\n'
        'max_uploads = 4\nupload_limit = "50MB/s"\nrescan_interval = 5\nlog_level = "debug"\n'
        'log_format = "json"\ntracker_tls_ca = "/etc/ca.pem"\ncluster = "lab1"\nmdns = false\n'
        'mdns_interfaces = ["eth1", "10.0.0.2"]\n',
    )
    values = {k: s.value for k, s in read_file(path, FILE_KEYS, ConfigError).items()}
    assert set(values) == set(FILE_KEYS)
    assert values["share"] == (Path("/srv/a"), Path("/srv/b"))
    assert values["upload_limit"] == 50_000_000
    assert values["rescan_interval"] == 5.0
    assert read_file(path, FILE_KEYS, ConfigError)["max_uploads"].origin == f"{path}:7"


def test_unknown_key_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '# comment\ntracker = "t:1"\nmax_upload = 3\n')
    with pytest.raises(ConfigError, match=rf"{path}:3: unknown key 'max_upload'"):
        read_file(path, FILE_KEYS, ConfigError)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('max_uploads = "many"', "max_uploads must be a whole number"),
        ("max_uploads = true", "max_uploads must be a whole number"),
        ("share = 3", "share must be a list of paths"),
        ('upload_limit = "fast"', "upload_limit:"),
        ("rescan_interval = [1]", "rescan_interval must be a number"),
        ("rescan_interval = nan", "rescan_interval must be a number"),
        ('log_format = "xml"', "log_format must be 'text' or 'json'"),
        ('"state_dir" = 7', "state_dir must be a path"),
    ],
)
def test_wrong_types_are_named(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, "\n" + line + "\n")
    with pytest.raises(ConfigError, match=f"{path}:2: {message}"):
        read_file(path, FILE_KEYS, ConfigError)


def test_broken_toml_missing_file_and_binary_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"agent\.toml"):
        read_file(write(tmp_path, "share = [\n"), FILE_KEYS, ConfigError)
    with pytest.raises(ConfigError, match="cannot read the config file"):
        read_file(tmp_path / "absent.toml", FILE_KEYS, ConfigError)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not a text file"):
        read_file(binary, FILE_KEYS, ConfigError)


def agent_args(*argv: str):
    return agent_cli.build_parser().parse_args(["run", *argv])


def test_flags_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'share = ["/from/file"]\nmax_uploads = 4\ntracker = "file:1"\n')
    config = agent_cli.build_config(
        agent_args("--config", str(path), "--tracker", "flag:2", "--state-dir", str(tmp_path))
    )
    assert config.shares == (Path("/from/file"),)
    assert config.max_uploads == 4
    assert config.tracker == "flag:2"
    config = agent_cli.build_config(agent_args("--config", str(path), "--share", "/x", "--max-uploads", "9"))
    assert (config.shares, config.max_uploads) == ((Path("/x"),), 9)


def test_a_value_out_of_range_in_the_file_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'share = ["/x"]\n\nmax_uploads = 0\n')
    with pytest.raises(ConfigError, match=rf"^{path}:3: max_uploads: 0 is not between 1 and 10000"):
        agent_cli.build_config(agent_args("--config", str(path)))
    with pytest.raises(ConfigError, match=r"^max_uploads: 0 is not"):
        agent_cli.build_config(agent_args("--share", "/x", "--max-uploads", "0"))
    tracker_file = write(tmp_path, 'listen = "127.0.0.1:0"\nheartbeat_interval = 0.001\n', "tracker.toml")
    args = tracker_cli.build_parser().parse_args(["run", "--config", str(tracker_file)])
    with pytest.raises(TrackerError, match=rf"^{tracker_file}:2: heartbeat_interval: 0.001 is not between"):
        tracker_config.load(args)


def test_the_default_file_is_read_when_it_exists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = tmp_path / "etc-agent.toml"
    monkeypatch.setattr(agent_config, "DEFAULT_CONFIG", default)
    with pytest.raises(ConfigError, match="nothing to share"):
        agent_cli.build_config(agent_args())
    default.write_text(f'share = ["/srv"]\nstate_dir = "{tmp_path}/state"\n')
    assert agent_cli.build_config(agent_args()).shares == (Path("/srv"),)
    # `status` and `get` find the daemon through the file's state_dir.
    status_args = agent_cli.build_parser().parse_args(["status"])
    assert agent_cli._state_dir(status_args, agent_config.file_settings(None)) == tmp_path / "state"
    # A file named with --config must exist.
    with pytest.raises(ConfigError, match="cannot read the config file"):
        agent_cli.build_config(agent_args("--config", str(tmp_path / "absent.toml")))


def test_print_shows_every_key_with_its_origin_and_reads_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    path = write(tmp_path, f'share = ["/srv/a"]\ntoken_file = "{token}"\nmax_uploads = 3\n')
    monkeypatch.delenv("LANPEER_TOKEN", raising=False)
    code = agent_cli.main(
        [
            "config",
            "--print",
            "--config",
            str(path),
            "--state-dir",
            str(tmp_path / "st"),
            "--log-format",
            "json",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "s3cret-token" not in out
    assert f"max_uploads = 3  # {path}:3" in out
    assert 'log_format = "json"  # command line' in out
    assert "rescan_interval = 60.0  # default" in out
    assert "# tracker is not set" in out
    printed = tomllib.loads(out)
    assert set(printed) | {"tracker", "advertise_url", "tracker_tls_ca", "upload_limit", "cluster"} == set(
        FILE_KEYS
    )
    # What was printed, used as the config file, gives the same configuration.
    again = write(tmp_path, out, "printed.toml")
    assert agent_cli.build_config(agent_args("--config", str(again))) == agent_cli.build_config(
        agent_args("--config", str(path), "--state-dir", str(tmp_path / "st"), "--log-format", "json")
    )


def test_config_check_fails_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, 'share = ["/srv"]\nbogus = 1\n')
    assert agent_cli.main(["config", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"lanpeer-agent: {path}:2: unknown key 'bogus'")
    good = write(tmp_path, 'share = ["/srv"]\n', "good.toml")
    assert agent_cli.main(["config", "--config", str(good)]) == 0
    assert f"valid (read from {good})" in capsys.readouterr().out


def test_tracker_file_flags_and_print(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    admin = tmp_path / "admin"
    admin.write_text("adm1n-secret")
    path = write(
        tmp_path,
        f'listen = "127.0.0.1:7999"\ndb = "{tmp_path}/t.db"\nadmin_token_file = "{admin}"\n'
        'handout_policy = "random"\nheartbeat_interval = 2\n',
        "tracker.toml",
    )
    args = tracker_cli.build_parser().parse_args(["run", "--config", str(path), "--heartbeat-interval", "3"])
    config, _ = tracker_config.load(args)
    assert (config.listen, config.db, config.handout_policy) == (
        "127.0.0.1:7999",
        tmp_path / "t.db",
        "random",
    )
    assert config.heartbeat_interval == 3.0
    assert config.admin_token == "adm1n-secret"
    assert tracker_cli.main(["config", "--print", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "adm1n-secret" not in out
    assert tomllib.loads(out)["listen"] == "127.0.0.1:7999"
    bad = write(tmp_path, "\n\nhandout_policy = 3\n", "bad.toml")
    assert tracker_cli.main(["config", "--config", str(bad)]) == 1
    assert f"{bad}:3: handout_policy must be" in capsys.readouterr().err


def test_agent_config_values_are_checked() -> None:
    with pytest.raises(ConfigError, match="nothing to share"):
        AgentConfig(shares=(), state_dir=Path("/s"))
    with pytest.raises(ConfigError, match="not HOST:PORT"):
        AgentConfig(shares=(Path("/x"),), state_dir=Path("/s"), tracker="nope")
    with pytest.raises(ConfigError, match="max_uploads"):
        AgentConfig(shares=(Path("/x"),), state_dir=Path("/s"), max_uploads=0)


def test_json_log_lines_are_one_object_each() -> None:
    record = logging.LogRecord("agent.x", logging.WARNING, __file__, 1, 'a "quoted"\nline %d', (7,), None)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "warning"
    assert entry["logger"] == "agent.x"
    assert entry["message"] == 'a "quoted"\nline 7'
    assert entry["time"].endswith("Z")
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exception"]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("get http://user:pa55@origin/x failed", "get http://user:***@origin/x failed"),
        (
            "https://s3/b/k?X-Amz-Credential=AKIA&X-Amz-Signature=abc123&v=2",
            "https://s3/b/k?X-Amz-Credential=***&X-Amz-Signature=***&v=2",
        ),
        ("http://h/f?token=t0k#frag", "http://h/f?token=***#frag"),
        ("authorization: Bearer abc.def", "authorization: Bearer ***"),
        ("http://origin:8080/file?version=3", "http://origin:8080/file?version=3"),
        ("plain words: nothing secret", "plain words: nothing secret"),
    ],
)
def test_redact_takes_out_what_looks_secret(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_formatters_take_out_the_tokens_they_know() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token is %s", ("hunter2",), None)
    assert "hunter2" not in TextFormatter(["hunter2"]).format(record)
    assert "hunter2" not in JsonFormatter(["hunter2"]).format(record)
    assert "***" in json.loads(JsonFormatter(["hunter2"]).format(record))["message"]


def test_get_uses_the_files_token_only_when_it_can_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LANPEER_TOKEN", raising=False)
    closed = write(tmp_path, f'token_file = "{tmp_path}/daemon-only"\n')
    conf = agent_config.file_settings(closed)
    args = agent_cli.build_parser().parse_args(["get", "http://o/f"])
    token, problem = agent_cli._local_token(args, conf)
    assert token is None
    assert problem.startswith(f"cannot read the token file {tmp_path}/daemon-only")
    (tmp_path / "daemon-only").write_text("t0k\n")
    assert agent_cli._local_token(args, conf) == ("t0k", "")
    monkeypatch.setenv("LANPEER_TOKEN", "from-env")
    assert agent_cli._local_token(args, conf) == ("from-env", "")
    # A token file named on the command line must be readable.
    args = agent_cli.build_parser().parse_args(
        ["get", "http://o/f", "--token-file", str(tmp_path / "absent")]
    )
    with pytest.raises(TrackerError, match="cannot read the token file"):
        agent_cli._local_token(args, conf)


def test_mdns_and_cluster_values_are_checked() -> None:
    with pytest.raises(ConfigError, match="cluster"):
        AgentConfig(shares=(Path("/x"),), state_dir=Path("/s"), cluster="a.b")
    with pytest.raises(ConfigError, match="not an interface"):
        AgentConfig(shares=(Path("/x"),), state_dir=Path("/s"), mdns_interfaces=("",))


def test_mdns_is_on_unless_turned_off_by_flag_or_file(tmp_path: Path) -> None:
    plain = agent_cli.build_config(agent_args("--share", "/x", "--state-dir", str(tmp_path)))
    assert (plain.mdns, plain.cluster, plain.mdns_interfaces) == (True, None, ())
    assert agent_cli.build_config(agent_args("--share", "/x", "--no-mdns")).mdns is False
    path = write(tmp_path, 'share = ["/x"]\nmdns = false\ncluster = "lab1"\nmdns_interfaces = ["eth1"]\n')
    from_file = agent_cli.build_config(agent_args("--config", str(path)))
    assert (from_file.mdns, from_file.cluster, from_file.mdns_interfaces) == (False, "lab1", ("eth1",))
    flags = agent_args(
        "--config", str(path), "--cluster", "lab2", "--mdns-interface", "lo", "--mdns-interface", "eth2"
    )
    assert (agent_cli.build_config(flags).cluster, agent_cli.build_config(flags).mdns_interfaces) == (
        "lab2",
        ("lo", "eth2"),
    )
    tracker_args = tracker_cli.build_parser().parse_args(["run", "--no-mdns", "--cluster", "lab2"])
    config, _ = tracker_config.load(tracker_args)
    assert (config.mdns, config.cluster) == (False, "lab2")
    assert tracker_config.load(tracker_cli.build_parser().parse_args(["run"]))[0].mdns is True


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('mdns = "yes"', "mdns must be true or false"),
        ("mdns_interfaces = 3", "mdns_interfaces must be a list of text values"),
        ("cluster = 3", "cluster must be text"),
    ],
)
def test_mdns_keys_have_their_types(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read_file(write(tmp_path, line + "\n"), FILE_KEYS, ConfigError)


def test_discover_browses_where_the_daemon_does_unless_told(tmp_path: Path) -> None:
    conf = agent_config.file_settings(write(tmp_path, 'mdns_interfaces = ["eth1", "10.0.0.2"]\n'))
    args = agent_cli.build_parser().parse_args(["discover"])
    assert agent_cli._discover_interfaces(args, conf) == ("eth1", "10.0.0.2")
    assert agent_cli._discover_interfaces(args, {}) == ()
    args = agent_cli.build_parser().parse_args(["discover", "--mdns-interface", "lo"])
    assert agent_cli._discover_interfaces(args, conf) == ("lo",)
