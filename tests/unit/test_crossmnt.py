"""Filesystems mounted inside an export (knfsd's crossmnt): COMPOUNDs over `LocalBackend` with a
real tmpfs mounted in a temporary export (the tests run as root and umount in a finally).

With ``crossmnt``, or when the mount point is itself exported, LOOKUP and READDIR cross into the
mount (its own fsid, mounted_on_fileid = the covered directory, RFC 7530 §5.8.2.33), its
filehandles survive a restart and LOOKUPP leads back. Without, LOOKUP is NFS4ERR_NOENT (never
NFS4ERR_XDEV: not a LOOKUP error, RFC 7530 §15.2), READDIR leaves it out, and it is logged once.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from nfs4_fixtures import (
    World,
    attrs_of,
    expect,
    export_root,
    getattrs,
    lookup_fh,
    make_file,
    make_world,
    mkdir,
    readdir_all,
)

from pynfsd.client.nfs4 import Nfs4Client, op
from pynfsd.exports.fsuuid import with_fs_uuid
from pynfsd.exports.mounts import (
    DEFAULT_MAX_MOUNTS,
    MountTable,
    mounts_below,
    parse_mountinfo,
)
from pynfsd.exports.resolver import export_fsid
from pynfsd.exports.types import ExportOptions
from pynfsd.gen import nfs4 as N

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting tmpfs needs root")

FSID, FILEID, MOUNTED_ON = N.FATTR4_FSID, N.FATTR4_FILEID, N.FATTR4_MOUNTED_ON_FILEID
NOT_CROSSED_LOG = "pynfsd.nfs4.crossing"


@contextmanager
def tmpfs(path: Path) -> Iterator[Path]:
    """A small tmpfs mounted on ``path`` for the duration (unmounted even on failure)."""
    path.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "pynfsd-test", str(path)], check=True)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)
            pytest.fail(f"{path} was still busy: the server kept it open after close()")


@contextmanager
def server(tmp_path: Path, *lines: str) -> Iterator[World]:
    w = make_world(tmp_path, lines, local=True)
    try:
        yield w
    finally:
        w.close()


def _comps(path: Path) -> list[bytes]:
    return [os.fsencode(p) for p in path.parts[1:]]


async def _root(c: Nfs4Client, path: Path) -> bytes:
    return await export_root(c, *_comps(path))


@pytest.fixture
def exp(tmp_path: Path) -> Iterator[Path]:
    """An export directory with ``mnt`` (a tmpfs holding ``inside``) and a plain ``dir``."""
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "dir").mkdir()
    (exp / "mnt").mkdir()
    with tmpfs(exp / "mnt") as mnt:
        (mnt / "inside").write_bytes(b"on tmpfs")
        yield exp


def _covered_ino(exp: Path) -> int:
    return next(e.inode() for e in os.scandir(exp) if e.name == "mnt")


async def test_crossmnt_lookup_enters_the_mount(tmp_path: Path, exp: Path) -> None:
    with server(tmp_path, f"{exp} *(rw,no_root_squash,crossmnt)") as w:

        c = w.client()
        root = await _root(c, exp)
        parent = await getattrs(c, root, FSID)
        mnt = await lookup_fh(c, root, b"mnt")
        got = await getattrs(c, mnt, FSID, FILEID, MOUNTED_ON)
        assert got[FSID] != parent[FSID]
        assert got[FILEID] == os.stat(exp / "mnt").st_ino  # the tmpfs root
        assert got[MOUNTED_ON] == _covered_ino(exp) != got[FILEID]
        inside = await lookup_fh(c, mnt, b"inside")
        assert (await getattrs(c, inside, FSID))[FSID] == got[FSID]
        plain = await getattrs(c, await lookup_fh(c, root, b"dir"), FSID, FILEID, MOUNTED_ON)
        assert plain[FSID] == parent[FSID] and plain[MOUNTED_ON] == plain[FILEID]


async def test_crossmnt_readdir_lists_the_mount_with_its_fsid(tmp_path: Path, exp: Path) -> None:
    with server(tmp_path, f"{exp} *(rw,no_root_squash,crossmnt)") as w:

        c = w.client()
        root = await _root(c, exp)
        parent = (await getattrs(c, root, FSID))[FSID]
        child = (await getattrs(c, await lookup_fh(c, root, b"mnt"), FSID))[FSID]
        ents = await readdir_all(c, root, attrs=[FSID, FILEID, MOUNTED_ON, N.FATTR4_TYPE])
        by_name = {e.name: attrs_of(e.attrs) for e in ents}
        assert set(by_name) == {b"dir", b"mnt"}
        assert by_name[b"mnt"][FSID] == child != parent
        assert by_name[b"mnt"][FILEID] == os.stat(exp / "mnt").st_ino
        assert by_name[b"mnt"][MOUNTED_ON] == _covered_ino(exp)
        assert by_name[b"mnt"][N.FATTR4_TYPE] == N.NF4DIR
        assert by_name[b"dir"][FSID] == parent


async def test_files_created_inside_land_on_the_mount(tmp_path: Path, exp: Path) -> None:
    with server(tmp_path, f"{exp} *(rw,no_root_squash,crossmnt)") as w:

        c = w.client()
        mnt = await lookup_fh(c, await _root(c, exp), b"mnt")
        await make_file(c, mnt, b"new")
        await mkdir(c, mnt, b"newdir")
    tmpfs_dev = os.stat(exp / "mnt").st_dev
    assert os.stat(exp / "mnt" / "new").st_dev == tmpfs_dev != os.stat(exp).st_dev
    assert os.stat(exp / "mnt" / "newdir").st_dev == tmpfs_dev


async def test_lookupp_from_the_mount_root_returns_to_the_parent_export(
    tmp_path: Path, exp: Path
) -> None:
    with server(tmp_path, f"{exp} *(rw,no_root_squash,crossmnt)") as w:

        c = w.client()
        root = await _root(c, exp)
        mnt = await lookup_fh(c, root, b"mnt")
        vals = await c.check([op.putfh(mnt), op.lookupp(), op.getfh()])
        assert vals[-1].object == root
        # and one level deeper: from a directory of the mount to the mount root
        sub = await mkdir(c, mnt, b"sub")
        vals = await c.check([op.putfh(sub), op.lookupp(), op.getfh()])
        assert vals[-1].object == mnt


def test_submount_handles_work_after_a_restart(tmp_path: Path, exp: Path) -> None:
    line = f"{exp} *(rw,no_root_squash,crossmnt)"

    async def before(c: Nfs4Client) -> tuple[bytes, bytes, bytes, dict[int, object]]:
        root = await _root(c, exp)
        mnt = await lookup_fh(c, root, b"mnt")
        inside = await lookup_fh(c, mnt, b"inside")
        return root, mnt, inside, await getattrs(c, mnt, FSID, MOUNTED_ON)

    with server(tmp_path, line) as w:
        root, mnt, inside, attrs = w.run(before(w.client()))
    with server(tmp_path, line) as w2:  # a fresh server, same state directory

        async def after() -> None:
            c = w2.client()
            got = await c.check([op.putfh(inside), op.getattr(FILEID)])
            assert attrs_of(got[1])[FILEID] == os.stat(exp / "mnt" / "inside").st_ino
            assert await getattrs(c, mnt, FSID, MOUNTED_ON) == attrs
            vals = await c.check([op.putfh(mnt), op.lookupp(), op.getfh()])
            assert vals[-1].object == root

        w2.run(after())


def test_every_submount_is_found_again_after_a_restart(tmp_path: Path, exp: Path) -> None:
    line = f"{exp} *(rw,no_root_squash,crossmnt)"
    with tmpfs(exp / "mnt2"):
        with server(tmp_path, line) as w:

            async def before() -> list[bytes]:
                c = w.client()
                root = await _root(c, exp)
                return [await lookup_fh(c, root, name) for name in (b"mnt", b"mnt2")]

            handles = w.run(before())
        with server(tmp_path, line) as w2:

            async def after() -> None:
                c = w2.client()
                for fh, name in zip(handles, ("mnt", "mnt2"), strict=True):
                    got = await getattrs(c, fh, FILEID)
                    assert got[FILEID] == os.stat(exp / name).st_ino
                await expect(c, [op.putfh(handles[0][:-1] + b"?")], N.NFS4ERR_STALE)

            w2.run(after())


def test_nested_mounts_are_crossed_and_found_again_after_a_restart(
    tmp_path: Path, exp: Path
) -> None:
    line = f"{exp} *(rw,no_root_squash,crossmnt)"
    with tmpfs(exp / "mnt" / "deeper"):
        with server(tmp_path, line) as w:

            async def before() -> tuple[bytes, set[int]]:
                c = w.client()
                root = await _root(c, exp)
                deeper = await lookup_fh(c, root, b"mnt", b"deeper")
                fsids = set()
                for fh in (root, await lookup_fh(c, root, b"mnt"), deeper):
                    fsid = (await getattrs(c, fh, FSID))[FSID]
                    fsids.add((fsid.major, fsid.minor))
                return await make_file(c, deeper, b"f"), fsids

            f, fsids = w.run(before())
        assert len(fsids) == 3
        with server(tmp_path, line) as w2:

            async def after() -> None:
                c = w2.client()
                got = await getattrs(c, f, FSID, FILEID)
                assert (got[FSID].major, got[FSID].minor) in fsids
                assert got[FILEID] == os.stat(exp / "mnt" / "deeper" / "f").st_ino

            w2.run(after())


async def test_crossmnt_below_an_fsid0_root(tmp_path: Path, exp: Path) -> None:
    with server(tmp_path, f"{exp} *(rw,no_root_squash,fsid=0,crossmnt)") as w:

        c = w.client()
        vals = await c.check([op.putrootfh(), op.getfh(), op.lookup(b"mnt"), op.getfh()])
        root, mnt = vals[1].object, vals[3].object
        got = await getattrs(c, mnt, FSID, MOUNTED_ON)
        assert (got[FSID].major, got[FSID].minor) != (0, 0)
        assert got[MOUNTED_ON] == _covered_ino(exp)
        vals = await c.check([op.putfh(mnt), op.lookupp(), op.getfh()])
        assert vals[-1].object == root


async def test_submount_inherits_the_parent_export_options(tmp_path: Path, exp: Path) -> None:
    with server(tmp_path, f"{exp} *(ro,crossmnt)") as w:

        c = w.client()
        mnt = await lookup_fh(c, await _root(c, exp), b"mnt")
        await expect(c, [op.putfh(mnt), op.mkdir(b"x")], N.NFS4ERR_ROFS)
        krb = await c.compound([op.putfh(mnt), op.getattr(FSID)])
        assert krb.status == N.NFS4_OK  # sec=sys inherited: AUTH_SYS may use it


async def test_exported_mount_point_is_crossed_without_crossmnt(tmp_path: Path, exp: Path) -> None:
    m2 = exp / "dir" / "m2"
    with tmpfs(m2), server(tmp_path, f"{exp} *(rw,no_root_squash)", f"{m2} *(ro)") as w:
        (m2 / "there").write_bytes(b"")

        c = w.client()
        dir_fh = await lookup_fh(c, await _root(c, exp), b"dir")
        # PUTFH of a plain directory (no pseudo-fs node): the backend meets the mount
        vals = await c.check([op.putfh(dir_fh), op.lookup(b"m2"), op.getfh()])
        got = await getattrs(c, vals[-1].object, FSID)
        # no fsid=: named by its filesystem's uuid, as rpc.mountd names it
        assert got[FSID].major == export_fsid(str(m2), with_fs_uuid(str(m2), ExportOptions()))
        await lookup_fh(c, vals[-1].object, b"there")
        # its own options (ro), not the parent's
        await expect(c, [op.putfh(vals[-1].object), op.mkdir(b"x")], N.NFS4ERR_ROFS)


async def test_without_crossmnt_the_mount_is_noent_left_out_and_logged_once(
    tmp_path: Path, exp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with server(tmp_path, f"{exp} *(rw,no_root_squash)") as w:

        with caplog.at_level(logging.WARNING, logger=NOT_CROSSED_LOG):
            c = w.client()
            root = await _root(c, exp)
            for _ in range(3):
                res = await expect(c, [op.putfh(root), op.lookup(b"mnt")], N.NFS4ERR_NOENT)
                assert res.status != N.NFS4ERR_XDEV
            names = [e.name for e in await readdir_all(c, root, attrs=[FSID])]
            assert names == [b"dir"]
            # a READDIR that can return one entry at a time still reaches the end
            one = await readdir_all(c, root, maxcount=200)
            assert [e.name for e in one] == [b"dir"]
            await expect(c, [op.putfh(root), op.mkdir(b"mnt")], N.NFS4ERR_EXIST)
        lines = [r for r in caplog.records if r.name == NOT_CROSSED_LOG]
        assert len(lines) == 1
        assert str(exp / "mnt") in lines[0].getMessage()


async def test_export_behind_a_mount_that_is_not_crossed_is_reached_by_a_pseudo_dir(
    tmp_path: Path, exp: Path
) -> None:
    (exp / "mnt" / "sub").mkdir()
    inner = f"{exp / 'mnt' / 'sub'} *(rw,no_root_squash)"
    with server(tmp_path, f"{exp} *(rw,no_root_squash)", inner) as w:

        c = w.client()
        root = await _root(c, exp)
        mnt = await lookup_fh(c, root, b"mnt")
        got = await getattrs(c, mnt, FSID)
        assert (got[FSID].major, got[FSID].minor) == (0, 0)  # a pseudo directory
        assert [e.name for e in await readdir_all(c, mnt)] == [b"sub"]
        sub = await lookup_fh(c, mnt, b"sub")
        assert await getattrs(c, sub, FILEID) == {FILEID: os.stat(exp / "mnt" / "sub").st_ino}
        ents = await readdir_all(c, root, attrs=[FSID])
        assert sorted(e.name for e in ents) == [b"dir", b"mnt"]
        vals = await c.check([op.putfh(sub), op.lookupp(), op.lookupp(), op.getfh()])
        assert vals[-1].object == root
        await expect(c, [op.putfh(mnt), op.mkdir(b"x")], N.NFS4ERR_ROFS)


async def test_no_lookup_in_a_mount_that_is_not_crossed_reaches_it(tmp_path: Path, exp: Path) -> None:
    """The parent's handles never open objects of the mounted filesystem."""
    with server(tmp_path, f"{exp} *(rw,no_root_squash)") as w:

        c = w.client()
        root = await _root(c, exp)
        await expect(
            c, [op.putfh(root), op.lookup(b"mnt"), op.lookup(b"inside")], N.NFS4ERR_NOENT
        )


async def test_crossed_mounts_per_view_are_bounded(tmp_path: Path, exp: Path) -> None:
    """One past ``max_mounts`` submounts: the view's table starts afresh, handles still work."""
    with tmpfs(exp / "mnt2"), server(tmp_path, f"{exp} *(rw,no_root_squash,crossmnt)") as w:
        w.server.views.max_mounts = 1

        c = w.client()
        root = await _root(c, exp)
        first = await lookup_fh(c, root, b"mnt")
        second = await lookup_fh(c, root, b"mnt2")
        view = await w.server.view_for("127.0.0.1")
        assert len(view.crossings.submounts) == 1
        for fh in (first, second, first):  # each found again in the mount table
            vals = await c.check([op.putfh(fh), op.lookupp(), op.getfh()])
            assert vals[-1].object == root
        assert len(view.crossings.submounts) == 1


def test_serve_has_a_max_mounts_option() -> None:
    from pynfsd.cli import build_parser

    assert build_parser().parse_args(["serve", "--max-mounts", "7"]).max_mounts == 7
    assert build_parser().parse_args(["serve"]).max_mounts == DEFAULT_MAX_MOUNTS


# ------------------------------------------------------------------ the mount table


def test_parse_mountinfo_fields_escapes_and_bound() -> None:
    text = (
        b"22 1 0:21 / /proc rw,nosuid shared:5 - proc proc rw\n"
        b"40 22 0:40 / /srv/a\\040b rw,relatime - tmpfs none rw\n"
        b"garbage line\n"
        b"41 40 8:1 /sub /srv/a\\040b/x rw master:1 shared:2 - ext4 /dev/sda1 rw\n"
    )
    mounts = parse_mountinfo(text.splitlines())
    assert [m.mount_point for m in mounts] == ["/proc", "/srv/a b", "/srv/a b/x"]
    assert mounts[2].dev == (8, 1) and mounts[2].root == "/sub" and mounts[2].fstype == "ext4"
    assert len(parse_mountinfo(text.splitlines(), max_mounts=2)) == 2
    assert mounts_below(mounts, "/srv/a b") == ["/srv/a b/x"]
    assert mounts_below(mounts, "/srv") == ["/srv/a b", "/srv/a b/x"]


def test_mount_table_is_reread_only_after_a_change(tmp_path: Path) -> None:
    table = MountTable()
    try:
        gen, mounts = table.current()
        assert table.current()[0] == gen  # unchanged table: not read again
        with tmpfs(tmp_path / "m"):
            gen2, mounts2 = table.current()
            assert gen2 > gen
            assert str(tmp_path / "m") in {m.mount_point for m in mounts2}
            assert str(tmp_path / "m") not in {m.mount_point for m in mounts}
    finally:
        table.close()
