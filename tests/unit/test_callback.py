"""The NFSv4.0 callback client: universal addresses, CB_COMPOUND bytes, path state, and
AUTH_SYS callbacks over loopback TCP (RPCSEC_GSS is in tests/interop/test_callback_gss.py)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from pynfsd.client.callback import CallbackService
from pynfsd.gen import nfs4 as N
from pynfsd.gen import rpc as R
from pynfsd.nfs4.callback import (
    CB_COMPOUND,
    AuthSysSecurity,
    BadCallbackReply,
    BadUniversalAddress,
    CallbackAddress,
    CallbackClient,
    CallbackError,
    CallbackPath,
    CallbackTarget,
    GssSecurity,
    PathState,
    cb_getattr,
    cb_recall,
    decode_cb_compound_res,
    encode_cb_compound,
    parse_universal_address,
    security_from_credential,
    universal_address,
)
from pynfsd.rpc.auth import Credential
from pynfsd.rpc.record import RecordReader
from pynfsd.rpc.transport import RpcTcpServer
from pynfsd.xdr.runtime import Packer, Unpacker

CB_PROG = 0x40000000
STATEID = N.stateid4(7, bytes(range(12)))
FH = b"\x01\x02\x03\x04\x05"


def u32(*values: int) -> bytes:
    return struct.pack(f">{len(values)}I", *values)


def xdr_opaque(data: bytes) -> bytes:
    return u32(len(data)) + data + bytes(-len(data) % 4)


# ------------------------------------------------------------------ universal addresses


@pytest.mark.parametrize(("netid", "uaddr", "host", "port"), [
    ("tcp", "127.0.0.1.8.1", "127.0.0.1", 2049),
    ("tcp", "192.168.10.200.255.255", "192.168.10.200", 65535),
    ("tcp", "10.0.0.1.0.1", "10.0.0.1", 1),
    ("tcp6", "::1.3.232", "::1", 1000),
    ("tcp6", "2001:db8::a:1.0.111", "2001:db8::a:1", 111),
    ("tcp6", "fe80:0:0:0:0:0:0:1.4.0", "fe80::1", 1024),
])
def test_universal_addresses(netid: str, uaddr: str, host: str, port: int) -> None:
    addr = parse_universal_address(netid, uaddr)
    assert addr == CallbackAddress(netid, host, port)
    assert parse_universal_address(netid, addr.uaddr) == addr


def test_ipv4_mapped_address_is_called_over_ipv4() -> None:
    addr = parse_universal_address("tcp6", "::ffff:10.1.2.3.8.1")
    assert addr == CallbackAddress("tcp", "10.1.2.3", 2049)


@pytest.mark.parametrize(("netid", "uaddr"), [
    ("udp", "127.0.0.1.8.1"),
    ("rdma", "127.0.0.1.8.1"),
    ("tcp", ""),
    ("tcp", "127.0.0.1"),
    ("tcp", "127.0.0.1.8"),  # host "127.0.0" is not an address
    ("tcp", "127.0.0.1.256.1"),
    ("tcp", "127.0.0.1.8.-1"),
    ("tcp", "127.0.0.1.+8.1"),
    ("tcp", "127.0.0.1. 8.1"),
    ("tcp", "127.0.0.1..1"),
    ("tcp", "127.0.0.1.0008.1"),
    ("tcp", "127.0.0.1.\u0668.1"),  # an Arabic-Indic eight: int() would take it
    ("tcp", "127.0.0.1.0.0"),  # port 0
    ("tcp", "0.0.0.0.0.0"),  # what a client without a callback service sends
    ("tcp", "224.0.0.1.8.1"),
    ("tcp", "255.255.255.255.8.1"),
    ("tcp", "127.000.0.1.8.1"),
    ("tcp", "::1.8.1"),  # IPv6 under "tcp"
    ("tcp6", "127.0.0.1.8.1"),  # IPv4 under "tcp6"
    ("tcp6", "::.8.1"),
    ("tcp6", "fe80::1%eth0.8.1"),
    ("tcp6", "ff02::1.8.1"),
    ("tcp6", "1:2:3:4:5:6:7:8:9.8.1"),
    ("tcp", "1." * 40 + "1"),
])
def test_bad_universal_addresses(netid: str, uaddr: str) -> None:
    with pytest.raises(BadUniversalAddress):
        parse_universal_address(netid, uaddr)


def test_universal_address_formatting() -> None:
    assert universal_address("127.0.0.1", 2049) == "127.0.0.1.8.1"
    assert universal_address("0:0::1", 256) == "::1.1.0"
    with pytest.raises(ValueError):
        universal_address("127.0.0.1", 65536)
    with pytest.raises(ValueError):
        universal_address("localhost", 1)


# ------------------------------------------------------------------ security and target


def test_security_follows_the_setclientid_credential() -> None:
    sys_cred = Credential(R.AUTH_SYS, 1000, 100, (100, 5), machinename="client1")
    assert security_from_credential(sys_cred) == AuthSysSecurity(1000, 100, (100, 5), "client1")
    assert security_from_credential(Credential(R.AUTH_NONE, 65534, 65534)) is None
    for pseudo, service in ((390003, 1), (390004, 2), (390005, 3)):
        gss = Credential(R.RPCSEC_GSS, 0, 0, (), "nfs/c1@EX.COM", "", pseudo)
        assert security_from_credential(gss) == GssSecurity("nfs/c1@EX.COM", service)
    with pytest.raises(CallbackError):
        security_from_credential(Credential(R.RPCSEC_GSS, 0, 0, (), None, "", 390003))
    with pytest.raises(CallbackError):
        security_from_credential(Credential(R.RPCSEC_GSS, 0, 0, (), "x@Y", "", 1))


def test_target_from_setclientid() -> None:
    args = N.SETCLIENTID4args(
        N.nfs_client_id4(bytes(8), b"id"),
        N.cb_client4(CB_PROG + 3, N.netaddr4("tcp6", "::1.8.1")), 42)
    target = CallbackTarget.from_setclientid(args, Credential(R.AUTH_SYS, 1, 2))
    assert target == CallbackTarget(CB_PROG + 3, "tcp6", "::1.8.1", 42, AuthSysSecurity(1, 2))
    assert target.address() == CallbackAddress("tcp6", "::1", 2049)


# ------------------------------------------------------------------ CB_COMPOUND bytes


def recall_then_getattr_bytes(ident: int) -> bytes:
    """CB_COMPOUND4args by hand from RFC 7530 §17.2.2 and §18.1-2."""
    return (
        xdr_opaque(b"tag") + u32(0, ident, 2)
        + u32(N.OP_CB_RECALL, 7) + bytes(range(12)) + u32(1) + xdr_opaque(FH)
        + u32(N.OP_CB_GETATTR) + xdr_opaque(FH) + u32(2, 0x18, 0x2)
    )


def test_cb_compound_encoding() -> None:
    ops = [cb_recall(STATEID, True, FH), cb_getattr(FH, [0x18, 0x2])]
    data = encode_cb_compound(0xDEADBEEF, ops, b"tag")
    assert data == recall_then_getattr_bytes(0xDEADBEEF)
    u = Unpacker(data)
    assert N.unpack_CB_COMPOUND4args(u) == N.CB_COMPOUND4args(b"tag", 0, 0xDEADBEEF, ops)
    u.done()


def cb_res(status: int, *resops: N.nfs_cb_resop4, trailing: bytes = b"") -> bytes:
    p = Packer()
    N.pack_CB_COMPOUND4res(p, N.CB_COMPOUND4res(status, b"", list(resops)))
    return p.get_buffer() + trailing


RECALL_OK = N.nfs_cb_resop4(N.OP_CB_RECALL, N.CB_RECALL4res(N.NFS4_OK))
RECALL_BAD = N.nfs_cb_resop4(N.OP_CB_RECALL, N.CB_RECALL4res(N.NFS4ERR_BADHANDLE))
GETATTR_OK = N.nfs_cb_resop4(N.OP_CB_GETATTR, N.CB_GETATTR4res(
    N.NFS4_OK, N.CB_GETATTR4resok(N.fattr4([0x18], u32(0, 5, 0, 9)))))


def test_cb_compound_reply_checks() -> None:
    ops = [cb_recall(STATEID, False, FH), cb_getattr(FH, [0x18])]
    res = decode_cb_compound_res(cb_res(N.NFS4_OK, RECALL_OK, GETATTR_OK), ops)
    assert res.resarray[1].value.value.obj_attributes.attr_vals == u32(0, 5, 0, 9)
    assert decode_cb_compound_res(cb_res(N.NFS4ERR_BADHANDLE, RECALL_BAD), ops).resarray == [RECALL_BAD]
    assert decode_cb_compound_res(cb_res(N.NFS4ERR_MINOR_VERS_MISMATCH), ops).resarray == []
    bad = [
        cb_res(N.NFS4_OK, RECALL_OK, GETATTR_OK, RECALL_OK),  # more results than ops
        cb_res(N.NFS4_OK, GETATTR_OK, RECALL_OK),  # results out of order
        cb_res(N.NFS4_OK, RECALL_OK),  # stopped without an error
        cb_res(N.NFS4_OK, RECALL_BAD),  # status is not the last op's
        cb_res(N.NFS4_OK, RECALL_OK, GETATTR_OK, trailing=b"\0\0\0\0"),
        cb_res(N.NFS4_OK, RECALL_OK, GETATTR_OK)[:-3],
        b"",
    ]
    for data in bad:
        with pytest.raises(BadCallbackReply):
            decode_cb_compound_res(data, ops)


# ------------------------------------------------------------------ path state


def test_path_state_and_generations() -> None:
    path = CallbackPath()
    assert path.state is PathState.UNKNOWN and not path.up
    gen = path.probing(1.0)
    assert path.state is PathState.PROBING
    assert path.record(gen, None, 2.0) and path.up and path.changed_at == 2.0
    assert path.record(gen, "refused", 3.0)
    assert (path.state, path.last_error, path.failures) == (PathState.DOWN, "refused", 1)
    old = path.probing(4.0)
    path.reset(5.0)  # new callback information while the old probe is out
    assert not path.record(old, None, 6.0)
    assert (path.state, path.last_error) == (PathState.UNKNOWN, "")


# ------------------------------------------------------------------ loopback, AUTH_SYS


@asynccontextmanager
async def callback_service(host: str = "127.0.0.1") -> AsyncIterator[tuple[CallbackService, RpcTcpServer]]:
    """The project's client callback service, listening on `host`."""
    svc = await CallbackService.start(host)
    assert svc.tcp is not None
    try:
        yield svc, svc.tcp
    finally:
        await svc.close()


def sys_target(port: int, host: str = "127.0.0.1", ident: int = 9) -> CallbackTarget:
    netid = "tcp6" if ":" in host else "tcp"
    return CallbackTarget(CB_PROG, netid, universal_address(host, port), ident,
                          AuthSysSecurity(1000, 100, (100,), "client1"))


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_auth_sys_probe_and_recall(host: str) -> None:
    async with callback_service(host) as (svc, tcp):
        cb = CallbackClient()
        path = await cb.confirmed(1, sys_target(tcp.port, host))
        assert path.up and cb.path(1) is path
        svc.recall_answers = [N.NFS4_OK, N.NFS4ERR_BADHANDLE]
        assert await cb.recall(1, STATEID, False, FH) == N.NFS4_OK
        assert await cb.recall(1, STATEID, True, FH) == N.NFS4ERR_BADHANDLE
        assert cb.path(1).up  # an op error is an answer: the path works
        cred, args = svc.calls[0]
        assert (cred.flavor, cred.uid, cred.gid, cred.gids) == (R.AUTH_SYS, 1000, 100, (100,))
        assert args == N.CB_COMPOUND4args(b"", 0, 9, [cb_recall(STATEID, False, FH)])
        await cb.close()


async def test_cb_compound_record_on_the_wire() -> None:
    """The whole call record, byte by byte, as a raw TCP peer receives it."""
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        records = RecordReader(1 << 20)
        while not (got := records.feed(await reader.read(4096))):
            pass
        await received.put(got[0])
        reply = got[0][:4] + u32(R.REPLY, R.MSG_ACCEPTED, 0, 0, R.SUCCESS) + cb_res(N.NFS4_OK, RECALL_OK)
        writer.write(u32(0x80000000 | len(reply)) + reply)
        await writer.drain()

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cb = CallbackClient()
    cb._register(5, sys_target(port, ident=0x01020304))
    res = await cb.compound(5, [cb_recall(STATEID, True, FH)], b"tag")
    assert res.status == N.NFS4_OK and cb.path(5).up
    record = await received.get()
    sys_body = u32(0) + xdr_opaque(b"client1") + u32(1000, 100, 1, 100)
    expected = (
        u32(R.CALL, 2, CB_PROG, 1, CB_COMPOUND, R.AUTH_SYS) + xdr_opaque(sys_body)
        + u32(R.AUTH_NONE, 0)
        + xdr_opaque(b"tag") + u32(0, 0x01020304, 1)
        + u32(N.OP_CB_RECALL, 7) + bytes(range(12)) + u32(1) + xdr_opaque(FH)
    )
    assert record[4:] == expected
    await cb.close()
    server.close()
    await server.wait_closed()


async def test_unreachable_and_bad_addresses_mark_the_path_down() -> None:
    async with callback_service() as (_, tcp):
        port = tcp.port
    cb = CallbackClient(timeout=5)
    path = await cb.confirmed(1, sys_target(port))  # nothing listens there any more
    assert path.state is PathState.DOWN and "cannot reach" in path.last_error
    bad = CallbackTarget(CB_PROG, "tcp", "0.0.0.0.0.0", 1, None)
    path = await cb.confirmed(2, bad)
    assert path.state is PathState.DOWN and "names no single host" in path.last_error
    with pytest.raises(CallbackError):
        await cb.recall(2, STATEID, False, FH)
    with pytest.raises(CallbackError):
        await cb.recall(3, STATEID, False, FH)  # never confirmed
    assert cb.path(3).state is PathState.UNKNOWN
    await cb.close()


async def test_silent_peer_times_out_and_wrong_program_is_refused() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    cb = CallbackClient(timeout=0.3)
    path = await cb.confirmed(1, sys_target(server.sockets[0].getsockname()[1]))
    assert path.state is PathState.DOWN and "no answer" in path.last_error
    server.close()
    async with callback_service() as (_, tcp):
        other = CallbackTarget(CB_PROG + 1, "tcp", universal_address("127.0.0.1", tcp.port),
                               1, None)
        path = await cb.confirmed(2, other)
        assert path.state is PathState.DOWN and "PROG_UNAVAIL" in path.last_error
        path = await cb.confirmed(2, sys_target(tcp.port))  # the client fixed its callback
        assert path.up
    await cb.close()


async def test_new_callback_info_outdates_a_probe_under_way() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await asyncio.sleep(30)

    quiet = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with callback_service() as (_, tcp):
        cb = CallbackClient(timeout=20)
        stale = cb.confirmed(1, sys_target(quiet.sockets[0].getsockname()[1]))
        while cb.path(1).state is not PathState.PROBING:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the CB_NULL is out
        fresh = cb.confirmed(1, sys_target(tcp.port))  # closes the old connection
        await asyncio.gather(stale, fresh)
        assert cb.path(1).up and cb.path(1).failures == 0
        cb.forget(1)
        assert cb.path(1).state is PathState.UNKNOWN
        await cb.close()
    quiet.close()


async def test_rpcsec_gss_callback_needs_a_server_identity() -> None:
    async with callback_service() as (svc, tcp):
        cb = CallbackClient()  # no ServerGssIdentity: no keytab to initiate from
        gss = CallbackTarget(CB_PROG, "tcp", universal_address("127.0.0.1", tcp.port), 1,
                             GssSecurity("nfs/client@EX.COM", 3))
        path = await cb.confirmed(1, gss)
        assert path.state is PathState.DOWN and "no GSS identity" in path.last_error
        await cb.close()
    assert svc.calls == []


async def test_retain_forgets_the_clients_no_longer_confirmed_and_closes_their_connections() -> None:
    async with callback_service() as (_, tcp):
        cb = CallbackClient()
        for clientid in (1, 2, 3):
            assert (await cb.confirmed(clientid, sys_target(tcp.port))).up
        assert len(cb) == 3 and len(tcp.table) == 3
        assert cb.retain({2}) == 2
        assert len(cb) == 1 and cb.path(2).up
        assert cb.path(1).state is PathState.UNKNOWN
        for _ in range(200):  # the callback service sees the two connections close
            if len(tcp.table) == 1:
                break
            await asyncio.sleep(0.01)
        assert len(tcp.table) == 1
        assert cb.retain({2}) == 0
        await cb.close()


def test_each_server_identity_has_a_ccache_of_its_own() -> None:
    """A MEMORY ccache outlives its identity: a later identity (maybe at the same address, so
    the same id()) must not inherit its tickets, or a wrong keytab would go unnoticed."""
    from pynfsd.nfs4.callback.initiator import ServerGssIdentity

    seen = set()
    for _ in range(50):
        seen.add(ServerGssIdentity("nfs@host", "/nonexistent").ccache)  # dropped at once
    assert len(seen) == 50
