"""A small async ONC RPC client over TCP (RFC 5531) for tests, scenarios and benchmarks.

It encodes calls and decodes replies with the *generated* codec (`pynfsd.gen.rpc`), so talking
to the server also cross-checks the server's hand-tuned header codec.  Many calls may be
outstanding at once; replies are matched by xid.  Records that match no outstanding call
(and anything sent with `send_raw`) serve fuzz tests: read them with `next_unmatched`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast

from pynfsd.gen import rpc as R
from pynfsd.rpc.record import MAX_FRAGMENT, RecordError, RecordReader, record_buffers
from pynfsd.xdr.runtime import Packer, Unpacker, XdrError

NULL_AUTH = R.opaque_auth(R.AUTH_NONE, b"")
T = TypeVar("T")


class RpcError(Exception):
    """Base of every error the client raises."""


class ConnectionClosed(RpcError):
    """The connection closed before the reply arrived."""


class BadReply(RpcError):
    """The reply could not be decoded."""


class RpcAcceptedError(RpcError):
    """MSG_ACCEPTED with an accept_stat other than SUCCESS."""

    stat = -1

    def __init__(self, xid: int, verf: R.opaque_auth) -> None:
        super().__init__(f"{R.accept_stat_names.get(self.stat, self.stat)} (xid {xid:#x})")
        self.xid = xid
        self.verf = verf


class ProgUnavail(RpcAcceptedError):
    stat = R.PROG_UNAVAIL


class ProgMismatch(RpcAcceptedError):
    stat = R.PROG_MISMATCH
    low = 0
    high = 0


class ProcUnavail(RpcAcceptedError):
    stat = R.PROC_UNAVAIL


class GarbageArgsError(RpcAcceptedError):
    stat = R.GARBAGE_ARGS


class SystemErr(RpcAcceptedError):
    stat = R.SYSTEM_ERR


class RpcDeniedError(RpcError):
    """MSG_DENIED."""


class RpcMismatch(RpcDeniedError):
    def __init__(self, xid: int, low: int, high: int) -> None:
        super().__init__(f"RPC_MISMATCH low={low} high={high} (xid {xid:#x})")
        self.xid, self.low, self.high = xid, low, high


class AuthRejected(RpcDeniedError):
    def __init__(self, xid: int, auth_stat: int) -> None:
        name = R.auth_stat_names.get(auth_stat, str(auth_stat))
        super().__init__(f"AUTH_ERROR {name} (xid {xid:#x})")
        self.xid, self.auth_stat = xid, auth_stat


_ACCEPT_ERRORS: dict[int, type[RpcAcceptedError]] = {
    cls.stat: cls for cls in (ProgUnavail, ProgMismatch, ProcUnavail, GarbageArgsError, SystemErr)
}


@dataclass(frozen=True, slots=True)
class AuthSysCred:
    """An AUTH_SYS identity (RFC 5531 Appendix A)."""

    uid: int
    gid: int
    gids: tuple[int, ...] = ()
    machinename: str = "pynfsd-client"
    stamp: int = 0

    def opaque_auth(self) -> R.opaque_auth:
        p = Packer()
        parms = R.authsys_parms(self.stamp, self.machinename, self.uid, self.gid, list(self.gids))
        R.pack_authsys_parms(p, parms)
        return R.opaque_auth(R.AUTH_SYS, p.get_buffer())


def encode_call(
    xid: int,
    prog: int,
    vers: int,
    proc: int,
    args: bytes = b"",
    cred: R.opaque_auth = NULL_AUTH,
    verf: R.opaque_auth = NULL_AUTH,
    rpcvers: int = 2,
) -> bytes:
    """A call message (the record payload) with `args` appended."""
    p = Packer()
    body = R.call_body(rpcvers, prog, vers, proc, cred, verf)
    R.pack_rpc_msg(p, R.rpc_msg(xid, R.rpc_msg_body(R.CALL, body)))
    p.pack_raw(args)
    return p.get_buffer()


def decode_reply(record: bytes) -> tuple[int, bytes]:
    """(xid, results) of a SUCCESS reply; raises the RpcError matching any other reply."""
    xid, _, results = decode_reply_verf(record)
    return xid, results


def decode_results(
    results: bytes, unpack: Callable[[Unpacker], T], error: Callable[[str], Exception], what: str
) -> T:
    """`unpack` applied to the whole of `results`; `error(f"{what}: <why>")` is raised when
    they do not decode or bytes remain."""
    u = Unpacker(results)
    try:
        res = unpack(u)
        u.done()
    except XdrError as e:
        raise error(f"{what}: {e}") from None
    return res


def decode_reply_verf(record: bytes) -> tuple[int, R.opaque_auth, bytes]:
    """(xid, reply verifier, results) of a SUCCESS reply, like `decode_reply`."""
    u = Unpacker(record)
    try:
        msg = R.unpack_rpc_msg(u)
    except XdrError as e:
        raise BadReply(f"undecodable reply: {e}") from None
    body = msg.body.value
    if msg.body.mtype != R.REPLY or not isinstance(body, R.reply_body):
        raise BadReply(f"xid {msg.xid:#x}: not a reply")
    if isinstance(body.value, R.rejected_reply):
        raise _denied(msg.xid, body.value)
    assert isinstance(body.value, R.accepted_reply)
    return msg.xid, body.value.verf, _accepted_results(msg.xid, body.value, record[u.pos :])


def _denied(xid: int, rej: R.rejected_reply) -> RpcDeniedError:
    if isinstance(rej.value, R.rpc_mismatch_info):
        return RpcMismatch(xid, rej.value.low, rej.value.high)
    assert isinstance(rej.value, int)
    return AuthRejected(xid, rej.value)


def _accepted_results(xid: int, acc: R.accepted_reply, rest: bytes) -> bytes:
    stat = acc.reply_data.stat
    if stat == R.SUCCESS:
        return rest
    err = _ACCEPT_ERRORS[stat](xid, acc.verf)
    if isinstance(err, ProgMismatch) and isinstance(acc.reply_data.value, R.rpc_mismatch_info):
        err.low, err.high = acc.reply_data.value.low, acc.reply_data.value.high
    if rest:
        raise BadReply(f"xid {xid:#x}: {len(rest)} bytes after a {err}")
    raise err


class CallAuth(Protocol):
    """A credential provider that runs whole calls itself (RPCSEC_GSS: signs the header,
    protects the arguments, checks the reply verifier and unprotects the results)."""

    async def call(self, client: RpcClient, prog: int, vers: int, proc: int, args: bytes) -> bytes: ...


class _Protocol(asyncio.Protocol):
    def __init__(self, client: RpcClient, max_record: int) -> None:
        self.client = client
        self.reader = RecordReader(max_record)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            records = self.reader.feed(data)
        except RecordError:
            assert self.transport is not None
            self.transport.abort()
            return
        for record in records:
            self.client._on_record(record)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._on_lost(exc)


class RpcClient:
    """An RPC connection; create with `await RpcClient.connect(host, port)`."""

    def __init__(self, cred: AuthSysCred | None, xid_start: int | None) -> None:
        self.cred = cred
        self.auth: CallAuth | None = None  # when set, calls without an explicit cred use it
        self._xid = int.from_bytes(os.urandom(4), "big") if xid_start is None else xid_start
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._unmatched: asyncio.Queue[bytes] = asyncio.Queue()
        self._closed = asyncio.get_running_loop().create_future()
        self._transport: asyncio.Transport | None = None
        self.max_fragment = MAX_FRAGMENT

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        cred: AuthSysCred | None = None,
        max_record: int = 64 << 20,
        xid_start: int | None = None,
        local_addr: str | None = None,
    ) -> RpcClient:
        """Connect to `host`:`port` (from the address `local_addr` when given, any port)."""
        client = cls(cred, xid_start)
        loop = asyncio.get_running_loop()
        local = (local_addr, 0) if local_addr is not None else None
        transport, _ = await loop.create_connection(lambda: _Protocol(client, max_record), host,
                                                    port, local_addr=local)
        client._transport = cast(asyncio.Transport, transport)
        return client

    def next_xid(self) -> int:
        self._xid = (self._xid + 1) & 0xFFFFFFFF
        return self._xid

    async def call(
        self,
        prog: int,
        vers: int,
        proc: int,
        args: bytes = b"",
        *,
        cred: R.opaque_auth | None = None,
        verf: R.opaque_auth = NULL_AUTH,
    ) -> bytes:
        """Call a procedure; return its results or raise an RpcError subclass."""
        if cred is None and self.auth is not None:
            return await self.auth.call(self, prog, vers, proc, args)
        if cred is None:
            cred = self.cred.opaque_auth() if self.cred else NULL_AUTH
        xid = self.next_xid()
        record = await self.call_record(xid, encode_call(xid, prog, vers, proc, args, cred, verf))
        return decode_reply(record)[1]

    async def call_record(self, xid: int, payload: bytes) -> bytes:
        """Send `payload` as one record and await the reply record carrying `xid`."""
        if self._closed.done():
            raise ConnectionClosed("connection is closed")
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[xid] = fut
        try:
            self.send_record(payload)
            return await fut
        finally:
            self._pending.pop(xid, None)

    def send_record(self, payload: bytes, max_fragment: int | None = None) -> None:
        self._writer().writelines(record_buffers(payload, max_fragment or self.max_fragment))

    def send_raw(self, data: bytes) -> None:
        """Write arbitrary bytes to the stream (no record marking)."""
        self._writer().write(data)

    async def next_unmatched(self) -> bytes:
        """The next reply record that matched no outstanding call."""
        return await self._unmatched.get()

    @property
    def is_closed(self) -> bool:
        return self._closed.done()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def __aenter__(self) -> RpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()

    def _writer(self) -> asyncio.Transport:
        if self._transport is None or self._closed.done():
            raise ConnectionClosed("connection is closed")
        return self._transport

    def _on_record(self, record: bytes) -> None:
        xid = int.from_bytes(record[:4], "big") if len(record) >= 4 else -1
        fut = self._pending.pop(xid, None)
        if fut is not None and not fut.done():
            fut.set_result(record)
        else:
            self._unmatched.put_nowait(record)

    def _on_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionClosed(f"connection lost: {exc}"))
        self._pending.clear()
