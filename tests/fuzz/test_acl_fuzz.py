"""Hostile bytes against the ACL decoders: the POSIX ACL xattr decoder (bytes a filesystem
hands over) and the fattr4 `acl` decoder of SETATTR (bytes a client sends).

Only the decoders' own errors may escape: ``AclError`` from the xattr decoder; NFS4ERR_BADXDR
(malformed), NFS4ERR_FBIG (more than ``MAX_ACES`` ACEs) from SETATTR's."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pynfsd.fs import posixacl as P
from pynfsd.gen import nfs4 as x
from pynfsd.nfs4 import acl as A
from pynfsd.nfs4 import errors
from pynfsd.nfs4.attrs import decode_settable
from pynfsd.nfs4.bitmap import set_to_bitmap

_ENTRY = st.tuples(st.sampled_from([1, 2, 4, 8, 0x10, 0x20, 0x40, 0]),
                   st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF))  # fmt: skip


@settings(deadline=None, max_examples=500)
@given(data=st.binary(max_size=200))
def test_xattr_decoder_on_random_bytes(data: bytes) -> None:
    try:
        acl = P.decode_xattr(data)
    except P.AclError:
        return
    assert P.decode_xattr(P.encode_xattr(acl)) == acl


@settings(deadline=None, max_examples=500)
@given(version=st.sampled_from([2, 2, 2, 1, 0xFFFFFFFF]), entries=st.lists(_ENTRY, max_size=12))
def test_xattr_decoder_on_structured_bytes(version: int, entries: list[tuple[int, int, int]]) -> None:
    data = struct.pack("<I", version) + b"".join(struct.pack("<HHI", *e) for e in entries)
    try:
        acl = P.decode_xattr(data)
    except P.AclError:
        return
    P.check_valid(acl)
    # a valid ACL maps to NFSv4 and back without error
    A.nfs4_to_posix(A.posix_to_nfs4(acl, acl, True), True)


def _acl_attr(count: int, body: bytes) -> x.fattr4:
    return x.fattr4(set_to_bitmap([x.FATTR4_ACL]), struct.pack(">I", count) + body)


@settings(deadline=None, max_examples=500)
@given(count=st.integers(0, 0xFFFFFFFF), body=st.binary(max_size=300))
def test_fattr4_acl_decoder_on_random_bytes(count: int, body: bytes) -> None:
    try:
        s = decode_settable(_acl_attr(count, body))
    except (errors.NFS4ERR_BADXDR, errors.NFS4ERR_FBIG, errors.NFS4ERR_INVAL):
        return
    assert s.acl is not None and len(s.acl) <= A.MAX_ACES


_ACE = st.builds(x.nfsace4, st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF),
                 st.integers(0, 0xFFFFFFFF),
                 st.sampled_from([b"OWNER@", b"GROUP@", b"EVERYONE@", b"1000", b"\xff"]))  # fmt: skip


@settings(deadline=None, max_examples=500)
@given(aces=st.lists(_ACE, max_size=8), is_dir=st.booleans())
def test_mapping_of_any_decoded_acl(aces: list[x.nfsace4], is_dir: bool) -> None:
    """Whatever ACEs a client sends map to valid POSIX ACLs or are refused as
    unrepresentable (NFS4ERR_ATTRNOTSUPP), never anything else."""
    try:
        mapped = A.from_wire(aces, int, int)
    except ValueError:  # not UTF-8, or not a number: the caller's BADXDR / BADOWNER
        return
    try:
        access, default = A.nfs4_to_posix(mapped, is_dir)
    except A.AclUnrepresentable:
        return
    P.check_valid(access)
    if default is not None:
        P.check_valid(default)


def test_one_past_the_ace_bound_is_fbig() -> None:
    ace = struct.pack(">IIII", 0, 0, 1, 6) + b"OWNER@\0\0"
    decode_settable(_acl_attr(A.MAX_ACES, ace * A.MAX_ACES))
    with pytest.raises(errors.NFS4ERR_FBIG):
        decode_settable(_acl_attr(A.MAX_ACES + 1, ace * (A.MAX_ACES + 1)))
