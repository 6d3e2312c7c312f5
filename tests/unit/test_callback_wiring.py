"""SETCLIENTID_CONFIRM starts a CB_NULL probe of the client's callback path — only to the
address the client itself calls from."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pynfsd.client.nfs4 import in_process, op
from pynfsd.exports import StaticExportResolver, parse_export_line
from pynfsd.fs.memory import MemoryBackend
from pynfsd.nfs4.callback import universal_address
from pynfsd.nfs4.server import NFSServer, ServerConfig
from tests.clock import ManualClock


async def _confirm_with_callback(
    tmp_path: Path, cb_host: str, cb_port: int, clock: ManualClock | None = None
) -> NFSServer:
    be = MemoryBackend()
    config = ServerConfig(state_dir=str(tmp_path), backend_factory=lambda e, s: be)
    if clock is not None:
        config.clock = clock
    srv = NFSServer(config,
                    StaticExportResolver([parse_export_line("/export *(rw,no_root_squash)")]))
    c = in_process(srv, peer=("127.0.0.1", 900))
    uaddr = universal_address(cb_host, cb_port)
    ok = await c.check([op.setclientid(b"v" * 8, b"cb-client", addr=uaddr)])
    await c.check([op.setclientid_confirm(ok[0].clientid, ok[0].setclientid_confirm)])
    return srv


async def test_probe_reaches_the_clients_own_address(tmp_path: Path) -> None:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.read(4096))
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    srv = await _confirm_with_callback(tmp_path, "127.0.0.1", port)
    for _ in range(200):
        if seen:
            break
        await asyncio.sleep(0.01)
    await srv.shutdown()
    listener.close()
    assert len(seen) == 1


async def test_the_callback_paths_run_on_the_configured_clock(tmp_path: Path) -> None:
    """The callback client takes the server's clock: a path's times are that clock's."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    clock = ManualClock(now=123456.0)
    srv = await _confirm_with_callback(tmp_path, "127.0.0.1", port, clock)
    try:
        (cid,) = list(srv.callbacks._entries)
        assert srv.callbacks.path(cid).changed_at == 123456.0
    finally:
        await srv.shutdown()
        listener.close()


async def test_no_probe_to_another_address_than_the_clients(tmp_path: Path) -> None:
    srv = await _confirm_with_callback(tmp_path, "127.0.0.2", 2049)
    await asyncio.sleep(0)
    probes = len(srv.callbacks._entries)
    await srv.shutdown()
    assert probes == 0


async def test_a_replaced_clients_callback_path_is_forgotten(tmp_path: Path) -> None:
    """SETCLIENTID_CONFIRM with a new verifier replaces the client (RFC 7530 §16.34.5): the
    old id's callback path is forgotten when its state is dropped, so entries do not
    accumulate per id (and the sweep's `retain` finds nothing left to forget)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    srv = await _confirm_with_callback(tmp_path, "127.0.0.1", port)
    try:
        assert len(srv.callbacks) == 1
        c = in_process(srv, peer=("127.0.0.1", 900))
        uaddr = universal_address("127.0.0.1", port)
        ok = await c.check([op.setclientid(b"w" * 8, b"cb-client", addr=uaddr)])
        await c.check([op.setclientid_confirm(ok[0].clientid, ok[0].setclientid_confirm)])
        assert list(srv.callbacks._entries) == [ok[0].clientid]
        assert srv.callbacks.retain(srv.state.clients.confirmed) == 0
    finally:
        await srv.shutdown()
        listener.close()
