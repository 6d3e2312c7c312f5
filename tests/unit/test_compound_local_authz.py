"""Authorization over `LocalBackend`, held to the local kernel: each case runs the same
operation as the same user locally (`setpriv`, tests/localuser.py) and over NFS (COMPOUNDs
through the in-process server), and asserts the same outcome -- ACLs, set-id clearing, setgid
directories, sticky directories, protected hard links, the owner override -- and that READ,
WRITE and SETATTR(size) are checked on every call, whatever the stateid (RFC 7530 §16.16.5)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from nfs4_fixtures import (
    ANON,
    RW,
    R,
    World,
    attrs_of,
    expect,
    export_root,
    fattr,
    lookup_fh,
    make_world,
    new_clientid,
    open_file,
    ops,
    others_io_is_refused,
    readdir_all,
    user,
)

from pynfsd.client.nfs4 import Nfs4Client, op
from pynfsd.fs import creds
from pynfsd.gen import nfs4 as N
from tests.localuser import NOBODY, acls_supported, kernel_dir, set_acl, sh_as_user

pytestmark = pytest.mark.skipif(not creds.supported(), reason="needs root on Linux")
ACCESS4_READ, ACCESS4_MODIFY, ACCESS4_EXECUTE = 0x01, 0x04, 0x20


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[World, Path]]:
    """An in-process server exporting a fresh 0755 directory that users can reach locally."""
    with kernel_dir() as exp:
        w = make_world(tmp_path, [f"{exp} *(rw,no_root_squash)"], local=True)
        try:
            yield w, exp
        finally:
            w.close()


async def _root(c: Nfs4Client, exp: Path) -> bytes:
    return await export_root(c, *[os.fsencode(p) for p in exp.parts[1:]])


def _file(path: Path, mode: int, data: bytes = b"data", uid: int = 0, gid: int = 0) -> Path:
    path.write_bytes(data)
    os.chown(path, uid, gid)
    path.chmod(mode)
    return path


def _dir(path: Path, mode: int, gid: int = 0) -> Path:
    path.mkdir()
    os.chown(path, 0, gid)
    path.chmod(mode)
    return path


async def test_acl_entries_decide_read_as_locally(env: tuple[World, Path]) -> None:
    w, exp = env
    if not acls_supported(exp):
        pytest.skip("no POSIX ACLs here")
    set_acl(_file(exp / "denied", 0o644), {NOBODY: 0})  # mode says yes, the ACL no
    set_acl(_file(exp / "granted", 0o600), {NOBODY: 4})  # mode says no, the ACL yes
    local = {n: sh_as_user(f"cat {exp / n}") == 0 for n in ("denied", "granted")}
    assert local == {"denied": False, "granted": True}

    c = w.client(user(NOBODY))
    root = await _root(c, exp)
    cid = await new_clientid(c)
    out = {}
    for name in ("denied", "granted"):
        fh = await lookup_fh(c, root, name.encode())
        read = await c.compound([op.putfh(fh), op.read(ANON, 0, 10)])
        acc = await c.compound([op.putfh(fh), op.access(ACCESS4_READ)])
        opened = await c.compound(
            [op.putfh(root), op.open(1, cid, name.encode(), name.encode(), access=1)]
        )
        granted = bool(acc.resarray[-1].value.value.access & ACCESS4_READ)
        statuses = {read.status, opened.status}
        assert statuses in ({N.NFS4_OK}, {N.NFS4ERR_ACCESS}), (name, statuses)
        assert granted == (read.status == N.NFS4_OK), name
        out[name] = granted
    assert out == local


@pytest.mark.parametrize("mode", [0o4777, 0o2777, 0o6777])
async def test_a_users_write_clears_set_id_bits_as_locally(env: tuple[World, Path], mode: int) -> None:
    w, exp = env
    here, there = _file(exp / "local", mode), _file(exp / "nfs", mode)
    assert sh_as_user(f"printf x >> {here}") == 0

    c = w.client(user(NOBODY))
    fh = await lookup_fh(c, await _root(c, exp), b"nfs")
    await c.check([op.putfh(fh), op.write(ANON, 4, b"x")])
    assert stat.S_IMODE(there.stat().st_mode) == stat.S_IMODE(here.stat().st_mode) == 0o777
    assert there.read_bytes() == here.read_bytes() == b"datax"


async def test_setgid_directories_pass_their_group_on_as_locally(env: tuple[World, Path]) -> None:
    w, exp = env
    d = _dir(exp / "shared", 0o2777, gid=1234)
    assert sh_as_user(f"mkdir {d}/ldir && touch {d}/lfile") == 0

    c = w.client(user(NOBODY))
    dfh = await lookup_fh(c, await _root(c, exp), b"shared")
    await c.check([op.putfh(dfh), op.mkdir(b"ndir", 0o755)])
    await open_file(c, dfh, await new_clientid(c), b"o", b"nfile")

    def owner(name: str) -> tuple[int, int, int]:
        st = (d / name).stat()
        return st.st_uid, st.st_gid, st.st_mode & 0o2000

    assert owner("ndir") == owner("ldir") == (NOBODY, 1234, 0o2000)
    assert owner("nfile") == owner("lfile") == (NOBODY, 1234, 0)


async def test_sticky_directories_keep_others_files_as_locally(env: tuple[World, Path]) -> None:
    w, exp = env
    d = _dir(exp / "tmp", 0o1777)
    for name in ("lf", "nf", "own"):
        _file(d / name, 0o666, uid=1000, gid=1000)
    assert sh_as_user(f"rm -f {d}/lf") != 0 and (d / "lf").exists()

    dfh = await lookup_fh(w.client(), await _root(w.client(), exp), b"tmp")
    res = await w.client(user(NOBODY)).compound([op.putfh(dfh), op.remove(b"nf")])
    assert res.status in (N.NFS4ERR_PERM, N.NFS4ERR_ACCESS)
    await w.client(user(1000)).check([op.putfh(dfh), op.remove(b"own")])  # the owner may
    assert (d / "nf").exists() and not (d / "own").exists()


async def test_protected_hardlinks_apply_as_locally(env: tuple[World, Path]) -> None:
    w, exp = env
    if Path("/proc/sys/fs/protected_hardlinks").read_text().strip() != "1":
        pytest.skip("fs.protected_hardlinks is off")
    d = _dir(exp / "pub", 0o777)
    _file(d / "roots", 0o600)
    _file(d / "mine", 0o600, uid=NOBODY, gid=NOBODY)
    assert sh_as_user(f"ln {d}/roots {d}/l1") != 0 and not (d / "l1").exists()

    c = w.client(user(NOBODY))
    dfh = await lookup_fh(c, await _root(c, exp), b"pub")
    for src, dst, ok in ((b"roots", b"n1", False), (b"mine", b"n2", True)):
        sfh = await lookup_fh(c, dfh, src)
        res = await c.compound([op.putfh(sfh), op.savefh(), op.putfh(dfh), ops.link(dst)])
        assert (res.status == N.NFS4_OK) == ok, (src, res.status)
    assert not (d / "n1").exists() and (d / "n2").exists()


async def test_the_owner_keeps_writing_after_chmod_0400_as_locally(env: tuple[World, Path]) -> None:
    w, exp = env
    d = _dir(exp / "pub", 0o777)
    script = f"exec 3<>{d}/lf && chmod 400 {d}/lf && printf again >&3"
    assert sh_as_user(f"touch {d}/lf && {script}") == 0

    c = w.client(user(NOBODY))
    dfh = await lookup_fh(c, await _root(c, exp), b"pub")
    o = await open_file(c, dfh, await new_clientid(c), b"o", b"nf", access=RW)
    await c.check([op.putfh(o.fh), ops.setattr({N.FATTR4_MODE: 0o400}, o.stateid)])
    await c.check([op.putfh(o.fh), op.write(o.stateid, 0, b"again")])
    other = w.client(user(NOBODY + 1))  # not the owner: the mode applies
    await expect(other, [op.putfh(o.fh), op.write(o.stateid, 0, b"x")], N.NFS4ERR_ACCESS)
    assert (d / "nf").read_bytes() == (d / "lf").read_bytes() == b"again"


async def test_another_users_io_with_the_owners_open_stateid_is_refused(env: tuple[World, Path]) -> None:
    w, exp = env
    d = _dir(exp / "pub", 0o777)

    owner, other = w.client(user(1000)), w.client(user(1001))
    dfh = await lookup_fh(owner, await _root(owner, exp), b"pub")
    o = await open_file(owner, dfh, await new_clientid(owner), b"o", b"f", access=RW)
    await owner.check([op.putfh(o.fh), ops.setattr({N.FATTR4_MODE: 0o600}, o.stateid)])
    await owner.check([op.putfh(o.fh), op.write(o.stateid, 0, b"owner's")])
    await others_io_is_refused(other, o)
    acc = await other.check([op.putfh(o.fh), op.access(ACCESS4_READ | ACCESS4_MODIFY)])
    assert acc[-1].access == 0
    assert (d / "f").read_bytes() == b"owner's"


async def test_new_objects_belong_to_the_caller_with_the_mode_asked_for(env: tuple[World, Path]) -> None:
    w, exp = env
    d = _dir(exp / "pub", 0o777)

    c = w.client(user(NOBODY))
    dfh = await lookup_fh(c, await _root(c, exp), b"pub")
    await c.check([op.putfh(dfh), op.mkdir(b"wide", 0o777)])
    await c.check([op.putfh(dfh), op.symlink(b"ln", b"target")])
    await expect(c, [op.putfh(dfh), ops.create(N.NF4CHR, b"dev", N.specdata4(1, 3))],
                 N.NFS4ERR_PERM)  # mknod of a device needs CAP_MKNOD, as locally
    st = (d / "wide").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, NOBODY, 0o777)
    assert os.lstat(d / "ln").st_uid == NOBODY and not (d / "dev").exists()
    assert sh_as_user(f"mknod {d}/ldev c 1 3") != 0


async def test_a_users_truncate_clears_set_id_bits_as_locally(env: tuple[World, Path]) -> None:
    w, exp = env
    here, there = _file(exp / "local", 0o6777), _file(exp / "nfs", 0o6777)
    assert sh_as_user(f"truncate -s 2 {here}") == 0

    c = w.client(user(NOBODY))
    fh = await lookup_fh(c, await _root(c, exp), b"nfs")
    await c.check([op.putfh(fh), ops.setattr({N.FATTR4_SIZE: 2})])
    assert stat.S_IMODE(there.stat().st_mode) == stat.S_IMODE(here.stat().st_mode) == 0o777
    assert there.read_bytes() == here.read_bytes() == b"da"


# ------------------------------------------------------------ READDIR without search permission

_LISTING_ATTRS = [N.FATTR4_TYPE, N.FATTR4_RDATTR_ERROR, N.FATTR4_MOUNTED_ON_FILEID]


async def test_a_readable_unsearchable_directory_lists_its_names_as_locally(
    env: tuple[World, Path],
) -> None:
    """Mode 0744 owned by root: the user may list the names (`ls`) but reach no entry (`ls -l`
    fails per entry). Over NFS the names come with rdattr_error NFS4ERR_ACCESS and the
    mounted_on_fileid the directory lists, across READDIRs resumed from their cookies."""
    w, exp = env
    d = _dir(exp / "listable", 0o744)
    names = sorted(f"f{i:02d}" for i in range(12))
    for n in names:
        _file(d / n, 0o644)
    assert sh_as_user(f"ls {d} > /dev/null") == 0 and sh_as_user(f"ls -l {d} > /dev/null") != 0
    assert sh_as_user(f"cat {d}/f00") != 0

    c = w.client(user(NOBODY))
    dfh = await lookup_fh(c, await _root(c, exp), b"listable")
    got = await readdir_all(c, dfh, attrs=_LISTING_ATTRS, maxcount=200)  # several calls
    assert sorted(e.name.decode() for e in got) == names
    for e in got:
        assert attrs_of(e.attrs) == {
            N.FATTR4_RDATTR_ERROR: N.NFS4ERR_ACCESS,
            N.FATTR4_MOUNTED_ON_FILEID: os.lstat(d / e.name.decode()).st_ino,
        }
    # without rdattr_error the entry's error is the whole READDIR's (RFC 7530 §16.24.4)
    bare = [op.putfh(dfh), op.readdir(attrs=[N.FATTR4_TYPE])]
    await expect(c, bare, N.NFS4ERR_ACCESS)
    await expect(c, [op.putfh(dfh), op.lookup(b"f00")], N.NFS4ERR_ACCESS)
    mine = await readdir_all(w.client(), dfh, attrs=_LISTING_ATTRS)  # root reaches them
    assert {attrs_of(e.attrs)[N.FATTR4_RDATTR_ERROR] for e in mine} == {N.NFS4_OK}


async def test_a_directory_neither_readable_nor_searchable_is_not_listed(env: tuple[World, Path]) -> None:
    w, exp = env
    d = _dir(exp / "closed", 0o700)
    _file(d / "f", 0o644)
    assert sh_as_user(f"ls {d}") != 0

    c = w.client(user(NOBODY))
    dfh = await lookup_fh(w.client(), await _root(c, exp), b"closed")
    await expect(c, [op.putfh(dfh), op.readdir(attrs=_LISTING_ATTRS)], N.NFS4ERR_ACCESS)


# ------------------------------------------------------------ read-if-execute (knfsd)


async def test_a_binary_the_user_may_only_execute_is_read_over_nfs(env: tuple[World, Path]) -> None:
    """knfsd's read-if-execute: OPEN for read and READ of a 0711 file succeed for a user who
    may execute it (a client reads a binary to run it); ACCESS still answers as the kernel
    (execute yes, read no); 0700 stays closed, 0744 open; OPEN for write gets no exception."""
    w, exp = env
    for mode in (0o711, 0o700, 0o744):
        _file(exp / f"m{mode:o}", mode, b"\x7fELF binary")
    assert sh_as_user(f"test -x {exp}/m711 && ! test -r {exp}/m711 && ! cat {exp}/m711") == 0
    expected = {0o711: True, 0o700: False, 0o744: True}

    c = w.client(user(NOBODY))
    root = await _root(c, exp)
    cid = await new_clientid(c)
    out = {}
    for i, mode in enumerate(expected):
        name = f"m{mode:o}".encode()
        owner = b"o%d" % i
        res = await c.compound([op.putfh(root), op.open(1, cid, owner, name, access=R)])
        if res.status != N.NFS4_OK:
            assert res.status == N.NFS4ERR_ACCESS
            out[mode] = False
            continue
        o = await open_file(c, root, cid, owner + b"x", name, create=False, access=R)
        (_, read) = await c.check([op.putfh(o.fh), op.read(o.stateid, 0, 100)])
        (_, anon) = await c.check([op.putfh(o.fh), op.read(ANON, 0, 100)])
        assert read.data == anon.data == b"\x7fELF binary"
        out[mode] = True
    fh = await lookup_fh(c, root, b"m711")
    acc = await c.check([op.putfh(fh), op.access(ACCESS4_READ | ACCESS4_EXECUTE)])
    assert acc[-1].access == ACCESS4_EXECUTE
    both = [op.putfh(root), op.open(1, cid, b"rw", b"m711", access=RW)]
    await expect(c, both, N.NFS4ERR_ACCESS)
    await expect(c, [op.putfh(await lookup_fh(c, root, b"m700")), op.read(ANON, 0, 9)],
                 N.NFS4ERR_ACCESS)  # fmt: skip
    assert out == expected


async def test_lookup_is_searched_as_each_caller_even_when_answered_from_memory(
    env: tuple[World, Path],
) -> None:
    """LOOKUPs by root and by a member of the directory's group let later ones be answered
    on the event loop; a user who may not search the directory is still refused, as locally,
    and so is the member once a chmod takes the permission away."""
    w, exp = env
    _file(_dir(exp / "priv", 0o750, gid=4242) / "f", 0o644)
    root, member, outsider = w.client(), w.client(user(NOBODY, 4242)), w.client(user(NOBODY))
    assert sh_as_user(f"stat {exp / 'priv' / 'f'}") != 0
    dfh = await lookup_fh(root, await _root(root, exp), b"priv")
    for _ in range(2):  # the second of each may come from memory
        await lookup_fh(root, dfh, b"f")
        await lookup_fh(member, dfh, b"f")
        await expect(outsider, [op.putfh(dfh), op.lookup(b"f")], N.NFS4ERR_ACCESS)
    (exp / "priv").chmod(0o700)
    await expect(member, [op.putfh(dfh), op.lookup(b"f")], N.NFS4ERR_ACCESS)
    await lookup_fh(root, dfh, b"f")


async def test_access_after_create_and_after_a_local_chmod_is_the_kernels(
    env: tuple[World, Path],
) -> None:
    """The ACCESS a client sends after creating a file, and again after a chmod made on the
    server, answer as the kernel would for that user, whether or not they come from memory."""
    w, exp = env
    pub = _dir(exp / "pub", 0o777)
    c = w.client(user(NOBODY))
    dfh = await lookup_fh(c, await _root(c, exp), b"pub")
    fh = (await open_file(c, dfh, await new_clientid(c), b"o", b"mine")).fh  # 0644
    want = ACCESS4_READ | ACCESS4_MODIFY | ACCESS4_EXECUTE
    for _ in range(2):
        res = await c.check([op.putfh(fh), op.access(want)])
        assert res[1].access == ACCESS4_READ | ACCESS4_MODIFY
    (pub / "mine").chmod(0o400)
    assert sh_as_user(f"test -w {pub / 'mine'}") != 0
    res = await c.check([op.putfh(fh), op.access(want)])
    assert res[1].access == ACCESS4_READ


async def test_the_access_after_open_create_takes_no_second_round_trip_and_is_not_kept(
    env: tuple[World, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OPEN(create) asks the kernel the caller's access to the new file in the same worker
    call, for the ACCESS later in that COMPOUND only: a chmod on the server after it, or a
    SETATTR of the mode inside the COMPOUND, is answered anew."""
    w, exp = env
    pub = _dir(exp / "pub", 0o777)
    c = w.client(user(NOBODY))
    dfh = await lookup_fh(c, await _root(c, exp), b"pub")
    cid = await new_clientid(c)
    await open_file(c, dfh, cid, b"first", b"first")  # the client's record is written first
    calls: list[str] = []
    pool = w.server.pool
    plain = pool.run_as

    async def counted(ident: creds.Identity, fn: object, *args: object) -> object:
        calls.append(getattr(fn, "__qualname__", repr(fn)))
        return await plain(ident, fn, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(pool, "run_as", counted)
    want = ACCESS4_READ | ACCESS4_MODIFY | ACCESS4_EXECUTE
    create = ops.open_create(1, cid, b"o", b"new", N.UNCHECKED4, fattr({N.FATTR4_MODE: 0o600}))
    res = await c.check([op.putfh(dfh), create, op.getfh(), op.access(want)])
    assert res[3].access == ACCESS4_READ | ACCESS4_MODIFY
    assert len(calls) == 1, calls  # the create and the kernel's access answer together
    fh = res[2].object
    (pub / "new").chmod(0o400)
    assert sh_as_user(f"test -w {pub / 'new'}") != 0
    res = await c.check([op.putfh(fh), op.access(want)])
    assert res[1].access == ACCESS4_READ  # asked again: not kept beyond its COMPOUND
    again = ops.open_create(2, cid, b"o", b"new", N.UNCHECKED4, fattr({N.FATTR4_MODE: 0o600}),
                            access=R)
    res = await c.check([op.putfh(dfh), again, op.getfh(), ops.setattr({N.FATTR4_MODE: 0}),
                         op.access(want)])
    assert res[4].access == 0  # the mode changed inside the COMPOUND: asked anew
