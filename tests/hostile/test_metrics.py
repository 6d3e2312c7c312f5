"""Hostile clients of the metrics endpoint (`pynfsd serve --metrics`): a huge request head,
more connections than it serves at once, and a slow request head.  Each goes one past the
bound (`pynfsd.metrics.http.HttpLimits`) and checks the answer, the server's memory, that
the endpoint still answers a scrape and that NFS clients are still served."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from pynfsd.metrics.http import HttpLimits
from tests.metrics_support import metrics_port, scrape, value
from tests.serverproc import HOST, ServerProcess, assert_log_clean

LIMITS = HttpLimits()
WAIT = 30.0  # bound on waiting for the server to act; never asserted as a duration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("metrics")
    (base / "exp").mkdir()
    with ServerProcess([f"{base / 'exp'} *(rw,no_root_squash,insecure)"], base / "state",
                       extra_args=["--metrics", "127.0.0.1:0"], log_level="INFO") as srv:
        yield srv
    assert_log_clean(srv.log_text())


def connect(port: int) -> socket.socket:
    return socket.create_connection((HOST, port), timeout=WAIT)


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (b"" when it resets)."""
    out = b""
    try:
        while chunk := sock.recv(1 << 16):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def scrape_when_free(port: int) -> str:
    """A scrape, once the server has seen earlier connections close (until then one past the
    bound is closed unanswered, as it should be); fails after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return scrape(port)
        except OSError:
            assert time.monotonic() < deadline, "no connection slot came free"
            time.sleep(0.1)


def still_served(srv: ServerProcess, rss_before: int) -> None:
    assert srv.rss_kib() - rss_before < 8 * 1024
    text = scrape_when_free(metrics_port(srv))
    assert value(text, "pynfsd_build_info", version="0.1.0") == 1
    srv.healthy()


def test_one_byte_past_the_request_head_bound_gets_431(server: ServerProcess) -> None:
    port = metrics_port(server)
    rss = server.rss_kib()
    with connect(port) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * LIMITS.max_request)
        assert read_all(sock).startswith(b"HTTP/1.1 431 ")
    with connect(port) as sock:  # far past it: answered and closed, nothing held
        try:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (64 << 20))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking it all
        read_all(sock)
    still_served(server, rss)


def test_one_past_the_connection_bound_is_closed_unanswered(server: ServerProcess) -> None:
    port = metrics_port(server)
    rss = server.rss_kib()
    held = [connect(port) for _ in range(LIMITS.max_connections)]
    for sock in held:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")  # never finished
    time.sleep(0.5)  # let the server take them all (not a timing assertion)
    with connect(port) as extra:
        extra.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        assert read_all(extra) == b""
    server.healthy()  # NFS is not affected
    held.pop().close()
    scrape_when_free(port)  # a slot is free again once the server saw that close
    for sock in held:
        sock.close()
    still_served(server, rss)


def test_a_slow_request_head_is_dropped_after_its_timeout(server: ServerProcess) -> None:
    port = metrics_port(server)
    rss = server.rss_kib()
    with connect(port) as slow:
        slow.sendall(b"GET /metrics HTTP/1.1\r\n")
        deadline = time.monotonic() + LIMITS.request_timeout + WAIT
        closed = False
        while not closed:  # one header byte a second: never a whole head in time
            assert time.monotonic() < deadline, "the slow connection was never closed"
            try:
                slow.sendall(b"X")
                slow.settimeout(1.0)
                closed = slow.recv(1) == b""
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            scrape(port)  # others are answered meanwhile
    still_served(server, rss)
