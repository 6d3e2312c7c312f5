"""Sans-IO ONC RPC call dispatch: one record in, one reply (or nothing) out (RFC 5531 §9).

Theory of operation: `handle_call` decodes the call header (`pynfsd.rpc.header`), lets the
credential's auth flavour accept it, finds the program / version / procedure, unwraps the
arguments, awaits the handler and wraps its results.  Every way a call can fail maps to its
reply in `handle_call` alone.  Order of checks follows RFC 5531 §9 and knfsd: RPC version,
authentication, program, version, procedure, arguments.  Procedure 0 (NULL) of every
registered program version is answered here with empty results.  With a duplicate request
cache (`pynfsd.rpc.drc`), a procedure's unwrapped arguments are looked up there first: a
retransmission gets the original's results wrapped under its own credential, or is dropped
while the original still runs; results whose handler set `RpcCall.cacheable` are kept.
Calls that reach a procedure are counted by security flavour, refusals by auth flavour, in
the `pynfsd.metrics.stats.Stats` given (or its own).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pynfsd.gen import rpc as R
from pynfsd.metrics.stats import Stats
from pynfsd.rpc.auth import Accepted, AuthFlavor, AuthRegistry, Credential
from pynfsd.rpc.drc import ReplyCache, Verdict, drc_key
from pynfsd.rpc.errors import AuthError, DropCall, GarbageArgs
from pynfsd.rpc.header import (
    BadCall,
    CallHeader,
    decode_call,
    encode_accepted,
    encode_auth_error,
)

log = logging.getLogger(__name__)

Buffer = bytes | bytearray | memoryview
Results = bytes | list[bytes]


@dataclass(slots=True)
class ConnInfo:
    """The connection a call arrived on; `context` is per-connection state for upper layers."""

    peer: tuple[str, int]
    local: tuple[str, int] = ("", 0)
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RpcCall:
    """What a procedure handler receives."""

    xid: int
    prog: int
    vers: int
    proc: int
    cred: Credential
    args: memoryview
    conn: ConnInfo
    cacheable: bool = False  # set by a handler whose reply the duplicate request cache keeps

    @property
    def peer(self) -> tuple[str, int]:
        return self.conn.peer


Handler = Callable[[RpcCall], Awaitable[Results]]


async def _null_proc(call: RpcCall) -> bytes:
    return b""


class RpcServer:
    """Dispatches decoded calls to registered programs."""

    def __init__(
        self, auth: AuthRegistry, drc: ReplyCache | None = None, stats: Stats | None = None
    ) -> None:
        self.auth = auth
        self.drc = drc
        self.stats = Stats() if stats is None else stats  # calls by flavour, auth errors
        self._programs: dict[int, dict[int, dict[int, Handler]]] = {}

    def register(self, prog: int, vers: int, procs: Mapping[int, Handler]) -> None:
        versions = self._programs.setdefault(prog, {})
        if vers in versions:
            raise ValueError(f"program {prog} version {vers} is already registered")
        table: dict[int, Handler] = {0: _null_proc}
        table.update(procs)
        versions[vers] = table

    async def handle_record(self, record: bytes, conn: ConnInfo) -> bytes | None:
        """The reply record payload for one call record, or None to send nothing."""
        parts = await self.handle_call(record, conn)
        return None if parts is None else b"".join(parts)

    async def handle_call(self, record: bytes, conn: ConnInfo) -> list[Buffer] | None:
        """Like `handle_record`, as a list of buffers for a gathering write."""
        try:
            call = decode_call(record)
        except BadCall as bad:
            return _maybe(bad.reply())
        try:
            flavor = self.auth.lookup(call.cred.flavor)
            accepted = await flavor.accept(call)
        except AuthError as e:
            self.stats.auth_error(call.cred.flavor)
            return [encode_auth_error(call.xid, e.auth_stat)]  # RFC 5531 §9: MSG_DENIED
        except DropCall:
            return None
        except GarbageArgs:
            # A flavour's control procedure (RPCSEC_GSS INIT) could not decode its arguments.
            return [encode_accepted(call.xid, R.GARBAGE_ARGS)]
        except Exception:
            log.exception("auth flavour %d failed on xid %#x", call.cred.flavor, call.xid)
            return [encode_accepted(call.xid, R.SYSTEM_ERR)]
        if accepted.reply is not None:
            return [encode_accepted(call.xid, R.SUCCESS, accepted.verf), accepted.reply]
        return await self._dispatch(call, flavor, accepted, conn)

    async def _dispatch(
        self, call: CallHeader, flavor: AuthFlavor, accepted: Accepted, conn: ConnInfo
    ) -> list[Buffer] | None:
        self.stats.call(accepted.cred.sec_flavor)
        handler_or_stat = self._find(call)
        if not callable(handler_or_stat):
            return [self._reject(call, accepted, handler_or_stat)]
        try:
            wraps = flavor.wraps
            args = await flavor.unwrap(accepted, call.args) if wraps else call.args
            rpc_call = RpcCall(
                call.xid, call.prog, call.vers, call.proc, accepted.cred, args, conn
            )
            results = await self._run(handler_or_stat, rpc_call, flavor, accepted)
            wrapped = _as_list(results)
            if wraps:
                wrapped = await flavor.wrap(accepted, wrapped)
        except GarbageArgs:
            return [encode_accepted(call.xid, R.GARBAGE_ARGS, accepted.verf)]
        except DropCall:
            return None
        except Exception:
            log.exception("RPC prog %d vers %d proc %d failed", call.prog, call.vers, call.proc)
            return [encode_accepted(call.xid, R.SYSTEM_ERR, accepted.verf)]
        out: list[Buffer] = [encode_accepted(call.xid, R.SUCCESS, accepted.verf)]
        out.extend(wrapped)
        return out

    async def _run(
        self, handler: Handler, call: RpcCall, flavor: AuthFlavor, accepted: Accepted
    ) -> Results:
        """Run `handler` behind the duplicate request cache: replay, drop or run and keep."""
        if self.drc is None or call.proc == 0:
            return await handler(call)
        identity = flavor.cache_identity(accepted)  # only when a cache will use it
        key = drc_key(call.peer[0], call.xid, call.prog, call.vers, call.proc, call.args, identity)
        cached = self.drc.begin(key)
        if cached is Verdict.IN_PROGRESS:
            raise DropCall()  # the original's reply is on its way
        if isinstance(cached, bytes):
            return cached
        try:
            results = await handler(call)
        except BaseException:
            self.drc.finish(key, None)
            raise
        self.drc.finish(key, _as_list(results) if call.cacheable else None)
        return results

    def _find(self, call: CallHeader) -> Handler | int:
        """The handler, or the accept_stat saying why there is none."""
        versions = self._programs.get(call.prog)
        if versions is None:
            return R.PROG_UNAVAIL
        procs = versions.get(call.vers)
        if procs is None:
            return R.PROG_MISMATCH
        return procs.get(call.proc, R.PROC_UNAVAIL)

    def _reject(self, call: CallHeader, accepted: Accepted, stat: int) -> bytes:
        if stat != R.PROG_MISMATCH:
            return encode_accepted(call.xid, stat, accepted.verf)
        versions = self._programs[call.prog]
        # RFC 5531 §9: PROG_MISMATCH carries the lowest and highest versions supported.
        return encode_accepted(
            call.xid, stat, accepted.verf, min(versions), max(versions)
        )


def _maybe(reply: bytes | None) -> list[Buffer] | None:
    return None if reply is None else [reply]


def _as_list(results: Results) -> list[bytes]:
    return results if isinstance(results, list) else [results]
