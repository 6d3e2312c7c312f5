"""POSIX ACLs (pynfsd.fs.posixacl) and their NFSv4 mapping (pynfsd.nfs4.acl), as knfsd.

ACLs are written as nfs4_getfacl prints them (``A:g:NAME:rwaxtcy``), so the expectations
read like what a Linux client shows for the same POSIX ACL served by knfsd.
"""

from __future__ import annotations

import pytest
from acl_support import fields, notation
from hypothesis import given, settings
from hypothesis import strategies as st

from pynfsd.fs import posixacl as P
from pynfsd.gen import nfs4 as x
from pynfsd.nfs4 import acl as A


def show(aces: list[A.Ace]) -> list[str]:
    """nfs4_getfacl's notation; named principals as their number."""
    return [notation(a.type, a.flag, a.mask, str(a.who)) for a in aces]


def parse(text: str) -> list[A.Ace]:
    return [A.Ace(k, f, m, who if who.endswith("@") else int(who)) for k, f, m, who in fields(text)]


def posix(text: str) -> P.PosixAcl:
    """getfacl's short form: ``u::rw-,u:1000:rwx,g::r--,m::rwx,o::---``."""
    tags = {("u", False): P.USER_OBJ, ("u", True): P.USER, ("g", False): P.GROUP_OBJ,
            ("g", True): P.GROUP, ("m", False): P.MASK, ("o", False): P.OTHER}  # fmt: skip
    out = []
    for item in text.split(","):
        tag, ident, perms = item.split(":")
        bits = sum(b for c, b in (("r", 4), ("w", 2), ("x", 1)) if c in perms)
        out.append(P.PosixAce(tags[tag, bool(ident)], bits,
                              int(ident) if ident else P.UNDEFINED_ID))  # fmt: skip
    return tuple(out)


# ------------------------------------------------------------------ POSIX -> NFSv4 (as knfsd)


def test_mode_0644_file() -> None:
    assert show(A.posix_to_nfs4(P.from_mode(0o644), None, False)) == [
        "A::OWNER@:rwatTcCy", "A::GROUP@:rtcy", "A::EVERYONE@:rtcy",
    ]  # fmt: skip


def test_mode_0755_directory_adds_delete_child() -> None:
    assert show(A.posix_to_nfs4(P.from_mode(0o755), None, True)) == [
        "A::OWNER@:rwaxDtTcCy", "A::GROUP@:rxtcy", "A::EVERYONE@:rxtcy",
    ]  # fmt: skip


def test_other_granted_more_than_group_and_owner_needs_denies() -> None:
    # mode 0046: the owner and the group must be denied what EVERYONE@ grants them
    assert show(A.posix_to_nfs4(P.from_mode(0o046), None, False)) == [
        "D::OWNER@:rwa", "A::OWNER@:tTcCy", "A::GROUP@:rtcy", "D::GROUP@:wa",
        "A::EVERYONE@:rwatcy",
    ]  # fmt: skip


def test_named_user_and_group_under_a_mask() -> None:
    acl = posix("u::rw-,u:1000:rwx,g::r--,g:50:rw-,m::r-x,o::---")
    assert show(A.posix_to_nfs4(acl, None, False)) == [
        "D::OWNER@:x",  # the named user (masked: r-x) and group could get x
        "A::OWNER@:rwatTcCy",
        "A::1000:rxtcy",  # no DENY: the group class grants it nothing more (masked: r)
        "A::GROUP@:rtcy",
        "A:g:50:rtcy",
        "A::EVERYONE@:tcy",
    ]


def test_default_acl_becomes_inherit_only_aces() -> None:
    aces = A.posix_to_nfs4(P.from_mode(0o750), posix("u::rwx,g::r-x,o::r--"), True)
    assert show(aces)[3:] == [
        "A:fdi:OWNER@:rwaxDtTcCy", "A:fdi:GROUP@:rxtcy", "A:fdi:EVERYONE@:rtcy",
    ]  # fmt: skip


def test_a_file_has_no_default_aces() -> None:
    assert len(A.posix_to_nfs4(P.from_mode(0o600), P.from_mode(0o777), False)) == 3


# ------------------------------------------------------------------ NFSv4 -> POSIX


def test_what_nfs4_setfacl_sends_for_a_second_user() -> None:
    # nfs4_setfacl -a A::1001:rtcy on a 0600 file: the client sends the whole ACL
    aces = parse("A::OWNER@:rwatTcCy A::1001:rtcy A::GROUP@:tcy A::EVERYONE@:tcy")
    access, default = A.nfs4_to_posix(aces, False)
    assert access == posix("u::rw-,u:1001:r--,g::---,m::r--,o::---")
    assert default is None
    assert P.mode_bits(access) == 0o640


def test_directory_aces_with_inherit_flags_make_the_default_acl() -> None:
    aces = parse("A::OWNER@:rwaxDtTcCy A::EVERYONE@:tcy "
                 "A:fd:1000:rxtcy A:fdi:OWNER@:rwaxDtTcCy A:fdi:EVERYONE@:rtcy")
    access, default = A.nfs4_to_posix(aces, True)
    assert access == posix("u::rwx,u:1000:r-x,g::---,m::r-x,o::---")
    assert default == posix("u::rwx,u:1000:r-x,g::r--,m::r-x,o::r--")


def test_no_inheritable_aces_means_no_default_acl() -> None:
    assert A.nfs4_to_posix(parse("A::OWNER@:rwaxtTcCy"), True)[1] is None


def test_deny_to_a_group_binds_its_possible_members() -> None:
    aces = parse("D:g:50:w A::EVERYONE@:rwatcy")
    access, _ = A.nfs4_to_posix(aces, False)
    # the owner and GROUP@ may be members of group 50: they lose write; other keeps it
    assert access == posix("u::r--,g::r--,g:50:r--,m::r--,o::rw-")


def test_partial_write_grant_is_no_write() -> None:
    access, _ = A.nfs4_to_posix(parse("A::OWNER@:rwtTcCy A::EVERYONE@:tcy"), False)
    assert access == posix("u::r--,g::---,o::---")  # WRITE_DATA without APPEND_DATA


@pytest.mark.parametrize(
    ("text", "is_dir"),
    [
        ("U::OWNER@:r", False),  # AUDIT
        ("L::OWNER@:r", False),  # ALARM
        ("A:n:OWNER@:r", True),  # NO_PROPAGATE_INHERIT
        ("A:f:OWNER@:r", False),  # inheritance on a file
        ("D::EVERYONE@:t", False),  # READ_ATTRIBUTES cannot be denied
        ("D::1000:c", False),  # nor READ_ACL
        ("D::OWNER@:C", False),  # nor WRITE_ACL to the owner
        ("D::OWNER@:T", False),  # nor WRITE_ATTRIBUTES to the owner
        ("D::1000:C", False),  # nor to a named user (the owner may be that user)
        ("D::GROUP@:C", False),  # nor to a group (the owner may be in it)
    ],
)
def test_unrepresentable_acls(text: str, is_dir: bool) -> None:
    with pytest.raises(A.AclUnrepresentable):
        A.nfs4_to_posix(parse(text), is_dir)


def test_unsupported_mask_bits_are_ignored_as_knfsd() -> None:
    access, _ = A.nfs4_to_posix(parse("A::OWNER@:rwadoNn A::EVERYONE@:r"), False)
    assert access == posix("u::rw-,g::r--,o::r--")


# ------------------------------------------------------------------ round trips


def _acls(draw: st.DrawFn, named: bool = True) -> P.PosixAcl:
    perm = st.integers(0, 7)
    entries = [P.PosixAce(P.USER_OBJ, draw(perm)), P.PosixAce(P.GROUP_OBJ, draw(perm)),
               P.PosixAce(P.OTHER, draw(perm))]  # fmt: skip
    users = draw(st.sets(st.integers(0, 5000), max_size=4)) if named else set()
    groups = draw(st.sets(st.integers(0, 5000), max_size=4)) if named else set()
    entries += [P.PosixAce(P.USER, draw(perm), u) for u in users]
    entries += [P.PosixAce(P.GROUP, draw(perm), g) for g in groups]
    if users or groups:
        entries.append(P.PosixAce(P.MASK, draw(perm)))
    return P.sort_entries(entries)


posix_acls = st.composite(_acls)


def _effective(acl: P.PosixAcl) -> P.PosixAcl:
    """What an ACL grants: named entries and the group entry as limited by the mask."""
    mask = next((e.perm for e in acl if e.tag == P.MASK), 7)
    return tuple(
        P.PosixAce(e.tag, e.perm & mask, e.id) if e.tag in (P.USER, P.GROUP, P.GROUP_OBJ)
        else e for e in acl if e.tag != P.MASK
    )


@settings(deadline=None)
@given(acl=posix_acls(), default=st.none() | posix_acls(), is_dir=st.booleans())
def test_posix_to_nfs4_and_back_keeps_what_is_granted(
    acl: P.PosixAcl, default: P.PosixAcl | None, is_dir: bool
) -> None:
    aces = A.posix_to_nfs4(acl, default, is_dir)
    access, back_default = A.nfs4_to_posix(aces, is_dir)
    assert _effective(access) == _effective(acl)
    if is_dir and default:
        assert back_default is not None and _effective(back_default) == _effective(default)
    else:
        assert back_default is None


@settings(deadline=None)
@given(acl=posix_acls(), uid=st.integers(0, 5000), gids=st.sets(st.integers(0, 5000)))
def test_posix_to_nfs4_decides_as_posix(acl: P.PosixAcl, uid: int, gids: set[int]) -> None:
    """Evaluating the NFSv4 ACL (RFC 7530 §6.2.1) grants what the POSIX ACL grants."""
    owner, group = 1, 2
    want = {P.READ: x.ACE4_READ_DATA, P.WRITE: x.ACE4_WRITE_DATA, P.EXEC: x.ACE4_EXECUTE}
    expected = P.permission(acl, owner, group, uid, gids)
    for bit, ace_bit in want.items():
        assert _nfs4_allows(A.posix_to_nfs4(acl, None, False), ace_bit, uid, gids,
                            owner, group) == bool(expected & bit)  # fmt: skip


def _nfs4_allows(aces: list[A.Ace], bit: int, uid: int, gids: set[int], owner: int,
                 group: int) -> bool:
    for a in aces:
        if isinstance(a.who, int):
            matches = a.who in gids if a.is_group else a.who == uid
        else:
            matches = {A.OWNER: uid == owner, A.GROUP: group in gids, A.EVERYONE: True}[a.who]
        if matches and a.mask & bit:
            return a.type == A.ALLOW
    return False


def test_mode_bits_chmod_and_create_masq() -> None:
    acl = posix("u::rw-,u:1000:rwx,g::r--,m::rwx,o::r--")
    assert P.mode_bits(acl) == 0o674
    assert P.chmod(acl, 0o640) == posix("u::rw-,u:1000:rwx,g::r--,m::r--,o::---")
    inherited, bits = P.create_masq(acl, 0o600)
    assert inherited == posix("u::rw-,u:1000:rwx,g::r--,m::---,o::---") and bits == 0o600
    assert P.chmod(P.from_mode(0o777), 0o640) == P.from_mode(0o640)


def test_permission_of_named_entries() -> None:
    acl = posix("u::rw-,u:1000:rwx,g::r--,g:50:-w-,m::rw-,o::---")
    assert P.permission(acl, 1, 2, 1, []) == 6  # the owner
    assert P.permission(acl, 1, 2, 1000, [2]) == 6  # named user, masked
    assert P.permission(acl, 1, 2, 7, [2, 50]) == 6  # union of matching groups
    assert P.permission(acl, 1, 2, 7, [9]) == 0  # other


# ------------------------------------------------------------------ the xattr format


def test_xattr_bytes_as_the_kernel_writes_them() -> None:
    acl = posix("u::rw-,u:1000:r--,g::r--,m::r--,o::---")
    data = P.encode_xattr(acl)
    assert data == bytes.fromhex(
        "02000000" "01000600ffffffff" "02000400e8030000" "04000400ffffffff"
        "10000400ffffffff" "20000000ffffffff"
    )
    assert P.decode_xattr(data) == acl


@pytest.mark.parametrize(
    "data",
    [
        b"", b"\x02\0\0", bytes.fromhex("03000000"),  # short, wrong version
        bytes.fromhex("02000000" "01000600ffffffff"),  # no group or other
        bytes.fromhex("02000000" "01000600ffffffff" "04000400ffffffff" "20000800ffffffff"),
        bytes.fromhex("02000000" "04000400ffffffff" "01000600ffffffff" "20000000ffffffff"),
        bytes.fromhex("02000000" "01000600ffffffff" "02000400e8030000" "04000400ffffffff"
                      "20000000ffffffff"),  # named user without a mask
        bytes.fromhex("02000000" "01000600ffffffff" "04000400ffffffff" "40000000ffffffff"
                      "20000000ffffffff"),  # unknown tag
        bytes.fromhex("02000000") + bytes(8 * (P.MAX_ENTRIES + 1)),
    ],
)
def test_bad_xattrs_are_refused(data: bytes) -> None:
    with pytest.raises(P.AclError):
        P.decode_xattr(data)


@settings(deadline=None)
@given(acl=posix_acls())
def test_xattr_round_trip(acl: P.PosixAcl) -> None:
    assert P.decode_xattr(P.encode_xattr(acl)) == acl


# ------------------------------------------------------------------ principals on the wire


def test_wire_names_through_the_id_mapping() -> None:
    aces = parse("A::OWNER@:r A::1000:r A:g:50:r")
    wire = A.to_wire(aces, lambda u: f"u{u}@example.org", lambda g: f"g{g}@example.org")
    assert [a.who for a in wire] == [b"OWNER@", b"u1000@example.org", b"g50@example.org"]
    back = A.from_wire(wire, lambda n: int(n[1:].split("@")[0]),
                       lambda n: int(n[1:].split("@")[0]))  # fmt: skip
    assert back == aces
    assert A.wire_size(wire) == 4 + 3 * 16 + 8 + 20 + 16
