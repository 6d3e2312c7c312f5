"""POSIX permission evaluation, as Linux's generic_permission() does it, ACLs included.

The model for backends that leave permissions to the caller (the in-memory backend, through
the Vfs). The local backend does not use it: the kernel decides under the caller's identity
(``pynfsd.fs.creds``), ACLs included.

One rule is the NFS server's, not POSIX's, and applies to every backend: *read-if-execute*
(``may_read``). knfsd lets a client read a regular file its user may execute but not read
(fs/nfsd/vfs.c ``nfsd_permission``: "Allow read access to binaries even when mode 111",
asked for by NFSv4 OPEN through ``NFSD_MAY_READ_IF_EXEC`` in ``do_open_permission`` and by
READ through ``NFSD_MAY_READ | NFSD_MAY_OWNER_OVERRIDE``), because a client must read a
binary to execute it (mode 0711); the client checks execute permission itself (ACCESS).
It covers reading only: an OPEN that also asks for write access gets no such exception."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from pynfsd.fs import posixacl
from pynfsd.fs.backend import Attrs, FileType

READ: Final = 4
WRITE: Final = 2
EXEC: Final = 1
ALL: Final = READ | WRITE | EXEC


def mode_class_bits(attrs: Attrs, uid: int, gids: Iterable[int]) -> int:
    """The rwx triple that applies to ``uid``/``gids``: owner, else group, else other."""
    if uid == attrs.uid:
        return (attrs.mode >> 6) & ALL
    if attrs.gid in gids:
        return (attrs.mode >> 3) & ALL
    return attrs.mode & ALL


def root_bits(attrs: Attrs) -> int:
    """What uid 0 gets: read and write always; exec on directories or if any x bit is set."""
    if attrs.type == FileType.DIR or attrs.mode & 0o111:
        return ALL
    return READ | WRITE


def check_access(
    attrs: Attrs, uid: int, gids: Iterable[int], want: int,
    acl: posixacl.PosixAcl | None = None,
) -> int:
    """The subset of ``want`` (READ|WRITE|EXEC bits) that ``uid``/``gids`` is granted, by
    the object's access ``acl`` when it has one (``posixacl.permission``), else its mode."""
    if uid == 0:
        return want & root_bits(attrs)
    if acl is not None:
        return want & posixacl.permission(acl, attrs.uid, attrs.gid, uid, gids)
    return want & mode_class_bits(attrs, uid, gids)


def may_read(attrs: Attrs, granted: int) -> bool:
    """Whether reading ``attrs``' object is allowed with the ``granted`` bits: read
    permission, or execute permission on a regular file (read-if-execute, see above)."""
    return bool(granted & READ) or (attrs.type == FileType.REG and bool(granted & EXEC))
