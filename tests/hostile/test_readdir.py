"""A user who may read a directory but not search it, and one who may execute a binary but not
read it, against a real `pynfsd serve` process over a real directory.  Listing thousands of
names the user cannot reach gives each entry NFS4ERR_ACCESS in rdattr_error (the whole READDIR
fails only when rdattr_error is not asked for); an execute-only binary is read over NFS
(read-if-execute) while a 0700 file stays closed.  Each test checks the server's memory and
that another client is served."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pynfsd.client.nfs4 import Nfs4Client, Nfs4Failure, op
from pynfsd.client.session import ClientSession
from pynfsd.fs import creds
from pynfsd.gen import nfs4 as N
from pynfsd.nfs4.attrs import decode_fattr4
from tests.localuser import NOBODY, kernel_dir, sh_as_user
from tests.serverproc import ServerProcess, assert_log_clean

pytestmark = pytest.mark.skipif(not creds.supported(), reason="needs root on Linux")
ANON = N.stateid4(0, b"\0" * 12)
RSS_SLACK_KIB = 16 * 1024
NAMES = 3000
ASKED = [N.FATTR4_TYPE, N.FATTR4_SIZE, N.FATTR4_RDATTR_ERROR, N.FATTR4_MOUNTED_ON_FILEID]


@pytest.fixture
def exp() -> Iterator[Path]:
    with kernel_dir() as d:
        yield d


async def _list(c: Nfs4Client, dfh: bytes, attrs: list[int]) -> dict[bytes, dict[int, object]]:
    """Every entry of ``dfh`` by READDIRs resumed from their cookies: name -> attributes."""
    out: dict[bytes, dict[int, object]] = {}
    cookie, verf = 0, b"\0" * 8
    while True:
        _, resok = await c.check([op.putfh(dfh), op.readdir(cookie, verf, 8192, 16384, attrs)])
        e = resok.reply.entries
        while e is not None:
            assert e.name not in out, "an entry was listed twice"
            out[e.name] = decode_fattr4(e.attrs)
            cookie, e = e.cookie, e.nextentry
        if resok.reply.eof:
            return out
        verf = resok.cookieverf


async def test_thousands_of_unreachable_names_each_carry_the_error(exp: Path, tmp_path: Path) -> None:
    d = exp / "listable"
    d.mkdir()
    for i in range(NAMES):
        (d / f"entry-{i:05d}").write_bytes(b"")
    d.chmod(0o744)
    assert sh_as_user(f"ls {d} | wc -l | grep -qx {NAMES}") == 0  # locally: the names
    inos = {os.fsencode(p.name): p.stat().st_ino for p in d.iterdir()}
    with ServerProcess([f"{exp} *(rw,no_root_squash,insecure)"], tmp_path / "state") as srv:
        c = await srv.connect(NOBODY)
        dfh = await ClientSession(c, b"u").lookup_path(str(d))
        rss = 0
        for _ in range(3):
            got = await _list(c, dfh, ASKED)
            assert got == {
                n: {N.FATTR4_RDATTR_ERROR: N.NFS4ERR_ACCESS, N.FATTR4_MOUNTED_ON_FILEID: i}
                for n, i in inos.items()
            }
            rss = rss or srv.rss_kib()
        assert srv.rss_kib() - rss < RSS_SLACK_KIB
        res = await c.compound([op.putfh(dfh), op.readdir(attrs=[N.FATTR4_SIZE])])
        assert res.status == N.NFS4ERR_ACCESS
        await c.close()
        await srv.assert_healthy()
        assert_log_clean(srv.log_text())


async def test_an_execute_only_binary_is_read_and_a_private_file_is_not(exp: Path, tmp_path: Path) -> None:
    payload = os.urandom(256 * 1024)
    for name, mode in (("tool", 0o711), ("private", 0o700)):
        (exp / name).write_bytes(payload)
        (exp / name).chmod(mode)
    with ServerProcess([f"{exp} *(rw,no_root_squash,insecure)"], tmp_path / "state") as srv:
        c = await srv.connect(NOBODY)
        s = ClientSession(c, b"runner")
        await s.establish()
        root = await s.lookup_path(str(exp))
        rss = 0
        for round_ in range(20):  # the later READs come from the event-loop path
            f = await s.open(root, b"tool", access=1, owner=b"o%d" % round_)
            assert await s.read(f, 0, len(payload)) == payload
            await s.close(f)
            rss = rss or srv.rss_kib()
        assert srv.rss_kib() - rss < RSS_SLACK_KIB
        with pytest.raises(Nfs4Failure) as denied:
            await s.open(root, b"private", access=1, owner=b"p")
        assert denied.value.status == N.NFS4ERR_ACCESS
        fh = await s.lookup_path(str(exp / "private"))
        res = await c.compound([op.putfh(fh), op.read(ANON, 0, 10)])
        assert res.status == N.NFS4ERR_ACCESS
        await c.close()
        await srv.assert_healthy()
        assert_log_clean(srv.log_text())
