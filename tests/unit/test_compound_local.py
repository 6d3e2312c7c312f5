"""COMPOUNDs over `LocalBackend` (a real directory under tmp_path; the tests run as root):
escape attempts through symlinks and "..", the pseudo-fs above a real export, and persistent
filehandles across a new NFSServer with the same state directory (RFC 7530 §4.2.1, §7)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from nfs4_fixtures import (
    ANON,
    BYPASS,
    World,
    attrs_of,
    expect,
    export_root,
    getattrs,
    make_world,
    new_clientid,
    open_file,
    ops,
    readdir_all,
)

from pynfsd.client.nfs4 import Nfs4Client, op, unchecked
from pynfsd.gen import nfs4 as N

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="LocalBackend needs root")


def _comps(path: Path) -> list[bytes]:
    return [os.fsencode(p) for p in path.parts[1:]]


def _local_world(tmp_path: Path, options: str = "rw,no_root_squash") -> tuple[World, Path]:
    exp = tmp_path / "exp"
    exp.mkdir(exist_ok=True)
    (tmp_path / "outside").mkdir(exist_ok=True)
    (tmp_path / "outside" / "secret").write_bytes(b"top secret")
    return make_world(tmp_path, [f"{exp} *({options})"], local=True), exp


async def _root(c: Nfs4Client, exp: Path) -> bytes:
    return await export_root(c, *_comps(exp))


async def test_server_side_symlink_out_of_the_export_is_not_followed(tmp_path: Path) -> None:
    w, exp = _local_world(tmp_path)
    os.symlink(tmp_path / "outside", exp / "escape")
    os.symlink("../outside/secret", exp / "relative")

    try:
        c = w.client()
        root = await _root(c, exp)
        vals = await c.check(
            [op.putfh(root), op.lookup(b"escape"), op.getattr(N.FATTR4_TYPE), ops.readlink()]
        )
        assert attrs_of(vals[2]) == {N.FATTR4_TYPE: N.NF4LNK}
        assert vals[3].link == os.fsencode(tmp_path / "outside")
        await expect(
            c, [op.putfh(root), op.lookup(b"escape"), op.lookup(b"secret")], N.NFS4ERR_SYMLINK
        )
        rel = await c.check([op.putfh(root), op.lookup(b"relative"), op.getfh()])
        cid = await new_clientid(c)
        res = await c.compound([op.putfh(root), op.open(1, cid, b"o", b"relative")])
        assert res.status == N.NFS4ERR_SYMLINK
        await expect(c, [op.putfh(rel[2].object), op.read(ANON, 0, 100)], N.NFS4ERR_SYMLINK)
    finally:
        w.close()


async def test_client_made_symlink_does_not_lead_out(tmp_path: Path) -> None:
    w, exp = _local_world(tmp_path)

    try:
        c = w.client()
        root = await _root(c, exp)
        await c.check([op.putfh(root), op.symlink(b"up", b"../outside")])
        assert os.readlink(exp / "up") == "../outside"
        await expect(c, [op.putfh(root), op.lookup(b"up"), op.lookup(b"secret")], N.NFS4ERR_SYMLINK)
        await expect(c, [op.putfh(root), op.lookup(b"up"), op.readdir()], N.NFS4ERR_NOTDIR)
    finally:
        w.close()


async def test_dotdot_and_slashes_are_refused(tmp_path: Path) -> None:
    w, exp = _local_world(tmp_path)

    try:
        c = w.client()
        root = await _root(c, exp)
        await expect(c, [op.putfh(root), op.lookup(b"..")], N.NFS4ERR_BADNAME)
        await expect(c, [op.putfh(root), op.lookup(b"../outside")], N.NFS4ERR_BADCHAR)
        await expect(
            c, [op.putfh(root), op.lookup(os.fsencode(tmp_path / "outside"))], N.NFS4ERR_BADCHAR
        )
        await expect(c, [op.putfh(root), op.mkdir(b"..")], N.NFS4ERR_BADNAME)
    finally:
        w.close()


async def test_lookupp_from_the_export_root_stays_in_the_pseudo_fs(tmp_path: Path) -> None:
    w, exp = _local_world(tmp_path)

    try:
        c = w.client()
        root = await _root(c, exp)
        vals = await c.check([op.putfh(root), op.lookupp(), op.getfh()])
        parent = vals[2].object
        names = [e.name for e in await readdir_all(c, parent)]
        assert names == [b"exp"]  # "outside" is not shown: only paths to exports (§7.3)
        await expect(c, [op.putfh(parent), op.lookup(b"outside")], N.NFS4ERR_NOENT)
        fsid_root = (await getattrs(c, root, N.FATTR4_FSID))[N.FATTR4_FSID]
        fsid_parent = (await getattrs(c, parent, N.FATTR4_FSID))[N.FATTR4_FSID]
        assert fsid_root != fsid_parent
    finally:
        w.close()


def test_filehandles_persist_across_a_new_server(tmp_path: Path) -> None:
    w, exp = _local_world(tmp_path)

    async def first() -> tuple[bytes, bytes, bytes]:
        c = w.client()
        root = await _root(c, exp)
        vals = await c.check([op.putfh(root), op.mkdir(b"d"), op.getfh()])
        cid = await new_clientid(c)
        f = await open_file(c, vals[2].object, cid, b"o", b"f")
        await c.check([op.putfh(f.fh), op.write(ANON, 0, b"persistent")])
        return root, vals[2].object, f.fh

    try:
        root, d, f = w.run(first())
    finally:
        w.close()
    assert (exp / "d" / "f").read_bytes() == b"persistent"
    w2 = make_world(tmp_path, [f"{exp} *(rw,no_root_squash)"], local=True)

    async def second() -> None:
        c = w2.client()
        # the first server recorded a client, so this one is in grace: READ with the bypass
        # stateid (the anonymous one gets NFS4ERR_GRACE, RFC 7530 §9.6.2)
        (_, rd) = await c.check([op.putfh(f), op.read(BYPASS, 0, 100)])
        assert rd.data == b"persistent"
        vals = await c.check([op.putfh(d), op.lookupp(), op.getfh()])
        assert vals[2].object == root == await _root(c, exp)
        assert await export_root(c, *_comps(exp), b"d", b"f") == f

    try:
        w2.run(second())
    finally:
        w2.close()


def test_handle_of_a_removed_file_is_stale_after_restart(tmp_path: Path) -> None:
    w, exp = _local_world(tmp_path)

    async def first() -> bytes:
        c = w.client()
        root = await _root(c, exp)
        cid = await new_clientid(c)
        return (await open_file(c, root, cid, b"o", b"gone")).fh

    try:
        fh = w.run(first())
    finally:
        w.close()
    (exp / "gone").unlink()
    w2 = make_world(tmp_path, [f"{exp} *(rw,no_root_squash)"], local=True)
    try:
        w2.run(expect(w2.client(), [op.putfh(fh), op.getattr(N.FATTR4_TYPE)], N.NFS4ERR_STALE))
    finally:
        w2.close()


def test_handles_do_not_carry_over_to_another_state_dir(tmp_path: Path) -> None:
    w, exp = _local_world(tmp_path)

    async def first() -> bytes:
        return await _root(w.client(), exp)

    try:
        root = w.run(first())
    finally:
        w.close()
    other_state = tmp_path / "elsewhere"
    other_state.mkdir()
    w2 = make_world(other_state, [f"{exp} *(rw,no_root_squash)"], local=True)
    try:
        w2.run(expect(w2.client(), [op.putfh(root)], N.NFS4ERR_STALE))
    finally:
        w2.close()


def _special_files(exp: Path) -> list[bytes]:
    """A FIFO, a bound UNIX socket and a character device in the export; their names."""
    import socket
    import stat

    os.mkfifo(exp / "fifo")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(exp / "sock"))
    os.mknod(exp / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    return [b"fifo", b"sock", b"null"]


async def test_open_of_sockets_fifos_and_devices_is_symlink(tmp_path: Path) -> None:
    """RFC 7530 §16.16.5: OPEN of anything but a regular file or directory: NFS4ERR_SYMLINK."""
    w, exp = _local_world(tmp_path)
    names = _special_files(exp)

    try:
        c = w.client()
        root = await _root(c, exp)
        cid = await new_clientid(c)
        for i, name in enumerate(names):
            plain = op.open(1, cid, b"o%d" % i, name)
            await expect(c, [op.putfh(root), plain], N.NFS4ERR_SYMLINK)
            create = op.open(1, cid, b"c%d" % i, name, create=unchecked())
            await expect(c, [op.putfh(root), create], N.NFS4ERR_SYMLINK)
    finally:
        w.close()


async def test_readlink_of_a_directory_and_a_fifo_is_inval(tmp_path: Path) -> None:
    w, exp = _local_world(tmp_path)
    _special_files(exp)

    try:
        c = w.client()
        root = await _root(c, exp)
        await expect(c, [op.putfh(root), ops.readlink()], N.NFS4ERR_INVAL)
        await expect(c, [op.putfh(root), op.lookup(b"fifo"), ops.readlink()], N.NFS4ERR_INVAL)
    finally:
        w.close()


async def test_lookup_of_a_name_that_is_not_utf8_is_inval(tmp_path: Path) -> None:
    """Even when a file of that (latin-1) name exists on disk (RFC 7530 §12.7)."""
    w, exp = _local_world(tmp_path)
    (exp / os.fsdecode(b"caf\xe9")).write_bytes(b"x")

    try:
        c = w.client()
        root = await _root(c, exp)
        await expect(c, [op.putfh(root), op.lookup(b"caf\xe9")], N.NFS4ERR_INVAL)
    finally:
        w.close()


async def test_an_open_file_renamed_over_stays_usable_until_its_close(tmp_path: Path) -> None:
    """As a local open file (and knfsd's), the open keeps the replaced file alive: its
    stateid reads and writes it and CLOSE succeeds; then its handle is stale."""
    w, exp = _local_world(tmp_path)
    (exp / "new").write_bytes(b"new contents")

    try:
        c = w.client()
        root = await _root(c, exp)
        cid = await new_clientid(c)
        o = await open_file(c, root, cid, b"o", b"f")
        await c.check([op.putfh(o.fh), op.write(o.stateid, 0, b"old contents")])
        await c.check([op.putfh(root), op.savefh(), op.rename(b"new", b"f")])
        assert (exp / "f").read_bytes() == b"new contents"
        (_, got) = await c.check([op.putfh(o.fh), op.read(o.stateid, 0, 100)])
        assert got.data == b"old contents"
        await c.check([op.putfh(o.fh), op.close(o.seqid, o.stateid)])
        await expect(c, [op.putfh(o.fh)], N.NFS4ERR_STALE)
    finally:
        w.close()
