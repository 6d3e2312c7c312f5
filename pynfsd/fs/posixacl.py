"""POSIX draft ACLs as Linux keeps them: the model, its checks and its xattr byte format.

Theory of operation
-------------------
A POSIX ACL is a list of entries ``(tag, perm, id)``: exactly one USER_OBJ, GROUP_OBJ and
OTHER, any number of named USER and GROUP entries (each id once), and a MASK that is
required as soon as there is a named entry.  Linux keeps entries sorted by tag, then id,
which is the order ``check_valid`` demands and ``sort_entries`` produces.  The ACL of a file
without one is the three entries of its mode (``from_mode``); an ACL of those three entries
only is *equivalent to the mode* and the kernel stores none (``is_minimal``).

The group class bits of the mode are the MASK's perms when there is one, else GROUP_OBJ's
(``mode_bits``); chmod rewrites USER_OBJ, MASK (or GROUP_OBJ) and OTHER (``chmod``), as the
kernel's ``posix_acl_chmod`` does.  ``permission`` is the kernel's ``posix_acl_permission``:
the owner entry, else a named user entry (masked), else the union of the matching group
entries (masked), else OTHER.

The kernel's xattrs ``system.posix_acl_access`` and ``system.posix_acl_default`` carry an
ACL as little-endian bytes: a 4-byte version (2), then 8 bytes per entry (u16 tag, u16 perm,
u32 id; the id of an entry without one is ``UNDEFINED_ID``).  ``decode_xattr`` takes bytes
from a filesystem (or anywhere): it checks the length, the version, the count against
``MAX_ENTRIES`` (what fits in one 64 KiB xattr, the kernel's own limit), every tag and perm
and the ACL's validity, and raises only ``AclError``.  Nothing here does I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

#: Perm bits of an entry (the kernel's ACL_READ, ACL_WRITE, ACL_EXECUTE).
READ: Final = 4
WRITE: Final = 2
EXEC: Final = 1

USER_OBJ: Final = 0x01
USER: Final = 0x02
GROUP_OBJ: Final = 0x04
GROUP: Final = 0x08
MASK: Final = 0x10
OTHER: Final = 0x20
TAGS: Final = frozenset({USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER})

XATTR_ACCESS: Final = "system.posix_acl_access"
XATTR_DEFAULT: Final = "system.posix_acl_default"
XATTR_VERSION: Final = 2
UNDEFINED_ID: Final = 0xFFFFFFFF
XATTR_SIZE_MAX: Final = 65536
#: The most entries one xattr can hold (the kernel's XATTR_SIZE_MAX, 64 KiB).
MAX_ENTRIES: Final = (XATTR_SIZE_MAX - 4) // 8

_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")


class AclError(ValueError):
    """A malformed or invalid POSIX ACL (bytes or entries)."""


@dataclass(frozen=True, slots=True, order=True)
class PosixAce:
    """One entry; ``id`` is the uid (USER) or gid (GROUP), else ``UNDEFINED_ID``."""

    tag: int
    perm: int
    id: int = UNDEFINED_ID


PosixAcl = tuple[PosixAce, ...]


def from_mode(mode: int) -> PosixAcl:
    """The three-entry ACL equivalent to the permission bits of ``mode``."""
    return (
        PosixAce(USER_OBJ, (mode >> 6) & 7),
        PosixAce(GROUP_OBJ, (mode >> 3) & 7),
        PosixAce(OTHER, mode & 7),
    )


def _key(e: PosixAce) -> tuple[int, int]:
    return (e.tag, e.id if e.tag in (USER, GROUP) else 0)


def sort_entries(entries: Iterable[PosixAce]) -> PosixAcl:
    """Entries in the kernel's order: by tag, then named ids ascending."""
    return tuple(sorted(entries, key=_key))


def check_valid(acl: Sequence[PosixAce]) -> None:
    """AclError unless ``acl`` is what the kernel's ``posix_acl_valid`` accepts."""
    if len(acl) > MAX_ENTRIES:
        raise AclError(f"{len(acl)} entries, at most {MAX_ENTRIES}")
    prev: tuple[int, int] | None = None
    counts = dict.fromkeys(TAGS, 0)
    for e in acl:
        if e.tag not in TAGS:
            raise AclError(f"unknown tag {e.tag:#x}")
        if e.perm & ~7:
            raise AclError(f"perm {e.perm:#o} has bits beyond rwx")
        if e.tag in (USER, GROUP) and e.id == UNDEFINED_ID:
            raise AclError("a named entry without an id")
        key = _key(e)
        if prev is not None and key <= prev:
            raise AclError("entries out of order or repeated")
        prev = key
        counts[e.tag] += 1
    if counts[USER_OBJ] != 1 or counts[GROUP_OBJ] != 1 or counts[OTHER] != 1:
        raise AclError("one user, group and other entry each are required")
    if counts[MASK] > 1 or (counts[USER] or counts[GROUP]) and not counts[MASK]:
        raise AclError("a mask entry is required with named entries (and at most one)")


def _find(acl: Sequence[PosixAce], tag: int) -> PosixAce | None:
    return next((e for e in acl if e.tag == tag), None)


def is_minimal(acl: Sequence[PosixAce]) -> bool:
    """Whether ``acl`` says no more than a mode (the kernel then stores no ACL)."""
    return all(e.tag in (USER_OBJ, GROUP_OBJ, OTHER) for e in acl)


def mode_bits(acl: Sequence[PosixAce]) -> int:
    """The nine permission bits of the mode that ``acl`` implies (group class: the mask)."""
    owner, other = _find(acl, USER_OBJ), _find(acl, OTHER)
    group = _find(acl, MASK) or _find(acl, GROUP_OBJ)
    assert owner is not None and group is not None and other is not None
    return owner.perm << 6 | group.perm << 3 | other.perm


def chmod(acl: Sequence[PosixAce], mode: int) -> PosixAcl:
    """``acl`` after chmod to ``mode``: owner, mask (else group) and other take the bits."""
    group_tag = MASK if _find(acl, MASK) is not None else GROUP_OBJ
    bits = {USER_OBJ: (mode >> 6) & 7, group_tag: (mode >> 3) & 7, OTHER: mode & 7}
    return tuple(PosixAce(e.tag, bits[e.tag], e.id) if e.tag in bits else e for e in acl)


def permission(acl: Sequence[PosixAce], owner: int, group: int, uid: int,
               gids: Iterable[int]) -> int:
    """The perm bits (``READ|WRITE|EXEC``) ``uid``/``gids`` get from ``acl`` on an
    object of ``owner``/``group`` (not for uid 0: the caller applies root's rules)."""
    if uid == owner:
        return _perm_of(acl, USER_OBJ)
    mask = _find(acl, MASK)
    limit = mask.perm if mask is not None else 7
    named = next((e for e in acl if e.tag == USER and e.id == uid), None)
    if named is not None:
        return named.perm & limit
    groups = set(gids)
    matched = [e.perm for e in acl
               if (e.tag == GROUP_OBJ and group in groups) or (e.tag == GROUP and e.id in groups)]
    if matched:
        union = 0
        for p in matched:
            union |= p
        return union & limit
    return _perm_of(acl, OTHER)


def create_masq(acl: Sequence[PosixAce], mode: int) -> tuple[PosixAcl, int]:
    """A new object's ACL inherited from a default ``acl`` and the mode it was created with,
    and its new permission bits (the kernel's ``posix_acl_create_masq``)."""
    group_tag = MASK if _find(acl, MASK) is not None else GROUP_OBJ
    limit = {USER_OBJ: (mode >> 6) & 7, group_tag: (mode >> 3) & 7, OTHER: mode & 7}
    out = tuple(PosixAce(e.tag, e.perm & limit[e.tag], e.id) if e.tag in limit else e
                for e in acl)
    return out, mode_bits(out)


def _perm_of(acl: Sequence[PosixAce], tag: int) -> int:
    e = _find(acl, tag)
    return 0 if e is None else e.perm


def encode_xattr(acl: Sequence[PosixAce]) -> bytes:
    """The kernel's xattr bytes of a valid ``acl``."""
    check_valid(acl)
    return _HEADER.pack(XATTR_VERSION) + b"".join(
        _ENTRY.pack(e.tag, e.perm, e.id if e.tag in (USER, GROUP) else UNDEFINED_ID)
        for e in acl
    )


def decode_xattr(data: bytes) -> PosixAcl:
    """The ACL in the kernel's xattr bytes; AclError for anything malformed or invalid."""
    if len(data) < _HEADER.size or (len(data) - _HEADER.size) % _ENTRY.size:
        raise AclError(f"an ACL xattr of {len(data)} bytes")
    (version,) = _HEADER.unpack_from(data)
    if version != XATTR_VERSION:
        raise AclError(f"ACL xattr version {version}")
    count = (len(data) - _HEADER.size) // _ENTRY.size
    if count > MAX_ENTRIES:
        raise AclError(f"{count} entries, at most {MAX_ENTRIES}")
    acl = tuple(
        PosixAce(tag, p, ident if tag in (USER, GROUP) else UNDEFINED_ID)
        for tag, p, ident in _ENTRY.iter_unpack(data[_HEADER.size :])
    )
    check_valid(acl)
    return acl
