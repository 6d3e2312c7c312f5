"""The server's mount table (``/proc/self/mountinfo``) and the fsids of crossed mounts.

Theory of operation: :func:`parse_mountinfo` is the sans-IO parser (proc(5) format, octal
escapes decoded, at most ``MAX_TABLE_MOUNTS`` entries, the kernel's default ``fs.mount-max``,
read line by line). :class:`MountTable` keeps ``/proc/self/mountinfo`` open and re-reads it
only when the kernel reports a change (the file polls ``POLLPRI`` once after a mount or umount,
proc(5)); between changes the parsed table is reused. It is read on demand, never at start: when a filehandle names an fsid the client's view
does not know yet (a mount crossed before a restart).

A mount crossed under ``crossmnt`` gets a stable fsid from :func:`mount_fsid`: a hash of the
filesystem's own id (``statfs`` ``f_fsid``, which disk filesystems derive from their UUID, as
knfsd's ``uuid_by_path`` falls back to) and the mount point, so two bind mounts of one
filesystem stay apart. It does not change across server restarts while the mount stays.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .resolver import derived_fsid

log = logging.getLogger(__name__)

#: Default bound on the mounts crossed per client view (``pynfsd serve --max-mounts``).
DEFAULT_MAX_MOUNTS = 4096
#: Bound on the mounts kept from the mount table: the kernel's default ``fs.mount-max``.
MAX_TABLE_MOUNTS = 100_000
MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of mountinfo: ``mount_point`` is absolute, ``root`` the mounted directory of
    the filesystem, ``dev`` its ``(major, minor)``."""

    mount_id: int
    parent_id: int
    dev: tuple[int, int]
    root: str
    mount_point: str
    fstype: str


def _unescape(field: bytes) -> str:
    """Decode mountinfo's ``\\ooo`` octal escapes (space, tab, newline, backslash)."""
    out, i = bytearray(), 0
    while i < len(field):
        if field[i] == 0x5C and len(field[i + 1 : i + 4]) == 3 and field[i + 1 : i + 4].isdigit():
            out.append(int(field[i + 1 : i + 4], 8) & 0xFF)
            i += 4
        else:
            out.append(field[i])
            i += 1
    return os.fsdecode(bytes(out))


def parse_line(line: bytes) -> Mount | None:
    """One mountinfo line, or None when it is malformed."""
    fields = line.split()
    try:
        sep = fields.index(b"-", 6)
        major, minor = fields[2].split(b":")
        return Mount(int(fields[0]), int(fields[1]), (int(major), int(minor)),
                     _unescape(fields[3]), _unescape(fields[4]), os.fsdecode(fields[sep + 1]))  # fmt: skip
    except (ValueError, IndexError):
        return None


def parse_mountinfo(
    lines: Iterable[bytes], max_mounts: int = MAX_TABLE_MOUNTS
) -> tuple[Mount, ...]:
    """The mounts in mountinfo ``lines``, at most ``max_mounts`` of them (the rest are not
    found again after a restart; LOOKUP still crosses them)."""
    out: list[Mount] = []
    for line in lines:
        if len(out) >= max_mounts:
            log.warning("mount table: more than %d mounts; the rest are ignored", max_mounts)
            break
        mount = parse_line(line)
        if mount is not None:
            out.append(mount)
    return tuple(out)


def is_below(path: str, top: str) -> bool:
    """Whether ``path`` lies strictly below directory ``top``."""
    return path != top and path.startswith(top.rstrip("/") + "/")


def mounts_below(mounts: Iterable[Mount], top: str) -> list[str]:
    """Mount points strictly below ``top``, parents first (each once)."""
    points = {m.mount_point for m in mounts if is_below(m.mount_point, top)}
    return sorted(points, key=lambda p: (p.count("/"), p))


def mount_fsid(fs_key: bytes) -> int:
    """The 64-bit fsid of a crossed mount from its backend's ``MountPoint.fs_key``."""
    return derived_fsid(b"mount", fs_key)


def _lines(fd: int) -> Iterator[bytes]:
    """The lines of ``fd`` from the start, read in chunks (never the whole file at once)."""
    os.lseek(fd, 0, os.SEEK_SET)
    rest = b""
    while chunk := os.read(fd, 65536):
        *lines, rest = (rest + chunk).split(b"\n")
        yield from lines
    if rest:
        yield rest


class MountTable:
    """``/proc/self/mountinfo``, parsed, re-read only after the kernel reports a change.

    Safe to call from several worker threads; every call may block (reads /proc)."""

    def __init__(self, max_mounts: int = MAX_TABLE_MOUNTS, path: str = MOUNTINFO) -> None:
        self.max_mounts = max_mounts
        self._path = path
        self._lock = threading.Lock()
        self._file: int | None = None
        self._poll = select.poll()
        self._mounts: tuple[Mount, ...] = ()
        self._generation = 0

    def current(self) -> tuple[int, tuple[Mount, ...]]:
        """``(generation, mounts)`` as they are now: re-read when the table changed since the
        last call, and the generation then bumped (callers cache what they derive by it)."""
        with self._lock:
            if self._file is None:
                self._file = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
                self._poll.register(self._file, select.POLLPRI | select.POLLERR)
            elif not self._poll.poll(0):
                return self._generation, self._mounts
            self._mounts = parse_mountinfo(_lines(self._file), self.max_mounts)
            self._generation += 1
            return self._generation, self._mounts

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                os.close(self._file)
                self._file = None
