"""The admin CLI, run as a subprocess against a real in-process tracker."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.helpers import make_blob, origin
from tracker.model import Announce, MiB

DATASET = make_blob("dataset.tar", 3 * MiB)
ADMIN_TOKEN = "admin-s3cret"


def lanpeer_tracker() -> list[str]:
    script = Path(sys.executable).with_name("lanpeer-tracker")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tracker.cli"]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LANPEER_")}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*lanpeer_tracker(), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(),
        check=False,
    )


def admin_cli(tracker, *args: str) -> subprocess.CompletedProcess[str]:
    command, *rest = args
    return cli(command, "--tracker", tracker.address, *rest)


def json_of(result: subprocess.CompletedProcess[str]):
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)


def assert_one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lanpeer-tracker: ")
    return lines[0]


@pytest.fixture
def cluster(tracker, clients):
    """One live agent holding a 3 MiB dataset, with its manifest and origin URL published."""
    alpha = clients.agent(tracker, "alpha").join(DATASET.whole())
    alpha.beat(uploads=2)
    alpha.client.publish_manifest(alpha.id, DATASET.manifest)
    alpha.client.publish_source(alpha.id, origin(), DATASET.sha256)
    return tracker


# ----------------------------------------------------------------------------- --json


def test_agents_json(cluster):
    (agent,) = json_of(admin_cli(cluster, "agents", "--json"))["agents"]
    age = agent.pop("last_seen_age_seconds")
    assert isinstance(age, float)
    assert 0 <= age < 10
    assert agent == {
        "agent_id": "alpha",
        "hostname": "host-alpha",
        "base_url": "http://alpha.lab:7071",
        "version": "0.1.0",
        "live": True,
        "files": 1,
        "bytes_held": 3 * MiB,
        "active_uploads": 2,
        "active_downloads": 0,
        "bad_source_reports": 0,
        "banned": False,
    }


def test_files_json(cluster):
    assert json_of(admin_cli(cluster, "files", "--json")) == {
        "files": [
            {
                "sha256": DATASET.sha256,
                "size": 3 * MiB,
                "names": ["dataset.tar"],
                "live_holders": 1,
                "holders": 1,
                "has_manifest": True,
                "sources": [
                    {
                        "url": "http://origin.example/dataset.tar",
                        "etag": '"v1"',
                        "last_modified": "",
                        "content_length": 0,
                    }
                ],
            }
        ]
    }


@pytest.mark.parametrize(
    "query",
    [f"sha256:{DATASET.sha256}", DATASET.sha256, "dataset.tar", "http://origin.example/dataset.tar"],
    ids=["sha256:HEX", "HEX", "name", "url"],
)
def test_locate_json(cluster, query):
    (match,) = json_of(admin_cli(cluster, "locate", query, "--json"))["matches"]
    assert match == {
        "sha256": DATASET.sha256,
        "size": 3 * MiB,
        "names": ["dataset.tar"],
        "manifest": {"piece_size": MiB, "pieces": 3},
        "holders": [
            {
                "agent_id": "alpha",
                "hostname": "host-alpha",
                "base_url": "http://alpha.lab:7071",
                "state": "live",
                "complete": True,
                "pieces_held": None,
                "active_uploads": 2,
            }
        ],
        "sources": [
            {
                "url": "http://origin.example/dataset.tar",
                "etag": '"v1"',
                "last_modified": "",
                "content_length": 0,
            }
        ],
    }


def test_locate_a_url_at_one_version(cluster):
    url = "http://origin.example/dataset.tar"
    result = admin_cli(cluster, "locate", url, "--etag", '"v1"', "--json")
    assert [m["sha256"] for m in json_of(result)["matches"]] == [DATASET.sha256]
    result = admin_cli(cluster, "locate", url, "--etag", '"v2"', "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout) == {"matches": []}


def test_stats_json(cluster):
    assert json_of(admin_cli(cluster, "stats", "--json")) == {
        "live_agents": 1,
        "dead_agents": 0,
        "banned_agents": 0,
        "distinct_files": 1,
        "holdings": 1,
        "bytes_held": 3 * MiB,
        "manifests": 1,
        "sources": 1,
        "bad_source_reports": 0,
        "swarms": 0,
        "swarm_members": 0,
        "bytes_from_peers": 0,
        "bytes_from_origin": 0,
        "origin_offload": None,
    }


# ----------------------------------------------------------------------------- tables


def column_end(line: str, text: str) -> int:
    return line.index(text) + len(text)


def test_agents_table(cluster):
    result = admin_cli(cluster, "agents")
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert re.split(r"\s\s+", header) == [
        *("AGENT", "HOST", "URL", "STATE", "LAST SEEN", "FILES", "HELD", "UPLOADS", "BAD")
    ]
    # Left-aligned columns start with their header, right-aligned ones end with it.
    assert row.startswith("alpha ")
    assert row.index("host-alpha") == header.index("HOST")
    assert row.index("http://alpha.lab:7071") == header.index("URL")
    assert row.index("live") == header.index("STATE")
    assert column_end(row, "3.0 MiB") == column_end(header, "HELD")


def test_files_table(cluster):
    result = admin_cli(cluster, "files")
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split() == ["SHA256", "SIZE", "LIVE/ALL", "MANIFEST", "NAMES"]
    assert row.startswith(DATASET.sha256[:16] + " ")
    assert column_end(row, "3.0 MiB") == column_end(header, "SIZE")
    assert column_end(row, "1/1") == column_end(header, "LIVE/ALL")
    assert row.index("yes") == header.index("MANIFEST")
    assert row.index("dataset.tar") == header.index("NAMES")


def test_locate_text(cluster):
    result = admin_cli(cluster, "locate", f"sha256:{DATASET.sha256}")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"sha256:{DATASET.sha256}"
    assert "  size      3.0 MiB (3145728 bytes)" in lines
    assert "  names     dataset.tar" in lines
    assert "  manifest  3 pieces of 1.0 MiB" in lines
    assert '  source    http://origin.example/dataset.tar ("v1")' in lines
    header = next(line for line in lines if line.lstrip().startswith("AGENT"))
    row = next(line for line in lines if line.lstrip().startswith("alpha"))
    assert row.index("live") == header.index("STATE")
    assert column_end(row, "all") == column_end(header, "PIECES")


def test_stats_text(cluster):
    result = admin_cli(cluster, "stats")
    assert result.returncode == 0, result.stderr
    lines = [line.split("  ", 1) for line in result.stdout.splitlines()]
    table = {key.strip(): value.strip() for key, value in lines}
    assert table == {
        "agents": "1 live, 0 dead, 0 banned",
        "files": "1 distinct, 1 holdings",
        "bytes held": "3.0 MiB (3145728 bytes)",
        "manifests": "1",
        "URL mappings": "1",
        "bad-source reports": "0",
        "swarms": "0 (0 members)",
        "origin offload": "no downloads reported yet",
    }


def test_stats_count_swarms_and_their_members(cluster, clients):
    clients.agent(cluster, "beta").join()
    client = clients.agent_api(cluster)
    for agent_id in ("alpha", "beta"):
        client.announce(Announce(agent_id, DATASET.sha256, DATASET.size, MiB, b"\x00"))

    stats = json_of(admin_cli(cluster, "stats", "--json"))
    assert (stats["swarms"], stats["swarm_members"]) == (1, 2)
    result = admin_cli(cluster, "stats")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^swarms +1 \(2 members\)$", result.stdout, re.MULTILINE), result.stdout


def test_empty_tracker_tables_say_so(tracker):
    assert admin_cli(tracker, "agents").stdout == "No agents have registered.\n"
    assert admin_cli(tracker, "files").stdout == "No agent holds any file.\n"


# ----------------------------------------------------------------------------- evict, unban


def test_evict_then_agents_shows_it_gone(cluster):
    result = json_of(admin_cli(cluster, "evict", "alpha", "--json"))
    assert result == {"agent_id": "alpha", "banned": False, "holdings_removed": 1}
    assert json_of(admin_cli(cluster, "agents", "--json")) == {"agents": []}
    assert json_of(admin_cli(cluster, "files", "--json")) == {"files": []}


def test_evict_ban_then_unban(cluster, clients):
    result = admin_cli(cluster, "evict", "alpha", "--ban")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Evicted alpha and banned it; withdrew 1 holdings.\n"
    assert json_of(admin_cli(cluster, "stats", "--json"))["banned_agents"] == 1
    result = admin_cli(cluster, "unban", "alpha")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Unbanned alpha; it may register again.\n"
    clients.agent(cluster, "alpha").join()


def test_evicting_an_unknown_agent_is_one_line_and_exit_1(cluster):
    line = assert_one_error_line(admin_cli(cluster, "evict", "stranger"))
    assert "stranger" in line


# ----------------------------------------------------------------------------- failures


def test_locate_with_no_match_exits_1(cluster):
    missing = "0" * 64
    result = admin_cli(cluster, "locate", f"sha256:{missing}")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"Nothing matches sha256:{missing}.\n"
    result = admin_cli(cluster, "locate", "no-such-file.tar", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout) == {"matches": []}


@pytest.mark.parametrize("command", ["agents", "files", "stats", "evict alpha", "unban alpha", "locate x"])
def test_an_unreachable_tracker_is_one_line_and_exit_1(command):
    name, *rest = command.split()
    line = assert_one_error_line(cli(name, "--tracker", "127.0.0.1:1", *rest))
    assert "127.0.0.1:1" in line


def test_a_missing_admin_token_file_is_one_line_and_exit_1(cluster, tmp_path):
    missing = tmp_path / "no-such-token"
    line = assert_one_error_line(admin_cli(cluster, "agents", "--admin-token-file", str(missing)))
    assert str(missing) in line


def test_the_admin_token_file_is_presented(trackers, tmp_path):
    tracker = trackers.start(admin_token=ADMIN_TOKEN)
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    assert json_of(admin_cli(tracker, "stats", "--json", "--admin-token-file", str(token_file)))
    line = assert_one_error_line(admin_cli(tracker, "stats"))
    assert "token" in line
    wrong = tmp_path / "wrong-token"
    wrong.write_text("nope")
    assert_one_error_line(admin_cli(tracker, "stats", "--admin-token-file", str(wrong)))


def test_the_cli_talks_tls(trackers, tls_files):
    tracker = trackers.start(tls_cert=tls_files.cert, tls_key=tls_files.key)
    result = cli("stats", "--json", "--tracker", f"localhost:{tracker.port}", "--tls-ca", str(tls_files.cert))
    assert json_of(result)["live_agents"] == 0


@pytest.mark.parametrize(
    "args",
    [
        ["locate", "sha256:xyz"],
        ["locate", "a/b"],
        ["locate", "dataset.tar", "--etag", '"v1"'],
        ["locate", "http://origin.example/dataset.tar", "--etag", 'W/"v1"'],
    ],
    ids=["short digest", "name with a slash", "etag without a URL", "weak etag"],
)
def test_a_malformed_query_is_one_line_and_exit_1(cluster, args):
    line = assert_one_error_line(admin_cli(cluster, *args))
    assert "Traceback" not in line
