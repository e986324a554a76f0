"""Pure pieces of the CLI: query parsing, sizes, ages, tables, policy names."""

from __future__ import annotations

import argparse

import pytest

from tests.unit.helpers import digest
from tracker.cli import host_port, parse_query
from tracker.errors import InvalidArgument
from tracker.model import DigestQuery, NameQuery, SourceQuery, UrlQuery
from tracker.policy import policy_named
from tracker.render import human_age, human_size, table

A = digest("a")


def q(text: str, etag: str = "", last_modified: str = "", content_length: int | None = None):
    return parse_query(text, etag=etag, last_modified=last_modified, content_length=content_length)


def test_queries_are_told_apart() -> None:
    assert q(f"sha256:{A}") == DigestQuery(A)
    assert q(A.upper()) == DigestQuery(A)
    assert q("ubuntu.iso") == NameQuery("ubuntu.iso")
    assert q(f"name:{A}") == NameQuery(A)
    assert q("http://o/x.tar") == UrlQuery("http://o/x.tar")
    sq = q("http://o/x.tar", etag='"v"')
    assert isinstance(sq, SourceQuery)
    assert sq.source.validator.etag == '"v"'
    with pytest.raises(InvalidArgument, match="go with a URL"):
        q("x.tar", etag='"v"')
    with pytest.raises(InvalidArgument, match="not a SHA-256"):
        q("sha256:xyz")


@pytest.mark.parametrize("good", ["127.0.0.1:7070", "[::1]:7070", "tracker.lab:1", ":7070"])
def test_host_port_accepts(good: str) -> None:
    assert host_port(good) == good


@pytest.mark.parametrize("bad", ["127.0.0.1", "host:port", "h:70000", "a b:1", "::1:7070"])
def test_host_port_refuses(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        host_port(bad)


def test_human_sizes_and_ages() -> None:
    assert human_size(0) == "0 B"
    assert human_size(1023) == "1023 B"
    assert human_size(3 * 1024 * 1024 + 5) == "3.0 MiB"
    assert human_size(5 * 1024**4) == "5.0 TiB"
    assert human_age(None) == "never"
    assert human_age(3.7) == "3 s ago"
    assert human_age(125) == "2 min ago"
    assert human_age(7200) == "2.0 h ago"


def test_tables_align_columns() -> None:
    text = table(["NAME", "SIZE"], [["a", "1 B"], ["longer", "10.0 MiB"]], right=(1,))
    assert text.splitlines() == ["NAME        SIZE", "a            1 B", "longer  10.0 MiB"]


def test_unknown_policy_names_are_an_error() -> None:
    assert policy_named("random").name == "random"
    with pytest.raises(InvalidArgument, match="least-loaded"):
        policy_named("fastest")
