"""Hand-out policies: in which order the tracker offers the holders of a file.

Each policy is a small named strategy. Asking for an unknown name is an error,
never a silent fall-back to the default.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Protocol

from tracker.errors import InvalidArgument
from tracker.model import HolderView


class HandoutPolicy(Protocol):
    name: str

    def order(self, holders: Sequence[HolderView], rng: random.Random) -> list[HolderView]: ...


class LeastLoaded:
    """The holders with the fewest active uploads first; random among equals, so that
    many downloaders asking at once spread over the idle holders."""

    name = "least-loaded"

    def order(self, holders: Sequence[HolderView], rng: random.Random) -> list[HolderView]:
        keyed = [(h.load.active_uploads, rng.random(), i) for i, h in enumerate(holders)]
        keyed.sort()
        return [holders[i] for _, _, i in keyed]


class Shuffled:
    """Every holder equally likely to come first, whatever its load."""

    name = "random"

    def order(self, holders: Sequence[HolderView], rng: random.Random) -> list[HolderView]:
        ordered = list(holders)
        rng.shuffle(ordered)
        return ordered


_POLICIES: dict[str, Callable[[], HandoutPolicy]] = {
    LeastLoaded.name: LeastLoaded,
    Shuffled.name: Shuffled,
}
DEFAULT_POLICY = LeastLoaded.name
POLICY_NAMES = tuple(_POLICIES)


def policy_named(name: str) -> HandoutPolicy:
    try:
        return _POLICIES[name]()
    except KeyError:
        known = ", ".join(POLICY_NAMES)
        raise InvalidArgument(f"unknown hand-out policy {name!r} (known: {known})") from None
