"""The agent's error tree."""

from __future__ import annotations


class AgentError(Exception):
    """Something the agent could not do; the message is meant for a person."""


class ConfigError(AgentError):
    """A setting is missing, malformed or contradicts another."""


class OutputNotWritable(AgentError):
    """The agent daemon may not write where a `get` handed to it must put the file (it runs
    as another user, or a hardened service unit keeps it out of that directory)."""

    def __init__(self, directory: str) -> None:
        super().__init__(f"the agent daemon may not write to {directory}")
        self.directory = directory


class FetchError(AgentError):
    """A download from one source (a peer or the origin) failed. `source` is the URL of
    the origin or the base URL of the peer; `status` is the HTTP status when one came."""

    def __init__(self, source: str, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.status = status


class SourceUnreachable(FetchError):
    """No connection could be made, or the source stopped answering within the timeout."""


class SourceBusy(FetchError):
    """The source turned the request away for now (503 or 429); ask again after `retry_after` seconds."""

    def __init__(self, source: str, message: str, *, retry_after: float, status: int | None = None) -> None:
        super().__init__(source, message, status=status)
        self.retry_after = retry_after


class SourceMissing(FetchError):
    """The source does not have the content (404 or 410)."""


class PieceNotHeld(FetchError):
    """The peer is still downloading the content and has not verified all of the range
    asked for yet. `bitmap` is the pieces it had then (BitTorrent order), None when it sent
    none that could be read."""

    def __init__(self, source: str, message: str, *, bitmap: bytes | None, status: int | None = None) -> None:
        super().__init__(source, message, status=status)
        self.bitmap = bitmap


class SourceUnauthorized(FetchError):
    """The source refused the credentials sent, or their absence (401 or 403)."""


class SourceFailed(FetchError):
    """The source answered, but not with the bytes asked for: another error status, a body
    shorter than announced, a wrong Content-Range, a broken connection mid-body."""


class ValidatorChanged(FetchError):
    """The origin's content changed since it was probed: what was downloaded so far
    belongs to another version. The download must start over."""


class RangeNotSupported(FetchError):
    """The origin ignores Range and sends the whole file: fetch it as one stream instead."""
