"""A small NFSv4.0 client: a COMPOUND builder over an RPC connection (or an in-process server).

    c = await Nfs4Client.connect("127.0.0.1", 2049, cred=AuthSysCred(0, 0))
    res = await c.compound([op.putrootfh(), op.getfh()])
    fh = res.resarray[-1].value.value.object

`op` builds nfs_argop4 values; `Nfs4Client.compound` returns the decoded COMPOUND4res;
`check` raises `Nfs4Failure` when the COMPOUND failed.  Tests, scenarios and benchmarks use it to
act as any number of clients; `InProcess` runs COMPOUNDs straight through an `NFSServer`
without sockets (the sans-IO path used by the unit tests).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pynfsd.gen import nfs4 as N
from pynfsd.rpc.client import AuthSysCred, RpcClient
from pynfsd.xdr.runtime import Packer, Unpacker

NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND = N.NFS4_PROGRAM, N.NFS_V4, N.NFSPROC4_COMPOUND


class Nfs4Failure(Exception):
    def __init__(self, res: N.COMPOUND4res) -> None:
        self.res = res
        self.status = res.status
        last = res.resarray[-1].resop if res.resarray else None
        name = N.nfs_opnum4_names.get(last, "?") if last is not None else "-"
        super().__init__(f"{N.nfsstat4_names.get(res.status, res.status)} in {name}")


def encode_compound(ops: Sequence[N.nfs_argop4], tag: bytes = b"", minorversion: int = 0) -> bytes:
    p = Packer()
    N.pack_COMPOUND4args(p, N.COMPOUND4args(tag, minorversion, list(ops)))
    return p.get_buffer()


def decode_compound(data: bytes) -> N.COMPOUND4res:
    u = Unpacker(data)
    res = N.unpack_COMPOUND4res(u)
    u.done()
    return res


class _Caller(Protocol):
    async def __call__(self, args: bytes) -> bytes: ...


class Nfs4Client:
    """Sends COMPOUNDs through `caller` (an RPC connection or an in-process server)."""

    def __init__(self, caller: _Caller, rpc: RpcClient | None = None) -> None:
        self._caller = caller
        self.rpc = rpc

    @classmethod
    async def connect(cls, host: str, port: int, *, cred: AuthSysCred | None = None,
                      local_addr: str | None = None) -> Nfs4Client:
        rpc = await RpcClient.connect(host, port, cred=cred or AuthSysCred(0, 0),
                                      local_addr=local_addr)

        async def caller(args: bytes) -> bytes:
            return await rpc.call(NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND, args)

        return cls(caller, rpc)

    async def compound_raw(self, args: bytes) -> bytes:
        return await self._caller(args)

    async def compound(self, ops: Sequence[N.nfs_argop4], tag: bytes = b"", minorversion: int = 0) -> N.COMPOUND4res:
        return decode_compound(await self._caller(encode_compound(ops, tag, minorversion)))

    async def check(self, ops: Sequence[N.nfs_argop4], tag: bytes = b"") -> list[Any]:
        """Run a COMPOUND that must succeed; return the NFS4_OK value of every op."""
        res = await self.compound(ops, tag)
        if res.status != N.NFS4_OK:
            raise Nfs4Failure(res)
        return [_ok_value(r) for r in res.resarray]

    async def close(self) -> None:
        if self.rpc is not None:
            self.rpc.close()


def _ok_value(r: N.nfs_resop4) -> Any:
    res = r.value
    return getattr(res, "value", None)


def _no_args(opnum: int) -> Callable[[], N.nfs_argop4]:
    """The builder of an operation that takes no arguments."""

    def build() -> N.nfs_argop4:
        return N.nfs_argop4(opnum, None)

    return build


class op:
    """nfs_argop4 builders, named after the operations."""

    putrootfh = staticmethod(_no_args(N.OP_PUTROOTFH))
    getfh = staticmethod(_no_args(N.OP_GETFH))
    lookupp = staticmethod(_no_args(N.OP_LOOKUPP))
    savefh = staticmethod(_no_args(N.OP_SAVEFH))
    restorefh = staticmethod(_no_args(N.OP_RESTOREFH))

    @staticmethod
    def putfh(fh: bytes) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_PUTFH, N.PUTFH4args(fh))

    @staticmethod
    def lookup(name: bytes) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_LOOKUP, N.LOOKUP4args(name))

    @staticmethod
    def getattr(*attrs: int) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_GETATTR, N.GETATTR4args(bitmap(attrs)))

    @staticmethod
    def access(bits: int) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_ACCESS, N.ACCESS4args(bits))

    @staticmethod
    def readdir(cookie: int = 0, verf: bytes = b"\0" * 8, dircount: int = 8192,
                maxcount: int = 32768, attrs: Sequence[int] = ()) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_READDIR, N.READDIR4args(cookie, verf, dircount, maxcount, bitmap(attrs)))

    @staticmethod
    def setclientid(verifier: bytes, ownerid: bytes, cb_prog: int = 0x40000000,
                    netid: str = "tcp", addr: str = "127.0.0.1.0.0") -> N.nfs_argop4:
        cb = N.cb_client4(cb_prog, N.netaddr4(netid, addr))
        return N.nfs_argop4(N.OP_SETCLIENTID, N.SETCLIENTID4args(N.nfs_client_id4(verifier, ownerid), cb, 1))

    @staticmethod
    def setclientid_confirm(clientid: int, confirm: bytes) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_SETCLIENTID_CONFIRM, N.SETCLIENTID_CONFIRM4args(clientid, confirm))

    @staticmethod
    def renew(clientid: int) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_RENEW, N.RENEW4args(clientid))

    @staticmethod
    def open(seqid: int, clientid: int, owner: bytes, name: bytes, *, access: int = 3,
             deny: int = 0, create: N.createhow4 | None = None) -> N.nfs_argop4:
        how = N.openflag4(N.OPEN4_CREATE, create) if create else N.openflag4(N.OPEN4_NOCREATE, None)
        args = N.OPEN4args(seqid, access, deny, N.open_owner4(clientid, owner), how,
                           N.open_claim4(N.CLAIM_NULL, name))
        return N.nfs_argop4(N.OP_OPEN, args)

    @staticmethod
    def open_confirm(stateid: N.stateid4, seqid: int) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_OPEN_CONFIRM, N.OPEN_CONFIRM4args(stateid, seqid))

    @staticmethod
    def close(seqid: int, stateid: N.stateid4) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_CLOSE, N.CLOSE4args(seqid, stateid))

    @staticmethod
    def read(stateid: N.stateid4, offset: int, count: int) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_READ, N.READ4args(stateid, offset, count))

    @staticmethod
    def write(stateid: N.stateid4, offset: int, data: bytes, stable: int = 2) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_WRITE, N.WRITE4args(stateid, offset, stable, data))

    @staticmethod
    def commit(offset: int = 0, count: int = 0) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_COMMIT, N.COMMIT4args(offset, count))

    @staticmethod
    def remove(name: bytes) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_REMOVE, N.REMOVE4args(name))

    @staticmethod
    def rename(old: bytes, new: bytes) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_RENAME, N.RENAME4args(old, new))

    @staticmethod
    def mkdir(name: bytes, mode: int = 0o755) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_CREATE, N.CREATE4args(N.createtype4(N.NF4DIR, None), name, mode_attr(mode)))

    @staticmethod
    def symlink(name: bytes, target: bytes) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_CREATE, N.CREATE4args(N.createtype4(N.NF4LNK, target), name, mode_attr(0o777)))

    @staticmethod
    def lock(locktype: int, offset: int, length: int, locker: N.locker4, reclaim: bool = False) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_LOCK, N.LOCK4args(locktype, reclaim, offset, length, locker))

    @staticmethod
    def lockt(locktype: int, offset: int, length: int, clientid: int, owner: bytes) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_LOCKT, N.LOCKT4args(locktype, offset, length, N.lock_owner4(clientid, owner)))

    @staticmethod
    def locku(locktype: int, seqid: int, stateid: N.stateid4, offset: int, length: int) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_LOCKU, N.LOCKU4args(locktype, seqid, stateid, offset, length))


def bitmap(attrs: Sequence[int]) -> list[int]:
    words: list[int] = []
    for a in attrs:
        w, b = divmod(a, 32)
        while len(words) <= w:
            words.append(0)
        words[w] |= 1 << b
    return words


def mode_attr(mode: int) -> N.fattr4:
    p = Packer()
    p.pack_uint(mode)
    return N.fattr4(bitmap([N.FATTR4_MODE]), p.get_buffer())


def unchecked(mode: int = 0o644) -> N.createhow4:
    return N.createhow4(N.UNCHECKED4, mode_attr(mode))


def in_process(server: Any, cred: Any = None, peer: tuple[str, int] = ("127.0.0.1", 800)) -> Nfs4Client:
    """An Nfs4Client whose COMPOUNDs run straight through `server` (an NFSServer), no sockets.

    `cred` is a `pynfsd.rpc.auth.Credential` (default: AUTH_SYS uid 0); `peer` the client
    address the server sees (exports are matched against it).
    """
    from pynfsd.rpc.auth import Credential
    from pynfsd.rpc.server import ConnInfo, RpcCall

    credential = cred or Credential(1, 0, 0, (), None, "in-process")
    conn = ConnInfo(peer)
    xid = 0

    async def caller(args: bytes) -> bytes:
        nonlocal xid
        xid += 1
        call = RpcCall(xid, NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND, credential, memoryview(args), conn)
        return b"".join(await server.compound(call))

    return Nfs4Client(caller)
