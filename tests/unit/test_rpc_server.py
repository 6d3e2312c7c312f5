"""Sans-IO dispatch: every reply kind, decoded by the client's generated-codec decoder."""

from __future__ import annotations

import logging
import struct

import pytest

from pynfsd.gen import rpc as R
from pynfsd.rpc.auth import Accepted, AuthFlavor, AuthRegistry, Credential
from pynfsd.rpc.client import (
    AuthRejected,
    AuthSysCred,
    GarbageArgsError,
    ProcUnavail,
    ProgMismatch,
    ProgUnavail,
    RpcMismatch,
    SystemErr,
    decode_reply,
    encode_call,
)
from pynfsd.rpc.errors import DropCall, GarbageArgs
from pynfsd.rpc.header import CallHeader
from pynfsd.rpc.server import ConnInfo, Handler, RpcCall, RpcServer

PROG = 0x20000099
SYS = AuthSysCred(1000, 100, (10, 20), "client").opaque_auth()
CONN = ConnInfo(("127.0.0.1", 999), ("127.0.0.1", 2049))
seen: list[RpcCall] = []


async def echo(call: RpcCall) -> bytes:
    seen.append(call)
    return bytes(call.args)


async def parts(call: RpcCall) -> list[bytes]:
    return [b"\0\0\0\x01", b"\0\0\0\x02"]


async def garbage(call: RpcCall) -> bytes:
    raise GarbageArgs()


async def crash(call: RpcCall) -> bytes:
    raise RuntimeError("boom")


async def drop(call: RpcCall) -> bytes:
    raise DropCall()


def make_server(auth: AuthRegistry | None = None) -> RpcServer:
    server = RpcServer(auth or AuthRegistry.default())
    procs: dict[int, Handler] = {1: echo, 2: parts, 3: garbage, 4: crash, 5: drop}
    server.register(PROG, 1, procs)
    server.register(PROG, 3, procs)
    return server


async def handle(server: RpcServer, record: bytes) -> bytes | None:
    return await server.handle_record(record, CONN)


async def roundtrip(server: RpcServer, vers: int, proc: int, args: bytes = b"", **kw: object) -> bytes:
    reply = await handle(server, encode_call(77, PROG, vers, proc, args, **kw))  # type: ignore[arg-type]
    assert reply is not None
    xid, results = decode_reply(reply)
    assert xid == 77
    return results


async def test_echo_with_credential_and_conn() -> None:
    seen.clear()
    assert await roundtrip(make_server(), 1, 1, b"\0\0\0\x2a", cred=SYS) == b"\0\0\0\x2a"
    call = seen[0]
    assert (call.xid, call.prog, call.vers, call.proc) == (77, PROG, 1, 1)
    assert call.cred == Credential(R.AUTH_SYS, 1000, 100, (10, 20), None, "client")
    assert call.peer == ("127.0.0.1", 999) and call.conn is CONN


async def test_null_procedure_is_automatic_for_each_version() -> None:
    server = make_server()
    assert await roundtrip(server, 1, 0) == b""
    assert await roundtrip(server, 3, 0, cred=SYS) == b""


async def test_results_as_buffer_list() -> None:
    assert await roundtrip(make_server(), 1, 2) == b"\0\0\0\x01\0\0\0\x02"


async def test_prog_unavail() -> None:
    reply = await handle(make_server(), encode_call(5, PROG + 1, 1, 0))
    assert reply is not None
    with pytest.raises(ProgUnavail):
        decode_reply(reply)


async def test_prog_mismatch_reports_version_range() -> None:
    with pytest.raises(ProgMismatch) as info:
        await roundtrip(make_server(), 2, 0)
    assert (info.value.low, info.value.high) == (1, 3)


async def test_proc_unavail() -> None:
    with pytest.raises(ProcUnavail):
        await roundtrip(make_server(), 1, 99)


async def test_garbage_args_from_handler() -> None:
    with pytest.raises(GarbageArgsError):
        await roundtrip(make_server(), 1, 3)


async def test_system_err_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="pynfsd.rpc.server"):
        with pytest.raises(SystemErr):
            await roundtrip(make_server(), 1, 4)
    assert "boom" in caplog.text and "Traceback" in caplog.text


async def test_handler_drop() -> None:
    assert await handle(make_server(), encode_call(5, PROG, 1, 5)) is None


async def test_rpc_mismatch() -> None:
    reply = await handle(make_server(), encode_call(5, PROG, 1, 0, rpcvers=3))
    assert reply is not None
    with pytest.raises(RpcMismatch) as info:
        decode_reply(reply)
    assert (info.value.low, info.value.high) == (2, 2)


async def test_auth_errors() -> None:
    server = make_server(AuthRegistry.default())
    with pytest.raises(AuthRejected) as info:
        await roundtrip(server, 1, 0, cred=R.opaque_auth(R.RPCSEC_GSS, b""))
    assert info.value.auth_stat == R.AUTH_REJECTEDCRED
    with pytest.raises(AuthRejected) as info:
        await roundtrip(server, 1, 1, cred=R.opaque_auth(R.AUTH_SYS, b"\0\0\0\0"))
    assert info.value.auth_stat == R.AUTH_BADCRED


async def test_auth_checked_before_program() -> None:
    reply = await handle(make_server(), encode_call(5, PROG + 1, 1, 0, cred=R.opaque_auth(R.AUTH_SYS, b"")))
    assert reply is not None
    with pytest.raises(AuthRejected):
        decode_reply(reply)


async def test_undecodable_header_gets_garbage_args_or_drop() -> None:
    server = make_server()
    reply = await handle(server, struct.pack(">II", 9, R.CALL))
    assert reply is not None
    with pytest.raises(GarbageArgsError) as info:
        decode_reply(reply)
    assert info.value.xid == 9
    assert await handle(server, b"\0\0\0") is None
    assert await handle(server, struct.pack(">II", 9, R.REPLY) + b"\0" * 20) is None


class Verifying(AuthFlavor):
    """A plugin flavour with a reply verifier, wrapping, a control reply and drops."""

    flavor = R.RPCSEC_GSS
    VERF = R.opaque_auth(R.RPCSEC_GSS, b"sig!")

    async def accept(self, call: CallHeader) -> Accepted:
        if call.cred.body == b"drop":
            raise DropCall()
        control = b"ctl-" if call.cred.body == b"ctl" else None
        return Accepted(Credential(self.flavor, 1, 2, principal="p"), self.VERF, control)

    async def unwrap(self, accepted: Accepted, args: memoryview) -> memoryview:
        if bytes(args[:4]) != b"WRAP":
            raise GarbageArgs()
        return args[4:]

    async def wrap(self, accepted: Accepted, results: list[bytes]) -> list[bytes]:
        return [b"WRAP", *results]


async def plugin_call(body: bytes, proc: int = 1, args: bytes = b"WRAPabcd") -> bytes | None:
    auth = AuthRegistry.default()
    auth.register(Verifying())
    cred = R.opaque_auth(Verifying.flavor, body)
    return await handle(make_server(auth), encode_call(3, PROG, 1, proc, args, cred))


async def test_plugin_flavor_wrap_unwrap_and_verifier() -> None:
    reply = await plugin_call(b"")
    assert reply is not None and b"sig!" in reply[:40]
    assert decode_reply(reply)[1] == b"WRAPabcd"
    garbled = await plugin_call(b"", args=b"nope")
    assert garbled is not None and b"sig!" in garbled
    with pytest.raises(GarbageArgsError) as info:
        decode_reply(garbled)
    assert info.value.verf == Verifying.VERF


async def test_plugin_control_reply_and_drop() -> None:
    reply = await plugin_call(b"ctl", proc=99)
    assert reply is not None and decode_reply(reply)[1] == b"ctl-"
    assert await plugin_call(b"drop") is None


def test_duplicate_registration() -> None:
    server = make_server()
    with pytest.raises(ValueError):
        server.register(PROG, 1, {})


async def test_crashing_flavor_is_system_err(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(AuthFlavor):
        flavor = R.RPCSEC_GSS

        async def accept(self, call: CallHeader) -> Accepted:
            raise ValueError("gss library exploded")

    auth = AuthRegistry.default()
    auth.register(Broken())
    cred = R.opaque_auth(R.RPCSEC_GSS, b"")
    with caplog.at_level(logging.ERROR, logger="pynfsd.rpc.server"):
        with pytest.raises(SystemErr):
            await roundtrip(make_server(auth), 1, 1, cred=cred)
    assert "exploded" in caplog.text
