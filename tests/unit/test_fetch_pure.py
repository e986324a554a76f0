"""The pure half of agent/fetch.py: header parsing, validators, digests, and the error a
status becomes. No sockets; HttpFetcher is only built, and its argument checks run."""

from __future__ import annotations

import base64
import email.utils
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import (
    FetchError,
    SourceBusy,
    SourceFailed,
    SourceMissing,
    SourceUnauthorized,
)
from agent.fetch import (
    ContentRange,
    HttpFetcher,
    OriginInfo,
    accepts_byte_ranges,
    content_length,
    describe_status,
    digest_hint_from_headers,
    if_range_value,
    parse_content_range,
    parse_retry_after,
    peer_bitmap,
    sha256_from_sidecar,
    shown_url,
    status_error,
    strong_etag,
    validator_change,
    validator_from_headers,
)
from tracker.model import Validator

LM = "Mon, 02 Jan 2023 10:00:00 GMT"
DATA = b"lanpeer"
SHA = hashlib.sha256(DATA).hexdigest()
B64 = base64.b64encode(hashlib.sha256(DATA).digest()).decode()
NOW = 1_700_000_000.0
URL = "http://origin.example/x.tar"

header_text = st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=80)


# ----------------------------------------------------------------------------- Content-Range


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes 0-0/1", ContentRange(0, 0, 1)),
        ("bytes 10-19/100", ContentRange(10, 19, 100)),
        ("BYTES 10-19/100", ContentRange(10, 19, 100)),
        ("  bytes 10-19/100 ", ContentRange(10, 19, 100)),
        ("bytes 10-19/*", ContentRange(10, 19, None)),
        ("bytes */100", ContentRange(None, None, 100)),
        ("bytes */0", ContentRange(None, None, 0)),
    ],
)
def test_content_range_forms(value: str, expected: ContentRange) -> None:
    assert parse_content_range(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "bytes",
        "bytes */*",
        "bytes 5-4/100",
        "bytes 0-100/100",
        "bytes 0-9",
        "bytes=0-9/10",
        "items 0-9/10",
        "bytes -1-9/10",
        "bytes 0-9/10, bytes 10-19/20",
        "bytes 0-99999999999999999999/1",
    ],
)
def test_malformed_content_ranges_are_none(value: str | None) -> None:
    assert parse_content_range(value) is None


@given(header_text)
def test_content_range_never_raises(value: str) -> None:
    parse_content_range(value)


def test_content_range_values_check_themselves() -> None:
    with pytest.raises(ValueError, match="both ends or neither"):
        ContentRange(0, None, 10)
    with pytest.raises(ValueError, match="needs a size"):
        ContentRange(None, None, None)
    with pytest.raises(ValueError, match="past its size"):
        ContentRange(0, 10, 10)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("10", 10), (" 0 ", 0), ("10, 10", 10), ("10, 11", None), ("-1", None), ("1e3", None), ("", None)],
)
def test_content_length(value: str, expected: int | None) -> None:
    assert content_length({"content-length": value}) == expected


def test_absent_content_length_is_none() -> None:
    assert content_length({}) is None


# ----------------------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 1.0),
        ("5", 5.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("120", 60.0),
        ("99999999999999999999999", 60.0),
        ("-3", 1.0),
        ("1.5", 1.0),
        ("soon", 1.0),
        ("", 1.0),
        (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
        (email.utils.formatdate(NOW + 3600, usegmt=True), 60.0),
        (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),
    ],
)
def test_retry_after(value: str | None, expected: float) -> None:
    assert parse_retry_after(value, NOW) == pytest.approx(expected)


def test_retry_after_default_and_cap_are_the_callers() -> None:
    assert parse_retry_after(None, NOW, default=2.5) == 2.5
    assert parse_retry_after("100", NOW, cap=10) == 10


@given(header_text)
def test_retry_after_never_raises_and_stays_in_bounds(value: str) -> None:
    assert 0.0 <= parse_retry_after(value, NOW) <= 60.0


# ----------------------------------------------------------------------------- validators


def test_a_strong_etag_is_the_validator() -> None:
    v = validator_from_headers({"ETag": '"v1"', "Last-Modified": LM}, 100)
    assert v is not None
    assert v.key == 'etag "v1"'
    assert v == Validator('"v1"', LM, 100)


def test_header_names_are_case_insensitive() -> None:
    assert validator_from_headers({"etag": '"v1"'}, None) == Validator('"v1"', "", 0)


@pytest.mark.parametrize("etag", ['W/"v1"', "v1", '"v1", "v2"', '"v 1"', '"' + "a" * 600 + '"', '"'])
def test_without_a_usable_strong_etag_last_modified_and_length_are_the_validator(etag: str) -> None:
    assert strong_etag({"ETag": etag}) is None or len(etag) > 512
    v = validator_from_headers({"ETag": etag, "Last-Modified": LM}, 100)
    assert v == Validator("", LM, 100)
    assert v.key == f"last-modified {LM}; length 100"


@pytest.mark.parametrize(
    ("headers", "size"),
    [
        ({"ETag": 'W/"v1"', "Last-Modified": LM}, None),
        ({"ETag": 'W/"v1"'}, 100),
        ({"Last-Modified": "yesterday"}, 100),
        ({"Last-Modified": LM + "\x7f"}, 100),
        ({}, 100),
    ],
)
def test_no_validator(headers: dict[str, str], size: int | None) -> None:
    assert validator_from_headers(headers, size) is None


def test_if_range_is_the_etag_else_the_date() -> None:
    assert if_range_value(Validator('"v1"', LM, 10)) == '"v1"'
    assert if_range_value(Validator("", LM, 10)) == LM


@pytest.mark.parametrize(
    ("was", "size_was", "headers", "size_now", "expected"),
    [
        (Validator('"v1"', "", 0), 10, {"ETag": '"v1"'}, 10, None),
        (Validator('"v1"', "", 0), 10, {"ETag": '"v2"'}, 10, 'its ETag is now "v2", was "v1"'),
        (Validator('"v1"', "", 0), 10, {"ETag": 'W/"v2"'}, 10, None),
        (Validator('"v1"', "", 0), 10, {}, None, None),
        (Validator('"v1"', "", 0), 10, {"ETag": '"v1"'}, 11, "its size is now 11 bytes, was 10"),
        (Validator("", LM, 10), 10, {"Last-Modified": LM}, 10, None),
        (
            Validator("", LM, 10),
            10,
            {"Last-Modified": "Tue, 03 Jan 2023 10:00:00 GMT"},
            10,
            f"its Last-Modified is now Tue, 03 Jan 2023 10:00:00 GMT, was {LM}",
        ),
        (None, 10, {"ETag": '"v2"'}, 10, None),
        (None, 10, {}, 12, "its size is now 12 bytes, was 10"),
        (None, None, {}, 12, None),
    ],
)
def test_validator_change(
    was: Validator | None,
    size_was: int | None,
    headers: dict[str, str],
    size_now: int | None,
    expected: str | None,
) -> None:
    assert validator_change(was, size_was, headers, size_now) == expected


# ----------------------------------------------------------------------------- digests


@pytest.mark.parametrize(
    "headers",
    [
        {"Repr-Digest": f"sha-256=:{B64}:"},
        {"repr-digest": f"SHA-256=:{B64}:"},
        {"Repr-Digest": f"sha-512=:{base64.b64encode(bytes(64)).decode()}:, sha-256=:{B64}:"},
        {"Repr-Digest": f"sha-256=:{B64}:;param=1"},
        {"Digest": f"SHA-256={B64}"},
        {"Digest": f"md5=abc, sha-256={B64}"},
        {"Repr-Digest": "sha-256=:broken:", "Digest": f"SHA-256={B64}"},
    ],
)
def test_digest_hint(headers: dict[str, str]) -> None:
    assert digest_hint_from_headers(headers) == SHA


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Repr-Digest": f"sha-512=:{B64}:"},
        {"Repr-Digest": f"sha-256={B64}"},
        {"Repr-Digest": f"sha-256=:{B64[:-4]}:"},
        {"Repr-Digest": "sha-256=:!!!!:"},
        {"Digest": f"SHA-256=:{B64}:"},
        {"Digest": "SHA-256=" + base64.b64encode(b"short").decode()},
        {"Content-Digest": f"sha-256=:{B64}:"},
    ],
)
def test_no_digest_hint(headers: dict[str, str]) -> None:
    assert digest_hint_from_headers(headers) is None


@given(header_text, header_text)
def test_digest_hint_never_raises(repr_digest: str, digest: str) -> None:
    found = digest_hint_from_headers({"Repr-Digest": repr_digest, "Digest": digest})
    assert found is None or len(found) == 64


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Lanpeer-Pieces": "oA=="}, b"\xa0"),
        ({"lanpeer-pieces": " /4A= "}, b"\xff\x80"),
        ({"Lanpeer-Pieces": ""}, b""),
        ({}, None),
        ({"Lanpeer-Pieces": "oA"}, None),
        ({"Lanpeer-Pieces": "not base64!"}, None),
        ({"Lanpeer-Pieces": "oA==\u00ff"}, None),
    ],
)
def test_peer_bitmap(headers: dict[str, str], expected: bytes | None) -> None:
    assert peer_bitmap(headers) == expected


@given(header_text)
def test_peer_bitmap_never_raises(value: str) -> None:
    found = peer_bitmap({"Lanpeer-Pieces": value})
    assert found is None or isinstance(found, bytes)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("bytes", True), ("none", False), ("Bytes", True), ("foo, bytes", True), ("", False)],
)
def test_accept_ranges(value: str, expected: bool) -> None:
    assert accepts_byte_ranges({"Accept-Ranges": value}) is expected


# ----------------------------------------------------------------------------- statuses


def test_status_phrases() -> None:
    assert describe_status(404) == "404 Not Found"
    assert describe_status(404, "Nope") == "404 Not Found"
    assert describe_status(599, "Odd\r\nInjected: yes") == "599 Odd Injected: yes"
    assert describe_status(599) == "599"


def test_busy_statuses_carry_their_wait() -> None:
    error = status_error("origin", URL, URL, 503, retry_after="7", now=NOW)
    assert isinstance(error, SourceBusy)
    assert error.retry_after == 7.0
    assert error.status == 503
    assert error.source == URL
    assert str(error) == f"origin answered 503 Service Unavailable for {URL}; retry after 7 s"
    too_many = status_error("peer", "http://p:7071", URL, 429, now=NOW)
    assert isinstance(too_many, SourceBusy)
    assert too_many.retry_after == 1.0


@pytest.mark.parametrize(
    ("status", "kind"),
    [(404, SourceMissing), (410, SourceMissing), (401, SourceUnauthorized), (403, SourceUnauthorized)]
    + [(s, SourceFailed) for s in (400, 416, 500, 502, 504, 302, 200)],
)
def test_status_kinds(status: int, kind: type[FetchError]) -> None:
    error = status_error("origin", URL, URL, status)
    assert type(error) is kind
    assert error.status == status
    assert str(error).startswith(f"origin answered {status} ")
    assert "\n" not in str(error)


def test_a_refused_peer_says_whether_a_token_was_sent() -> None:
    without = status_error("peer", "http://p:7071", "http://p:7071/v1/blobs/x", 401, token_sent=False)
    assert str(without).endswith("it wants a token and none is configured")
    refused = status_error("peer", "http://p:7071", "http://p:7071/v1/blobs/x", 401, token_sent=True)
    assert str(refused).endswith("the token was refused")


def test_shown_urls_hide_passwords() -> None:
    assert shown_url("https://ann:secret@host:8443/x?y=1") == "https://ann:***@host:8443/x?y=1"
    assert shown_url("https://host/x") == "https://host/x"
    assert shown_url("http://host/\nx") == "http://host/ x"


# ----------------------------------------------------------------------------- values and arguments


def test_origin_info_checks_itself() -> None:
    OriginInfo("http://h/x", 10, Validator("", LM, 10), True, SHA)
    with pytest.raises(ValueError, match="not an http"):
        OriginInfo("ftp://h/x", 10, None, True)
    with pytest.raises(ValueError, match="negative"):
        OriginInfo("http://h/x", -1, None, True)
    with pytest.raises(ValueError, match="SHA-256"):
        OriginInfo("http://h/x", 10, None, True, "ABC")
    with pytest.raises(ValueError, match="Last-Modified goes with a length of 11"):
        OriginInfo("http://h/x", 10, Validator("", LM, 11), True)


@pytest.mark.parametrize(
    "settings",
    [{"timeout": 0}, {"timeout": -1.0}, {"pool_size": 0}, {"token": ""}, {"token": "a b"}, {"token": "é"}],
)
def test_fetcher_settings_are_checked(settings: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        HttpFetcher(**settings)  # type: ignore[arg-type]


def test_the_token_stays_out_of_the_repr() -> None:
    with HttpFetcher(token="s3cret") as fetcher:
        assert "s3cret" not in repr(fetcher)


def test_ranges_and_buffers_are_checked_before_any_request() -> None:
    info = OriginInfo("http://127.0.0.1:9/x", 10, None, True)
    with HttpFetcher() as fetcher:
        with pytest.raises(ValueError, match="0 <= start <= end"):
            fetcher.fetch_origin(info, 5, 4, memoryview(bytearray(0)))
        with pytest.raises(ValueError, match="writable buffer of 5 bytes"):
            fetcher.fetch_origin(info, 0, 4, memoryview(bytearray(4)))
        with pytest.raises(ValueError, match="writable buffer"):
            fetcher.fetch_origin(info, 0, 4, memoryview(bytes(5)))
        with pytest.raises(ValueError, match="past the end"):
            fetcher.fetch_origin(info, 8, 10, memoryview(bytearray(3)))
        with pytest.raises(ValueError, match="SHA-256"):
            fetcher.fetch_peer("http://127.0.0.1:9", "nope", 0, 0, memoryview(bytearray(1)))
        with pytest.raises(ValueError, match="outside"):
            fetcher.fetch_origin_stream(info, 11, lambda chunk: None)
        assert fetcher.fetch_origin_stream(info, 10, lambda chunk: None) == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{'ab' * 32}\n", "ab" * 32),
        (f"{'AB' * 32}  data.tar\n", "ab" * 32),
        (f"SHA256 (data.tar) = {'cd' * 32}\n", "cd" * 32),
        (f"{'11' * 32}  other.tar\n{'22' * 32}  data.tar\n", "22" * 32),
        (f"{'11' * 32}  other.tar\n{'22' * 32}  more.tar\n", None),
        ("not a digest\n", None),
        (f"{'ab' * 33}\n", None),
        ("", None),
    ],
)
def test_the_digest_of_a_sha256_file_beside_a_download(text: str, expected: str | None) -> None:
    assert sha256_from_sidecar(text, "data.tar") == expected
