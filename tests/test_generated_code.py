"""The committed protobuf code is exactly what the pinned generator makes of protos/."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(root / "scripts" / "gen-protos"), "--check"],
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_generated_code_matches_the_protos() -> None:
    result = run_check(ROOT)
    assert result.returncode == 0, result.stderr


def test_check_fails_when_a_proto_changes(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    proto = tmp_path / "protos" / "lanpeer" / "v1" / "tracker.proto"
    proto.write_text(proto.read_text() + "\nmessage Added {}\n")
    result = run_check(tmp_path)
    assert result.returncode == 1
    assert "tracker_pb2.py is out of date" in result.stderr
