"""agent.toml parsing and the merge of defaults, file and flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import build_config, build_parser
from agent.config import AgentConfig, load_file
from agent.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_every_key_is_read_and_checked(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'share = ["/srv/a", "/srv/b"]\ntracker = "t:7070"\nlisten = "0.0.0.0:9"\n'
        'advertise_url = "http://me:9"\nstate_dir = "/var/lib/x"\ntoken_file = "/etc/tok"\n'
        'max_uploads = 4\nupload_limit = "50MB/s"\nrescan_interval = 5\nlog_level = "debug"\n',
    )
    values = load_file(path)
    assert values["share"] == (Path("/srv/a"), Path("/srv/b"))
    assert values["upload_limit"] == 50_000_000
    assert values["rescan_interval"] == 5.0


def test_unknown_key_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '# comment\ntracker = "t:1"\nmax_upload = 3\n')
    with pytest.raises(ConfigError, match=rf"{path}:3: unknown key 'max_upload'"):
        load_file(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('max_uploads = "many"', "max_uploads must be a whole number"),
        ("max_uploads = true", "max_uploads must be a whole number"),
        ("share = 3", "share must be a list of paths"),
        ('upload_limit = "fast"', "upload_limit:"),
        ("rescan_interval = [1]", "rescan_interval must be a number"),
    ],
)
def test_wrong_types_are_named(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, "\n" + line + "\n")
    with pytest.raises(ConfigError, match=f"{path}:2: {message}"):
        load_file(path)


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"agent\.toml"):
        load_file(write(tmp_path, "share = [\n"))
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_file(tmp_path / "absent.toml")


def test_flags_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'share = ["/from/file"]\nmax_uploads = 4\ntracker = "file:1"\n')
    args = build_parser().parse_args(
        ["run", "--config", str(path), "--tracker", "flag:2", "--state-dir", str(tmp_path)]
    )
    config = build_config(args)
    assert config.shares == (Path("/from/file"),)
    assert config.max_uploads == 4
    assert config.tracker == "flag:2"
    args = build_parser().parse_args(["run", "--config", str(path), "--share", "/x", "--max-uploads", "9"])
    config = build_config(args)
    assert (config.shares, config.max_uploads) == ((Path("/x"),), 9)


def test_config_values_are_checked() -> None:
    with pytest.raises(ConfigError, match="nothing to share"):
        AgentConfig(shares=(), state_dir=Path("/s"))
    with pytest.raises(ConfigError, match="not HOST:PORT"):
        AgentConfig(shares=(Path("/x"),), state_dir=Path("/s"), tracker="nope")
    with pytest.raises(ConfigError, match="max_uploads"):
        AgentConfig(shares=(Path("/x"),), state_dir=Path("/s"), max_uploads=0)
    with pytest.raises(ConfigError, match="cluster"):
        AgentConfig(shares=(Path("/x"),), state_dir=Path("/s"), cluster="a.b")
    with pytest.raises(ConfigError, match="not an interface"):
        AgentConfig(shares=(Path("/x"),), state_dir=Path("/s"), mdns_interfaces=("",))


def test_mdns_is_on_unless_turned_off_by_flag_or_file(tmp_path: Path) -> None:
    plain = build_config(build_parser().parse_args(["run", "--share", "/x", "--state-dir", str(tmp_path)]))
    assert (plain.mdns, plain.cluster, plain.mdns_interfaces) == (True, None, ())
    off = build_config(build_parser().parse_args(["run", "--share", "/x", "--no-mdns"]))
    assert off.mdns is False
    path = write(tmp_path, 'share = ["/x"]\nmdns = false\ncluster = "lab1"\nmdns_interfaces = ["eth1"]\n')
    from_file = build_config(build_parser().parse_args(["run", "--config", str(path)]))
    assert (from_file.mdns, from_file.cluster, from_file.mdns_interfaces) == (False, "lab1", ("eth1",))
    flags = build_parser().parse_args(
        [
            "run",
            "--config",
            str(path),
            "--cluster",
            "lab2",
            "--mdns-interface",
            "lo",
            "--mdns-interface",
            "eth2",
        ]
    )
    assert (build_config(flags).cluster, build_config(flags).mdns_interfaces) == ("lab2", ("lo", "eth2"))


def test_mdns_keys_have_their_types(tmp_path: Path) -> None:
    for line, message in (
        ('mdns = "yes"', "mdns must be true or false"),
        ('mdns_interfaces = "eth0"', "mdns_interfaces must be a list of text"),
        ("cluster = 3", "cluster must be text"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_file(write(tmp_path, line + "\n"))
