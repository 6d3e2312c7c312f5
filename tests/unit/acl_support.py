"""ACLs in tests: nfs4_getfacl's notation over GETATTR/SETATTR of the `acl` attribute."""

from __future__ import annotations

from nfs4_fixtures import getattrs, ops

from pynfsd.client.nfs4 import Nfs4Client, op
from pynfsd.gen import nfs4 as N

_MASK = [
    ("r", N.ACE4_READ_DATA), ("w", N.ACE4_WRITE_DATA), ("a", N.ACE4_APPEND_DATA),
    ("x", N.ACE4_EXECUTE), ("d", N.ACE4_DELETE), ("D", N.ACE4_DELETE_CHILD),
    ("t", N.ACE4_READ_ATTRIBUTES), ("T", N.ACE4_WRITE_ATTRIBUTES),
    ("n", N.ACE4_READ_NAMED_ATTRS), ("N", N.ACE4_WRITE_NAMED_ATTRS),
    ("c", N.ACE4_READ_ACL), ("C", N.ACE4_WRITE_ACL), ("o", N.ACE4_WRITE_OWNER),
    ("y", N.ACE4_SYNCHRONIZE),
]  # fmt: skip
_FLAGS = [
    ("f", N.ACE4_FILE_INHERIT_ACE), ("d", N.ACE4_DIRECTORY_INHERIT_ACE),
    ("n", N.ACE4_NO_PROPAGATE_INHERIT_ACE), ("i", N.ACE4_INHERIT_ONLY_ACE),
    ("g", N.ACE4_IDENTIFIER_GROUP),
]  # fmt: skip
_TYPES = {"A": 0, "D": 1, "U": 2, "L": 3}


def notation(kind: int, flag: int, mask: int, who: str) -> str:
    """One ACE as nfs4_getfacl prints it (``A:g:who:rwaxtcy``)."""
    letter = next(k for k, v in _TYPES.items() if v == kind)
    flags = "".join(c for c, bit in _FLAGS if flag & bit)
    return f"{letter}:{flags}:{who}:" + "".join(c for c, bit in _MASK if mask & bit)


def fields(text: str) -> list[tuple[int, int, int, str]]:
    """ACEs in nfs4_setfacl's notation (separated by blanks) as (type, flag, mask, who)."""
    out = []
    for item in text.split():
        kind, flags, who, mask = item.split(":")
        flag = sum(bit for c, bit in _FLAGS if c in flags)
        out.append((_TYPES[kind], flag, sum(bit for c, bit in _MASK if c in mask), who))
    return out


def show(aces: list[N.nfsace4]) -> list[str]:
    return [notation(a.type, a.flag, a.access_mask, a.who.decode()) for a in aces]


def parse(text: str) -> list[N.nfsace4]:
    return [N.nfsace4(k, f, m, who.encode()) for k, f, m, who in fields(text)]


async def get_acl(c: Nfs4Client, fh: bytes) -> list[str]:
    return show(list((await getattrs(c, fh, N.FATTR4_ACL))[N.FATTR4_ACL]))


async def set_acl(c: Nfs4Client, fh: bytes, text: str) -> N.COMPOUND4res:
    """SETATTR(acl); the COMPOUND's result (check its status)."""
    return await c.compound([op.putfh(fh), ops.setattr({N.FATTR4_ACL: parse(text)})])
