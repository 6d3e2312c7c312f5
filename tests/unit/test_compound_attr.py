"""Attribute ops through COMPOUND: GETATTR, SETATTR, VERIFY, NVERIFY, ACCESS
(RFC 7530 §5, §16.1, §16.7, §16.15, §16.32, §16.35)."""

from __future__ import annotations

from pathlib import Path

import pytest
from nfs4_fixtures import (
    ANON,
    DENY_WRITE,
    LEASE,
    RW,
    R,
    World,
    attrs_of,
    client_time,
    expect,
    export_root,
    getattrs,
    last,
    make_file,
    make_world,
    mkdir,
    new_clientid,
    open_file,
    ops,
    user,
)

from pynfsd.client.nfs4 import Nfs4Client, bitmap, op
from pynfsd.gen import nfs4 as N
from pynfsd.nfs4.attrs import SUPPORTED_ATTRS, WRITE_ONLY_ATTRS

ACC_READ, ACC_LOOKUP, ACC_MODIFY, ACC_EXTEND, ACC_DELETE, ACC_EXECUTE = 1, 2, 4, 8, 16, 32
ACC_ALL = 0x3F
ACC_FILE = ACC_READ | ACC_MODIFY | ACC_EXTEND | ACC_EXECUTE
ACC_DIR = ACC_READ | ACC_LOOKUP | ACC_MODIFY | ACC_EXTEND | ACC_DELETE


async def _chmod(c: Nfs4Client, fh: bytes, mode: int) -> None:
    await c.check([op.putfh(fh), ops.setattr({N.FATTR4_MODE: mode})])


async def _chown(c: Nfs4Client, fh: bytes, uid: int) -> None:
    await c.check([op.putfh(fh), ops.setattr({N.FATTR4_OWNER: str(uid).encode()})])


# ------------------------------------------------------------ GETATTR (§16.7)

_READABLE = sorted(SUPPORTED_ATTRS - WRITE_ONLY_ATTRS)


@pytest.mark.parametrize("kind", ["file", "dir", "pseudo"])
async def test_getattr_of_every_supported_attribute(w: World, kind: str) -> None:
    c = w.client()
    root = await export_root(c)
    fh = {
        "file": lambda: make_file(c, root),
        "dir": lambda: mkdir(c, root, b"d"),
    }.get(kind)
    target = await fh() if fh else (await c.check([op.putrootfh(), op.getfh()]))[1].object
    got = await getattrs(c, target, *_READABLE)
    # the pseudo-fs holds no ACLs (RFC 7530 §6.2.1: `acl` unsupported there, aclsupport 0)
    served = SUPPORTED_ATTRS - ({N.FATTR4_ACL} if kind == "pseudo" else set())
    assert set(got) == set(_READABLE) & served
    assert got[N.FATTR4_SUPPORTED_ATTRS] == bitmap(sorted(served))
    assert got[N.FATTR4_ACLSUPPORT] == (0 if kind == "pseudo" else 3)
    want_type = {"file": N.NF4REG, "dir": N.NF4DIR, "pseudo": N.NF4DIR}[kind]
    assert got[N.FATTR4_TYPE] == want_type
    assert got[N.FATTR4_FILEHANDLE] == target
    assert got[N.FATTR4_LEASE_TIME] == LEASE
    assert got[N.FATTR4_RDATTR_ERROR] == N.NFS4_OK
    assert got[N.FATTR4_NAMED_ATTR] is False
    assert got[N.FATTR4_MAXNAME] == 255
    assert got[N.FATTR4_TIME_MODIFY].nseconds < 10**9
    if kind == "file":
        assert got[N.FATTR4_SIZE] == 0 and got[N.FATTR4_NUMLINKS] == 1
        assert got[N.FATTR4_MODE] == 0o644 and got[N.FATTR4_OWNER] == b"0"


async def test_getattr_of_a_write_only_attribute_is_inval(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    await expect(c, [op.putfh(root), op.getattr(N.FATTR4_TIME_MODIFY_SET)], N.NFS4ERR_INVAL)


async def test_getattr_ignores_unsupported_attributes(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    got = await getattrs(c, root, N.FATTR4_HIDDEN, N.FATTR4_TYPE, N.FATTR4_TIME_CREATE)
    assert set(got) == {N.FATTR4_TYPE}


async def test_change_and_size_follow_a_write(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root)
    before = await getattrs(c, f, N.FATTR4_CHANGE, N.FATTR4_SIZE)
    await c.check([op.putfh(f), op.write(ANON, 0, b"hello")])
    after = await getattrs(c, f, N.FATTR4_CHANGE, N.FATTR4_SIZE)
    assert after[N.FATTR4_SIZE] == 5 and after[N.FATTR4_CHANGE] > before[N.FATTR4_CHANGE]


# ------------------------------------------------------------ SETATTR (§16.32)


async def test_setattr_mode(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root)
    res = await c.compound([op.putfh(f), ops.setattr({N.FATTR4_MODE: 0o4751})])
    assert res.status == N.NFS4_OK
    assert res.resarray[-1].value.attrsset == bitmap([N.FATTR4_MODE])
    assert (await getattrs(c, f, N.FATTR4_MODE))[N.FATTR4_MODE] == 0o4751


async def test_setattr_mode_above_7777_is_inval(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    res = await expect(
        c, [op.putfh(root), ops.setattr({N.FATTR4_MODE: 0o10000})], N.NFS4ERR_INVAL
    )
    assert res.resarray[-1].value.attrsset == []


async def test_setattr_owner_and_group(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root)
    await c.check(
        [op.putfh(f), ops.setattr({N.FATTR4_OWNER: b"1234", N.FATTR4_OWNER_GROUP: b"99"})]
    )
    got = await getattrs(c, f, N.FATTR4_OWNER, N.FATTR4_OWNER_GROUP)
    assert got == {N.FATTR4_OWNER: b"1234", N.FATTR4_OWNER_GROUP: b"99"}


@pytest.mark.parametrize("attr", [N.FATTR4_OWNER, N.FATTR4_OWNER_GROUP])
@pytest.mark.parametrize("name", [b"someone@not-our.domain.example", b"no-such-user-xyzzy"])
async def test_setattr_unknown_owner_is_badowner(w: World, attr: int, name: bytes) -> None:
    c = w.client()
    root = await export_root(c)
    await expect(c, [op.putfh(root), ops.setattr({attr: name})], N.NFS4ERR_BADOWNER)


async def test_setattr_chown_by_non_root_is_perm(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root)
    await _chown(c, f, 1000)
    u = w.client(user(1000))
    await expect(u, [op.putfh(f), ops.setattr({N.FATTR4_OWNER: b"1001"})], N.NFS4ERR_PERM)
    await u.check([op.putfh(f), ops.setattr({N.FATTR4_MODE: 0o600})])  # owner may chmod
    other = w.client(user(1001))
    await expect(other, [op.putfh(f), ops.setattr({N.FATTR4_MODE: 0o777})], N.NFS4ERR_PERM)


async def test_setattr_size_with_anonymous_stateid(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root)
    await c.check([op.putfh(f), ops.setattr({N.FATTR4_SIZE: 4096})])
    assert (await getattrs(c, f, N.FATTR4_SIZE))[N.FATTR4_SIZE] == 4096


async def test_setattr_size_with_read_only_open_is_openmode(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    clientid = await new_clientid(c)
    opened = await open_file(c, root, clientid, b"o", b"f", access=R)
    await expect(
        c,
        [op.putfh(opened.fh), ops.setattr({N.FATTR4_SIZE: 1}, opened.stateid)],
        N.NFS4ERR_OPENMODE,
    )
    rw = await open_file(c, root, clientid, b"o2", b"f", access=RW)
    await c.check([op.putfh(rw.fh), ops.setattr({N.FATTR4_SIZE: 7}, rw.stateid)])


async def test_setattr_size_with_stateid_of_another_file_is_bad_stateid(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    clientid = await new_clientid(c)
    a = await open_file(c, root, clientid, b"o", b"a")
    b = await open_file(c, root, clientid, b"o", b"b", seqid=a.seqid)
    await expect(
        c,
        [op.putfh(b.fh), ops.setattr({N.FATTR4_SIZE: 1}, a.stateid)],
        N.NFS4ERR_BAD_STATEID,
    )


async def test_setattr_size_of_a_directory_is_isdir(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    await expect(c, [op.putfh(root), ops.setattr({N.FATTR4_SIZE: 0})], N.NFS4ERR_ISDIR)


async def test_setattr_times(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root)
    await c.check(
        [
            op.putfh(f),
            ops.setattr(
                {
                    N.FATTR4_TIME_ACCESS_SET: client_time(111, 5),
                    N.FATTR4_TIME_MODIFY_SET: client_time(222, 6),
                }
            ),
        ]
    )
    got = await getattrs(c, f, N.FATTR4_TIME_ACCESS, N.FATTR4_TIME_MODIFY)
    assert got[N.FATTR4_TIME_ACCESS] == N.nfstime4(111, 5)
    assert got[N.FATTR4_TIME_MODIFY] == N.nfstime4(222, 6)
    w.clock.advance(10)
    now = N.settime4(N.SET_TO_SERVER_TIME4, None)
    await c.check([op.putfh(f), ops.setattr({N.FATTR4_TIME_MODIFY_SET: now})])
    got = await getattrs(c, f, N.FATTR4_TIME_MODIFY)
    assert got[N.FATTR4_TIME_MODIFY].seconds == int(w.clock.now)


async def test_setattr_time_with_bad_nseconds_is_inval(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    bad = {N.FATTR4_TIME_MODIFY_SET: client_time(1, 10**9)}
    await expect(c, [op.putfh(root), ops.setattr(bad)], N.NFS4ERR_INVAL)


async def test_setattr_times_by_non_owner(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root)
    await _chmod(c, f, 0o666)
    u = w.client(user(1000))
    now = N.settime4(N.SET_TO_SERVER_TIME4, None)
    await u.check([op.putfh(f), ops.setattr({N.FATTR4_TIME_MODIFY_SET: now})])
    explicit = {N.FATTR4_TIME_MODIFY_SET: client_time(5)}
    await expect(u, [op.putfh(f), ops.setattr(explicit)], N.NFS4ERR_PERM)


async def test_setattr_of_a_read_only_attribute_is_inval(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    await expect(c, [op.putfh(root), ops.setattr({N.FATTR4_TYPE: N.NF4REG})], N.NFS4ERR_INVAL)


async def test_setattr_of_an_unsupported_attribute_is_attrnotsupp(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    hidden = N.fattr4(bitmap([N.FATTR4_HIDDEN]), b"\0\0\0\0")
    args = N.nfs_argop4(N.OP_SETATTR, N.SETATTR4args(ANON, hidden))
    await expect(c, [op.putfh(root), args], N.NFS4ERR_ATTRNOTSUPP)


async def test_setattr_with_truncated_values_is_badxdr(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    short = N.fattr4(bitmap([N.FATTR4_MODE]), b"")
    args = N.nfs_argop4(N.OP_SETATTR, N.SETATTR4args(ANON, short))
    await expect(c, [op.putfh(root), args], N.NFS4ERR_BADXDR)


async def test_setattr_on_pseudo_dir_is_rofs(tmp_path: Path) -> None:
    w = make_world(tmp_path, ["/srv/export *(rw,no_root_squash)"])

    try:
        c = w.client()
        await expect(c, [op.putrootfh(), ops.setattr({N.FATTR4_MODE: 0o777})], N.NFS4ERR_ROFS)
    finally:
        w.close()


# ------------------------------------------------------------ VERIFY / NVERIFY (§16.35, §16.15)


async def test_verify_and_nverify(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    is_dir = {N.FATTR4_TYPE: N.NF4DIR}
    is_reg = {N.FATTR4_TYPE: N.NF4REG}
    await c.check([op.putfh(root), ops.verify(is_dir), op.getfh()])
    await expect(c, [op.putfh(root), ops.verify(is_reg), op.getfh()], N.NFS4ERR_NOT_SAME)
    await c.check([op.putfh(root), ops.nverify(is_reg), op.getfh()])
    await expect(c, [op.putfh(root), ops.nverify(is_dir), op.getfh()], N.NFS4ERR_SAME)


async def test_verify_several_attributes(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root)
    got = await getattrs(c, f, N.FATTR4_FILEID, N.FATTR4_CHANGE)
    same = {N.FATTR4_TYPE: N.NF4REG, **got}
    await c.check([op.putfh(f), ops.verify(same)])
    await c.check([op.putfh(f), op.write(ANON, 0, b"x")])
    await expect(c, [op.putfh(f), ops.verify(same)], N.NFS4ERR_NOT_SAME)
    await c.check([op.putfh(f), ops.nverify(same)])


@pytest.mark.parametrize("make", [ops.verify, ops.nverify], ids=["verify", "nverify"])
async def test_verify_of_write_only_or_unsupported_attribute(w: World, make: object) -> None:
    c = w.client()
    root = await export_root(c)
    build = make  # type: ignore[assignment]
    wo = {N.FATTR4_TIME_MODIFY_SET: client_time(1)}
    await expect(c, [op.putfh(root), build(wo)], N.NFS4ERR_INVAL)  # type: ignore[operator]
    hidden = N.fattr4(bitmap([N.FATTR4_HIDDEN]), b"\0\0\0\0")
    opnum = N.OP_VERIFY if make is ops.verify else N.OP_NVERIFY
    raw = N.nfs_argop4(
        opnum, N.VERIFY4args(hidden) if make is ops.verify else N.NVERIFY4args(hidden)
    )
    await expect(c, [op.putfh(root), raw], N.NFS4ERR_ATTRNOTSUPP)


# ------------------------------------------------------------ ACCESS (§16.1)


def _access(c: Nfs4Client, fh: bytes, bits: int = ACC_ALL) -> object:
    return c.check([op.putfh(fh), op.access(bits)])


async def test_access_for_owner_other_and_root(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root)
    await _chown(c, f, 1000)
    await _chmod(c, f, 0o744)
    (_, own) = await w.client(user(1000)).check([op.putfh(f), op.access(ACC_ALL)])
    assert (own.supported, own.access) == (ACC_FILE, ACC_FILE)
    (_, oth) = await w.client(user(2000)).check([op.putfh(f), op.access(ACC_ALL)])
    assert oth.access == ACC_READ
    await _chmod(c, f, 0o000)
    (_, rt) = await c.check([op.putfh(f), op.access(ACC_ALL)])
    assert rt.access == ACC_READ | ACC_MODIFY | ACC_EXTEND  # root: no x bit, no EXECUTE
    (_, none) = await w.client(user(2000)).check([op.putfh(f), op.access(ACC_ALL)])
    assert none.access == 0


async def test_access_on_a_directory(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    d = await mkdir(c, root, b"d", 0o755)
    (_, rt) = await c.check([op.putfh(d), op.access(ACC_ALL)])
    assert rt.supported == ACC_DIR and rt.access == ACC_DIR
    (_, oth) = await w.client(user(2000)).check([op.putfh(d), op.access(ACC_ALL)])
    assert oth.access == ACC_READ | ACC_LOOKUP


async def test_access_group_member(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root)
    await c.check([op.putfh(f), ops.setattr({N.FATTR4_OWNER_GROUP: b"500"})])
    await _chmod(c, f, 0o060)
    (_, g) = await w.client(user(3000, 3000, [500])).check([op.putfh(f), op.access(ACC_ALL)])
    assert g.access == ACC_READ | ACC_MODIFY | ACC_EXTEND


async def test_access_with_root_squash(tmp_path: Path) -> None:
    w = make_world(tmp_path, ["/export *(rw,root_squash)"])

    try:
        c = w.client()  # uid 0, squashed to 65534
        root = await export_root(c)
        be = w.backends["/export"]
        be.setattr(be.root(), mode=0o777)  # setup: root squashed to nobody may create here
        f = await make_file(c, root)
        await _chmod(c, f, 0o600)  # owned by 65534, so the squashed root owns it
        (_, mine) = await c.check([op.putfh(f), op.access(ACC_ALL)])
        assert mine.access == ACC_READ | ACC_MODIFY | ACC_EXTEND
        d = await mkdir(c, root, b"d", 0o700)
        await w.client(user(65534)).check([op.putfh(d), op.getfh()])
        (_, res) = await w.client(user(1000)).check([op.putfh(d), op.access(ACC_ALL)])
        assert res.access == 0
    finally:
        w.close()


async def test_access_with_unknown_bits_is_inval(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    await expect(c, [op.putfh(root), op.access(0x40)], N.NFS4ERR_INVAL)


async def test_access_on_read_only_export_grants_no_modify(tmp_path: Path) -> None:
    w = make_world(tmp_path, ["/export *(ro,no_root_squash)"])

    try:
        c = w.client()
        root = await export_root(c)
        (_, res) = await c.check([op.putfh(root), op.access(ACC_ALL)])
        assert res.access == ACC_READ | ACC_LOOKUP
        assert last(await c.compound([op.putfh(root), op.access(ACC_ALL)])).supported == ACC_DIR
    finally:
        w.close()


async def test_attrs_of_helper_decodes_getattr(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    (_, res) = await c.check([op.putfh(root), op.getattr(N.FATTR4_TYPE)])
    assert attrs_of(res) == {N.FATTR4_TYPE: N.NF4DIR}


async def test_setattr_size_with_anonymous_stateid_against_a_deny_write_share_is_locked(
    w: World,
) -> None:
    c = w.client()
    root = await export_root(c)
    clientid = await new_clientid(c)
    o = await open_file(c, root, clientid, b"o", b"f", access=R, deny=DENY_WRITE)
    other = w.client(peer=("127.0.0.2", 800))
    await expect(other, [op.putfh(o.fh), ops.setattr({N.FATTR4_SIZE: 0})], N.NFS4ERR_LOCKED)


async def test_verify_of_rdattr_error_is_inval(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    raw = N.fattr4(bitmap([N.FATTR4_RDATTR_ERROR]), b"\0\0\0\0")
    args = N.nfs_argop4(N.OP_VERIFY, N.VERIFY4args(raw))
    await expect(c, [op.putfh(root), args], N.NFS4ERR_INVAL)


@pytest.mark.parametrize("attr", [N.FATTR4_OWNER, N.FATTR4_OWNER_GROUP])
async def test_setattr_empty_owner_is_inval(w: World, attr: int) -> None:
    c = w.client()
    root = await export_root(c)
    await expect(c, [op.putfh(root), ops.setattr({attr: b""})], N.NFS4ERR_INVAL)
