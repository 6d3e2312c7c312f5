"""Shared fixtures for the per-operation COMPOUND tests (the second tier in docs/HABITS.md,
"Tests come in tiers").

A `World` is an in-process `NFSServer` (no sockets) over `MemoryBackend`s (or `LocalBackend`s
under tmp_path) with a manual clock driving both the state manager and the backends.  Tests are
`async def` functions, each run on its own event loop by the hook in tests/conftest.py
(`World.run` does the same for a coroutine a sync caller has); `World.client()` gives an
`Nfs4Client` for any credential and peer address.  The `ops` helpers build the operations the
client library has no builder for; `expect` runs a COMPOUND that must fail with a given status
at its last operation.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pynfsd.client.nfs4 import Nfs4Client, bitmap, in_process, op
from pynfsd.exports import parse_export_line
from pynfsd.exports.resolver import StaticExportResolver
from pynfsd.exports.types import ClientExport
from pynfsd.fs.backend import Backend
from pynfsd.fs.memory import MemoryBackend
from pynfsd.gen import nfs4 as N
from pynfsd.nfs4.attrs import decode_fattr4
from pynfsd.nfs4.server import NFSServer, ServerConfig
from pynfsd.nfs4.views import ExportViews
from pynfsd.rpc.auth import Credential
from pynfsd.xdr.runtime import Packer
from tests.aio import run
from tests.clock import ManualClock

T = TypeVar("T")

LEASE = 90
ROOT = Credential(1, 0, 0, (), None, "test")
R, W, RW = 1, 2, 3  # OPEN4_SHARE_ACCESS_*
DENY_NONE, DENY_READ, DENY_WRITE, DENY_BOTH = 0, 1, 2, 3
ANON = N.stateid4(0, b"\0" * 12)
BYPASS = N.stateid4(0xFFFFFFFF, b"\xff" * 12)


def user(uid: int, gid: int | None = None, gids: Sequence[int] = ()) -> Credential:
    """An AUTH_SYS credential for `uid` (gid defaults to uid)."""
    return Credential(1, uid, uid if gid is None else gid, tuple(gids), None, "test")


@dataclass
class World:
    server: NFSServer
    clock: ManualClock
    state_dir: Path
    backends: dict[str, Backend] = field(default_factory=dict)

    def client(
        self, cred: Credential | None = None, peer: tuple[str, int] = ("127.0.0.1", 800)
    ) -> Nfs4Client:
        return in_process(self.server, cred or ROOT, peer)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return run(coro)

    def close(self) -> None:
        self.server.close()


def make_world(
    tmp_path: Path,
    exports: Sequence[str] = ("/export *(rw,no_root_squash)",),
    *,
    local: bool = False,
    clock: ManualClock | None = None,
    views: Callable[[StaticExportResolver], ExportViews] | None = None,
) -> World:
    """A server over `exports` lines; MemoryBackends unless `local` (LocalBackend); `views`
    builds the server's export views from the table (default: the embedded resolver's)."""
    clk = clock or ManualClock()
    state_dir = tmp_path / "state"
    state_dir.mkdir(exist_ok=True)
    world: World

    def factory(export: ClientExport, sdir: str) -> Backend:
        if local:
            from pynfsd.fs.local import LocalBackend

            be: Backend = LocalBackend(export.path, sdir)
        else:
            be = MemoryBackend(clock=clk.ns)
        world.backends[export.path] = be
        return be

    config = ServerConfig(
        state_dir=str(state_dir),
        lease_time=LEASE,
        backend_factory=factory,
        clock=clk,
        wallclock_ns=clk.ns,
        workers=2,
    )
    resolver = StaticExportResolver([parse_export_line(line) for line in exports])
    world = World(NFSServer(config, views(resolver) if views else resolver), clk, state_dir)
    return world


# ------------------------------------------------------------------ results


def status_name(status: int) -> str:
    return N.nfsstat4_names.get(status, str(status))


async def expect(c: Nfs4Client, ops: Sequence[N.nfs_argop4], status: int) -> N.COMPOUND4res:
    """Run ops; the COMPOUND must end with `status` at its last result."""
    res = await c.compound(ops)
    assert status_name(res.status) == status_name(status), [
        (N.nfs_opnum4_names.get(r.resop), status_name(r.value.status)) for r in res.resarray
    ]
    assert res.resarray[-1].value.status == status
    return res


def last(res: N.COMPOUND4res) -> Any:
    """The (error-arm or OK-arm) value of the last result."""
    r = res.resarray[-1].value
    return getattr(r, "value", None)


def attrs_of(resok: N.GETATTR4resok | N.fattr4) -> dict[int, Any]:
    f = resok.obj_attributes if isinstance(resok, N.GETATTR4resok) else resok
    return decode_fattr4(f)


async def getattrs(c: Nfs4Client, fh: bytes, *attrs: int) -> dict[int, Any]:
    _, res = await c.check([op.putfh(fh), op.getattr(*attrs)])
    return attrs_of(res)


async def export_root(c: Nfs4Client, *path: bytes) -> bytes:
    """The filehandle at /path... (default: /export)."""
    comps = path or (b"export",)
    vals = await c.check([op.putrootfh(), *[op.lookup(p) for p in comps], op.getfh()])
    fh: bytes = vals[-1].object
    return fh


async def lookup_fh(c: Nfs4Client, dirfh: bytes, *names: bytes) -> bytes:
    vals = await c.check([op.putfh(dirfh), *[op.lookup(n) for n in names], op.getfh()])
    fh: bytes = vals[-1].object
    return fh


async def mkdir(c: Nfs4Client, dirfh: bytes, name: bytes, mode: int = 0o755) -> bytes:
    vals = await c.check([op.putfh(dirfh), op.mkdir(name, mode), op.getfh()])
    fh: bytes = vals[-1].object
    return fh


# ------------------------------------------------------------------ fattr4 building


_PACKERS: dict[int, Callable[[Packer, Any], None]] = {
    N.FATTR4_ACL: N.pack_fattr4_acl,
    N.FATTR4_MODE: N.pack_fattr4_mode,
    N.FATTR4_SIZE: N.pack_fattr4_size,
    N.FATTR4_OWNER: N.pack_fattr4_owner,
    N.FATTR4_OWNER_GROUP: N.pack_fattr4_owner_group,
    N.FATTR4_TIME_ACCESS_SET: N.pack_fattr4_time_access_set,
    N.FATTR4_TIME_MODIFY_SET: N.pack_fattr4_time_modify_set,
    N.FATTR4_TYPE: N.pack_fattr4_type,
    N.FATTR4_FILEID: N.pack_fattr4_fileid,
    N.FATTR4_CHANGE: N.pack_fattr4_change,
}


def fattr(values: dict[int, Any]) -> N.fattr4:
    """An fattr4 from {FATTR4_x: value} (values as the generated codecs take them)."""
    p = Packer()
    for attr in sorted(values):
        _PACKERS[attr](p, values[attr])
    return N.fattr4(bitmap(sorted(values)), p.get_buffer())


def client_time(seconds: int, nseconds: int = 0) -> N.settime4:
    return N.settime4(N.SET_TO_CLIENT_TIME4, N.nfstime4(seconds, nseconds))


# ------------------------------------------------------------------ more op builders


class ops:
    """nfs_argop4 builders the client library lacks."""

    @staticmethod
    def setattr(values: dict[int, Any], stateid: N.stateid4 = ANON) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_SETATTR, N.SETATTR4args(stateid, fattr(values)))

    @staticmethod
    def verify(values: dict[int, Any]) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_VERIFY, N.VERIFY4args(fattr(values)))

    @staticmethod
    def nverify(values: dict[int, Any]) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_NVERIFY, N.NVERIFY4args(fattr(values)))

    @staticmethod
    def create(
        objtype: int, name: bytes, value: Any = None, attrs: N.fattr4 | None = None
    ) -> N.nfs_argop4:
        ct = N.createtype4(objtype, value)
        return N.nfs_argop4(N.OP_CREATE, N.CREATE4args(ct, name, attrs or N.fattr4([], b"")))

    @staticmethod
    def link(name: bytes) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_LINK, N.LINK4args(name))

    @staticmethod
    def readlink() -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_READLINK, None)

    @staticmethod
    def putpubfh() -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_PUTPUBFH, None)

    @staticmethod
    def secinfo(name: bytes) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_SECINFO, N.SECINFO4args(name))

    @staticmethod
    def openattr(createdir: bool = False) -> N.nfs_argop4:
        return N.nfs_argop4(N.OP_OPENATTR, N.OPENATTR4args(createdir))

    @staticmethod
    def open_downgrade(stateid: N.stateid4, seqid: int, access: int, deny: int) -> N.nfs_argop4:
        return N.nfs_argop4(
            N.OP_OPEN_DOWNGRADE, N.OPEN_DOWNGRADE4args(stateid, seqid, access, deny)
        )

    @staticmethod
    def release_lockowner(clientid: int, owner: bytes) -> N.nfs_argop4:
        args = N.RELEASE_LOCKOWNER4args(N.lock_owner4(clientid, owner))
        return N.nfs_argop4(N.OP_RELEASE_LOCKOWNER, args)

    @staticmethod
    def lock_new(
        locktype: int,
        offset: int,
        length: int,
        open_seqid: int,
        open_sid: N.stateid4,
        lock_seqid: int,
        clientid: int,
        owner: bytes,
    ) -> N.nfs_argop4:
        new = N.open_to_lock_owner4(
            open_seqid, open_sid, lock_seqid, N.lock_owner4(clientid, owner)
        )
        return op.lock(locktype, offset, length, N.locker4(True, new))

    @staticmethod
    def lock_existing(
        locktype: int, offset: int, length: int, lock_sid: N.stateid4, seqid: int
    ) -> N.nfs_argop4:
        return op.lock(
            locktype, offset, length, N.locker4(False, N.exist_lock_owner4(lock_sid, seqid))
        )

    @staticmethod
    def open_create(
        seqid: int,
        clientid: int,
        owner: bytes,
        name: bytes,
        mode: int,
        how: Any,
        *,
        access: int = RW,
        deny: int = DENY_NONE,
    ) -> N.nfs_argop4:
        """OPEN4_CREATE with createmode `mode` (UNCHECKED4/GUARDED4: fattr4; EXCLUSIVE4: verifier)."""
        return op.open(
            seqid, clientid, owner, name, access=access, deny=deny, create=N.createhow4(mode, how)
        )


# ------------------------------------------------------------------ client ids and opens


async def new_clientid(c: Nfs4Client, name: bytes = b"client-1", verf: bytes = b"v" * 8) -> int:
    """SETCLIENTID + SETCLIENTID_CONFIRM; the confirmed client id."""
    (resok,) = await c.check([op.setclientid(verf, name)])
    await c.check([op.setclientid_confirm(resok.clientid, resok.setclientid_confirm)])
    clientid: int = resok.clientid
    return clientid


@dataclass
class Opened:
    fh: bytes
    stateid: N.stateid4
    seqid: int  # the open-owner's next seqid


async def open_file(
    c: Nfs4Client,
    dirfh: bytes,
    clientid: int,
    owner: bytes,
    name: bytes,
    *,
    create: bool = True,
    access: int = RW,
    deny: int = DENY_NONE,
    seqid: int = 1,
) -> Opened:
    """OPEN (UNCHECKED4 create by default), OPEN_CONFIRM when asked for."""
    from pynfsd.client.nfs4 import unchecked

    how = unchecked(0o644) if create else None
    _, resok, got = await c.check(
        [
            op.putfh(dirfh),
            op.open(seqid, clientid, owner, name, access=access, deny=deny, create=how),
            op.getfh(),
        ]
    )
    sid, seqid = resok.stateid, seqid + 1
    if resok.rflags & 0x2:  # OPEN4_RESULT_CONFIRM
        _, conf = await c.check([op.putfh(got.object), op.open_confirm(sid, seqid)])
        sid, seqid = conf.open_stateid, seqid + 1
    return Opened(got.object, sid, seqid)


# ------------------------------------------------------------------ READDIR


def entries(resok: N.READDIR4resok) -> list[N.entry4]:
    out: list[N.entry4] = []
    e = resok.reply.entries
    while e is not None:
        out.append(e)
        e = e.nextentry
    return out


async def readdir_all(
    c: Nfs4Client, dirfh: bytes, *, attrs: Sequence[int] = (), maxcount: int = 32768
) -> list[N.entry4]:
    """Every entry of a directory, following cookies and the verifier until eof."""
    out: list[N.entry4] = []
    cookie, verf = 0, b"\0" * 8
    while True:
        _, resok = await c.check(
            [op.putfh(dirfh), op.readdir(cookie, verf, maxcount, maxcount, attrs)]
        )
        got = entries(resok)
        out.extend(got)
        if resok.reply.eof:
            return out
        assert got, "READDIR returned no entries and no eof"
        cookie, verf = got[-1].cookie, resok.cookieverf


async def make_file(c: Nfs4Client, dirfh: bytes, name: bytes = b"f", owner: bytes = b"o") -> bytes:
    """A regular file made by OPEN (with its own client id); its filehandle."""
    clientid = await new_clientid(c, b"file-" + name + owner)
    return (await open_file(c, dirfh, clientid, owner, name)).fh


async def others_io_is_refused(other: Nfs4Client, o: Opened) -> None:
    """RFC 7530 §16.16.5: another user's READ, WRITE and SETATTR(size) with the owner's open
    stateid each get NFS4ERR_ACCESS."""
    for bad in (
        op.write(o.stateid, 0, b"intruder"),
        op.read(o.stateid, 0, 100),
        ops.setattr({N.FATTR4_SIZE: 0}, o.stateid),
    ):
        await expect(other, [op.putfh(o.fh), bad], N.NFS4ERR_ACCESS)
