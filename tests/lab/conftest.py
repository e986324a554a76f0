"""Fixtures of the lab tests: labs that are always taken down, a short work directory
(agents' control sockets live under it), and the lanpeer services on a lab."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.lablib import Lab, namespaces, unavailable_reason
from scripts.lablib.services import Services


def lab_skip_reason() -> str | None:
    """Why the lab tests cannot run here, or None."""
    reason = unavailable_reason()
    return None if reason is None else f"lab tests need root and network namespaces: {reason}"


def lab_prefix(n: int = 0) -> str:
    """A prefix no other test run uses at the same time (at most 8 characters)."""
    return f"lt{os.getpid() % 100000}{n}"[:8]


@pytest.fixture
def make_lab() -> Iterator[Callable[..., Lab]]:
    """Builds labs (Lab.up's arguments); each is taken down after the test, which fails if
    any of its namespaces is left."""
    made: list[Lab] = []

    def make(hosts: int, **kwargs: Any) -> Lab:
        lab = Lab(lab_prefix(len(made)))
        made.append(lab)
        return lab.up(hosts, **kwargs)

    yield make
    for lab in made:
        lab.down()
    left = [name for lab in made for name in lab.leftovers()]
    assert not left, f"namespaces left after down: {left}"
    assert not [name for name in namespaces() if name.startswith(lab_prefix())]


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short directory under /tmp: a unix socket path must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="lpl-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def services(make_lab: Callable[..., Lab], workdir: Path) -> Iterator[Callable[[Lab], Services]]:
    """The lanpeer processes started on a lab, all stopped after the test (before the lab
    goes down: this fixture depends on make_lab, so it is torn down first)."""
    started: list[Services] = []

    def make(lab: Lab) -> Services:
        s = Services(lab, workdir)
        started.append(s)
        return s

    yield make
    for s in started:
        s.close()
