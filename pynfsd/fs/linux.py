"""Linux system calls the standard library lacks, through ctypes.

``name_to_handle_at``/``open_by_handle_at`` (persistent file handles), ``getdents64``
(directory offsets usable as cookies), ``openat2`` with ``RESOLVE_CACHED`` (a lookup that
never waits for the disk), and the ``AT_EMPTY_PATH`` forms of ``fchownat``,
``utimensat`` and ``linkat`` that act on ``O_PATH`` descriptors, symlinks included.
Every failure raises ``OSError`` with the errno the kernel returned.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Callable
from typing import Final

AT_EMPTY_PATH: Final = 0x1000
AT_SYMLINK_NOFOLLOW: Final = 0x100
MAX_HANDLE_SZ: Final = 128
UTIME_NOW: Final = (1 << 30) - 1
UTIME_OMIT: Final = (1 << 30) - 2
_DIRENT = struct.Struct("<QqHB")  # d_ino, d_off, d_reclen, d_type; then the name

_libc = ctypes.CDLL(None, use_errno=True)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _check(ret: int) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


# struct file_handle's head (handle_bytes, handle_type); the handle's bytes follow it
_HANDLE_HEAD = struct.Struct("=Ii")
_HANDLE_ARGS = (ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int)
_name_to_handle_at = _libc.name_to_handle_at
_name_to_handle_at.argtypes = _HANDLE_ARGS
# The same call that keeps the GIL: on an open descriptor it only encodes what the inode
# holds, so dropping and taking the GIL back would cost more than the call (once per entry
# READDIR lists).
_handle_of_fd = ctypes.PyDLL(None, use_errno=True).name_to_handle_at
_handle_of_fd.argtypes = _HANDLE_ARGS


_HandleBuffer = ctypes.c_char * (_HANDLE_HEAD.size + MAX_HANDLE_SZ)
# the mount id the call reports: never read, so every call may write the same one
_MOUNT_ID = ctypes.byref(ctypes.c_int())


def _to_handle(call: Callable[..., int], dirfd: int, name: bytes, flags: int) -> tuple[int, bytes]:
    buf = _HandleBuffer()
    _HANDLE_HEAD.pack_into(buf, 0, MAX_HANDLE_SZ, 0)
    _check(call(dirfd, name, buf, _MOUNT_ID, flags))
    size, handle_type = _HANDLE_HEAD.unpack_from(buf)
    return handle_type, buf.raw[_HANDLE_HEAD.size : _HANDLE_HEAD.size + size]


def name_to_handle_at(dirfd: int, name: bytes, flags: int) -> tuple[int, bytes]:
    """The kernel handle ``(type, bytes)`` of ``name`` relative to ``dirfd``."""
    return _to_handle(_name_to_handle_at, dirfd, name, flags)


def handle_of_fd(fd: int) -> tuple[int, bytes]:
    """The kernel handle of the object ``fd`` refers to (``O_PATH`` descriptors work)."""
    return _to_handle(_handle_of_fd, fd, b"", AT_EMPTY_PATH)


def open_by_handle_at(mount_fd: int, handle_type: int, handle: bytes, flags: int) -> int:
    """Open the object a kernel handle names (needs CAP_DAC_READ_SEARCH)."""
    if len(handle) > MAX_HANDLE_SZ:
        raise OSError(22, os.strerror(22))
    fh = ctypes.create_string_buffer(_HANDLE_HEAD.pack(len(handle), handle_type) + handle)
    return _check(_libc.open_by_handle_at(mount_fd, fh, flags))


def getdents64(fd: int, bufsize: int = 32768) -> list[tuple[bytes, int, int]]:
    """One ``getdents64`` call: ``(name, d_off, d_ino)`` for each entry; empty at the end."""
    buf = ctypes.create_string_buffer(bufsize)
    n = _check(_libc.getdents64(fd, buf, ctypes.c_size_t(bufsize)))  # glibc >= 2.30
    raw, out, pos = buf.raw[:n], [], 0
    while pos < n:
        ino, off, reclen, _ = _DIRENT.unpack_from(raw, pos)
        name_end = raw.index(b"\0", pos + _DIRENT.size)
        out.append((raw[pos + _DIRENT.size : name_end], off, ino))
        pos += reclen
    return out


def fchown_empty(fd: int, uid: int, gid: int) -> None:
    """``fchownat(fd, "", uid, gid, AT_EMPTY_PATH)``: chown the object itself, no following."""
    _check(_libc.fchownat(fd, b"", uid, gid, AT_EMPTY_PATH))


def utimens_empty(fd: int, atime: tuple[int, int], mtime: tuple[int, int]) -> None:
    """``utimensat(fd, "", times, AT_EMPTY_PATH)``; each time is ``(sec, nsec)``."""
    times = (_Timespec * 2)(_Timespec(*atime), _Timespec(*mtime))
    _check(_libc.utimensat(fd, b"", times, AT_EMPTY_PATH))


def link_empty(fd: int, dst_dirfd: int, name: bytes) -> None:
    """``linkat(fd, "", dst_dirfd, name, AT_EMPTY_PATH)``: hard-link the object ``fd`` names."""
    _check(_libc.linkat(fd, b"", dst_dirfd, name, AT_EMPTY_PATH))


SYS_OPENAT2: Final = 437  # the same number on every architecture Linux added it to
RESOLVE_NO_XDEV: Final = 0x01
RESOLVE_BENEATH: Final = 0x08
RESOLVE_CACHED: Final = 0x20  # Linux 5.12: EAGAIN unless the walk needs no I/O or revalidation


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, name: bytes, flags: int, resolve: int) -> int:
    """``openat2(dirfd, name, {flags, 0, resolve})``: ENOSYS before Linux 5.6, EINVAL for
    resolve flags the kernel does not know (``RESOLVE_CACHED`` before 5.12)."""
    how = _OpenHow(flags, 0, resolve)
    return _check(_libc.syscall(SYS_OPENAT2, dirfd, name, ctypes.byref(how),
                                ctypes.c_size_t(ctypes.sizeof(how))))


class _StatFs(ctypes.Structure):
    """``struct statfs`` of 64-bit Linux (x86_64, aarch64): ``statfs64`` is the same call."""

    _fields_ = [
        ("f_type", ctypes.c_ulong), ("f_bsize", ctypes.c_long), ("f_blocks", ctypes.c_ulong),
        ("f_bfree", ctypes.c_ulong), ("f_bavail", ctypes.c_ulong), ("f_files", ctypes.c_ulong),
        ("f_ffree", ctypes.c_ulong), ("f_fsid", ctypes.c_uint * 2), ("f_namelen", ctypes.c_long),
        ("f_frsize", ctypes.c_long), ("f_flags", ctypes.c_long), ("f_spare", ctypes.c_long * 4),
    ]  # fmt: skip


def statfs(path: bytes) -> tuple[int, tuple[int, int]]:
    """``statfs(2)`` of ``path``: the filesystem's magic number (``f_type``) and its
    ``f_fsid`` words (``__val[0]``, ``__val[1]``), which ``os.statvfs`` does not give."""
    buf = _StatFs()
    _check(_libc.statfs(path, ctypes.byref(buf)))
    return int(buf.f_type), (int(buf.f_fsid[0]), int(buf.f_fsid[1]))


def fs_type(dev: int, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The filesystem type (``ext4``, ``fuse.sshfs``, ...) mounted with device number ``dev``,
    from ``mountinfo`` (proc(5): field 3 is ``major:minor``, the type follows `` - ``)."""
    want = f"{os.major(dev)}:{os.minor(dev)}"
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) > 2 and fields[2] == want and " - " in line:
                    return line.split(" - ", 1)[1].split()[0]
    except OSError:
        pass
    return None
