"""knfsd's read-if-execute rule over the in-memory backend (the Vfs's POSIX model): a user who
may execute a regular file but not read it (mode 0711) may OPEN it for read and READ it, since
a client must read a binary to run it; ACCESS still says execute only. The local backend's
side is in test_compound_local_authz.py."""

from __future__ import annotations

from nfs4_fixtures import (
    ANON,
    RW,
    R,
    World,
    expect,
    export_root,
    new_clientid,
    open_file,
    ops,
    user,
)

from pynfsd.client.nfs4 import op
from pynfsd.gen import nfs4 as N

ACCESS4_READ, ACCESS4_EXECUTE = 0x01, 0x20
DATA = b"\x7fELF binary"


async def _binary(w: World, name: bytes, mode: int) -> tuple[bytes, bytes]:
    """(export root, file) with DATA in a root-owned file of ``mode``."""
    c = w.client()
    root = await export_root(c)
    o = await open_file(c, root, await new_clientid(c, b"maker-" + name), b"m", name)
    await c.check([op.putfh(o.fh), op.write(o.stateid, 0, DATA)])
    await c.check([op.putfh(o.fh), ops.setattr({N.FATTR4_MODE: mode}, o.stateid)])
    return root, o.fh


async def test_open_for_read_and_read_of_an_execute_only_file(w: World) -> None:
    root, fh = await _binary(w, b"bin", 0o711)
    u = w.client(user(1000))
    o = await open_file(u, root, await new_clientid(u), b"u", b"bin", create=False, access=R)
    (_, read) = await u.check([op.putfh(o.fh), op.read(o.stateid, 0, 100)])
    (_, anon) = await u.check([op.putfh(fh), op.read(ANON, 0, 100)])
    assert read.data == anon.data == DATA
    acc = await u.check([op.putfh(fh), op.access(ACCESS4_READ | ACCESS4_EXECUTE)])
    assert acc[-1].access == ACCESS4_EXECUTE


async def test_no_exception_without_execute_permission_or_for_writing(w: World) -> None:
    root, fh = await _binary(w, b"private", 0o700)
    await _binary(w, b"bin", 0o711)
    u = w.client(user(1000))
    cid = await new_clientid(u)
    for name, access in ((b"private", R), (b"bin", RW)):
        await expect(u, [op.putfh(root), op.open(1, cid, name, name, access=access)],
                     N.NFS4ERR_ACCESS)  # fmt: skip
    await expect(u, [op.putfh(fh), op.read(ANON, 0, 10)], N.NFS4ERR_ACCESS)

