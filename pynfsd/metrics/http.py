"""The opt-in metrics endpoint: `GET /metrics` over HTTP/1.x (`pynfsd serve --metrics`).

Theory of operation: `MetricsServer` listens on the event loop.  Each connection carries one
request and is then closed (`Connection: close`; Prometheus opens one per scrape).  A request
head must arrive whole within `request_timeout` seconds and `max_request` bytes, and at most
`max_connections` connections are served at once (more are closed on arrival), so a slow,
huge or numerous client holds a bounded amount of memory and time.  `decide` (sans-IO) turns
the request head into a status: `GET`/`HEAD /metrics` is 200, another path 404, another
method 405, a malformed head 400.  A 200 takes the snapshot on the loop
(`pynfsd.metrics.snapshot.take`, cheap copies) and renders the text in a worker thread of
the shared blocking runner (`pynfsd.blocking`), one render at a time; the reply is written
within `write_timeout` seconds or the connection is dropped.  The NFS service shares nothing
with this server but the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from pynfsd.blocking import Runner
from pynfsd.metrics.collector import CONTENT_TYPE, render
from pynfsd.metrics.snapshot import Snapshot

log = logging.getLogger(__name__)

DEFAULT_PORT = 9049  # the port the help and the README suggest (nothing binds it by default)
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           431: "Request Header Fields Too Large", 503: "Service Unavailable"}


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_request: int = 8192  # bytes of a request head
    max_connections: int = 16  # connections served at once
    request_timeout: float = 10.0  # seconds for a request head to arrive
    write_timeout: float = 30.0  # seconds for a reply to be taken


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[V6ADDR]:PORT` or `PORT` (127.0.0.1): ValueError when malformed."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or not 0 <= int(port) < 65536 or not host:
        raise ValueError(f"not HOST:PORT: {text!r} (e.g. 127.0.0.1:{DEFAULT_PORT})")
    return host, int(port)


def decide(head: bytes) -> tuple[int, bool]:
    """(HTTP status, whether to send a body) for one request head (request line and
    headers, without the final empty line)."""
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return 400, True
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if method not in (b"GET", b"HEAD"):
        return 405, True
    return (200 if target == b"/metrics" else 404), method == b"GET"


def response(status: int, body: bytes, content_type: str, send_body: bool = True) -> bytes:
    head = (f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n")
    if status == 405:
        head += "Allow: GET, HEAD\r\n"
    return head.encode() + b"\r\n" + (body if send_body else b"")


def error_response(status: int, send_body: bool = True) -> bytes:
    body = f"{status} {REASONS.get(status, '')}\n".encode()
    return response(status, body, "text/plain; charset=utf-8", send_body)


class MetricsServer:
    """The endpoint; `await MetricsServer.start(...)`, then `close()` (module docstring)."""

    def __init__(self, snapshot: Callable[[], Snapshot], runner: Runner,
                 limits: HttpLimits | None = None) -> None:
        self.snapshot = snapshot
        self.runner = runner
        self.limits = limits or HttpLimits()
        self.active = 0
        self.refused = 0
        self.scrapes = 0
        self._render = asyncio.Lock()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._serve, host, port, limit=self.limits.max_request)

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        sockname = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.active >= self.limits.max_connections:
            self.refused += 1
            writer.transport.abort()
            return
        self.active += 1
        try:
            reply = await self._answer(reader)
            if reply is not None:
                writer.write(reply)
                await asyncio.wait_for(writer.drain(), self.limits.write_timeout)
        except (TimeoutError, ConnectionError, OSError):
            writer.transport.abort()
        finally:
            self.active -= 1
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> bytes | None:
        """The reply to the request on `reader`, or None to close without one."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"),
                                          self.limits.request_timeout)
        except asyncio.LimitOverrunError:
            return error_response(431)
        except (TimeoutError, asyncio.IncompleteReadError):
            return None  # gone, or too slow: nothing to answer
        status, send_body = decide(head)
        if status != 200:
            return error_response(status, send_body)
        return response(200, await self.render(), CONTENT_TYPE, send_body)

    async def render(self) -> bytes:
        """The metrics text: snapshot here, on the loop; rendering in a worker thread."""
        async with self._render:
            snap = self.snapshot()
            self.scrapes += 1
            return await self.runner.run(render, snap)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
