"""The control tree's files, sans-IO: what each read returns, what each write does, which errno.

Theory of operation.  `pynfsd serve --nfsd-fs DIR` shows the server the way the kernel shows
knfsd: `DIR/rpc/<cache>/{channel,content,flush}` as `/proc/net/rpc` holds them and `DIR/nfsd/`
as `/proc/fs/nfsd` (NFS-UTILS-INTEROP.md).  This module is that tree without FUSE: `Tree` holds
numbered nodes (directories and files), and `fuse.py` only turns FUSE requests into calls of
`lookup`, `listdir`, `open`, `read`, `write`, `poll` and `release` (errors are `TreeError` with
the errno the caller gets).

* A **file** (`File`) has a mode (the kernel's permission bits: a file without write
  permission refuses an open for writing with EACCES, one without read permission an open for
  reading), a `show()` giving its whole text and a `store(data, pid)` taking one write (0 or
  an errno; the writer's pid is there for `portlist`, which takes a socket from the writer).
  A write is one command or one reply, whatever its offset, as in the kernel's proc files.
  The text is taken when the file is opened and again at each read from offset 0, so an
  administrator's `cat` sees a consistent snapshot and a daemon that rereads with pread(0)
  sees a fresh one.
* A **channel** file (`rpc/<cache>/channel`) is a reader of the cache's `ChannelWay`: an
  open for reading counts as a reader (`ready` for the chain), each read hands out exactly one
  request line (b"" when none: the reader sees EOF and polls), a read with a buffer shorter
  than the line gets the rest on the next reads, and each write is one reply.  `poll` is
  readable while a request is queued, always writable.  exportfs's `-test-client-` lines
  are answered as knfsd answers them (`probe.py`), not stored.
* **Directories** are fixed, except `nfsd/clients/`, whose entries `set_dir` adds and
  removes (`nfsd.py`).

All files have size 0 (they are opened with direct_io: every read asks the server).
"""

from __future__ import annotations

import errno
import inspect
import os
import select
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pynfsd.cache.reader import ChannelWay
from pynfsd.cache.ways import CACHE_NAMES
from pynfsd.nfsdfs.probe import Probes

ROOT = 1  # FUSE's root inode
Show = Callable[[], "bytes | Awaitable[bytes]"]
Store = Callable[[bytes, int], "int | Awaitable[int]"]  # (data, writer's pid) -> 0 or errno


class TreeError(Exception):
    """What a caller of the tree gets: an errno."""

    def __init__(self, code: int) -> None:
        super().__init__(os.strerror(code))
        self.errno = code


@dataclass
class File:
    """A regular file: its permission bits, its text, what a write does."""

    perm: int
    show: Show | None = None
    store: Store | None = None
    channel: str | None = None  # a cache name: the cache's channel file


@dataclass
class Node:
    inode: int
    name: str
    parent: int
    file: File | None = None  # None: a directory
    children: dict[str, int] = field(default_factory=dict)

    @property
    def mode(self) -> int:
        if self.file is None:
            return stat.S_IFDIR | 0o555
        return stat.S_IFREG | self.file.perm


@dataclass
class Handle:
    """One open of a file."""

    node: Node
    read: bool
    write: bool
    text: bytes = b""
    rest: bytes = b""  # a channel request line not read whole yet


class Tree:
    """The numbered nodes of the control tree; see the module docstring."""

    def __init__(self, way: ChannelWay | None = None) -> None:
        self.way = way
        self.nodes: dict[int, Node] = {ROOT: Node(ROOT, "", ROOT)}
        self._next = ROOT + 1

    # ------------------------------------------------------------ building
    def path(self, path: str) -> Node:
        """The node at `path` (below the root), ENOENT if none."""
        node = self.nodes[ROOT]
        for part in filter(None, path.split("/")):
            node = self.lookup(node.inode, part)
        return node

    def add(self, parent: int, name: str, file: File | None = None) -> Node:
        node = Node(self._next, name, parent, file)
        self._next += 1
        self.nodes[node.inode] = node
        self.nodes[parent].children[name] = node.inode
        return node

    def mkdirs(self, path: str) -> Node:
        node = self.nodes[ROOT]
        for part in filter(None, path.split("/")):
            inode = node.children.get(part)
            node = self.nodes[inode] if inode else self.add(node.inode, part)
        return node

    def remove(self, node: Node) -> None:
        for child in list(node.children.values()):
            self.remove(self.nodes[child])
        self.nodes[node.parent].children.pop(node.name, None)
        del self.nodes[node.inode]

    # ------------------------------------------------------------ lookups
    def lookup(self, parent: int, name: str) -> Node:
        node = self.get(parent)
        if node.file is not None:
            raise TreeError(errno.ENOTDIR)
        if name == ".":
            return node
        if name == "..":
            return self.get(node.parent)
        inode = node.children.get(name)
        if inode is None:
            raise TreeError(errno.ENOENT)
        return self.nodes[inode]

    def get(self, inode: int) -> Node:
        node = self.nodes.get(inode)
        if node is None:
            raise TreeError(errno.ENOENT)
        return node

    def listdir(self, inode: int) -> list[Node]:
        node = self.get(inode)
        if node.file is not None:
            raise TreeError(errno.ENOTDIR)
        return [self.nodes[i] for _, i in sorted(node.children.items())]

    # ------------------------------------------------------------ files
    async def open(self, inode: int, flags: int) -> Handle:
        node = self.get(inode)
        if node.file is None:
            raise TreeError(errno.EISDIR)
        access = flags & os.O_ACCMODE
        want_read = access in (os.O_RDONLY, os.O_RDWR)
        want_write = access in (os.O_WRONLY, os.O_RDWR)
        perm = node.file.perm
        if (want_read and not perm & 0o400) or (want_write and not perm & 0o200):
            raise TreeError(errno.EACCES)
        handle = Handle(node, want_read, want_write)
        if node.file.channel is not None:
            if want_read:
                self._way().open_reader(node.file.channel)
        elif want_read and node.file.show is not None:
            handle.text = await _show(node.file.show)
        return handle

    async def read(self, handle: Handle, offset: int, size: int) -> bytes:
        file = handle.node.file
        assert file is not None
        if not handle.read:
            raise TreeError(errno.EBADF)
        if file.channel is not None:
            data = handle.rest or self._way().read(file.channel)
            handle.rest = data[size:]
            return data[:size]
        if offset == 0 and file.show is not None:
            handle.text = await _show(file.show)
        return handle.text[offset:offset + size]

    async def write(self, handle: Handle, data: bytes, pid: int) -> int:
        """One write: the number of bytes taken, or TreeError."""
        file = handle.node.file
        assert file is not None
        if not handle.write:
            raise TreeError(errno.EBADF)
        if file.store is None:
            raise TreeError(errno.EACCES)
        code = file.store(data, pid)
        if inspect.isawaitable(code):
            code = await code
        if code:
            raise TreeError(code)
        return len(data)

    def poll(self, handle: Handle) -> int:
        """The poll events of the open file now."""
        file = handle.node.file
        events = select.POLLOUT | select.POLLWRNORM
        if file is not None and file.channel is not None:
            if handle.rest or self._way().pending(file.channel):
                events |= select.POLLIN | select.POLLRDNORM
        else:
            events |= select.POLLIN | select.POLLRDNORM
        return events

    def release(self, handle: Handle) -> None:
        file = handle.node.file
        if file is not None and file.channel is not None and handle.read:
            self._way().close_reader(file.channel)

    def _way(self) -> ChannelWay:
        if self.way is None:
            raise TreeError(errno.EINVAL)
        return self.way


async def _show(show: Show) -> bytes:
    text = show()
    return await text if inspect.isawaitable(text) else text


def add_caches(tree: Tree, caches: Any, now: Callable[[], float],
               flushed: Callable[[], None] = lambda: None) -> None:
    """`rpc/<cache>/{channel,content,flush}` for the four caches of a `ServerCaches`;
    `flushed` runs after each flush written (the views forget what they derived)."""
    way = tree.way
    probes = Probes()
    for name in CACHE_NAMES:
        channel = caches.channels[name]
        folder = tree.mkdirs(f"rpc/{name}")

        def reply(data: bytes, pid: int, name: str = name) -> int | Awaitable[int]:
            assert way is not None
            probe = probes.write(name, data)  # exportfs's test export
            return way.write(name, data, now()) if probe is None else probe

        tree.add(folder.inode, "channel", File(0o600, store=reply, channel=name))
        tree.add(folder.inode, "content", File(0o400, show=channel.content))
        def flush(data: bytes, pid: int, channel: Any = channel) -> int:
            code: int = channel.write_flush(data)
            if code == 0:
                flushed()
            return code

        tree.add(folder.inode, "flush", File(0o600, show=channel.read_flush, store=flush))
