"""POSIX permission evaluation, as Linux's generic_permission() does it (ACLs not modelled).

The model for backends that leave permissions to the caller (the in-memory backend, through
the Vfs). The local backend does not use it: the kernel decides under the caller's identity
(``pynfsd.fs.creds``), ACLs included."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

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


def check_access(attrs: Attrs, uid: int, gids: Iterable[int], want: int) -> int:
    """The subset of ``want`` (READ|WRITE|EXEC bits) that ``uid``/``gids`` is granted."""
    if uid == 0:
        return want & root_bits(attrs)
    return want & mode_class_bits(attrs, uid, gids)
