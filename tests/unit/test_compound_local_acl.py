"""NFSv4 ACLs over `LocalBackend`, held to the real tools: ACLs set through NFSv4 are what
`getfacl` shows on the server, ACLs set with `setfacl` are what GETATTR returns, and every
later decision -- READ (the shared I/O descriptor's remembered grants too), ACCESS, OPEN --
follows a change at once, over NFS and locally (`setpriv`, tests/localuser.py) alike."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nfs4_fixtures as fx
import pytest
from acl_support import get_acl, set_acl
from nfs4_fixtures import ANON, World, make_world, ops, user

from pynfsd.client.nfs4 import Nfs4Client, op
from pynfsd.fs import creds
from pynfsd.gen import nfs4 as N
from tests.localuser import NOBODY, acls_supported, kernel_dir, sh_as_user

pytestmark = [
    pytest.mark.skipif(not creds.supported(), reason="needs root on Linux"),
    pytest.mark.skipif(shutil.which("setfacl") is None, reason="needs setfacl (scripts/acl-deps.sh)"),
]
OWNER = 1000
GRANT = f"A::OWNER@:rwatTcCy A::{NOBODY}:rtcy A::GROUP@:tcy A::EVERYONE@:tcy"
MODE_0600 = "A::OWNER@:rwatTcCy A::GROUP@:tcy A::EVERYONE@:tcy"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[World, Path]]:
    with kernel_dir() as exp:
        if not acls_supported(exp):
            pytest.skip("no POSIX ACLs on /tmp")
        w = make_world(tmp_path, [f"{exp} *(rw,no_root_squash)"], local=True)
        try:
            yield w, exp
        finally:
            w.close()


def getfacl(path: Path) -> list[str]:
    out = subprocess.run(["getfacl", "-cnp", str(path)], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    return [line.split("\t")[0] for line in out.splitlines() if line and ":" in line]


def setfacl(*args: str) -> None:
    subprocess.run(["setfacl", *args], check=True, capture_output=True)


async def _fh(c: Nfs4Client, exp: Path, name: str) -> bytes:
    root = await fx.export_root(c, *[os.fsencode(p) for p in exp.parts[1:]])
    return await fx.lookup_fh(c, root, name.encode())


def _owned(exp: Path, name: str, mode: int = 0o600) -> Path:
    path = exp / name
    path.write_bytes(b"secret")
    os.chown(path, OWNER, OWNER)
    path.chmod(mode)
    return path


async def _nfs_reads(w: World, fh: bytes) -> bool:
    c = w.client(user(NOBODY))
    read = await c.compound([op.putfh(fh), op.read(ANON, 0, 10)])
    acc = await c.compound([op.putfh(fh), op.access(N.ACCESS4_READ)])
    granted = bool(acc.resarray[-1].value.value.access & N.ACCESS4_READ)
    assert granted == (read.status == N.NFS4_OK), read.status
    return granted


async def test_an_ace_set_over_nfs_is_the_servers_posix_acl(env: tuple[World, Path]) -> None:
    w, exp = env
    path = _owned(exp, "f")
    fh = await _fh(w.client(user(OWNER)), exp, "f")
    assert not await _nfs_reads(w, fh) and sh_as_user(f"cat {path}") != 0
    assert (await set_acl(w.client(user(OWNER)), fh, GRANT)).status == N.NFS4_OK
    assert getfacl(path) == [
        "user::rw-", f"user:{NOBODY}:r--", "group::---", "mask::r--", "other::---",
    ]  # fmt: skip
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)
    assert await _nfs_reads(w, fh) and sh_as_user(f"cat {path}") == 0
    assert (await set_acl(w.client(user(OWNER)), fh, MODE_0600)).status == N.NFS4_OK
    assert getfacl(path) == ["user::rw-", "group::---", "other::---"]
    assert os.listxattr(path) == []  # an ACL that says no more than the mode is none
    assert not await _nfs_reads(w, fh) and sh_as_user(f"cat {path}") != 0


async def test_an_acl_set_with_setfacl_is_what_getattr_returns(env: tuple[World, Path]) -> None:
    w, exp = env
    path = _owned(exp, "f", 0o640)
    setfacl("-m", f"u:{NOBODY}:rx,g:50:w", str(path))
    fh = await _fh(w.client(), exp, "f")
    assert await get_acl(w.client(), fh) == [
        "D::OWNER@:x",
        "A::OWNER@:rwatTcCy",
        f"D::{NOBODY}:wa",  # it wins over the groups it may be in (50 grants w)
        f"A::{NOBODY}:rxtcy",
        "A::GROUP@:rtcy",
        "A:g:50:watcy",
        "A::EVERYONE@:tcy",
    ]
    assert await _nfs_reads(w, fh)  # the local change took effect at once
    setfacl("-x", f"u:{NOBODY}", str(path))
    assert not await _nfs_reads(w, fh)


async def test_a_mode_change_over_nfs_shows_in_the_acl(env: tuple[World, Path]) -> None:
    w, exp = env
    path = _owned(exp, "f")
    setfacl("-m", f"u:{NOBODY}:rw", str(path))
    fh = await _fh(w.client(), exp, "f")
    assert await _nfs_reads(w, fh)
    await w.client(user(OWNER)).check([op.putfh(fh), ops.setattr({N.FATTR4_MODE: 0o600})])
    assert getfacl(path) == [
        "user::rw-", f"user:{NOBODY}:rw-", "group::---", "mask::---", "other::---",
    ]  # fmt: skip
    assert f"A::{NOBODY}:tcy" in await get_acl(w.client(), fh)
    assert not await _nfs_reads(w, fh) and sh_as_user(f"cat {path}") != 0


async def test_read_grants_remembered_for_the_io_descriptor_are_dropped(
    env: tuple[World, Path],
) -> None:
    w, exp = env
    _owned(exp, "f")
    fh = await _fh(w.client(), exp, "f")
    owner = w.client(user(OWNER))
    assert (await set_acl(owner, fh, GRANT)).status == N.NFS4_OK
    for _ in range(2):  # the second READ may come from the event loop's cached path
        assert await _nfs_reads(w, fh)
    assert (await set_acl(owner, fh, MODE_0600)).status == N.NFS4_OK
    assert not await _nfs_reads(w, fh)


async def test_new_files_inherit_a_default_acl_set_over_nfs(env: tuple[World, Path]) -> None:
    w, exp = env
    d = exp / "d"
    d.mkdir(mode=0o777)
    d.chmod(0o777)
    c = w.client()
    dfh = await _fh(c, exp, "d")
    text = (f"A::OWNER@:rwaxDtTcCy A::GROUP@:rxtcy A::EVERYONE@:rwaxDtcy "
            f"A:fdi:OWNER@:rwaxDtTcCy A:fdi:{NOBODY}:rtcy A:fdi:GROUP@:tcy A:fdi:EVERYONE@:tcy")
    assert (await set_acl(c, dfh, text)).status == N.NFS4_OK
    assert f"default:user:{NOBODY}:r--" in getfacl(d)
    fh = await fx.make_file(w.client(user(OWNER)), dfh)  # OPEN asks for 0644
    assert getfacl(d / "f") == [
        "user::rw-", f"user:{NOBODY}:r--", "group::---", "mask::r--", "other::---",
    ]  # fmt: skip
    assert await _nfs_reads(w, fh)
    assert sh_as_user(f"cat {d / 'f'}", uid=1002) != 0


async def test_only_the_owner_sets_an_acl_as_locally(env: tuple[World, Path]) -> None:
    w, exp = env
    path = _owned(exp, "f", 0o666)
    assert sh_as_user(f"setfacl -m u:{NOBODY}:r {path}") != 0
    fh = await _fh(w.client(), exp, "f")
    res = await set_acl(w.client(user(NOBODY)), fh, GRANT)
    assert res.status == N.NFS4ERR_PERM
    assert getfacl(path) == ["user::rw-", "group::rw-", "other::rw-"]
