"""The lanpeer agent: reports what this machine holds, serves it to peers, fetches from them."""

from tracker import __version__

__all__ = ["__version__"]
