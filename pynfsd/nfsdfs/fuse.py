"""The control tree mounted with FUSE (pyfuse3, asyncio mode): the thin skin over `tree.py`.

Theory of operation.  `ControlMount.start` checks the mount point (a stale FUSE mount left by a
server killed by a signal, whose stat fails with ENOTCONN, is unmounted with `fusermount3 -u`
or umount(2); a live mount point is refused), mounts the tree with pyfuse3 and runs pyfuse3's
main loop as a task on the server's event loop, then points `<state-dir>/nfsd-fs` at the
mount.  `close` (on SIGTERM/SIGINT and on every exit of `serve`) stops the loop, unmounts and
removes the symlink.

`ControlOps` answers FUSE's requests from the `Tree`: every file is opened with direct_io and
reported with size 0, so each read reaches the tree (a channel read is one request line, never
a cached page); the writer's pid is the one that opened the file (FUSE gives a request
context to `open`, not to `write`), which `portlist` uses to take a socket from rpc.nfsd.
`poll` answers the current events and keeps the kernel's poll handle of a channel file that
has nothing to read; `ChannelWay.on_request` notifies the handles of that cache, which wakes
readers in poll()/select().  A truncating open (`echo N > threads`) sends a setattr of size 0,
which is accepted and ignored, as proc files do.

Directories created and removed at run time (`nfsd/clients/<id>`) are made by the server
itself calling mkdir(2)/rmdir(2) on the mount from a worker thread (`mkdir`/`rmdir` accept
only this process), because only changes made through the VFS reach inotify watchers such as
rpc.mountd's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pyfuse3
import pyfuse3.asyncio

from pynfsd.nfsdfs.tree import Handle, Node, Tree, TreeError

log = logging.getLogger(__name__)

LINK_NAME = "nfsd-fs"  # <state-dir>/nfsd-fs -> the mount point
OPTIONS = frozenset({"fsname=pynfsd", "subtype=pynfsd", "allow_other"})


def _errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """TreeError becomes the FUSE reply's errno."""

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except TreeError as e:
            raise pyfuse3.FUSEError(e.errno) from None

    wrapper.__name__ = fn.__name__
    return wrapper


def thread_group(tid: int) -> int:
    """The process (thread group) of thread `tid`, as FUSE reports the caller's thread."""
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return tid


class ControlOps(pyfuse3.Operations):
    """FUSE requests answered from the `Tree`; see the module docstring."""

    enable_writeback_cache = False

    def __init__(self, tree: Tree, on_mkdir: Callable[[Node, str], Node] | None = None) -> None:
        super().__init__()
        self.tree = tree
        self.on_mkdir = on_mkdir
        self.handles: dict[int, tuple[Handle, int]] = {}  # fh -> (handle, opener's pid)
        self.polls: dict[int, Any] = {}  # fh -> the kernel's poll handle
        self._next_fh = 1
        if tree.way is not None:
            tree.way.on_request = self.notify

    def notify(self, cache: str) -> None:
        """A request of `cache` was queued: wake the pollers of its channel files."""
        for fh in [fh for fh, (h, _) in self.handles.items() if h.node.file is not None
                   and h.node.file.channel == cache and fh in self.polls]:
            with contextlib.suppress(OSError):
                self.polls.pop(fh).notify()

    def attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = pyfuse3.InodeT(node.inode)
        a.st_mode = pyfuse3.ModeT(node.mode)
        a.st_nlink = 2 if node.file is None else 1
        a.st_size = 0
        a.st_blksize = 4096
        a.entry_timeout = 0
        a.attr_timeout = 0
        return a

    @_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> Any:
        return self.attrs(self.tree.lookup(parent_inode, os.fsdecode(name)))

    @_errors
    async def getattr(self, inode: int, ctx: Any = None) -> Any:
        return self.attrs(self.tree.get(inode))

    @_errors
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: Any, ctx: Any) -> Any:
        return self.attrs(self.tree.get(inode))

    @_errors
    async def opendir(self, inode: int, ctx: Any) -> Any:
        self.tree.listdir(inode)
        return pyfuse3.FileHandleT(inode)

    @_errors
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        for node in sorted(self.tree.listdir(fh), key=lambda n: n.inode):
            if node.inode <= start_id:
                continue
            if not pyfuse3.readdir_reply(token, os.fsencode(node.name), self.attrs(node),
                                         node.inode):
                return

    async def releasedir(self, fh: int) -> None:
        return None

    @_errors
    async def open(self, inode: int, flags: int, ctx: Any) -> Any:
        handle = await self.tree.open(inode, flags)
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = (handle, ctx.pid)
        channel = handle.node.file is not None and handle.node.file.channel is not None
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), direct_io=True, keep_cache=False,
                                nonseekable=channel)

    @_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self.tree.read(self._handle(fh), off, size)

    @_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle, pid = self.handles.get(fh) or (None, 0)
        if handle is None:
            raise TreeError(errno.EBADF)
        return await self.tree.write(handle, bytes(buf), thread_group(pid))

    async def flush(self, fh: int) -> None:
        return None

    async def release(self, fh: int) -> None:
        self.polls.pop(fh, None)
        entry = self.handles.pop(fh, None)
        if entry is not None:
            self.tree.release(entry[0])

    @_errors
    async def poll(self, inode: int, fh: int, poll_handle: Any, ctx: Any) -> int:
        events = self.tree.poll(self._handle(fh))
        if poll_handle is not None:
            self.polls[fh] = poll_handle
        return events

    @_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> Any:
        if self.on_mkdir is None or thread_group(ctx.pid) != os.getpid():
            raise TreeError(errno.EPERM)
        return self.attrs(self.on_mkdir(self.tree.get(parent_inode), os.fsdecode(name)))

    @_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        if thread_group(ctx.pid) != os.getpid():
            raise TreeError(errno.EPERM)
        self.tree.remove(self.tree.lookup(parent_inode, os.fsdecode(name)))

    async def statfs(self, ctx: Any) -> Any:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_namemax = 255
        return s

    def _handle(self, fh: int) -> Handle:
        entry = self.handles.get(fh)
        if entry is None:
            raise TreeError(errno.EBADF)
        return entry[0]


def clean_stale(mountpoint: str) -> None:
    """Unmount a stale FUSE mount at `mountpoint` (stat: ENOTCONN); refuse a live mount."""
    try:
        os.stat(mountpoint)
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            raise
        log.warning("%s: a stale mount (ENOTCONN), left by a server that did not unmount; "
                    "unmounting it", mountpoint)
        unmount(mountpoint)
        os.stat(mountpoint)
        return
    if os.path.ismount(mountpoint):
        raise OSError(errno.EBUSY, f"{mountpoint} is already a mount point")
    if not os.path.isdir(mountpoint):
        raise OSError(errno.ENOTDIR, f"{mountpoint} is not a directory")


def unmount(mountpoint: str) -> None:
    fusermount = shutil.which("fusermount3") or shutil.which("fusermount")
    if fusermount is not None:
        done = subprocess.run([fusermount, "-u", "-z", mountpoint], capture_output=True,
                              check=False)
        if done.returncode == 0:
            return
    subprocess.run(["umount", "-l", mountpoint], capture_output=True, check=True)


def _terminate() -> None:
    """`pyfuse3.terminate()`, which ends the session and, in pyfuse3's asyncio layer, sets
    ClosedResourceError on every future waiting for /dev/fuse to be readable.  A future that
    a request arriving just now has already completed makes that raise InvalidStateError
    half-way, leaving the later waiters (and the main loop) waiting: tell those ourselves."""
    try:
        pyfuse3.terminate()
    except asyncio.InvalidStateError:
        waiting = pyfuse3.asyncio._read_futures  # no public way to reach them
        for futures in list(waiting.values()):
            for future in list(futures):
                if not future.done():
                    future.set_exception(pyfuse3.asyncio.ClosedResourceError())


class ControlMount:
    """The control tree mounted at a directory, for as long as the server runs."""

    def __init__(self, ops: ControlOps, mountpoint: str, state_dir: str) -> None:
        self.ops = ops
        self.mountpoint = os.path.abspath(mountpoint)
        self.link = os.path.join(state_dir, LINK_NAME)
        self._task: asyncio.Task[None] | None = None
        self.tasks: list[asyncio.Task[None]] = []  # work on the mounted tree, ended first

    async def start(self) -> None:
        clean_stale(self.mountpoint)
        pyfuse3.asyncio.enable()
        pyfuse3.init(self.ops, self.mountpoint, set(OPTIONS))
        self._task = asyncio.create_task(pyfuse3.main(min_tasks=2, max_tasks=16))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.link)
        os.symlink(self.mountpoint, self.link)
        log.info("control tree mounted at %s (%s)", self.mountpoint, self.link)

    async def close(self) -> None:
        if self._task is None:
            return
        task, self._task = self._task, None
        for work in self.tasks:
            work.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            if os.path.islink(self.link) and os.readlink(self.link) == self.mountpoint:
                os.unlink(self.link)
        _terminate()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 5)
        pyfuse3.close(unmount=True)
        log.info("control tree unmounted from %s", self.mountpoint)
