"""NFSv4 ACLs over COMPOUND on the in-memory backend (RFC 7530 §6): GETATTR and SETATTR of
`acl` and `aclsupport`, mode and ACL kept consistent (§6.4.1), inheritance on creation
(§6.4.3), the errors knfsd gives, `no_acl` exports, and access decisions that follow an ACL
at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nfs4_fixtures as fx
import pytest
from acl_support import get_acl, parse, set_acl
from nfs4_fixtures import ANON, World, expect, make_world, ops, user

from pynfsd.client.nfs4 import Nfs4Client, op
from pynfsd.exports import parse_export_line
from pynfsd.gen import nfs4 as N
from pynfsd.nfs4.attrs import SUPPORTED_ATTRS
from pynfsd.nfs4.bitmap import bitmap_to_int, iter_bits, set_to_bitmap

OWNER, OTHER = user(1000), user(1001)
FILE_0600 = ["A::OWNER@:rwatTcCy", "A::GROUP@:tcy", "A::EVERYONE@:tcy"]
GRANT_1001 = "A::OWNER@:rwatTcCy A::1001:rtcy A::GROUP@:tcy A::EVERYONE@:tcy"


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    world = make_world(tmp_path)
    yield world
    world.close()


async def _owned_file(w: World, mode: int = 0o600) -> bytes:
    """A file of uid 1000 with `mode`, in a 0777 directory."""
    root = await fx.export_root(w.client())
    d = await fx.mkdir(w.client(), root, b"shared", 0o777)
    fh = await fx.make_file(w.client(OWNER), d)
    await w.client(OWNER).check([op.putfh(fh), ops.setattr({N.FATTR4_MODE: mode})])
    return fh


async def _reads(c: Nfs4Client, fh: bytes) -> bool:
    res = await c.compound([op.putfh(fh), op.read(ANON, 0, 10)])
    assert res.status in (N.NFS4_OK, N.NFS4ERR_ACCESS)
    return res.status == N.NFS4_OK


async def _access_read(c: Nfs4Client, fh: bytes) -> bool:
    (_, resok) = await c.check([op.putfh(fh), op.access(N.ACCESS4_READ)])
    return bool(resok.access & N.ACCESS4_READ)


async def test_the_acl_of_a_file_without_one_is_its_mode(w: World) -> None:
    fh = await _owned_file(w, 0o644)
    got = await fx.getattrs(w.client(), fh, N.FATTR4_ACL, N.FATTR4_ACLSUPPORT)
    assert got[N.FATTR4_ACLSUPPORT] == N.ACL4_SUPPORT_ALLOW_ACL | N.ACL4_SUPPORT_DENY_ACL
    assert await get_acl(w.client(), fh) == [
        "A::OWNER@:rwatTcCy", "A::GROUP@:rtcy", "A::EVERYONE@:rtcy",
    ]  # fmt: skip


async def test_an_ace_for_a_second_user_grants_read_and_its_removal_refuses(w: World) -> None:
    fh = await _owned_file(w)
    other = w.client(OTHER)
    assert not await _reads(other, fh) and not await _access_read(other, fh)
    assert (await set_acl(w.client(OWNER), fh, GRANT_1001)).status == N.NFS4_OK
    assert await _reads(other, fh) and await _access_read(other, fh)
    got = await fx.getattrs(w.client(), fh, N.FATTR4_MODE)
    assert got[N.FATTR4_MODE] == 0o640  # §6.4.1.2: the group class bits are the mask
    assert await get_acl(w.client(), fh) == [
        "A::OWNER@:rwatTcCy", "A::1001:rtcy", "A::GROUP@:tcy", "A::EVERYONE@:tcy",
    ]  # fmt: skip
    assert (await set_acl(w.client(OWNER), fh, " ".join(FILE_0600))).status == N.NFS4_OK
    assert not await _reads(other, fh) and not await _access_read(other, fh)
    assert await get_acl(w.client(), fh) == FILE_0600


async def test_setting_the_mode_rewrites_the_acl(w: World) -> None:
    fh = await _owned_file(w)
    await set_acl(w.client(OWNER), fh, GRANT_1001)
    await w.client(OWNER).check([op.putfh(fh), ops.setattr({N.FATTR4_MODE: 0o600})])
    # §6.4.1.1: the mask is now ---, so the named user keeps no read
    assert not await _reads(w.client(OTHER), fh)
    assert await get_acl(w.client(), fh) == [
        "A::OWNER@:rwatTcCy", "A::1001:tcy", "A::GROUP@:tcy", "A::EVERYONE@:tcy",
    ]  # fmt: skip
    await w.client(OWNER).check([op.putfh(fh), ops.setattr({N.FATTR4_MODE: 0o640})])
    assert await _reads(w.client(OTHER), fh)


async def test_mode_and_acl_together_apply_the_mode_first(w: World) -> None:
    fh = await _owned_file(w)
    both = {N.FATTR4_MODE: 0o4600, N.FATTR4_ACL: parse(GRANT_1001)}
    await w.client(OWNER).check([op.putfh(fh), ops.setattr(both)])
    got = await fx.getattrs(w.client(), fh, N.FATTR4_MODE)
    assert got[N.FATTR4_MODE] == 0o4640  # §6.4.1.3: then the ACL, which keeps set-id bits
    assert await _reads(w.client(OTHER), fh)


async def test_a_directory_default_acl_is_inherited_by_new_files(w: World) -> None:
    root = await fx.export_root(w.client())
    d = await fx.mkdir(w.client(), root, b"inherit", 0o777)
    text = ("A::OWNER@:rwaxDtTcCy A::GROUP@:rxtcy A::EVERYONE@:rwaxDtcy "
            "A:fdi:OWNER@:rwaxDtTcCy A:fdi:1001:rtcy A:fdi:GROUP@:tcy A:fdi:EVERYONE@:tcy")
    assert (await set_acl(w.client(), d, text)).status == N.NFS4_OK
    shown = await get_acl(w.client(), d)
    assert "A:fdi:1001:rxtcy" not in shown and "A:fdi:1001:rtcy" in shown
    fh = await fx.make_file(w.client(OWNER), d)  # OPEN asks for 0644
    assert await get_acl(w.client(), fh) == [
        "A::OWNER@:rwatTcCy", "A::1001:rtcy", "A::GROUP@:tcy", "A::EVERYONE@:tcy",
    ]  # fmt: skip
    assert await _reads(w.client(OTHER), fh)
    assert not await _reads(w.client(user(1002)), fh)
    sub = await fx.mkdir(w.client(OWNER), d, b"sub", 0o755)
    assert "A:fdi:1001:rtcy" in await get_acl(w.client(), sub)  # directories inherit it too


@pytest.mark.parametrize(
    "text",
    [
        "U::OWNER@:rwatTcCy",  # an AUDIT ACE
        "A:f:OWNER@:rwatTcCy",  # inheritance on a file
        "D::EVERYONE@:c A::EVERYONE@:r",  # READ_ACL denied
    ],
)
async def test_unrepresentable_acls_are_attrnotsupp(w: World, text: str) -> None:
    fh = await _owned_file(w)
    await expect(w.client(OWNER), _setattr_ops(fh, text), N.NFS4ERR_ATTRNOTSUPP)
    assert await get_acl(w.client(), fh) == FILE_0600


def _setattr_ops(fh: bytes, text: str) -> list[N.nfs_argop4]:
    return [op.putfh(fh), ops.setattr({N.FATTR4_ACL: parse(text)})]


async def test_an_unknown_principal_is_badowner(w: World) -> None:
    fh = await _owned_file(w)
    text = "A::OWNER@:rwatTcCy A::nosuchuser@elsewhere.example:r A::EVERYONE@:tcy"
    await expect(w.client(OWNER), _setattr_ops(fh, text), N.NFS4ERR_BADOWNER)


async def test_only_the_owner_sets_an_acl(w: World) -> None:
    fh = await _owned_file(w, 0o666)
    await expect(w.client(OTHER), _setattr_ops(fh, GRANT_1001), N.NFS4ERR_PERM)


async def test_a_pseudo_fs_directory_serves_no_acl(w: World) -> None:
    c = w.client()
    (_, fh) = await c.check([op.putrootfh(), op.getfh()])
    got = await fx.getattrs(c, fh.object, N.FATTR4_ACL, N.FATTR4_ACLSUPPORT)
    assert N.FATTR4_ACL not in got and got[N.FATTR4_ACLSUPPORT] == 0


@pytest.mark.parametrize("spelling", ["no_acl", "noacl"])
async def test_a_no_acl_export_serves_no_acl(tmp_path: Path, spelling: str) -> None:
    w = make_world(tmp_path, [f"/export *(rw,no_root_squash,{spelling})"])
    try:
        c = w.client()
        fh = await fx.make_file(c, await fx.export_root(c))
        got = await fx.getattrs(c, fh, N.FATTR4_SUPPORTED_ATTRS, N.FATTR4_ACL, N.FATTR4_ACLSUPPORT)
        assert N.FATTR4_ACL not in got and got[N.FATTR4_ACLSUPPORT] == 0
        supported = got[N.FATTR4_SUPPORTED_ATTRS]
        assert not supported[0] & (1 << N.FATTR4_ACL)
        assert supported[0] | (1 << N.FATTR4_ACL) == _words(SUPPORTED_ATTRS)[0]
        await expect(c, _setattr_ops(fh, GRANT_1001), N.NFS4ERR_ATTRNOTSUPP)
    finally:
        w.close()


def _words(attrs: frozenset[int]) -> list[int]:
    return set_to_bitmap(attrs)


def test_noacl_is_kept_as_no_acl() -> None:
    entry = parse_export_line("/export *(noacl)")
    assert entry.clients[0][1].has("no_acl")


async def test_create_and_open_set_the_acl_they_are_given(w: World) -> None:
    """§6.4.3 case 3: mode and ACL given at creation are both set (mode, then ACL)."""
    root = await fx.export_root(w.client())
    d = await fx.mkdir(w.client(), root, b"shared", 0o777)
    c = w.client(OWNER)
    given = fx.fattr({N.FATTR4_MODE: 0o700, N.FATTR4_ACL: parse(GRANT_1001)})
    res = await c.check([op.putfh(d), ops.create(N.NF4DIR, b"sub", attrs=given), op.getfh()])
    assert set(iter_bits(bitmap_to_int(res[1].attrset))) == {N.FATTR4_MODE, N.FATTR4_ACL}
    assert f"A::{OTHER.uid}:rtcy" in await get_acl(w.client(), res[2].object)
    clientid = await fx.new_clientid(c)
    how = N.createhow4(N.UNCHECKED4, given)
    res = await c.check([op.putfh(d), op.open(1, clientid, b"o", b"f", create=how), op.getfh()])
    assert f"A::{OTHER.uid}:rtcy" in await get_acl(w.client(), res[2].object)
    assert await _reads(w.client(OTHER), res[2].object)
