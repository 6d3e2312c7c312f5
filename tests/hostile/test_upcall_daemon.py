"""The daemon channel against a real `pynfsd serve --upcall-daemon`: the test daemon
(`tests/support_upcalld.py`, a real process on `<state-dir>/upcall.sock`) answers
`auth.unix.ip`; clients are served through it; a daemon that hangs, disconnects or answers
garbage is logged and the request falls back to the embedded resolver, or, with the daemon
alone configured (`--upcall auth.unix.ip=daemon`), gets NFS4ERR_DELAY while clients already
cached keep being served.  The server stays healthy and its log clean throughout."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pynfsd.client.nfs4 import op
from pynfsd.gen import nfs4 as N
from tests.serverproc import ServerProcess, assert_log_clean

WAIT = 30.0  # a bound on waiting, never asserted as a duration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def export(tmp_path: Path) -> Path:
    root = tmp_path / "export"
    root.mkdir()
    return root


class Rig:
    """One server and the daemons the test starts against it (all stopped at the end)."""

    def __init__(self, tmp_path: Path, export: Path) -> None:
        self.tmp_path, self.export = tmp_path, export
        self.server: ServerProcess | None = None
        self.daemons: list[subprocess.Popen[bytes]] = []

    def start(self, *extra: str) -> ServerProcess:
        self.server = ServerProcess([f"{self.export} *(rw,no_root_squash,insecure)"],
                                    self.tmp_path / "state",
                                    extra_args=["--upcall-daemon", *extra],
                                    log_level="INFO").start()
        return self.server

    def daemon(self, *flags: str) -> Path:
        """Start the test daemon answering auth.unix.ip with domain `*` for 127.0.0.0/8;
        the file where it logs the requests it gets."""
        assert self.server is not None
        log = self.tmp_path / f"daemon{len(self.daemons)}.log"
        mark = self.server.log_mark()
        entries = [a for i in range(1, 40)
                   for a in ("--entry", f"auth.unix.ip nfsd 127.0.0.{i}=*")]
        self.daemons.append(subprocess.Popen(
            [sys.executable, "-m", "tests.support_upcalld",
             "--socket", str(self.server.state_dir / "upcall.sock"), "--hello", "auth.unix.ip",
             "--log", str(log), *entries, *flags], cwd=ROOT))
        if "--no-hello" not in flags:
            self.server.wait_log("answers auth.unix.ip", timeout=WAIT, since=mark)
        return log

    def close(self) -> None:
        for d in self.daemons:
            if d.poll() is None:
                d.kill()
            d.wait(WAIT)
        if self.server is not None:
            self.server.stop()
            assert_log_clean(self.server.log_text())


@pytest.fixture
def rig(tmp_path: Path, export: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, export)
    yield r
    r.close()


async def getattr_from(srv: ServerProcess, addr: str) -> str:
    c = await srv.connect(local_addr=addr)
    try:
        res = await asyncio.wait_for(c.compound([op.putrootfh(), op.getattr(N.FATTR4_TYPE)]), WAIT)
    finally:
        await c.close()
    return N.nfsstat4_names.get(res.status, str(res.status))


async def test_clients_are_served_through_the_daemon(rig: Rig) -> None:
    srv = rig.start()
    log = rig.daemon()
    for i in range(1, 6):
        assert await getattr_from(srv, f"127.0.0.{i}") == "NFS4_OK"
    asked = log.read_text().splitlines()
    assert [f"auth.unix.ip nfsd 127.0.0.{i}" for i in range(1, 6)] == asked
    await srv.assert_healthy()


async def test_no_daemon_connected_falls_back_to_the_embedded_resolver(rig: Rig) -> None:
    srv = rig.start()
    assert await getattr_from(srv, "127.0.0.2") == "NFS4_OK"


@pytest.mark.parametrize("flags, logged", [
    (("--hang",), "did not answer"),
    (("--garbage",), "refused"),
    (("--disconnect-after", "1"), "did not answer"),
], ids=["hang", "garbage", "disconnect"])
async def test_a_misbehaving_daemon_falls_back_to_the_embedded_resolver(
        rig: Rig, flags: tuple[str, ...], logged: str) -> None:
    srv = rig.start("--upcall-timeout", "1")
    rig.daemon(*flags)
    assert await getattr_from(srv, "127.0.0.3") == "NFS4_OK"
    srv.wait_log(logged, timeout=WAIT)
    assert await getattr_from(srv, "127.0.0.4") == "NFS4_OK"
    await srv.assert_healthy()


async def test_a_hanging_daemon_alone_parks_then_delays_while_cached_clients_are_served(
        rig: Rig) -> None:
    srv = rig.start("--upcall", "auth.unix.ip=daemon", "--upcall-timeout", "60",
                    "--cache-wait", "2")
    rig.daemon()
    assert await getattr_from(srv, "127.0.0.1") == "NFS4_OK"  # cached from now on
    rig.daemons[0].kill()
    rig.daemons[0].wait(WAIT)
    rig.daemon("--hang")
    assert await getattr_from(srv, "127.0.0.9") == "NFS4ERR_DELAY"  # after --cache-wait
    assert await getattr_from(srv, "127.0.0.1") == "NFS4_OK"


async def test_a_daemon_that_says_no_hello_is_closed(rig: Rig) -> None:
    srv = rig.start()
    rig.daemon("--no-hello")
    srv.wait_log("not hello", timeout=WAIT)
    assert rig.daemons[0].wait(WAIT) == 0  # the server closed its connection: it ended
    assert await getattr_from(srv, "127.0.0.5") == "NFS4_OK"
