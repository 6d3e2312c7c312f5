"""exportfs's `-test-client-` lines (`pynfsd.nfsdfs.probe`) answered as knfsd answers them:
the domain line accepted, the export line refused with ENOENT before it, the path checks of
`check_export` (ENOENT, ENOTDIR, EINVAL for a filesystem without file handles or, without
`fsid=`, without a device), and on the control tree's channel files: accepted, nothing
stored, the other lines still the channel's."""

from __future__ import annotations

import errno
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pynfsd.cache import lines as L
from pynfsd.nfsdfs.probe import Probes, check_path, needs_fsid, nodev_types
from pynfsd.nfsdfs.tree import TreeError
from tests.unit.test_nfsdfs_tree import build

T = TypeVar("T")
DOMAIN = b"nfsd 0.0.0.0 2147483647 -test-client-\n"
FILESYSTEMS = "nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\tfuse\n\tfuseblk\n"


class Inline:
    """Runs the blocking call at once (the unit tests' worker)."""

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)


def probe(path: Path | str, flags: int = 9248) -> bytes:
    return b"-test-client- %s  3 %d 65534 65534 0\n" % (os.fsencode(str(path)), flags)


async def answer(probes: Probes, cache: str, data: bytes) -> int | None:
    got = probes.write(cache, data)
    if inspect.isawaitable(got):
        code: int = await got
        return code
    return got  # type: ignore[return-value]




def test_which_filesystem_types_need_an_fsid() -> None:
    nodev = nodev_types(FILESYSTEMS)
    assert nodev == {"sysfs", "tmpfs", "fuse"}
    assert needs_fsid("tmpfs", nodev) and needs_fsid("fuse.sshfs", nodev)
    assert not needs_fsid("ext4", nodev) and not needs_fsid("fuseblk", nodev)
    assert not needs_fsid(None, nodev)  # unknown: taken as having a device


def test_check_path_as_check_export(tmp_path: Path) -> None:
    assert check_path(str(tmp_path / "missing"), True) == errno.ENOENT
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert check_path(str(fifo), True) == errno.ENOTDIR
    (tmp_path / "file").write_text("")
    (tmp_path / "link").symlink_to("missing")  # not followed, as kern_path(path, 0)
    for name in ("file", "link"):
        assert check_path(str(tmp_path / name), False) == 0
    assert check_path("/proc/sys", True) == errno.EINVAL  # no file handles on procfs


def test_a_filesystem_without_a_device_needs_an_fsid(small_tmpfs: Path) -> None:
    assert check_path(str(small_tmpfs), False) == errno.EINVAL
    assert check_path(str(small_tmpfs), True) == 0


async def test_the_probe_lines_as_knfsd_answers_them(tmp_path: Path) -> None:
    probes = Probes(Inline())
    assert await answer(probes, "nfsd.export", probe(tmp_path)) == errno.ENOENT  # no domain
    assert await answer(probes, "auth.unix.ip", DOMAIN) == 0
    assert await answer(probes, "nfsd.export", probe(tmp_path)) == 0
    assert await answer(probes, "nfsd.export", probe("/proc/sys")) == errno.EINVAL
    assert await answer(probes, "nfsd.export", b"-test-client- /proc/sys 3\n") == 0  # negative
    # not probes: the channel's (a daemon's answers, malformed lines)
    assert probes.write("auth.unix.ip", b"nfsd 127.0.0.1 2147483647 *\n") is None
    assert probes.write("nfsd.export", b"* %s 3 0 1 1 0\n" % os.fsencode(tmp_path)) is None
    assert probes.write("nfsd.export", b"-test-client- /x 3 0 -1 1 0\n") is None
    assert probes.write("nfsd.fh", b"-test-client- 1 \\x01000000 3\n") is None


async def test_the_channel_files_accept_the_probes_and_store_nothing(tmp_path: Path) -> None:
    tree, sc, _way, _ = build()
    ip = await tree.open(tree.path("rpc/auth.unix.ip/channel").inode, os.O_WRONLY)
    export = await tree.open(tree.path("rpc/nfsd.export/channel").inode, os.O_WRONLY)
    assert await tree.write(ip, DOMAIN, 1) == len(DOMAIN)
    line = probe(tmp_path)
    assert await tree.write(export, line, 1) == len(line)
    with pytest.raises(TreeError) as e:
        await tree.write(export, probe(tmp_path / "missing"), 1)
    assert e.value.errno == errno.ENOENT
    unasked = b"nfsd 192.0.2.1 2147483647 *\n"
    with pytest.raises(TreeError) as e:  # still refused: nobody asked
        await tree.write(ip, unasked, 1)
    assert e.value.errno == errno.EINVAL
    for name in ("auth.unix.ip", "nfsd.export"):
        assert sc.channels[name].content() == L.CONTENT_HEADERS[name]


