"""The tracker's error tree. The service maps each kind to one gRPC status code."""

from __future__ import annotations


class TrackerError(Exception):
    """Something the tracker, or a client talking to it, could not do."""


class InvalidArgument(TrackerError):
    """A request or a value is malformed: a bad digest, an oversized name, a wrong count."""


class NotFound(TrackerError):
    """The request names an agent or content the tracker does not know."""


class FailedPrecondition(TrackerError):
    """The request is well formed but does not fit the tracker's state."""


class ResourceExhausted(TrackerError):
    """The request would take the tracker past one of its bounds on state."""


class PermissionDenied(TrackerError):
    """The agent is banned by an administrator."""


class Unauthenticated(TrackerError):
    """The token was missing or wrong."""


class TrackerUnavailable(TrackerError):
    """The tracker could not be reached, or did not answer in time."""
