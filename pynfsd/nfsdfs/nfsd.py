"""`nfsd/`: the files of knfsd's `/proc/fs/nfsd` that nfs-utils reads and writes.

Theory of operation.  `Nfsd` answers the control files from the running server's parts (its
listeners, its worker pool), in knfsd's formats (fs/nfsd/nfsctl.c); `add_nfsd` puts them in
the `Tree`.  Each write is one command; a malformed one gets EINVAL, is logged at most once per
`LOG_INTERVAL`, and changes nothing.

* `export_features` (read-only): `0x<NFSEXP_ALLFLAGS> 0x<NFSEXP_SECINFO_FLAGS>`, the export
  flags the `nfsd.export` channel accepts (exportfs and mountd read it).
* `versions`: reads `-2 -3 +4 +4.0 -4.1 -4.2` (pynfsd serves NFSv4.0 only).  A write of
  `+N`/`-N`/`+N.M`/`-N.M` words (rpc.nfsd writes `-2 -3 +4.0 +4.1 +4.2`) is accepted: the
  versions pynfsd does not serve stay off and are logged once each.  A write that turns 4.0
  off is refused with EBUSY (knfsd refuses version changes while it serves).
* `threads`: the number of worker threads of filesystem calls; a write resizes the pool at
  once (1 to `MAX_THREADS`; 0 would stop knfsd: refused with EINVAL, stop pynfsd with SIGTERM).
* `portlist`: one `tcp PORT` line per listening socket.  A write of a file descriptor number
  (rpc.nfsd's way) takes that descriptor from the writing process (`pidfd_open` +
  `pidfd_getfd`, which needs the privileges of ptrace over the writer) and serves on it if it
  is a listening TCP socket (ENOTSOCK when it is no socket, EINVAL when not a listening TCP
  one, EADDRINUSE when already served, EBADF when the writer has no such descriptor).  A write
  of `tcp PORT` listens on every address (IPv4 and IPv6) at PORT, `+tcp ADDR PORT` or
  `tcp ADDR PORT` on one address.  Both go through the same listener table as `pynfsd listen
  add` (bounded by `--max-listeners`).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import socket
from collections.abc import Callable
from typing import Any

from pynfsd.blocking import default_runner
from pynfsd.cache import lines as L
from pynfsd.nfsdfs.tree import File, Tree
from pynfsd.rpc.connections import LOG_INTERVAL, RateLimitedLog
from pynfsd.rpc.listeners import ListenerError, format_hostport, listening_socket

log = logging.getLogger(__name__)

MAX_THREADS = 1024  # knfsd allows 8192 (NFSD_MAXSERVS); each of ours is a Python thread
SERVED = frozenset({(4, 0)})
KNOWN = ((2, None), (3, None), (4, None), (4, 0), (4, 1), (4, 2))
_VERSION = re.compile(r"([+-])([234])(?:\.([0-9]))?")
SYS_PIDFD_GETFD = 438  # x86_64 and the generic table


def pidfd_getfd(pid: int, fd: int) -> int:
    """A duplicate of descriptor `fd` of process `pid` (OSError with the errno)."""
    pidfd = os.pidfd_open(pid)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        got = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if got < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return int(got)
    finally:
        os.close(pidfd)


def versions_text(served: frozenset[tuple[int, int]] = SERVED) -> bytes:
    words = []
    for major, minor in KNOWN:
        on = any(v[0] == major for v in served) if minor is None else (major, minor) in served
        words.append(f"{'+' if on else '-'}{major}" + ("" if minor is None else f".{minor}"))
    return (" ".join(words) + "\n").encode()


class Nfsd:
    """The `nfsd/` control files over the server's parts; see the module docstring."""

    def __init__(self, listeners: Any, pool: Any, now: Callable[[], float],
                 log_interval: float = LOG_INTERVAL) -> None:
        self.listeners = listeners  # an RpcTcpServer
        self.pool = pool  # a BlockingPool
        self.now = now
        self._refused = RateLimitedLog(log_interval, log)
        self._ignored: set[str] = set()

    def refuse(self, code: int, msg: str, *args: object) -> int:
        self._refused.warning(self.now(), msg, *args)
        return code

    # ------------------------------------------------------------ export_features
    @staticmethod
    def export_features() -> bytes:
        return b"0x%x 0x%x\n" % (L.NFSEXP_ALLFLAGS, L.NFSEXP_SECINFO_FLAGS)

    # ------------------------------------------------------------ versions
    def write_versions(self, data: bytes, pid: int) -> int:
        words = data.decode("ascii", "replace").split()
        parsed = [_VERSION.fullmatch(w) for w in words]
        if not words or not all(parsed):
            return self.refuse(errno.EINVAL, "nfsd/versions: %r refused: expected words such "
                               "as -2 -3 +4 +4.0", data[:100])
        off_00 = False
        for m in parsed:
            assert m is not None
            sign, major, minor = m.group(1), int(m.group(2)), m.group(3)
            whole = minor is None
            if sign == "-" and major == 4 and (whole or int(minor) == 0):
                off_00 = True
            elif sign == "+" and (major, 0 if whole else int(minor)) not in SERVED:
                self._ignore(m.group(0)[1:])
            elif sign == "+":
                off_00 = False
        if off_00:
            return self.refuse(errno.EBUSY, "nfsd/versions: %r refused: pynfsd serves NFSv4.0 "
                               "and cannot turn it off while running", data[:100])
        return 0

    def _ignore(self, version: str) -> None:
        if version not in self._ignored:
            self._ignored.add(version)
            log.info("nfsd/versions: NFS version %s is not served by pynfsd; it stays off",
                     version)

    # ------------------------------------------------------------ threads
    def threads(self) -> bytes:
        return b"%d\n" % self.pool.size

    def write_threads(self, data: bytes, pid: int) -> int:
        text = data.strip()
        if not text.isdigit() or not 1 <= int(text) <= MAX_THREADS:
            return self.refuse(errno.EINVAL, "nfsd/threads: %r refused: a number of threads "
                               "from 1 to %d (stop pynfsd with SIGTERM)", data[:40], MAX_THREADS)
        self.pool.resize(int(text))
        log.info("nfsd/threads: %d worker threads", int(text))
        return 0

    # ------------------------------------------------------------ portlist
    def portlist(self) -> bytes:
        return b"".join(b"tcp %d\n" % item.address[1] for item in self.listeners.listeners)

    async def write_portlist(self, data: bytes, pid: int) -> int:
        text = data.decode("ascii", "replace").strip()
        if text.isdigit():
            return await self._add_fd(int(text), pid)
        words = text.removeprefix("+").split()
        if len(words) == 2 and words[0] == "tcp" and words[1].isdigit():
            return await self._add_addresses(["0.0.0.0", "::"], int(words[1]), optional_v6=True)
        if len(words) == 3 and words[0] == "tcp" and words[2].isdigit():
            return await self._add_addresses([words[1]], int(words[2]))
        return self.refuse(errno.EINVAL, "nfsd/portlist: %r refused: expected a descriptor "
                           "number, `tcp PORT` or `+tcp ADDR PORT`", data[:100])

    async def _add_fd(self, fd: int, pid: int) -> int:
        try:
            mine = pidfd_getfd(pid, fd)
        except OSError as e:
            return self.refuse(e.errno or errno.EBADF, "nfsd/portlist: descriptor %d of "
                               "process %d not taken: %s", fd, pid, e.strerror)
        # not fstat(2) or close(2) here: the descriptor may be a file of this very mount
        # (`echo 1 > portlist`: the writer's stdout), whose getattr and flush this event loop
        # would have to answer; /proc's link names it without asking the filesystem
        if not os.readlink(f"/proc/self/fd/{mine}").startswith("socket:"):
            await default_runner().run(os.close, mine)
            return self.refuse(errno.ENOTSOCK, "nfsd/portlist: descriptor %d of process %d is "
                               "not a socket", fd, pid)
        try:
            sock = listening_socket(mine)
        except ListenerError as e:
            os.close(mine)
            return self.refuse(errno.EINVAL, "nfsd/portlist: %s", e)
        return await self._serve(sock, f"portlist fd {fd} of pid {pid}")

    async def _add_addresses(self, hosts: list[str], port: int, optional_v6: bool = False) -> int:
        for host in hosts:
            try:
                listener = await self.listeners.add_listener(format_hostport(host, port))
            except ListenerError as e:
                if "already listening" in str(e):
                    return self.refuse(errno.EADDRINUSE, "nfsd/portlist: %s", e)
                return self.refuse(errno.EINVAL, "nfsd/portlist: %s", e)
            except OSError as e:
                if optional_v6 and ":" in host:
                    continue
                return self.refuse(e.errno or errno.EINVAL, "nfsd/portlist: %s", e)
            log.info("nfsd/portlist: listening on %s", format_hostport(*listener.address))
        return 0

    async def _serve(self, sock: socket.socket, origin: str) -> int:
        try:
            listener = await self.listeners.add_socket(sock, origin)
        except ListenerError as e:  # the socket is closed
            code = errno.EADDRINUSE if "already listening" in str(e) else errno.EINVAL
            return self.refuse(code, "nfsd/portlist: %s", e)
        log.info("listening on %s port %d (%s)", *listener.address, origin)
        return 0


def add_nfsd(tree: Tree, nfsd: Nfsd) -> None:
    """`nfsd/{export_features,versions,threads,portlist}` and the `clients/` directory."""
    folder = tree.mkdirs("nfsd")
    tree.add(folder.inode, "export_features", File(0o444, show=nfsd.export_features))
    tree.add(folder.inode, "versions", File(0o644, show=versions_text, store=nfsd.write_versions))
    tree.add(folder.inode, "threads", File(0o644, show=nfsd.threads, store=nfsd.write_threads))
    tree.add(folder.inode, "portlist", File(0o644, show=nfsd.portlist, store=nfsd.write_portlist))
    tree.mkdirs("nfsd/clients")
