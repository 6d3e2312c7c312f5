"""One past the listener bound (`--max-listeners`) against a real `pynfsd serve`: adding a
listener through the control socket past it is refused with one clear line, repeated refusals
hold no memory and bind nothing, and every client is still served."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pynfsd import admin
from tests.aio import run
from tests.e2e.helpers import pynfsd
from tests.serverproc import HOST, ServerProcess, probe

MAX = 3
WAIT = 30.0  # a bound on waiting for the server, never asserted as a duration
REFUSED = (f"already listening on {MAX} addresses, the most --max-listeners allows ({MAX}); "
           "remove one first")


@pytest.fixture
def export(tmp_path: Path) -> Path:
    root = tmp_path / "export"
    root.mkdir()
    return root


def socket_inodes(pid: int) -> list[str]:
    """The inodes of the sockets process `pid` has open (fds closing meanwhile are skipped)."""
    inodes = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.append(target[len("socket:["):-1])
    return inodes


def listening_sockets(pid: int) -> int:
    """The server's listening TCP sockets (state 0A in /proc/PID/net/tcp{,6}, by inode)."""
    inodes = set(socket_inodes(pid))
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            count += fields[3] == "0A" and fields[9] in inodes
    return count


def settled(count: Callable[[], int], most: int) -> int:
    """`count()` once it is at most `most`, or its last value after WAIT seconds (connections
    the clients closed are closed by the server as it reads their end)."""
    deadline = time.monotonic() + WAIT
    while (value := count()) > most and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


@pytest.mark.parametrize("server", [("--max-listeners", str(MAX))], indirect=True)
def test_one_listener_past_the_bound_is_refused(server: ServerProcess) -> None:
    state = str(server.state_dir)
    ports = [admin.call(state, {"cmd": "listen", "action": "add", "address": f"{HOST}:0"})["port"]
             for _ in range(MAX - 1)]
    done = pynfsd("listen", "add", f"{HOST}:0", "--state-dir", state)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", f"pynfsd: {REFUSED}\n")
    rss = server.rss_kib()
    for _ in range(500):
        with pytest.raises(admin.AdminClientError, match=re.escape(REFUSED)):
            admin.call(state, {"cmd": "listen", "action": "add", "address": f"{HOST}:0"})
    grown = server.rss_kib() - rss
    assert grown < 4 * 1024, f"RSS grew by {grown} KiB over 500 refused listeners"
    assert listening_sockets(server.pid) == MAX
    for port in [server.port, *ports]:
        run(probe(port))
    # removing one makes room again
    admin.call(state, {"cmd": "listen", "action": "remove", "address": f"{HOST}:{ports[0]}"})
    again = admin.call(state, {"cmd": "listen", "action": "add", "address": f"{HOST}:0"})
    run(probe(again["port"]))
    server.healthy()
    with socket.create_connection((HOST, server.port)):
        pass


@pytest.mark.parametrize("server", [("--max-listeners", "2")], indirect=True)
def test_adding_and_removing_listeners_holds_nothing(server: ServerProcess) -> None:
    state = str(server.state_dir)

    def cycle() -> None:
        added = admin.call(state, {"cmd": "listen", "action": "add", "address": f"{HOST}:0"})
        with socket.create_connection((HOST, added["port"])):  # one connection each
            pass
        admin.call(state, {"cmd": "listen", "action": "remove", "address": added["listen"]})

    sockets = lambda: len(socket_inodes(server.pid))  # noqa: E731
    before = sockets()  # no client connected yet
    for _ in range(20):  # warm up
        cycle()
    rss = server.rss_kib()
    for _ in range(300):
        cycle()
    assert settled(sockets, before) == before
    grown = server.rss_kib() - rss
    assert grown < 4 * 1024, f"RSS grew by {grown} KiB over 300 added and removed listeners"
    assert listening_sockets(server.pid) == 1
    server.healthy()
