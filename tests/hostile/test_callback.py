"""A client that replaces itself over and over (SETCLIENTID with a new verifier, then
SETCLIENTID_CONFIRM: a new client id each time, RFC 7530 §16.34.5) against a real `pynfsd serve`
process, with a callback service of its own that answers the server's CB_NULL probes.  Every
replaced id's callback connection must be closed by the lease sweep, not kept per client id;
the server's memory stays bounded and another client is served."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pynfsd.client.nfs4 import Nfs4Client, op
from pynfsd.nfs4.callback import universal_address
from pynfsd.rpc.auth import AuthNone, AuthRegistry, AuthSys
from pynfsd.rpc.server import RpcCall, RpcServer
from pynfsd.rpc.transport import RpcTcpServer, serve
from tests.serverproc import ServerProcess

CB_PROG = 0x40000000
REPLACEMENTS = 40
RSS_SLACK_KIB = 16 * 1024
WAIT = 30.0  # bound on each wait for the server's background work (not a timing assertion)


@pytest.fixture
def export(tmp_path: Path) -> Path:
    path = tmp_path / "export"
    path.mkdir()
    return path


async def _until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        assert time.monotonic() < deadline, f"still waiting: {what}"
        await asyncio.sleep(0.05)


async def _replace_repeatedly(port: int, cb: RpcTcpServer, probes: list[int]) -> int:
    """Callback connections still open once the lease sweeps closed the replaced ids'."""
    uaddr = universal_address("127.0.0.1", cb.port)
    c = await Nfs4Client.connect("127.0.0.1", port)
    try:
        for i in range(REPLACEMENTS):
            ok = await c.check([op.setclientid(i.to_bytes(8, "big"), b"replaced", CB_PROG,
                                               addr=uaddr)])
            await c.check([op.setclientid_confirm(ok[0].clientid, ok[0].setclientid_confirm)])
            await _until(lambda i=i: len(probes) > i, f"CB_NULL probe {i + 1}")
        await _until(lambda: len(cb.table) <= 1, "the replaced ids' connections to close")
        return len(cb.table)
    finally:
        await c.close()


@pytest.mark.parametrize("server", [("--lease", "4")], indirect=True)
async def test_replaced_client_ids_do_not_keep_callback_connections(server: ServerProcess) -> None:
    rss_before = server.rss_kib()
    rpc = RpcServer(AuthRegistry([AuthNone(), AuthSys()]))
    probes: list[int] = []

    async def cb_null(call: RpcCall) -> bytes:
        probes.append(call.xid)
        return b""

    rpc.register(CB_PROG, 1, {0: cb_null})  # CB_NULL (RFC 7530 §17.1), counted
    cb = await serve(rpc, "127.0.0.1", 0)
    try:
        open_after = await _replace_repeatedly(server.port, cb, probes)
    finally:
        cb.close()
        await cb.wait_closed()
    assert len(probes) == REPLACEMENTS  # each new client id's path was probed on its own connection
    assert open_after <= 1  # only the current id's connection is left
    assert server.rss_kib() - rss_before < RSS_SLACK_KIB
    await server.assert_healthy()
