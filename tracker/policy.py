"""Hand-out policies: in which order the tracker offers the holders of a file.

Each policy is a small named strategy. Asking for an unknown name is an error,
never a silent fall-back to the default.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Protocol

from tracker.errors import InvalidArgument


class HandoutPolicy(Protocol):
    name: str

    def order(self, uploads: Sequence[int], rng: random.Random) -> list[int]:
        """Given each holder's active uploads, the holders' positions in hand-out order."""
        ...


class LeastLoaded:
    """The holders with the fewest active uploads first; random among equals, so that
    many downloaders asking at once spread over the idle holders."""

    name = "least-loaded"

    def order(self, uploads: Sequence[int], rng: random.Random) -> list[int]:
        keyed = [(load, rng.random(), i) for i, load in enumerate(uploads)]
        keyed.sort()
        return [i for _, _, i in keyed]


class Shuffled:
    """Every holder equally likely to come first, whatever its load."""

    name = "random"

    def order(self, uploads: Sequence[int], rng: random.Random) -> list[int]:
        positions = list(range(len(uploads)))
        rng.shuffle(positions)
        return positions


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
