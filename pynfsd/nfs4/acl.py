"""NFSv4 ACLs (RFC 7530 §6) mapped to and from POSIX draft ACLs, as knfsd maps them.

Theory of operation
-------------------
The server stores no NFSv4 ACLs: a file's ACL is its POSIX access ACL (or its mode) and, for a
directory, its POSIX default ACL.  The mapping is the one of the IETF draft "Mapping Between
NFSv4 and Posix Draft ACLs" (draft-ietf-nfsv4-acl-mapping) as knfsd implements it
(fs/nfsd/nfs4acl.c), so that clients see the same ACLs from pynfsd as from knfsd.

*POSIX -> NFSv4* (``posix_to_nfs4``): each POSIX ACL becomes, in order, OWNER@ (a DENY of
what later entries grant and the owner does not, then its ALLOW), each named user (DENY, then
ALLOW of its masked perms), GROUP@ and each named group (all ALLOWs first, since a user may be
in several groups; then the DENYs that keep EVERYONE@'s grant from reaching them), and
EVERYONE@.  A DENY is emitted only when it denies something.  ALLOWs also grant what every
POSIX entry implies (READ_ATTRIBUTES, READ_ACL, SYNCHRONIZE; the owner WRITE_ATTRIBUTES and
WRITE_ACL; on a directory, write includes DELETE_CHILD).  The default ACL of a directory
follows with FILE_INHERIT|DIRECTORY_INHERIT|INHERIT_ONLY on every ACE.

*NFSv4 -> POSIX* (``nfs4_to_posix``): the ACEs are walked in order, keeping per principal
(owner, owning group, each named user and group, other, everyone) the bits allowed and the
bits denied so far; a DENY to a group also denies the bits to every principal that could be
in it, an ALLOW to EVERYONE@ allows them to all.  Each principal's POSIX perms are the
rwx triples whose NFSv4 bits it was wholly allowed (pessimistic: a partial write grant is no
write); the mask is the union of the group class's grants.  ACEs without inherit flags make
the access ACL; ACEs with FILE_INHERIT or DIRECTORY_INHERIT make the default ACL (a file:
unrepresentable), and those also apply to the directory itself unless INHERIT_ONLY.  What
POSIX cannot say raises ``AclUnrepresentable`` (the caller's NFS4ERR_ATTRNOTSUPP, as knfsd's
-EINVAL): AUDIT or ALARM ACEs, flags beyond inheritance and IDENTIFIER_GROUP, inherit flags on
a non-directory, and explicit DENYs of READ_ATTRIBUTES or READ_ACL (or of WRITE_ATTRIBUTES or
WRITE_ACL to the owner), which a POSIX ACL can never deny.

*Principals on the wire* (``to_wire``/``from_wire``): OWNER@, GROUP@ and EVERYONE@ as such;
named users and groups (IDENTIFIER_GROUP) through the caller's id mapping (``user@domain``
or numeric; an unknown name is the caller's NFS4ERR_BADOWNER).  ``MAX_ACES`` bounds the ACL
of a SETATTR (more is NFS4ERR_FBIG, as knfsd's NFS4_ACL_MAX); ``MAX_ACL_BYTES`` bounds the
encoded ACL a GETATTR sends (the reply-size estimate counts it; a filesystem ACL whose
encoding is longer is not sent).  Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from pynfsd.fs import posixacl as P
from pynfsd.gen import nfs4 as x

OWNER: Final = "OWNER@"
GROUP: Final = "GROUP@"
EVERYONE: Final = "EVERYONE@"
SPECIAL: Final = frozenset({OWNER, GROUP, EVERYONE})

#: The most ACEs of one ACL (knfsd's NFS4_ACL_MAX for 4 KiB pages: (4096 - 4) // 20).
MAX_ACES: Final = 204

#: The most bytes of an encoded `acl` attribute in a reply (``wire_size``).
MAX_ACL_BYTES: Final = 16384

ALLOW: Final = x.ACE4_ACCESS_ALLOWED_ACE_TYPE
DENY: Final = x.ACE4_ACCESS_DENIED_ACE_TYPE
#: What `aclsupport` announces (RFC 7530 §6.2.1.1): ALLOW and DENY ACEs, as knfsd.
ACL_SUPPORT: Final = x.ACL4_SUPPORT_ALLOW_ACL | x.ACL4_SUPPORT_DENY_ACL

MASK_ALL: Final = 0x1F01FF  # every ACE4_* access bit RFC 7530 defines
_READ: Final = x.ACE4_READ_DATA
_WRITE: Final = x.ACE4_WRITE_DATA | x.ACE4_APPEND_DATA
_EXEC: Final = x.ACE4_EXECUTE
_ANYONE: Final = x.ACE4_READ_ATTRIBUTES | x.ACE4_READ_ACL | x.ACE4_SYNCHRONIZE
_OWNER_ONLY: Final = x.ACE4_WRITE_ATTRIBUTES | x.ACE4_WRITE_ACL
_INHERIT: Final = x.ACE4_FILE_INHERIT_ACE | x.ACE4_DIRECTORY_INHERIT_ACE
_DEFAULT_FLAGS: Final = _INHERIT | x.ACE4_INHERIT_ONLY_ACE
_SUPPORTED_FLAGS: Final = _DEFAULT_FLAGS | x.ACE4_IDENTIFIER_GROUP


class AclUnrepresentable(ValueError):
    """An NFSv4 ACL that POSIX ACLs cannot hold (the caller's NFS4ERR_ATTRNOTSUPP)."""


@dataclass(frozen=True, slots=True)
class Ace:
    """One ACE with its principal resolved: a special name (``OWNER@``...) or a uid/gid (a
    gid when ``flag`` has ACE4_IDENTIFIER_GROUP)."""

    type: int
    flag: int
    mask: int
    who: str | int

    @property
    def is_group(self) -> bool:
        return bool(self.flag & x.ACE4_IDENTIFIER_GROUP)


# ------------------------------------------------------------------ POSIX -> NFSv4


def _allow_mask(p: int, is_dir: bool, owner: bool = False) -> int:
    return _ANYONE | (_OWNER_ONLY if owner else 0) | _deny_mask(p, is_dir)


def _deny_mask(p: int, is_dir: bool) -> int:
    mask = _READ if p & P.READ else 0
    if p & P.WRITE:
        mask |= _WRITE | (x.ACE4_DELETE_CHILD if is_dir else 0)
    return mask | (_EXEC if p & P.EXEC else 0)


def _summary(acl: Sequence[P.PosixAce]) -> dict[int, int]:
    """Effective perms by tag (knfsd's posix_acl_summary): USER and GROUP hold the union of
    the named entries; they and GROUP_OBJ are limited by the mask."""
    s = {P.MASK: 7, P.USER: 0, P.GROUP: 0}
    for e in acl:
        s[e.tag] = (s[e.tag] | e.perm) if e.tag in (P.USER, P.GROUP) else e.perm
    for tag in (P.USER, P.GROUP, P.GROUP_OBJ):
        s[tag] &= s[P.MASK]
    return s


def _one_to_nfs4(acl: Sequence[P.PosixAce], is_dir: bool, flag: int) -> list[Ace]:
    s = _summary(acl)
    owner, group, other, mask = s[P.USER_OBJ], s[P.GROUP_OBJ], s[P.OTHER], s[P.MASK]
    users, groups = s[P.USER], s[P.GROUP]
    out: list[Ace] = []

    def add(kind: int, mask: int, who: str | int, extra: int = 0) -> None:
        out.append(Ace(kind, flag | extra, mask, who))

    deny = ~owner & (users | group | groups | other)
    if deny:
        add(DENY, _deny_mask(deny, is_dir), OWNER)
    add(ALLOW, _allow_mask(owner, is_dir, owner=True), OWNER)
    for e in (e for e in acl if e.tag == P.USER):
        deny = ~(e.perm & mask) & (groups | group | other)
        if deny:
            add(DENY, _deny_mask(deny, is_dir), e.id)
        add(ALLOW, _allow_mask(e.perm & mask, is_dir), e.id)
    named_groups = [e for e in acl if e.tag == P.GROUP]
    add(ALLOW, _allow_mask(group, is_dir), GROUP)
    for e in named_groups:
        add(ALLOW, _allow_mask(e.perm & mask, is_dir), e.id, x.ACE4_IDENTIFIER_GROUP)
    deny = ~group & other
    if deny:
        add(DENY, _deny_mask(deny, is_dir), GROUP)
    for e in named_groups:
        deny = ~(e.perm & mask) & other
        if deny:
            add(DENY, _deny_mask(deny, is_dir), e.id, x.ACE4_IDENTIFIER_GROUP)
    add(ALLOW, _allow_mask(other, is_dir), EVERYONE)
    return out


def posix_to_nfs4(
    access: Sequence[P.PosixAce], default: Sequence[P.PosixAce] | None, is_dir: bool
) -> list[Ace]:
    """The NFSv4 ACL of an object with POSIX ``access`` ACL (``from_mode`` without one) and,
    for a directory, ``default`` ACL (None: none)."""
    aces = _one_to_nfs4(access, is_dir, 0)
    if is_dir and default:
        aces += _one_to_nfs4(default, is_dir, _DEFAULT_FLAGS)
    return aces


# ------------------------------------------------------------------ NFSv4 -> POSIX


@dataclass(slots=True)
class _Bits:
    allow: int = 0
    deny: int = 0

    def allow_bits(self, mask: int) -> None:
        self.allow |= mask & ~self.deny

    def deny_bits(self, mask: int) -> None:
        self.deny |= mask & ~self.allow


@dataclass(slots=True)
class _State:
    """Bits allowed and denied so far per principal (knfsd's posix_acl_state)."""

    empty: bool = True
    owner: _Bits = field(default_factory=_Bits)
    group: _Bits = field(default_factory=_Bits)
    other: _Bits = field(default_factory=_Bits)
    everyone: _Bits = field(default_factory=_Bits)
    users: dict[int, _Bits] = field(default_factory=dict)
    groups: dict[int, _Bits] = field(default_factory=dict)

    def named(self, table: dict[int, _Bits], ident: int) -> _Bits:
        """A named principal's bits; a new one starts with what EVERYONE@ has so far."""
        bits = table.get(ident)
        if bits is None:
            bits = table[ident] = _Bits(self.everyone.allow, self.everyone.deny)
        return bits

    def all_bits(self, with_other: bool) -> list[_Bits]:
        fixed = [self.owner, self.group, self.everyone] + ([self.other] if with_other else [])
        return fixed + list(self.users.values()) + list(self.groups.values())

    def apply(self, ace: Ace) -> None:
        self.empty = False
        allow, mask = ace.type == ALLOW, ace.mask
        if ace.who == EVERYONE:
            for b in self.all_bits(with_other=True):
                b.allow_bits(mask) if allow else b.deny_bits(mask)
            return
        target = self._target(ace)
        if allow:
            target.allow_bits(mask)
            return
        target.deny_bits(mask)
        self._deny_members(ace, target.deny)

    def _target(self, ace: Ace) -> _Bits:
        if ace.who == OWNER:
            return self.owner
        if ace.who == GROUP:
            return self.group
        assert isinstance(ace.who, int)
        return self.named(self.groups if ace.is_group else self.users, ace.who)

    def _deny_members(self, ace: Ace, denied: int) -> None:
        """A DENY to a user also binds the owner (who may be that user); to a group, every
        principal that may be in it."""
        if ace.who == OWNER:
            return
        if isinstance(ace.who, int) and not ace.is_group:
            self.owner.deny_bits(denied)
            return
        for b in [self.owner, self.everyone, *self.users.values(), *self.groups.values()]:
            b.deny_bits(denied)
        if ace.who != GROUP:
            self.group.deny_bits(denied)


def _low_mode(allowed: int, is_dir: bool) -> int:
    write = _WRITE | (x.ACE4_DELETE_CHILD if is_dir else 0)
    mode = P.READ if allowed & _READ == _READ else 0
    mode |= P.WRITE if allowed & write == write else 0
    return mode | (P.EXEC if allowed & _EXEC == _EXEC else 0)


def _check_deny(denied: int, is_owner: bool) -> None:
    if denied & (x.ACE4_READ_ATTRIBUTES | x.ACE4_READ_ACL):
        raise AclUnrepresentable("READ_ATTRIBUTES or READ_ACL cannot be denied")
    if is_owner and denied & _OWNER_ONLY:
        raise AclUnrepresentable("WRITE_ATTRIBUTES or WRITE_ACL cannot be denied to the owner")


def _state_to_posix(st: _State, is_dir: bool) -> P.PosixAcl:
    def entry(tag: int, bits: _Bits, ident: int = P.UNDEFINED_ID) -> P.PosixAce:
        _check_deny(bits.deny, tag == P.USER_OBJ)
        return P.PosixAce(tag, _low_mode(bits.allow, is_dir), ident)

    out = [entry(P.USER_OBJ, st.owner)]
    out += [entry(P.USER, b, uid) for uid, b in st.users.items()]
    out.append(entry(P.GROUP_OBJ, st.group))
    out += [entry(P.GROUP, b, gid) for gid, b in st.groups.items()]
    if st.users or st.groups:
        mask = st.group.allow
        for b in [*st.users.values(), *st.groups.values()]:
            mask |= b.allow
        out.append(P.PosixAce(P.MASK, _low_mode(mask, is_dir)))
    out.append(entry(P.OTHER, st.other))
    return P.sort_entries(out)


def _check_ace(ace: Ace, is_dir: bool) -> None:
    if ace.type not in (ALLOW, DENY):
        raise AclUnrepresentable(f"ACE type {ace.type}: only ALLOW and DENY are supported")
    if ace.flag & ~_SUPPORTED_FLAGS:
        raise AclUnrepresentable(f"ACE flags {ace.flag:#x} are not supported")
    if ace.flag & _INHERIT and not is_dir:
        raise AclUnrepresentable("inheritance flags on a non-directory")


def nfs4_to_posix(aces: Sequence[Ace], is_dir: bool) -> tuple[P.PosixAcl, P.PosixAcl | None]:
    """The POSIX access ACL and default ACL (None: none; always None for a non-directory)
    that ``aces`` map to; ``AclUnrepresentable`` when POSIX cannot hold them."""
    effective, inherited = _State(), _State()
    for ace in aces:
        _check_ace(ace, is_dir)
        if not ace.flag & _INHERIT:
            effective.apply(ace)
            continue
        inherited.apply(ace)
        if not ace.flag & x.ACE4_INHERIT_ONLY_ACE:
            effective.apply(ace)
    access = _state_to_posix(effective, is_dir)
    default = None if inherited.empty else _state_to_posix(inherited, is_dir)
    return access, default


# ------------------------------------------------------------------ principals on the wire


def to_wire(
    aces: Sequence[Ace], user_name: Callable[[int], str], group_name: Callable[[int], str]
) -> list[x.nfsace4]:
    """``fattr4_acl`` of ``aces``, named principals through the id mapping."""
    out = []
    for a in aces:
        if isinstance(a.who, str):
            who = a.who
        else:
            who = group_name(a.who) if a.is_group else user_name(a.who)
        out.append(x.nfsace4(a.type, a.flag, a.mask & MASK_ALL, who.encode("utf-8")))
    return out


def from_wire(
    aces: Sequence[x.nfsace4], user_id: Callable[[str], int], group_id: Callable[[str], int]
) -> list[Ace]:
    """``aces`` of a SETATTR with named principals resolved; ``user_id``/``group_id`` raise
    for unknown names (the caller's NFS4ERR_BADOWNER), a ``who`` that is not UTF-8 is a
    ValueError."""
    out = []
    for a in aces:
        name = a.who.decode("utf-8")
        who: str | int
        if name in SPECIAL:
            who = name
        else:
            who = group_id(name) if a.flag & x.ACE4_IDENTIFIER_GROUP else user_id(name)
        out.append(Ace(a.type, a.flag, a.access_mask, who))
    return out


def wire_size(aces: Sequence[x.nfsace4]) -> int:
    """Bytes of ``aces`` encoded as ``fattr4_acl``."""
    return 4 + sum(16 + (len(a.who) + 3) // 4 * 4 for a in aces)
