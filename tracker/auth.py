"""Bearer-token checks for the tracker's two services, as a gRPC server interceptor."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any

import grpc

log = logging.getLogger(__name__)

TRACKER_PREFIX = "/lanpeer.v1.TrackerService/"
ADMIN_PREFIX = "/lanpeer.v1.TrackerAdminService/"


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def _deny(message: str) -> grpc.RpcMethodHandler:
    def abort(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(abort)


class TokenInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Agents must present the cluster token, the admin CLI the admin token.
    A service whose token is None is open."""

    def __init__(self, *, cluster_token: str | None, admin_token: str | None) -> None:
        self._tokens = {TRACKER_PREFIX: cluster_token, ADMIN_PREFIX: admin_token}

    def intercept_service(
        self,
        continuation: Callable[[Any], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        for prefix, token in self._tokens.items():
            if method.startswith(prefix):
                if token is None:
                    break
                presented = _bearer(handler_call_details.invocation_metadata)
                if presented is None:
                    return _deny("this tracker needs a token: none was given")
                if not hmac.compare_digest(presented.encode(), token.encode()):
                    which = "admin" if prefix == ADMIN_PREFIX else "cluster"
                    return _deny(f"the {which} token given is not this tracker's")
                break
        return continuation(handler_call_details)


def _bearer(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :]
    return None
