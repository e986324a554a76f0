"""A small origin web server for the lab: serves the files under a directory over HTTP/1.1,
with single byte ranges (RFC 9110: 206, 416, If-Range), a strong ETag and Last-Modified, as
nginx does, and counts the body bytes it sends per path.

    python -m scripts.lablib.origin --listen 10.77.0.2:8000 --root DIR --stats FILE

It stands in for the origin of a download in the lab tests, where nginx may be missing. The
counts are rewritten to FILE (JSON, replaced atomically) after each response, and `ready`
goes to stdout once it listens. SIGTERM or SIGINT stops it. Standard library only.
"""

from __future__ import annotations

import argparse
import email.utils
import json
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

CHUNK = 1024 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class Counters:
    """Body bytes and requests per path, written to a JSON file after each response."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._bytes: dict[str, int] = {}
        self._requests: dict[str, int] = {}
        self.flush()

    def add(self, path: str, count: int) -> None:
        with self._lock:
            self._bytes[path] = self._bytes.get(path, 0) + count

    def request(self, path: str) -> None:
        with self._lock:
            self._requests[path] = self._requests.get(path, 0) + 1

    def flush(self) -> None:
        if self._path is None:
            return
        with self._lock:
            doc = {
                "bytes": dict(self._bytes),
                "requests": dict(self._requests),
                "total_bytes": sum(self._bytes.values()),
            }
            tmp = self._path.with_name(self._path.name + ".tmp")
            tmp.write_text(json.dumps(doc, sort_keys=True))
            tmp.replace(self._path)


class OriginServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], root: Path, counters: Counters) -> None:
        self.root = root.resolve()
        self.counters = counters
        super().__init__(address, Handler)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lab-origin/1"
    disable_nagle_algorithm = True
    timeout = 60
    server: OriginServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, *, head: bool) -> None:
        url_path = unquote(urlsplit(self.path).path)
        counters = self.server.counters
        counters.request(url_path)
        target = (self.server.root / url_path.lstrip("/")).resolve()
        if not target.is_relative_to(self.server.root) or not target.is_file():
            self._reply(404, b"not found\n", head)
            return
        with target.open("rb") as f:
            st = os.fstat(f.fileno())
            size = st.st_size
            etag = f'"{st.st_mtime_ns:x}-{size:x}"'
            modified = email.utils.formatdate(st.st_mtime, usegmt=True)
            status, start, end = 200, 0, size - 1
            span = self._range(size, etag, modified) if not head else None
            if span == "unsatisfiable":
                self._reply(416, b"", head, [("Content-Range", f"bytes */{size}")])
                return
            if isinstance(span, tuple):
                status, (start, end) = 206, span
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", modified)
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if not head:
                self._send_file(f, url_path, start, end - start + 1)
        counters.flush()

    def _range(self, size: int, etag: str, modified: str) -> tuple[int, int] | str | None:
        """The one range asked for, 'unsatisfiable', or None for the whole file."""
        header = self.headers.get("Range")
        if header is None:
            return None
        if_range = self.headers.get("If-Range")
        if if_range is not None and if_range.strip() not in (etag, modified):
            return None
        match = _RANGE.fullmatch(header.strip())
        if match is None or (not match.group(1) and not match.group(2)):
            return None
        first, last = match.group(1), match.group(2)
        if not first:
            start, end = max(0, size - int(last)), size - 1
            if int(last) == 0:
                return "unsatisfiable"
        else:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
            if last and int(last) < start:
                return None
        if start >= size:
            return "unsatisfiable"
        return start, end

    def _send_file(self, f: BinaryIO, url_path: str, offset: int, count: int) -> None:
        """sendfile() in chunks, counting each; socket.sendfile copes with the socket's timeout."""
        sent = 0
        try:
            while sent < count:
                n = self.connection.sendfile(f, offset + sent, min(CHUNK, count - sent))
                if n == 0:
                    break
                self.server.counters.add(url_path, n)
                sent += n
        except OSError:
            self.close_connection = True

    def _reply(self, status: int, body: bytes, head: bool, extra: Sequence[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)
        self.server.counters.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.lablib.origin", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--root", required=True, type=Path, metavar="DIR")
    parser.add_argument("--stats", type=Path, metavar="FILE", help="where to keep the byte counts (JSON)")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    server = OriginServer((host, int(port)), args.root, Counters(args.stats))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    print(f"ready on {host}:{server.server_address[1]}", flush=True)
    stop.wait()
    server.shutdown()
    server.server_close()
    server.counters.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
