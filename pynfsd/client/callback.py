"""A client's NFSv4.0 callback service (RFC 7530 §17): CB_NULL, CB_RECALL and CB_GETATTR.

    svc = await CallbackService.start()              # listens on 127.0.0.1, any port
    s = ClientSession(nfs, b"host-a", callback=svc)
    await s.establish()                              # SETCLIENTID names svc's address
    await svc.probed.wait()                          # the server's CB_NULL arrived
    f = await s.open(d, b"file", access=ACCESS_READ) # f.delegation when one was granted
    ...
    svc.policy = "ignore"                            # answer CB_RECALL, never return

The service keeps the delegations its session holds (`delegations`, by filehandle).  On
CB_RECALL it answers NFS4_OK and, under the `"return"` policy, returns the delegation in the
background through `on_recall` (the session's DELEGRETURN); under `"ignore"` it does nothing
more, as a client that lost its way would (the server then revokes it after the lease).  An
unknown delegation is NFS4ERR_BAD_STATEID (§18.2.3).  CB_GETATTR answers the change attribute
and size recorded for the delegation (`HeldDelegation.change`/`size`, which a test sets to
play a client with dirty data).  `recall_answers` are statuses to answer the next CB_RECALLs
with instead (NFS4ERR_DELAY: "not yet").  Every call is recorded for tests: each CB_COMPOUND with
the caller's credential (`calls`), and each CB_RECALL and CB_GETATTR (`recalls`, `getattrs`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from pynfsd.gen import nfs4 as N
from pynfsd.nfs4.callback.uaddr import universal_address
from pynfsd.rpc.auth import AuthNone, AuthRegistry, AuthSys, Credential
from pynfsd.rpc.server import RpcCall, RpcServer
from pynfsd.rpc.transport import RpcTcpServer, serve
from pynfsd.xdr.runtime import Packer, Unpacker

CB_PROG = 0x40000000
Policy = Literal["return", "ignore"]


@dataclass
class HeldDelegation:
    """A delegation the client holds: its stateid, type and what CB_GETATTR reports."""

    fh: bytes
    stateid: N.stateid4
    write: bool
    size: int = 0
    change: int = 0


class CallbackService:
    """One client's callback service (see the module docstring)."""

    def __init__(self, policy: Policy = "return") -> None:
        self.policy: Policy = policy
        self.delegations: dict[bytes, HeldDelegation] = {}
        self.calls: list[tuple[Credential, N.CB_COMPOUND4args]] = []
        self.recalls: list[N.CB_RECALL4args] = []
        self.getattrs: list[N.CB_GETATTR4args] = []
        self.recall_answers: list[int] = []  # statuses to answer CB_RECALL with first
        self.on_recall: Callable[[HeldDelegation], Coroutine[Any, Any, None]] | None = None
        self.probed = asyncio.Event()
        self.recalled = asyncio.Event()
        self.tcp: RpcTcpServer | None = None
        self.host = "127.0.0.1"
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(cls, host: str = "127.0.0.1", policy: Policy = "return") -> CallbackService:
        svc = cls(policy)
        rpc = RpcServer(AuthRegistry([AuthNone(), AuthSys()]))
        rpc.register(CB_PROG, N.NFS_CB, {N.CB_NULL: svc._null, N.CB_COMPOUND: svc._compound})
        svc.tcp = await serve(rpc, host, 0)
        svc.host = host
        return svc

    @property
    def uaddr(self) -> str:
        """The universal address of the service (RFC 5665), for SETCLIENTID."""
        assert self.tcp is not None
        return universal_address(self.host, self.tcp.port)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.tcp is not None:
            self.tcp.close()
            await self.tcp.wait_closed()

    async def _null(self, call: RpcCall) -> bytes:
        self.probed.set()
        return b""

    async def _compound(self, call: RpcCall) -> bytes:
        u = Unpacker(call.args)
        args = N.unpack_CB_COMPOUND4args(u)
        u.done()
        self.calls.append((call.cred, args))
        results: list[N.nfs_cb_resop4] = []
        status = N.NFS4_OK
        for argop in args.argarray:
            if argop.argop == N.OP_CB_RECALL:
                status = self._recall(argop.value)
                results.append(N.nfs_cb_resop4(N.OP_CB_RECALL, N.CB_RECALL4res(status)))
            elif argop.argop == N.OP_CB_GETATTR:
                res = self._getattr(argop.value)
                status = res.status
                results.append(N.nfs_cb_resop4(N.OP_CB_GETATTR, res))
            else:
                status = N.NFS4ERR_OP_ILLEGAL
                results.append(N.nfs_cb_resop4(N.OP_CB_ILLEGAL, N.CB_ILLEGAL4res(status)))
            if status != N.NFS4_OK:
                break
        p = Packer()
        N.pack_CB_COMPOUND4res(p, N.CB_COMPOUND4res(status, args.tag, results))
        return p.get_buffer()

    def _recall(self, args: N.CB_RECALL4args) -> int:
        self.recalls.append(args)
        self.recalled.set()
        if self.recall_answers:
            return self.recall_answers.pop(0)
        held = self.delegations.get(bytes(args.fh))
        if held is None or held.stateid.other != args.stateid.other:
            return N.NFS4ERR_BAD_STATEID
        if self.policy == "return" and self.on_recall is not None:
            task = asyncio.get_running_loop().create_task(self.on_recall(held))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return N.NFS4_OK

    def _getattr(self, args: N.CB_GETATTR4args) -> N.CB_GETATTR4res:
        self.getattrs.append(args)
        held = self.delegations.get(bytes(args.fh))
        if held is None:
            return N.CB_GETATTR4res(N.NFS4ERR_BADHANDLE)
        p = Packer()
        p.pack_uhyper(held.change)
        p.pack_uhyper(held.size)
        mask = [(1 << N.FATTR4_CHANGE) | (1 << N.FATTR4_SIZE)]
        return N.CB_GETATTR4res(N.NFS4_OK, N.CB_GETATTR4resok(N.fattr4(mask, p.get_buffer())))
