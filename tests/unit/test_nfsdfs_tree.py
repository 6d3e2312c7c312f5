"""The control tree's model without FUSE (`pynfsd.nfsdfs.tree`): the kernel's layout of
`rpc/<cache>/{channel,content,flush}`, permissions (EACCES), unknown names (ENOENT), one request
line per channel read (split over short buffers), one reply per write, poll events, flush."""

from __future__ import annotations

import asyncio
import errno
import os
import select
import stat

import pytest

from pynfsd.cache import lines as L
from pynfsd.cache.caches import CacheLimits, ServerCaches
from pynfsd.cache.reader import ChannelWay
from pynfsd.nfsdfs.tree import ROOT, Tree, TreeError, add_caches
from tests.clock import ManualClock
from tests.unit.test_cache_ways import settle

T0 = 1_700_000_000
CACHES = ("auth.unix.gid", "auth.unix.ip", "nfsd.export", "nfsd.fh")


def build() -> tuple[Tree, ServerCaches, ChannelWay, list[int]]:
    way = ChannelWay()
    clock = ManualClock(T0)
    sc = ServerCaches({name: [way] for name in CACHES}, CacheLimits(), clock)
    way.bind(sc.channels)
    flushed: list[int] = []
    tree = Tree(way)
    add_caches(tree, sc, clock, lambda: flushed.append(1))
    return tree, sc, way, flushed


def test_layout_and_modes() -> None:
    tree, *_ = build()
    assert [n.name for n in tree.listdir(tree.path("rpc").inode)] == list(CACHES)
    for name in CACHES:
        files = {n.name: stat.S_IMODE(n.mode) for n in tree.listdir(tree.path(f"rpc/{name}").inode)}
        assert files == {"channel": 0o600, "content": 0o400, "flush": 0o600}
    assert stat.S_ISDIR(tree.get(ROOT).mode)
    assert tree.lookup(tree.path("rpc").inode, "..").inode == ROOT
    for bad in ("rpc/nope", "rpc/auth.unix.ip/other", "nfsd.export"):
        with pytest.raises(TreeError) as e:
            tree.path(bad)
        assert e.value.errno == errno.ENOENT
    with pytest.raises(TreeError) as e:
        tree.lookup(tree.path("rpc/nfsd.fh/content").inode, "x")
    assert e.value.errno == errno.ENOTDIR


async def test_content_is_read_only_and_has_the_kernels_header() -> None:
    tree, *_ = build()
    content = tree.path("rpc/auth.unix.ip/content")
    with pytest.raises(TreeError) as e:
        tree.open(content.inode, os.O_WRONLY)
    assert e.value.errno == errno.EACCES
    h = tree.open(content.inode, os.O_RDONLY)
    assert tree.read(h, 0, 4096) == b"#class IP domain\n"
    assert tree.read(h, 7, 2) == b"IP"
    with pytest.raises(TreeError) as e:
        await tree.write(h, b"x", 1)
    assert e.value.errno == errno.EBADF


async def test_flush_takes_a_number_and_shows_the_flush_time() -> None:
    tree, sc, _, flushed = build()
    h = tree.open(tree.path("rpc/nfsd.export/flush").inode, os.O_RDWR)
    assert tree.read(h, 0, 100) == b"0\n"
    assert await tree.write(h, b"%d\n" % T0, 1) == 11
    assert tree.read(h, 0, 100) == b"%d\n" % sc.export.cache.flush_time and flushed == [1]
    with pytest.raises(TreeError) as e:
        await tree.write(h, b"soon\n", 1)
    assert e.value.errno == errno.EINVAL and flushed == [1]


async def test_channel_one_request_per_read_poll_and_reply() -> None:
    tree, sc, way, _ = build()
    node = tree.path("rpc/nfsd.export/channel")
    assert not way.ready("nfsd.export")
    h = tree.open(node.inode, os.O_RDWR)
    assert way.ready("nfsd.export") and tree.read(h, 0, 32768) == b""
    assert tree.poll(h) & select.POLLIN == 0 and tree.poll(h) & select.POLLOUT
    keys = [L.ExportKey("127.0.0.1", f"/srv/{c}") for c in "ab"]
    tasks = [asyncio.ensure_future(sc.export.get(k, "c")) for k in keys]
    await settle()
    assert tree.poll(h) & select.POLLIN
    assert tree.read(h, 0, 32768) == b"127.0.0.1 /srv/a\n"
    assert tree.read(h, 0, 10) == b"127.0.0.1 " and tree.read(h, 0, 32768) == b"/srv/b\n"
    assert tree.read(h, 0, 32768) == b"" and tree.poll(h) & select.POLLIN == 0
    with pytest.raises(TreeError) as e:
        await tree.write(h, b"127.0.0.1 /srv/a\n", 1)  # no expiry: malformed
    assert e.value.errno == errno.EINVAL and not tasks[0].done()
    for k in keys:
        reply = L.encode_export_reply(L.ExportReply(k, T0 + 60, L.ExportInfo(0, 65534, 65534, 7)))
        assert await tree.write(h, reply, 1) == len(reply)
    assert [e.value.fsid for e in await asyncio.gather(*tasks) if e.value is not None] == [7, 7]
    tree.release(h)
    assert not way.ready("nfsd.export")


def test_a_write_only_open_is_no_reader() -> None:
    tree, _, way, _ = build()
    h = tree.open(tree.path("rpc/auth.unix.gid/channel").inode, os.O_WRONLY)
    assert not way.ready("auth.unix.gid")
    with pytest.raises(TreeError) as e:
        tree.read(h, 0, 10)
    assert e.value.errno == errno.EBADF
    tree.release(h)
    assert way.readers("auth.unix.gid") == 0
