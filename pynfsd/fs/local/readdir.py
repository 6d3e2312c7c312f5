"""The local backend's directory listing: readdir cookies and per-entry errors.

Theory of operation
-------------------
readdir cookies are the filesystem's own ``getdents64`` ``d_off`` positions plus 3 (so never
0, 1 or 2), as knfsd uses them: on ext4 they are hash positions that stay valid while the
directory changes. The directory is opened for reading through ``/proc/self/fd`` (``openat``
of "." would need search permission); each entry is then reached as the caller, and one it may
not reach (a directory it may read but not search) is listed with the errno and its ``d_ino``.
A mount point is listed with ``DirEntry.mount`` set (see ``lookup``). The verifier is an HMAC
of the directory's handle, so it needs no state.
"""

from __future__ import annotations

import errno
import os

from pynfsd.fs import linux
from pynfsd.fs.backend import DirEntry
from pynfsd.fs.local.lookup import LocalLookup
from pynfsd.fs.local.objects import MAX_OFFSET, proc, stat_attrs
from pynfsd.fs.names import oserror

COOKIE_BIAS = 3  # cookie = d_off + 3: never 0, 1 or 2 (RFC 7530 section 16.24.4)
# Why a listed name may not be reached, reported per entry rather than failing the listing
# (as knfsd's rdattr_error): no search permission on the directory; a damaged inode.
_UNREACHABLE = (errno.EACCES, errno.EPERM, errno.EIO)
# getdents64 buffer: room for "." and ".." and one longest name (a 280-byte record), then
# about 40 bytes a wanted entry (a record is 19 bytes, its name and padding to 8)
_DIRENT_BUF_MIN = 1024
_DIRENT_GUESS = 40
_DIRENT_BUF_MAX = 32768


class LocalReaddir(LocalLookup):
    """Directory listing of the local backend (``_mount_at`` marks mount points)."""

    # -- Backend: readdir ----------------------------------------------------------------

    def _verifier(self, dir_h: bytes) -> bytes:
        return self._codec.mac(b"readdir\0" + dir_h)[:8]

    def _dir_entry(self, dir_fd: int, name: bytes, d_off: int, d_ino: int) -> DirEntry | None:
        """The entry for ``name`` (``mount`` set on a mount point; ``error`` set when the
        caller may not reach it, see the backend contract), or None if it vanished."""
        cookie = d_off + COOKIE_BIAS
        try:
            fd, st = self._open_listed(dir_fd, name)
        except OSError as e:
            if e.errno == errno.EXDEV:
                mount, st = self._mount_at(dir_fd, name, d_ino)
                return DirEntry(name, cookie, b"", stat_attrs(st, 0), mount, d_ino)
            if e.errno == errno.ENOENT:
                return None
            if e.errno in _UNREACHABLE:
                return DirEntry(name, cookie, b"", None, fileid=d_ino, error=e.errno)
            raise
        try:
            h = self._codec.encode(*linux.handle_of_fd(fd))
        finally:
            os.close(fd)
        return DirEntry(name, cookie, h, self._attrs(st), None, d_ino)

    def _scan(self, fd: int, max_entries: int) -> tuple[list[DirEntry], bool]:
        out: list[DirEntry] = []
        # a buffer about the size of the entries wanted: every record read beyond them is
        # parsed for nothing (the next call seeks back to its cookie)
        bufsize = min(_DIRENT_BUF_MAX, _DIRENT_BUF_MIN + max_entries * _DIRENT_GUESS)
        entry, append = self._dir_entry, out.append  # bound once: this loop runs per name
        while batch := linux.getdents64(fd, bufsize):
            for name, d_off, d_ino in batch:
                if name == b"." or name == b"..":
                    continue
                if len(out) >= max_entries:
                    return out, False
                found = entry(fd, name, d_off, d_ino)
                if found is not None:
                    append(found)
        return out, True

    def readdir(
        self, dir_h: bytes, cookie: int, verifier: bytes, max_entries: int
    ) -> tuple[list[DirEntry], bool, bytes]:
        mine = self._verifier(dir_h)
        if cookie in (1, 2) or cookie < 0 or cookie - COOKIE_BIAS > MAX_OFFSET:
            raise oserror(errno.EINVAL, "bad readdir cookie")  # NFS4ERR_BAD_COOKIE
        if verifier != bytes(8) and verifier != mine:
            raise oserror(errno.EINVAL, "bad readdir verifier")
        with self._dir(dir_h) as (d, _):
            # through /proc, not openat(".") which needs search permission: reading a
            # directory needs only read permission (its entries then come as ``error``)
            fd = os.open(proc(d.fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                if cookie:
                    os.lseek(fd, cookie - COOKIE_BIAS, os.SEEK_SET)
                entries, eof = self._scan(fd, max_entries)
            finally:
                os.close(fd)
        return entries, eof, mine
