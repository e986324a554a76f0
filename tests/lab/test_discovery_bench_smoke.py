"""scripts/bench/discovery still runs end to end: a tiny run (2 agents, 1 repeat, a 1 s
heartbeat) builds its lab, times every formation and both moves of the tracker, writes its
JSON and takes the lab down. The figures themselves are the benchmark's business, not this
test's."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from scripts.lablib import namespaces
from tests.lab.conftest import lab_prefix, lab_skip_reason

REASON = lab_skip_reason()
ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "scripts" / "bench" / "discovery"

pytestmark = [pytest.mark.skipif(REASON is not None, reason=REASON or "")]

FIGURES = (
    "agent_alone",
    "formation_tracker",
    "formation_cluster",
    "formation_any",
    "move_goodbye",
    "move_crash",
)
SUMMARIES = (*FIGURES, "agent_alone_serving", "ratio_cluster_vs_tracker", "ratio_any_vs_tracker")


@pytest.mark.timeout(90)
def test_a_tiny_run_measures_every_figure_and_cleans_up(tmp_path: Path) -> None:
    results = tmp_path / "discovery.json"
    prefix = lab_prefix(8)
    argv = [str(BENCH), "--agents", "2", "--repeat", "1", "--heartbeat-interval", "1"]
    argv += ["--results", str(results), "--prefix", prefix]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=80, check=False)

    assert done.returncode == 0, done.stderr[-2000:]
    assert not [name for name in namespaces() if name.startswith(f"{prefix}-")]
    figures = json.loads(results.read_text())["figures"]
    assert figures["config"]["agents"] == 2
    assert figures["cores"] >= 1 and "Python" in figures["machine"]
    for name in FIGURES:
        (sample,) = figures["samples"][name]
        assert sample["seconds"] is not None and sample["seconds"] > 0, (name, sample)
        assert sample["registered"] == sample["agents"], (name, sample)
        assert sample["phases"]["registered_last"] > 0, (name, sample)
    for name in SUMMARIES:
        summary = figures["summary"][name]
        assert summary["failed"] == 0, (name, summary)
        assert summary["median"] > 0, (name, summary)
    # Found over mDNS with no cluster named: the agents waited out the settle time; named or
    # given the address: they did not.
    assert figures["samples"]["formation_any"][0]["phases"]["found_last"] >= figures["settle_seconds"]
    assert figures["samples"]["formation_cluster"][0]["phases"]["found_last"] < figures["settle_seconds"]
    assert "found_last" not in figures["samples"]["formation_tracker"][0]["phases"]
    assert figures["samples"]["move_crash"][0]["phases"]["noticed_after_kill_last"] > 0
    assert "(b) formation, mDNS --cluster" in done.stdout
