"""A client that asks GETATTR for a new set of attributes every time, past the layouts the
server keeps (``MAX_LAYOUTS``, each a compiled function): every answer stays right (its
bitmap, and values equal to those asked one attribute at a time), the server's memory stays
put once the cache is full, and another client is served; likewise READDIR with more
attribute sets than it remembers entry sizes for (``MAX_ENTRY_SIZES``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pynfsd.client.nfs4 import Nfs4Client, op
from pynfsd.client.session import ClientSession
from pynfsd.gen import nfs4 as N
from pynfsd.nfs4.attrs import decode_fattr4
from pynfsd.nfs4.attrs.encode import MAX_LAYOUTS
from pynfsd.nfs4.bitmap import bitmap_to_set
from pynfsd.nfs4.ops.dirs import MAX_ENTRY_SIZES
from tests.serverproc import ServerProcess

RSS_SLACK_KIB = 16 * 1024
# attributes whose values do not move while the test runs (no atime, no change)
POOL = [
    N.FATTR4_TYPE, N.FATTR4_FH_EXPIRE_TYPE, N.FATTR4_SIZE, N.FATTR4_LINK_SUPPORT,
    N.FATTR4_FSID, N.FATTR4_LEASE_TIME, N.FATTR4_FILEHANDLE, N.FATTR4_FILEID, N.FATTR4_MODE,
    N.FATTR4_NUMLINKS, N.FATTR4_OWNER, N.FATTR4_OWNER_GROUP, N.FATTR4_RAWDEV,
    N.FATTR4_TIME_MODIFY, N.FATTR4_MOUNTED_ON_FILEID,
]


@pytest.fixture
def export(tmp_path: Path) -> Path:
    d = tmp_path / "export"
    d.mkdir()
    (d / "file").write_bytes(b"x" * 1234)
    return d


def _subset(i: int) -> list[int]:
    return [a for bit, a in enumerate(POOL) if (i >> bit) & 1]


async def _getattr(c: Nfs4Client, fh: bytes, attrs: list[int]) -> dict[int, object]:
    _, res = await c.check([op.putfh(fh), op.getattr(*attrs)])
    assert bitmap_to_set(res.obj_attributes.attrmask) == set(attrs)
    return decode_fattr4(res.obj_attributes)


async def test_more_attribute_sets_than_layouts_kept(server: ServerProcess, export: Path) -> None:
    c = await server.connect()
    fh = await ClientSession(c, b"u").lookup_path(str(export / "file"))
    one = {a: (await _getattr(c, fh, [a]))[a] for a in POOL}
    rss = 0
    for rnd in range(2):
        for i in range(1 + rnd * 2 * MAX_LAYOUTS, 1 + (rnd + 1) * 2 * MAX_LAYOUTS):
            attrs = _subset(i * 37 % (1 << len(POOL)))
            assert await _getattr(c, fh, attrs) == {a: one[a] for a in attrs}
        rss = rss or server.rss_kib()
    assert server.rss_kib() - rss < RSS_SLACK_KIB
    await c.close()
    await server.assert_healthy()


async def _listing(c: Nfs4Client, fh: bytes, attrs: list[int]) -> dict[bytes, dict[int, object]]:
    _, res = await c.check([op.putfh(fh), op.readdir(attrs=attrs)])
    out, e = {}, res.reply.entries
    while e is not None:
        assert bitmap_to_set(e.attrs.attrmask) == set(attrs)
        out[e.name] = decode_fattr4(e.attrs)
        e = e.nextentry
    assert res.reply.eof
    return out


async def test_more_readdir_attribute_sets_than_entry_sizes_kept(
        server: ServerProcess, export: Path) -> None:
    """READDIR remembers the average entry of at most MAX_ENTRY_SIZES attribute sets (to size
    its first batch): past them, listings stay whole and right, memory stays put."""
    for i in range(40):
        (export / f"more-{i:02d}").write_bytes(b"y" * i)
    c = await server.connect()
    dirfh = await ClientSession(c, b"u").lookup_path(str(export))
    pool = [a for a in POOL if a != N.FATTR4_FILEHANDLE]  # READDIR: the entry's own handle
    whole = await _listing(c, dirfh, pool)
    assert len(whole) == 41
    rss = 0
    for rnd in range(2):
        for i in range(1 + rnd * 3 * MAX_ENTRY_SIZES, 1 + (rnd + 1) * 3 * MAX_ENTRY_SIZES):
            attrs = [a for bit, a in enumerate(pool) if ((i * 37) >> bit) & 1] or [N.FATTR4_TYPE]
            got = await _listing(c, dirfh, attrs)
            assert got == {name: {a: v[a] for a in attrs} for name, v in whole.items()}
        rss = rss or server.rss_kib()
    assert server.rss_kib() - rss < RSS_SLACK_KIB
    await c.close()
    await server.assert_healthy()
