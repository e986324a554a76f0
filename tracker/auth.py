"""Bearer tokens: reading them, sending them, and checking them on the tracker's side."""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Any

from tracker.errors import TrackerError, Unauthenticated


def read_token(path: Path | None, env: str) -> str | None:
    """The token from `path` if given, else from the environment variable `env`."""
    if path is not None:
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise TrackerError(f"cannot read the token file {path}: {exc.strerror}") from None
        if not token:
            raise TrackerError(f"the token file {path} is empty")
        return token
    return os.environ.get(env) or None


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def check_token(metadata: Any, token: str | None, which: str) -> None:
    """Raises Unauthenticated unless the call's metadata carries `token`; a None token
    means the service is open."""
    if token is None:
        return
    presented = _bearer(metadata)
    if presented is None:
        raise Unauthenticated("this tracker needs a token: none was given")
    if not hmac.compare_digest(presented.encode(), token.encode()):
        raise Unauthenticated(f"the {which} token given is not this tracker's")


def _bearer(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :]
    return None
