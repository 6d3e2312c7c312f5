"""Hostile clients against authorization, on a real `pynfsd serve` process over a real
directory: another user's I/O with the owner's open stateid, ACL entries, supplementary
group 0 under root_squash, and hundreds of identities on one file (the per-object read
grants stay bounded at `fdcache.MAX_GRANTS` and follow the file's mode).  Each test checks
the error, that nothing was written, the server's memory and that another client is served."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pynfsd.client.nfs4 import Nfs4Client, op
from pynfsd.client.session import ClientSession
from pynfsd.fs import creds
from pynfsd.fs.fdcache import MAX_GRANTS
from pynfsd.gen import nfs4 as N
from tests.localuser import NOBODY, acls_supported, kernel_dir, set_acl, sh_as_user
from tests.serverproc import ServerProcess, assert_log_clean

pytestmark = pytest.mark.skipif(not creds.supported(), reason="needs root on Linux")
ANON = N.stateid4(0, b"\0" * 12)
RSS_SLACK_KIB = 16 * 1024


@pytest.fixture
def exp() -> Iterator[Path]:
    with kernel_dir() as d:
        pub = d / "pub"
        pub.mkdir()
        pub.chmod(0o777)
        yield d


def _server(exp: Path, tmp_path: Path, options: str = "rw,no_root_squash,insecure") -> ServerProcess:
    return ServerProcess([f"{exp} *({options})"], tmp_path / "state", log_level="INFO")


async def _fh(c: Nfs4Client, exp: Path, *names: bytes) -> bytes:
    path = os.path.join(str(exp), *map(os.fsdecode, names))
    return await ClientSession(c, b"lookup").lookup_path(path)


async def _open_rw(c: Nfs4Client, dirfh: bytes, name: bytes) -> tuple[bytes, N.stateid4]:
    s = ClientSession(c, b"owner-" + name)
    await s.establish()
    f = await s.open(dirfh, name, create=True, mode=0o600)
    return f.fh, f.stateid


def _size_attr(size: int) -> N.fattr4:
    return N.fattr4([1 << N.FATTR4_SIZE], size.to_bytes(8, "big"))


async def test_another_users_io_with_the_owners_stateid_is_refused(exp: Path, tmp_path: Path) -> None:
    with _server(exp, tmp_path) as srv:
        owner, intruder = await srv.connect(1000), await srv.connect(1001)
        fh, sid = await _open_rw(owner, await _fh(owner, exp, b"pub"), b"f")
        await owner.check([op.putfh(fh), op.write(sid, 0, b"owner's data")])
        rss = srv.rss_kib()
        attack = [op.write(sid, 0, b"X" * 65536), op.read(sid, 0, 4096),
                  N.nfs_argop4(N.OP_SETATTR, N.SETATTR4args(sid, _size_attr(0)))]  # fmt: skip
        for _ in range(100):
            for a in attack:
                res = await intruder.compound([op.putfh(fh), a])
                assert res.status == N.NFS4ERR_ACCESS, N.nfsstat4_names.get(res.status)
        assert srv.rss_kib() - rss < RSS_SLACK_KIB
        await owner.close()
        await intruder.close()
        assert (exp / "pub" / "f").read_bytes() == b"owner's data"
        await srv.assert_healthy()
        assert_log_clean(srv.log_text())


async def test_acl_denial_and_squashed_group_zero(exp: Path, tmp_path: Path) -> None:
    if not acls_supported(exp):
        pytest.skip("no POSIX ACLs here")
    denied, group0 = exp / "pub" / "denied", exp / "pub" / "group0"
    for path, mode in ((denied, 0o644), (group0, 0o060)):
        path.write_bytes(b"secret")
        path.chmod(mode)
    set_acl(denied, {NOBODY: 0})
    assert sh_as_user(f"cat {denied}") != 0
    with _server(exp, tmp_path, "rw,root_squash,insecure") as srv:
        nobody = await srv.connect(NOBODY)
        claims_root_group = await srv.connect(1000, 0, (0, 0, 0))  # squashed to anongid
        out = {}
        for name, c in ((b"denied", nobody), (b"group0", claims_root_group)):
            fh = await _fh(c, exp, b"pub", name)
            out[name.decode()] = (await c.compound([op.putfh(fh), op.read(ANON, 0, 10)])).status
            await c.close()
        assert out == {"denied": N.NFS4ERR_ACCESS, "group0": N.NFS4ERR_ACCESS}
        await srv.assert_healthy()
        assert_log_clean(srv.log_text())


async def test_many_identities_on_one_file_stay_bounded_and_follow_its_mode(
    exp: Path, tmp_path: Path
) -> None:
    f = exp / "pub" / "shared"
    f.write_bytes(b"public data")
    f.chmod(0o644)
    users = range(20000, 20000 + 40 * MAX_GRANTS)  # forty times the grants an object keeps

    async def read_as_each(srv: ServerProcess) -> set[int]:
        statuses = set()
        for uid in users:
            c = await srv.connect(uid, uid, tuple(range(uid, uid + 16)))
            fh = await _fh(c, exp, b"pub", b"shared")
            for _ in range(2):  # the second READ may come from the event-loop path
                res = await c.compound([op.putfh(fh), op.read(ANON, 0, 100)])
                statuses.add(res.status)
            await c.close()
        return statuses

    with _server(exp, tmp_path) as srv:
        assert await read_as_each(srv) == {N.NFS4_OK}
        rss = srv.rss_kib()
        assert await read_as_each(srv) == {N.NFS4_OK}
        assert srv.rss_kib() - rss < RSS_SLACK_KIB
        f.chmod(0o600)  # every remembered grant is now void
        assert await read_as_each(srv) == {N.NFS4ERR_ACCESS}
        await srv.assert_healthy()
        assert_log_clean(srv.log_text())
