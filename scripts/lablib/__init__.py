"""The lab: an emulated office LAN in network namespaces (see lab.py), its command line
(cli.py, run as scripts/lab) and a small counting file origin (origin.py)."""

from __future__ import annotations

from scripts.lablib.lab import (
    DEFAULT_PREFIX,
    DEFAULT_SUBNET,
    ORIGIN,
    TRACKER,
    Host,
    Lab,
    LabError,
    die_with_parent,
    format_rate,
    namespaces,
    parse_rate,
    unavailable_reason,
)

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_SUBNET",
    "ORIGIN",
    "TRACKER",
    "Host",
    "Lab",
    "LabError",
    "die_with_parent",
    "format_rate",
    "namespaces",
    "parse_rate",
    "unavailable_reason",
]
