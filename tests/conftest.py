"""Settings for the whole test session, made before anything imports gRPC."""

from __future__ import annotations

import os

# The tests start subprocesses from a process that runs gRPC servers and clients. With
# gRPC's fork support on, a child can abort between fork and exec: gRPC restarts its
# poller in the child, on an epoll descriptor that subprocess has already closed
# ("epoll_wait error: Bad file descriptor", grpc/grpc#43157). Every child here execs at
# once, so the support is not needed.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
