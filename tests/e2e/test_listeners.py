"""Sockets passed in and added at run time, against real `pynfsd serve` processes.

* systemd-style socket activation: the test binds a listening socket, and a shell that sets
  `LISTEN_PID` to its own pid (bash: `$$`) execs `pynfsd serve` with it as fd 3 and `LISTEN_FDS=1`, as
  systemd does; an NFS client is served through it, and nothing else is bound unless asked.
* a passed descriptor that is not a listening TCP socket: one line, exit code 2.
* `pynfsd listen add|remove ADDR:PORT`: a client served through an added address, refused after
  its removal, while the connection made before the removal is still served.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pynfsd.client.nfs4 import Nfs4Client, op
from pynfsd.gen import nfs4 as N
from pynfsd.rpc.client import AuthSysCred
from tests.aio import run
from tests.e2e.helpers import pynfsd
from tests.serverproc import HOST, REPO, ServerProcess, assert_log_clean, probe

WAIT = 30.0  # a bound on waiting for the server, never asserted as a duration


@pytest.fixture
def export(tmp_path: Path) -> str:
    root = tmp_path / "export"
    root.mkdir()
    return f"{root} *(rw,no_root_squash,insecure)"


class Activated:
    """`pynfsd serve` started the way systemd starts a socket-activated service."""

    def __init__(self, tmp_path: Path, export: str, sock: socket.socket | int,
                 *extra: str, names: str | None = None) -> None:
        fd = sock if isinstance(sock, int) else sock.fileno()
        self.state = tmp_path / "state"
        self.log = tmp_path / "serve.log"
        serve = [sys.executable, "-m", "pynfsd", "serve", "--export", export,
                 "--state-dir", str(self.state), "--log-level", "DEBUG", *extra]
        env = f"LISTEN_FDS=1{f' LISTEN_FDNAMES={names}' if names else ''}"
        script = f"LISTEN_PID=$$ {env} exec {shlex.join(serve)} 3<&{fd} {fd}<&-"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(["bash", "-c", script], pass_fds=(fd,), cwd=REPO,
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text())
            if found:
                return found
            assert self.proc.poll() is None, f"pynfsd exited {self.proc.returncode}:\n{self.text()}"
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the log:\n{self.text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(WAIT)


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    sock = socket.create_server((HOST, 0))
    yield sock
    sock.close()


def test_socket_activation_serves_the_passed_socket(tmp_path: Path, export: str,
                                                    listening: socket.socket) -> None:
    port = listening.getsockname()[1]
    srv = Activated(tmp_path, export, listening, names="nfs")
    try:
        srv.wait_for("pynfsd: exporting")
        listening.close()  # only the server holds it now
        assert re.findall(r"listening on (\S+) port (\d+)", srv.text()) == [(HOST, str(port))]
        run(probe(port))
        status = pynfsd("status", "--state-dir", str(srv.state))
        assert status.returncode == 0, status.stderr
        assert f"listening: {HOST}:{port} (systemd fd 3 (nfs), 1 accepted)" in status.stdout
    finally:
        assert srv.stop() == 0
    assert_log_clean(srv.text())


def test_passed_socket_and_bind_serve_both(tmp_path: Path, export: str,
                                           listening: socket.socket) -> None:
    srv = Activated(tmp_path, export, listening, "--bind", HOST, "--port", "0")
    try:
        srv.wait_for("pynfsd: exporting")
        ports = [int(p) for p in re.findall(r"listening on 127\.0\.0\.1 port (\d+)", srv.text())]
        assert len(ports) == 2 and ports[0] == listening.getsockname()[1]
        for port in ports:
            run(probe(port))
        listed = pynfsd("listen", "--state-dir", str(srv.state))
        assert listed.stdout.splitlines() == [
            f"{HOST}:{ports[0]} (systemd fd 3 (unknown), 1 accepted)",
            f"{HOST}:{ports[1]} (--bind, 1 accepted)"], listed
    finally:
        assert srv.stop() == 0


@pytest.mark.parametrize(("kind", "why"), [
    ("udp", "passed descriptor 3 is not a stream (TCP) socket"),
    ("unlistened", "passed descriptor 3 is a TCP socket that is not listening"),
    ("pipe", "passed descriptor 3 is not a socket: Socket operation on non-socket"),
])
def test_a_passed_descriptor_that_cannot_serve_exits_2(tmp_path: Path, export: str, kind: str,
                                                       why: str) -> None:
    keep: list[socket.socket] = []
    if kind == "pipe":
        fd, w = os.pipe()
        os.close(w)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
        s.bind((HOST, 0))
        keep.append(s)
        fd = s.fileno()
    srv = Activated(tmp_path, export, fd)
    try:
        assert srv.proc.wait(WAIT) == 2, srv.text()
    finally:
        for s in keep:
            s.close()
        if kind == "pipe":
            os.close(fd)
    errors = [line for line in srv.text().splitlines() if line.startswith("pynfsd: ")]
    assert errors == [f"pynfsd: {why}; pynfsd serves listening TCP sockets (ListenStream= "
                      "in the .socket unit)" if kind != "pipe" else f"pynfsd: {why}"], srv.text()
    assert "Traceback" not in srv.text()


# ------------------------------------------------------------------ pynfsd listen


def listen(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return pynfsd("listen", *args, "--state-dir", str(state))


async def served(client: Nfs4Client) -> bool:
    res = await client.compound([op.putrootfh(), op.getattr(N.FATTR4_TYPE)])
    return bool(res.status == N.NFS4_OK)


async def test_listen_add_remove(tmp_path: Path, export: str) -> None:
    with ServerProcess([export], tmp_path / "state") as srv:
        state = srv.state_dir
        added = listen(state, "add", f"{HOST}:0")
        assert added.returncode == 0, added.stderr
        port = int(re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)\n", added.stdout)[1])  # type: ignore[index]
        early = await Nfs4Client.connect(HOST, port, cred=AuthSysCred(0, 0))
        assert await served(early)
        assert f"{HOST}:{port} (added, 1 accepted)" in listen(state).stdout

        removed = listen(state, "remove", f"{HOST}:{port}")
        assert removed.returncode == 0, removed.stderr
        assert removed.stdout == (f"no longer listening on {HOST}:{port} (1 connections "
                                  "accepted there; open ones stay)\n")
        with pytest.raises(ConnectionRefusedError):
            await Nfs4Client.connect(HOST, port, cred=AuthSysCred(0, 0))
        assert await served(early)  # the connection made before the removal
        await early.close()
        await srv.assert_healthy()  # the original listener
        assert listen(state).stdout == f"{HOST}:{srv.port} (--bind, 1 accepted)\n"
    assert_log_clean(srv.log_text())


@pytest.mark.parametrize(("args", "why"), [
    (("add", "nfs.example:2049"), "'nfs.example:2049': nfs.example is not a numeric IPv4 or "
     "[IPv6] address"),
    (("add", "192.0.2.1:2049"), "cannot listen on 192.0.2.1:2049: Cannot assign requested address"),
    (("remove", "127.0.0.1:1"), "not listening on 127.0.0.1:1 (listening on: 127.0.0.1:{port})"),
    (("add", "127.0.0.1:{port}"), "already listening on 127.0.0.1:{port}"),
    (("add", "127.0.0.1:{other}"), "cannot listen on 127.0.0.1:{other}: Address already in use"),
])
def test_listen_errors_are_one_line(tmp_path: Path, export: str, listening: socket.socket,
                                    args: tuple[str, str], why: str) -> None:
    with ServerProcess([export], tmp_path / "state") as srv:
        fill = {"port": srv.port, "other": listening.getsockname()[1]}
        done = listen(srv.state_dir, args[0], args[1].format(**fill))
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr == f"pynfsd: {why.format(**fill)}\n"
        srv.healthy()


def test_listen_without_a_server(tmp_path: Path) -> None:
    done = listen(tmp_path, "add", "127.0.0.1:0")
    assert done.returncode == 1 and "pynfsd is not running with state dir" in done.stderr


def test_more_listeners_at_start_than_allowed_exits_2(tmp_path: Path, export: str,
                                                      listening: socket.socket) -> None:
    srv = Activated(tmp_path, export, listening, "--bind", HOST, "--port", "0",
                    "--max-listeners", "1")
    assert srv.proc.wait(WAIT) == 2, srv.text()
    errors = [line for line in srv.text().splitlines() if line.startswith("pynfsd: ")]
    assert errors == ["pynfsd: 2 listening sockets, more than --max-listeners 1"], srv.text()
