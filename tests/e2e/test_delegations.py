"""Delegations against a real `pynfsd serve` process (RFC 7530 §10.4): the project's client library
holds them and answers callbacks with its callback service; one client returns a recalled
delegation, one ignores the recall (revoked after the lease, the other client proceeds); the
per-client and global limits; `pynfsd clients`/`status` show them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from pynfsd.client.callback import CallbackService
from pynfsd.client.nfs4 import Nfs4Failure, op
from pynfsd.client.session import ACCESS_BOTH, ACCESS_READ, ClientSession, OpenFile
from pynfsd.gen import nfs4 as N
from tests.e2e.helpers import pynfsd
from tests.serverproc import ServerProcess, assert_log_clean

LEASE = 6  # seconds: an ignored recall is revoked after 6.6 s
MAX_CLIENT, MAX_ALL = 2, 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("deleg")
    export = base / "export"
    export.mkdir()
    for name in ("f", "g", "l1", "l2", "l3", "l4", "l5"):
        (export / name).write_bytes(b"0123456789")
    args = ["--lease", str(LEASE), "--grace", "0", "--max-delegations", str(MAX_ALL),
            "--max-client-delegations", str(MAX_CLIENT)]
    with ServerProcess([f"{export} *(rw,no_root_squash,insecure)"], base / "state",
                       extra_args=args) as srv:
        yield srv
        assert_log_clean(srv.log_text())


async def admin(srv: ServerProcess, *args: str) -> Any:
    done = await asyncio.to_thread(pynfsd, *args, "--state-dir", str(srv.state_dir), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@asynccontextmanager
async def holder(srv: ServerProcess, name: bytes, policy: str = "return"
                 ) -> AsyncIterator[tuple[ClientSession, CallbackService]]:
    """A client with a callback service on 127.0.0.1 (the address it calls from)."""
    svc = await CallbackService.start(policy=policy)  # type: ignore[arg-type]
    s = ClientSession(await srv.connect(), name, callback=svc)
    await s.establish()
    await svc.probed.wait()
    try:
        yield s, svc
    finally:
        await s.nfs.close()
        await svc.close()


async def other(srv: ServerProcess, name: bytes) -> ClientSession:
    """A client without callbacks, from another address."""
    s = ClientSession(await srv.connect(local_addr="127.0.0.2"), name)
    await s.establish()
    return s


async def open_delegated(s: ClientSession, root: bytes, name: bytes, access: int,
                         owner: bytes = b"owner") -> OpenFile:
    """OPEN until a delegation comes (the server marks the path up once CB_NULL returned)."""
    for _ in range(100):
        f = await s.open(root, name, access=access, owner=owner)
        if f.delegation is not None:
            return f
        await s.close(f)
        await asyncio.sleep(0.05)
    raise AssertionError("no delegation granted")


async def until_ok(call: Callable[[], Awaitable[Any]]) -> Any:
    """Retry on NFS4ERR_DELAY as clients do; returns the result and how many DELAYs."""
    for delays in range(1000):
        try:
            return await call(), delays
        except Nfs4Failure as e:
            if e.status != N.NFS4ERR_DELAY:
                raise
        await asyncio.sleep(0.05)
    raise AssertionError("still NFS4ERR_DELAY")


async def test_a_recalled_read_delegation_is_returned_and_the_writer_proceeds(
        server: ServerProcess) -> None:
    async with holder(server, b"returning-A") as (a, svc):
        root = await a.lookup_path(str(server.export_lines[0].split()[0]))
        f = await open_delegated(a, root, b"f", ACCESS_READ)
        rows = {r["co_ownerid"]: r for r in await admin(server, "clients")}
        assert rows["returning-A"]["delegations"] == 1
        b = await other(server, b"writer-B")
        g, _ = await until_ok(lambda: b.open(root, b"f", access=ACCESS_BOTH))
        await b.write(g, 0, b"B's data")
        assert len(svc.recalls) == 1 and bytes(svc.recalls[0].fh) == f.fh
        assert svc.delegations == {}
        a_open = OpenFile(f.fh, f.stateid, f.owner)
        assert await a.read(a_open, 0, 8) == b"B's data"
        rows = {r["co_ownerid"]: r for r in await admin(server, "clients")}
        assert rows["returning-A"]["delegations"] == 0
        await b.close(g)
        await a.close(f)
        await b.nfs.close()


async def test_an_ignored_recall_is_revoked_after_the_lease_and_the_writer_proceeds(
        server: ServerProcess) -> None:
    async with holder(server, b"ignoring-A", policy="ignore") as (a, svc):
        root = await a.lookup_path(str(server.export_lines[0].split()[0]))
        f = await open_delegated(a, root, b"g", ACCESS_READ)
        assert f.delegation is not None
        renewing = asyncio.create_task(_keep_renewing(a))  # alive, only deaf to recalls
        b = await other(server, b"writer-B2")
        g, delays = await until_ok(lambda: b.open(root, b"g", access=ACCESS_BOTH))
        renewing.cancel()
        assert delays > 0 and len(svc.recalls) == 1
        sid = f.delegation.stateid
        res = await a.nfs.compound([op.putfh(f.fh), op.read(sid, 0, 1)])
        assert res.status == N.NFS4ERR_BAD_STATEID  # revoked
        await a.renew()  # the client itself is still there
        assert "revoking the read delegation" in server.log_text()
        await b.close(g)
        await b.nfs.close()


async def _keep_renewing(s: ClientSession) -> None:
    while True:
        await s.renew()
        await asyncio.sleep(LEASE / 6)


async def test_per_client_and_global_limits(server: ServerProcess) -> None:
    rss_before = server.rss_kib()
    async with holder(server, b"many-A") as (a, _), holder(server, b"many-C") as (c, _):
        root = await a.lookup_path(str(server.export_lines[0].split()[0]))
        await open_delegated(a, root, b"l1", ACCESS_READ)
        got = [await a.open(root, name, access=ACCESS_READ) for name in (b"l2", b"l3")]
        assert [f.delegation is not None for f in got] == [True, False]  # 2 per client
        await open_delegated(c, root, b"l4", ACCESS_READ)
        f5 = await c.open(root, b"l5", access=ACCESS_READ)
        assert f5.delegation is None  # 3 in all
        status = await admin(server, "status")
        assert status["delegations"] == MAX_ALL
        for i in range(200):  # many more OPENs: no more delegations, no memory for them
            f = await c.open(root, b"l5", access=ACCESS_READ, owner=b"o%d" % i)
            assert f.delegation is None
            await c.close(f)
        b = await other(server, b"still-served")
        assert await b.read(await b.open(root, b"f", access=ACCESS_READ), 0, 2) != b""
        await b.nfs.close()
    assert server.rss_kib() - rss_before < 20 * 1024
    await asyncio.sleep(0)
    status = await admin(server, "status")
    assert status["delegations"] <= MAX_ALL


async def test_serve_delegations_off(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    (export / "f").write_bytes(b"data")
    with ServerProcess([f"{export} *(rw,no_root_squash,insecure)"], tmp_path / "state",
                       extra_args=["--delegations", "off"]) as srv:
        mark = srv.log_mark()
        async with holder(srv, b"no-deleg") as (a, _):
            await asyncio.to_thread(srv.wait_log, " is up", 10.0, mark)
            root = await a.lookup_path(str(export))
            f = await a.open(root, b"f", access=ACCESS_READ)
            assert f.delegation is None
            await a.close(f)
        assert_log_clean(srv.log_text())
