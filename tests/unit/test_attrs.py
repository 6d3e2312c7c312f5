"""fattr4 encoding/decoding (RFC 7530 §5) and bitmap4 helpers."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pynfsd.fs.backend import SET_TO_NOW, Attrs, FileType, FsStat
from pynfsd.gen import nfs4 as x
from pynfsd.nfs4 import errors
from pynfsd.nfs4.attrs import (
    ATTR_NAMES,
    NEEDS_FSSTAT,
    NEEDS_OWNER,
    READ_ONLY_ATTRS,
    REQUIRED_ATTRS,
    SETTABLE_ATTRS,
    SUPPORTED_ATTRS,
    WRITE_ONLY_ATTRS,
    AttrSource,
    decode_fattr4,
    decode_for_verify,
    decode_settable,
    encode_fattr4,
    encode_rdattr_error,
    requested_attrs,
    verify_matches,
)
from pynfsd.nfs4.bitmap import (
    bitmap_to_int,
    bitmap_to_set,
    int_to_bitmap,
    iter_bits,
    set_to_bitmap,
)
from pynfsd.xdr.runtime import Packer, XdrError

READABLE = sorted(SUPPORTED_ATTRS - WRITE_ONLY_ATTRS)
FH = bytes(range(1, 22))  # 21 bytes: exercises opaque padding
#: An ACL of two ACEs (who strings of 6 and 17 bytes: padding both ways).
ACL = [
    x.nfsace4(x.ACE4_ACCESS_DENIED_ACE_TYPE, 0, x.ACE4_WRITE_DATA, b"OWNER@"),
    x.nfsace4(x.ACE4_ACCESS_ALLOWED_ACE_TYPE, x.ACE4_IDENTIFIER_GROUP, x.ACE4_READ_DATA,
              b"staff@example.org"),
]


def u32(v: int) -> bytes:
    return struct.pack(">I", v)


def u64(v: int) -> bytes:
    return struct.pack(">Q", v)


def make_attrs(**kw: Any) -> Attrs:
    base: dict[str, Any] = dict(
        type=FileType.REG,
        mode=0o100644,  # only the low 12 bits may reach the wire
        nlink=2,
        uid=1000,
        gid=100,
        size=123456,
        space_used=131072,
        rdev=(8, 1),
        fileid=0x1122334455667788,
        atime_ns=1_700_000_000_123_456_789,
        mtime_ns=1_700_000_001_000_000_000,
        ctime_ns=-1,  # one nanosecond before the epoch
        change=0xFEDCBA9876543210,
    )
    base.update(kw)
    return Attrs(**base)


def make_src(**kw: Any) -> AttrSource:
    base: dict[str, Any] = dict(
        attrs=make_attrs(),
        fh=FH,
        fsid=(0x0102030405060708, 9),
        mounted_on_fileid=77,
        lease_time=90,
        maxread=1 << 20,
        maxwrite=1 << 19,
        maxfilesize=2**63 - 1,
        maxlink=65000,
        maxname=255,
        fsstat=FsStat(
            bytes_total=10**12,
            bytes_free=6 * 10**11,
            bytes_avail=5 * 10**11,
            files_total=10**7,
            files_free=9 * 10**6,
            files_avail=8 * 10**6,
            name_max=255,
        ),
        owner="alice@example.org",
        owner_group="staff@example.org",
        acl=ACL,
        aclsupport=x.ACL4_SUPPORT_ALLOW_ACL | x.ACL4_SUPPORT_DENY_ACL,
    )
    base.update(kw)
    return AttrSource(**base)


def fattr(values: dict[int, bytes]) -> x.fattr4:
    """A client-side fattr4 from {attr: already-encoded bytes}."""
    return x.fattr4(set_to_bitmap(values), b"".join(values[b] for b in sorted(values)))


def settime(seconds: int, nseconds: int) -> bytes:
    return u32(x.SET_TO_CLIENT_TIME4) + struct.pack(">qI", seconds, nseconds)


def opaque(data: bytes) -> bytes:
    return u32(len(data)) + data + b"\0" * (-len(data) & 3)


# --------------------------------------------------------------------------- bitmap4


@pytest.mark.parametrize(
    "bits, words",
    [
        (set(), []),
        ({0}, [1]),
        ({31}, [0x80000000]),
        ({32}, [0, 1]),
        ({1, 4, 33, 55}, [0x12, 0x00800002]),
        ({95}, [0, 0, 0x80000000]),
    ],
)
def test_bitmap_round_trip(bits: set[int], words: list[int]) -> None:
    assert set_to_bitmap(bits) == words
    assert bitmap_to_set(words) == frozenset(bits)
    assert int_to_bitmap(bitmap_to_int(words)) == words


def test_bitmap_trailing_zero_words_and_order() -> None:
    assert bitmap_to_set([0x3, 0, 0]) == {0, 1}
    assert set_to_bitmap([0, 1]) == [3]
    assert set_to_bitmap([]) == []
    assert list(iter_bits(bitmap_to_int([0x80000001, 0x5]))) == [0, 31, 32, 34]
    with pytest.raises(ValueError):
        set_to_bitmap([-1])


# --------------------------------------------------------------------------- sets


def test_supported_set() -> None:
    assert REQUIRED_ATTRS <= SUPPORTED_ATTRS  # RFC 7530 §5.6
    unsupported = {"archive", "hidden", "system", "time_backup", "time_create"}
    unsupported |= {"mimetype", "quota_avail_hard", "quota_avail_soft", "quota_used"}
    unsupported |= {"fs_locations"}
    names = {ATTR_NAMES[b] for b in SUPPORTED_ATTRS}
    assert not names & unsupported
    assert len(SUPPORTED_ATTRS) == 56 - len(unsupported)
    assert SETTABLE_ATTRS | READ_ONLY_ATTRS == SUPPORTED_ATTRS
    assert WRITE_ONLY_ATTRS <= SETTABLE_ATTRS
    assert NEEDS_FSSTAT | NEEDS_OWNER <= SUPPORTED_ATTRS


# --------------------------------------------------------------------------- encoding

A = make_attrs()
S = make_src()

#: attr -> (generated packer, value as the generated codec types it) for every readable attr.
EXPECTED: dict[int, tuple[Callable[[Packer, Any], None], Any]] = {
    x.FATTR4_SUPPORTED_ATTRS: (x.pack_fattr4_supported_attrs, set_to_bitmap(SUPPORTED_ATTRS)),
    x.FATTR4_TYPE: (x.pack_fattr4_type, x.NF4REG),
    x.FATTR4_FH_EXPIRE_TYPE: (x.pack_fattr4_fh_expire_type, x.FH4_PERSISTENT),
    x.FATTR4_CHANGE: (x.pack_fattr4_change, A.change),
    x.FATTR4_SIZE: (x.pack_fattr4_size, A.size),
    x.FATTR4_LINK_SUPPORT: (x.pack_fattr4_link_support, True),
    x.FATTR4_SYMLINK_SUPPORT: (x.pack_fattr4_symlink_support, True),
    x.FATTR4_NAMED_ATTR: (x.pack_fattr4_named_attr, False),
    x.FATTR4_FSID: (x.pack_fattr4_fsid, x.fsid4(*S.fsid)),
    x.FATTR4_UNIQUE_HANDLES: (x.pack_fattr4_unique_handles, True),
    x.FATTR4_LEASE_TIME: (x.pack_fattr4_lease_time, 90),
    x.FATTR4_RDATTR_ERROR: (x.pack_fattr4_rdattr_error, 0),
    x.FATTR4_FILEHANDLE: (x.pack_fattr4_filehandle, FH),
    x.FATTR4_ACL: (x.pack_fattr4_acl, ACL),
    x.FATTR4_ACLSUPPORT: (x.pack_fattr4_aclsupport, 3),
    x.FATTR4_CANSETTIME: (x.pack_fattr4_cansettime, True),
    x.FATTR4_CASE_INSENSITIVE: (x.pack_fattr4_case_insensitive, False),
    x.FATTR4_CASE_PRESERVING: (x.pack_fattr4_case_preserving, True),
    x.FATTR4_CHOWN_RESTRICTED: (x.pack_fattr4_chown_restricted, True),
    x.FATTR4_FILEID: (x.pack_fattr4_fileid, A.fileid),
    x.FATTR4_FILES_AVAIL: (x.pack_fattr4_files_avail, 8 * 10**6),
    x.FATTR4_FILES_FREE: (x.pack_fattr4_files_free, 9 * 10**6),
    x.FATTR4_FILES_TOTAL: (x.pack_fattr4_files_total, 10**7),
    x.FATTR4_HOMOGENEOUS: (x.pack_fattr4_homogeneous, True),
    x.FATTR4_MAXFILESIZE: (x.pack_fattr4_maxfilesize, 2**63 - 1),
    x.FATTR4_MAXLINK: (x.pack_fattr4_maxlink, 65000),
    x.FATTR4_MAXNAME: (x.pack_fattr4_maxname, 255),
    x.FATTR4_MAXREAD: (x.pack_fattr4_maxread, 1 << 20),
    x.FATTR4_MAXWRITE: (x.pack_fattr4_maxwrite, 1 << 19),
    x.FATTR4_MODE: (x.pack_fattr4_mode, 0o644),
    x.FATTR4_NO_TRUNC: (x.pack_fattr4_no_trunc, True),
    x.FATTR4_NUMLINKS: (x.pack_fattr4_numlinks, 2),
    x.FATTR4_OWNER: (x.pack_fattr4_owner, b"alice@example.org"),
    x.FATTR4_OWNER_GROUP: (x.pack_fattr4_owner_group, b"staff@example.org"),
    x.FATTR4_RAWDEV: (x.pack_fattr4_rawdev, x.specdata4(8, 1)),
    x.FATTR4_SPACE_AVAIL: (x.pack_fattr4_space_avail, 5 * 10**11),
    x.FATTR4_SPACE_FREE: (x.pack_fattr4_space_free, 6 * 10**11),
    x.FATTR4_SPACE_TOTAL: (x.pack_fattr4_space_total, 10**12),
    x.FATTR4_SPACE_USED: (x.pack_fattr4_space_used, 131072),
    x.FATTR4_TIME_ACCESS: (x.pack_fattr4_time_access, x.nfstime4(1_700_000_000, 123_456_789)),
    x.FATTR4_TIME_DELTA: (x.pack_fattr4_time_delta, x.nfstime4(0, 1)),
    x.FATTR4_TIME_METADATA: (x.pack_fattr4_time_metadata, x.nfstime4(-1, 999_999_999)),
    x.FATTR4_TIME_MODIFY: (x.pack_fattr4_time_modify, x.nfstime4(1_700_000_001, 0)),
    x.FATTR4_MOUNTED_ON_FILEID: (x.pack_fattr4_mounted_on_fileid, 77),
}


def test_expected_covers_every_readable_attribute() -> None:
    assert sorted(EXPECTED) == READABLE


@pytest.mark.parametrize("attr", READABLE, ids=lambda a: ATTR_NAMES[a])
def test_each_attribute_matches_generated_codec(attr: int) -> None:
    packer, value = EXPECTED[attr]
    p = Packer()
    packer(p, value)
    f = encode_fattr4(frozenset({attr}), S)
    assert f.attrmask == set_to_bitmap([attr])
    assert f.attr_vals == p.get_buffer()
    assert decode_fattr4(f)[attr] == value


@pytest.mark.parametrize(
    "attr, wire",
    [
        (x.FATTR4_TYPE, bytes.fromhex("00000001")),
        (x.FATTR4_CHANGE, bytes.fromhex("fedcba9876543210")),
        (x.FATTR4_FSID, bytes.fromhex("0102030405060708 0000000000000009")),
        (x.FATTR4_FILEHANDLE, bytes.fromhex("00000015") + FH + b"\0\0\0"),
        (x.FATTR4_MODE, bytes.fromhex("000001a4")),  # 0o644, file-type bits dropped
        (x.FATTR4_RAWDEV, bytes.fromhex("00000008 00000001")),
        (x.FATTR4_OWNER, bytes.fromhex("00000011") + b"alice@example.org\0\0\0"),
        (x.FATTR4_TIME_ACCESS, bytes.fromhex("000000006553f100 075bcd15")),
        (x.FATTR4_TIME_METADATA, bytes.fromhex("ffffffffffffffff 3b9ac9ff")),
        (x.FATTR4_LINK_SUPPORT, bytes.fromhex("00000001")),
        (x.FATTR4_NAMED_ATTR, bytes.fromhex("00000000")),
        (x.FATTR4_LEASE_TIME, bytes.fromhex("0000005a")),
        (x.FATTR4_SUPPORTED_ATTRS, bytes.fromhex("00000002 fcffbfff 00f9be3e")),
    ],
    ids=lambda v: ATTR_NAMES[v] if isinstance(v, int) else "",
)
def test_hand_written_byte_vectors(attr: int, wire: bytes) -> None:
    assert encode_fattr4([1 << attr] if attr < 32 else [0, 1 << (attr - 32)], S).attr_vals == wire


def test_whole_getattr_byte_vector() -> None:
    # GETATTR {type, size, fileid, mode} -- mask words 0x00100012, 0x00000002.
    f = encode_fattr4([0x00100012, 0x00000002], S)
    assert f.attrmask == [0x00100012, 0x00000002]
    assert f.attr_vals == bytes.fromhex(
        "00000001" + "000000000001e240" + "1122334455667788" + "000001a4"
    )
    p = Packer()
    x.pack_fattr4(p, f)
    assert p.get_buffer()[:12] == bytes.fromhex("00000002 00100012 00000002")


def test_all_attributes_in_ascending_order() -> None:
    f = encode_fattr4(frozenset(SUPPORTED_ATTRS - WRITE_ONLY_ATTRS), S)
    assert bitmap_to_set(f.attrmask) == set(READABLE)
    p = Packer()
    for attr in READABLE:
        packer, value = EXPECTED[attr]
        packer(p, value)
    assert f.attr_vals == p.get_buffer()
    assert list(decode_fattr4(f)) == READABLE


def test_set_and_words_requests_agree() -> None:
    bits = frozenset({55, 1, 33, 4, 20})
    assert encode_fattr4(bits, S) == encode_fattr4(set_to_bitmap(bits), S)
    assert encode_fattr4(set_to_bitmap(bits) + [0, 0], S) == encode_fattr4(bits, S)


def test_unsupported_requested_attributes_are_omitted() -> None:
    unsupported = [x.FATTR4_HIDDEN, x.FATTR4_ARCHIVE, x.FATTR4_TIME_CREATE, x.FATTR4_QUOTA_USED, 90]
    f = encode_fattr4(frozenset(unsupported + [x.FATTR4_SIZE]), S)
    assert f.attrmask == set_to_bitmap([x.FATTR4_SIZE])
    assert f.attr_vals == u64(A.size)
    empty = encode_fattr4(frozenset(unsupported), S)
    assert empty.attrmask == [] and empty.attr_vals == b""
    assert encode_fattr4([], S) == x.fattr4([], b"")


def test_reduced_supported_set() -> None:
    small = REQUIRED_ATTRS | {x.FATTR4_FILEID, x.FATTR4_MOUNTED_ON_FILEID}
    src = make_src(supported=small)
    f = encode_fattr4(frozenset({x.FATTR4_SUPPORTED_ATTRS, x.FATTR4_MODE, x.FATTR4_FILEID}), src)
    assert bitmap_to_set(f.attrmask) == {x.FATTR4_SUPPORTED_ATTRS, x.FATTR4_FILEID}
    assert decode_fattr4(f)[x.FATTR4_SUPPORTED_ATTRS] == set_to_bitmap(small)


def test_supported_attribute_without_encoder_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="hidden"):
        encode_fattr4(frozenset({x.FATTR4_HIDDEN}),
                      make_src(supported=SUPPORTED_ATTRS | {x.FATTR4_HIDDEN}))


@pytest.mark.parametrize("attr", sorted(WRITE_ONLY_ATTRS))
def test_getattr_of_set_only_attribute_is_inval(attr: int) -> None:
    with pytest.raises(errors.NFS4ERR_INVAL):  # RFC 7530 §5.5
        encode_fattr4(frozenset({x.FATTR4_SIZE, attr}), S)


def test_missing_fsstat_and_owner_are_omitted() -> None:
    req = frozenset(NEEDS_FSSTAT | NEEDS_OWNER | {x.FATTR4_SIZE})
    assert bitmap_to_set(encode_fattr4(req, S).attrmask) == req
    src = make_src(fsstat=None, owner=None)
    f = encode_fattr4(req, src)
    assert bitmap_to_set(f.attrmask) == {x.FATTR4_SIZE, x.FATTR4_OWNER_GROUP}
    assert f.attr_vals == u64(A.size) + opaque(b"staff@example.org")


def test_non_ascii_owner_and_type_values() -> None:
    for ftype in FileType:
        src = make_src(attrs=make_attrs(type=ftype), owner="jörg@example.org")
        f = encode_fattr4(frozenset({x.FATTR4_TYPE, x.FATTR4_OWNER}), src)
        values = decode_fattr4(f)
        assert values[x.FATTR4_TYPE] == int(ftype)
        assert values[x.FATTR4_OWNER] == "jörg@example.org".encode()


def test_rdattr_error_value_and_error_only_entry() -> None:
    src = make_src(rdattr_error=x.NFS4ERR_ACCESS)
    assert encode_fattr4(frozenset({x.FATTR4_RDATTR_ERROR}), src).attr_vals == u32(13)
    f = encode_rdattr_error(frozenset({x.FATTR4_RDATTR_ERROR, x.FATTR4_SIZE}), 70)
    assert f == x.fattr4([1 << x.FATTR4_RDATTR_ERROR], u32(70))
    assert encode_rdattr_error([1 << x.FATTR4_SIZE], 70) is None


def test_readdir_sized_loop() -> None:
    req = set_to_bitmap(
        [x.FATTR4_RDATTR_ERROR, x.FATTR4_TYPE, x.FATTR4_CHANGE, x.FATTR4_SIZE, x.FATTR4_FSID]
        + [x.FATTR4_FILEHANDLE, x.FATTR4_FILEID, x.FATTR4_MODE, x.FATTR4_NUMLINKS]
        + [x.FATTR4_OWNER, x.FATTR4_OWNER_GROUP, x.FATTR4_RAWDEV, x.FATTR4_SPACE_USED]
        + [x.FATTR4_TIME_ACCESS, x.FATTR4_TIME_METADATA, x.FATTR4_TIME_MODIFY]
        + [x.FATTR4_MOUNTED_ON_FILEID]
    )
    base = make_src(fsstat=None)
    out = []
    for i in range(10_000):
        src = dataclasses.replace(base, attrs=make_attrs(fileid=i, size=i), fh=u64(i))
        out.append(encode_fattr4(req, src))
    assert all(f.attrmask == req for f in out)
    last = decode_fattr4(out[-1])
    assert last[x.FATTR4_FILEID] == 9999 and last[x.FATTR4_FILEHANDLE] == u64(9999)
    assert len({f.attr_vals for f in out}) == 10_000


# --------------------------------------------------------------------------- SETATTR


def test_decode_settable_all_attributes() -> None:
    f = fattr(
        {
            x.FATTR4_SIZE: u64(4096),
            x.FATTR4_MODE: u32(0o4755),
            x.FATTR4_OWNER: opaque(b"bob@example.org"),
            x.FATTR4_OWNER_GROUP: opaque("grüppe".encode()),
            x.FATTR4_TIME_ACCESS_SET: u32(x.SET_TO_SERVER_TIME4),
            x.FATTR4_TIME_MODIFY_SET: settime(-2, 500),
        }
    )
    s = decode_settable(f)
    assert (s.size, s.mode, s.owner, s.owner_group) == (4096, 0o4755, "bob@example.org", "grüppe")
    assert s.atime is SET_TO_NOW
    assert s.mtime == -2 * 10**9 + 500
    assert s.mask == f.attrmask


def test_decode_settable_empty_and_single() -> None:
    s = decode_settable(x.fattr4([], b""))
    assert s.mask == [] and s.size is None and s.mode is None and s.atime is None
    s = decode_settable(fattr({x.FATTR4_TIME_ACCESS_SET: settime(1, 999_999_999)}))
    assert s.atime == 1_999_999_999 and s.mtime is None


@pytest.mark.parametrize("attr", [x.FATTR4_HIDDEN, x.FATTR4_ARCHIVE, x.FATTR4_TIME_CREATE, 70])
def test_settable_unsupported_is_attrnotsupp(attr: int) -> None:
    f = x.fattr4(set_to_bitmap([attr, x.FATTR4_MODE]), u32(0))
    with pytest.raises(errors.NFS4ERR_ATTRNOTSUPP):
        decode_settable(f)


def test_settable_attrnotsupp_before_inval() -> None:
    f = x.fattr4(set_to_bitmap([x.FATTR4_TYPE, x.FATTR4_HIDDEN]), u32(1) + u32(0))
    with pytest.raises(errors.NFS4ERR_ATTRNOTSUPP):
        decode_settable(f)


@pytest.mark.parametrize(
    "attr, value",
    [
        (x.FATTR4_TYPE, u32(1)),
        (x.FATTR4_CHANGE, u64(5)),
        (x.FATTR4_FILEID, u64(5)),
        (x.FATTR4_TIME_MODIFY, struct.pack(">qI", 1, 0)),
        (x.FATTR4_SUPPORTED_ATTRS, u32(0)),
        (x.FATTR4_RDATTR_ERROR, u32(0)),
    ],
    ids=lambda v: ATTR_NAMES[v] if isinstance(v, int) else "",
)
def test_settable_read_only_is_inval(attr: int, value: bytes) -> None:
    with pytest.raises(errors.NFS4ERR_INVAL):  # RFC 7530 §5.5
        decode_settable(fattr({attr: value}))


def test_settable_not_allowed_here_is_inval() -> None:
    f = fattr({x.FATTR4_SIZE: u64(0), x.FATTR4_MODE: u32(0o600)})
    allowed = SETTABLE_ATTRS - {x.FATTR4_SIZE}
    with pytest.raises(errors.NFS4ERR_INVAL):
        decode_settable(f, allowed=allowed)
    assert decode_settable(fattr({x.FATTR4_MODE: u32(0o600)}), allowed=allowed).mode == 0o600


@pytest.mark.parametrize(
    "values, extra",
    [
        ({x.FATTR4_SIZE: u64(1)[:7]}, b""),  # short
        ({x.FATTR4_SIZE: u64(1)}, b"\0\0\0\0"),  # trailing bytes
        ({x.FATTR4_MODE: u32(0o600), x.FATTR4_OWNER: u32(3) + b"bob\x01"}, b""),  # padding
        ({x.FATTR4_OWNER: opaque(b"\xff\xfe@x")}, b""),  # not UTF-8
        ({x.FATTR4_OWNER_GROUP: opaque(b"g\xc3")}, b""),  # truncated UTF-8
        ({x.FATTR4_OWNER: u32(1000)}, b""),  # length beyond the data
        ({x.FATTR4_TIME_MODIFY_SET: u32(2)}, b""),  # bad time_how4
        ({x.FATTR4_TIME_ACCESS_SET: settime(1, 0)[:10]}, b""),  # short nfstime4
        ({x.FATTR4_MODE: u32(0o4000 << 3)}, b"x"),  # BADXDR wins over a bad mode value
    ],
)
def test_settable_malformed_is_badxdr(values: dict[int, bytes], extra: bytes) -> None:
    f = fattr(values)
    f.attr_vals += extra
    with pytest.raises(errors.NFS4ERR_BADXDR):
        decode_settable(f)


@pytest.mark.parametrize(
    "values",
    [
        {x.FATTR4_MODE: u32(0o10000)},
        {x.FATTR4_MODE: u32(0o100644)},
        {x.FATTR4_TIME_ACCESS_SET: settime(0, 10**9)},
        {x.FATTR4_SIZE: u64(1), x.FATTR4_TIME_MODIFY_SET: settime(5, 0xFFFFFFFF)},
    ],
)
def test_settable_out_of_range_is_inval(values: dict[int, bytes]) -> None:
    with pytest.raises(errors.NFS4ERR_INVAL):
        decode_settable(fattr(values))


# --------------------------------------------------------------------------- VERIFY


def client_fattr(attrs: list[int], src: AttrSource = S) -> x.fattr4:
    """What a client would send after reading the attributes (generated codec)."""
    p = Packer()
    for attr in sorted(attrs):
        packer, value = EXPECTED[attr]
        packer(p, value)
    return x.fattr4(set_to_bitmap(attrs), p.get_buffer())


def test_verify_all_readable_attributes_match() -> None:
    verifiable = [a for a in READABLE if a != x.FATTR4_RDATTR_ERROR]
    assert verify_matches(client_fattr(verifiable), S)
    assert list(decode_for_verify(client_fattr(verifiable))) == verifiable


@pytest.mark.parametrize(
    "attrs",
    [
        make_attrs(size=A.size + 1),
        make_attrs(change=A.change - 1),
        make_attrs(mode=0o600),
        make_attrs(mtime_ns=A.mtime_ns + 1),
    ],
)
def test_verify_mismatch(attrs: Attrs) -> None:
    f = client_fattr([x.FATTR4_CHANGE, x.FATTR4_SIZE, x.FATTR4_MODE, x.FATTR4_TIME_MODIFY])
    assert verify_matches(f, S)
    assert not verify_matches(f, make_src(attrs=attrs))


def test_verify_owner_and_filehandle() -> None:
    f = client_fattr([x.FATTR4_OWNER, x.FATTR4_FILEHANDLE])
    assert verify_matches(f, S)
    assert not verify_matches(f, make_src(owner="bob@example.org"))
    assert not verify_matches(f, make_src(fh=FH + b"x"))


def test_verify_supported_attrs_ignores_trailing_zero_words() -> None:
    words = set_to_bitmap(SUPPORTED_ATTRS) + [0]
    p = Packer()
    x.pack_fattr4_supported_attrs(p, words)
    assert verify_matches(fattr({x.FATTR4_SUPPORTED_ATTRS: p.get_buffer()}), S)
    p = Packer()
    x.pack_fattr4_supported_attrs(p, set_to_bitmap(REQUIRED_ATTRS))
    assert not verify_matches(fattr({x.FATTR4_SUPPORTED_ATTRS: p.get_buffer()}), S)


@pytest.mark.parametrize("attr", [x.FATTR4_ARCHIVE, x.FATTR4_HIDDEN, x.FATTR4_QUOTA_USED, 64])
def test_verify_unsupported_is_attrnotsupp(attr: int) -> None:
    with pytest.raises(errors.NFS4ERR_ATTRNOTSUPP):  # RFC 7530 §16.35.5
        decode_for_verify(x.fattr4(set_to_bitmap([attr]), u32(0)))


@pytest.mark.parametrize(
    "attr, value",
    [
        (x.FATTR4_RDATTR_ERROR, u32(0)),
        (x.FATTR4_TIME_ACCESS_SET, u32(x.SET_TO_SERVER_TIME4)),
        (x.FATTR4_TIME_MODIFY_SET, settime(1, 0)),
    ],
)
def test_verify_rdattr_error_and_set_only_are_inval(attr: int, value: bytes) -> None:
    with pytest.raises(errors.NFS4ERR_INVAL):  # RFC 7530 §16.15.5, §16.35.5
        verify_matches(fattr({attr: value}), S)


@pytest.mark.parametrize(
    "f",
    [
        x.fattr4(set_to_bitmap([x.FATTR4_SIZE]), u64(1)[:4]),
        x.fattr4(set_to_bitmap([x.FATTR4_SIZE]), u64(1) + b"\0\0\0\0"),
        x.fattr4(set_to_bitmap([x.FATTR4_TYPE]), u32(42)),  # not an nfs_ftype4
        x.fattr4(set_to_bitmap([x.FATTR4_LINK_SUPPORT]), u32(2)),  # not a bool
        x.fattr4(set_to_bitmap([x.FATTR4_FILEHANDLE]), u32(129) + bytes(132)),  # > NFS4_FHSIZE
        x.fattr4(set_to_bitmap([x.FATTR4_FILEHANDLE]), u32(1) + b"\1\0\0\1"),  # padding
    ],
)
def test_verify_malformed_is_badxdr(f: x.fattr4) -> None:
    with pytest.raises(errors.NFS4ERR_BADXDR):
        verify_matches(f, S)


def test_verify_without_fsstat_is_a_programming_error() -> None:
    f = client_fattr([x.FATTR4_SPACE_FREE])
    assert verify_matches(f, S)
    with pytest.raises(ValueError, match="43"):
        verify_matches(f, make_src(fsstat=None))


# --------------------------------------------------------------------------- decode_fattr4


def test_decode_fattr4_rejects_unknown_bits_and_malformed() -> None:
    with pytest.raises(XdrError):
        decode_fattr4(x.fattr4([0, 0, 1], b""))
    with pytest.raises(XdrError):
        decode_fattr4(x.fattr4([1 << x.FATTR4_SIZE], b"\0"))


# --------------------------------------------------------------------------- properties

ANY_BIT = st.integers(min_value=0, max_value=70)


@settings(max_examples=300, deadline=None)
@given(bits=st.sets(ANY_BIT, max_size=8), data=st.binary(max_size=64))
def test_decoders_raise_only_nfs4_errors(bits: set[int], data: bytes) -> None:
    f = x.fattr4(set_to_bitmap(bits), data)
    for decode in (decode_settable, decode_for_verify):
        try:
            decode(f)
        except errors.NFS4Error:
            pass


@settings(deadline=None)
@given(
    mode=st.none() | st.integers(0, 0o7777),
    size=st.none() | st.integers(0, 2**64 - 1),
    owner=st.none() | st.text(max_size=20),
    mtime=st.none() | st.tuples(st.integers(-(2**63), 2**63 - 1), st.integers(0, 10**9 - 1)),
)
def test_settable_round_trip(
    mode: int | None, size: int | None, owner: str | None, mtime: tuple[int, int] | None
) -> None:
    values: dict[int, bytes] = {}
    if mode is not None:
        values[x.FATTR4_MODE] = u32(mode)
    if size is not None:
        values[x.FATTR4_SIZE] = u64(size)
    if owner is not None:
        values[x.FATTR4_OWNER] = opaque(owner.encode())
    if mtime is not None:
        values[x.FATTR4_TIME_MODIFY_SET] = settime(*mtime)
    s = decode_settable(fattr(values))
    assert (s.mode, s.size, s.owner) == (mode, size, owner)
    assert s.mtime == (None if mtime is None else mtime[0] * 10**9 + mtime[1])
    assert bitmap_to_set(s.mask) == set(values)


@settings(deadline=None)
@given(bits=st.sets(ANY_BIT, max_size=20))
def test_encode_returns_requested_intersect_supported(bits: set[int]) -> None:
    requested = frozenset(bits - WRITE_ONLY_ATTRS)
    f = encode_fattr4(set_to_bitmap(requested), S)
    assert bitmap_to_set(f.attrmask) == requested & SUPPORTED_ATTRS
    assert list(decode_fattr4(f)) == sorted(requested & SUPPORTED_ATTRS)


def test_huge_bitmaps_are_handled() -> None:
    # A 40 KB bitmap4 (10,000 words, every bit set): omitted beyond the RFC 7530 attributes
    # on encode, ATTRNOTSUPP on decode -- and iterating it is linear.
    words = [0xFFFFFFFF] * 10_000
    f = encode_fattr4([0xFFFFFFFF, 0xFFFFFFFF & ~(1 << 16) & ~(1 << 22)] + words, S)
    assert bitmap_to_set(f.attrmask) == set(READABLE)
    with pytest.raises(errors.NFS4ERR_ATTRNOTSUPP):
        decode_settable(x.fattr4([0, 0] + words, b""))
    assert sum(1 for _ in iter_bits(bitmap_to_int(words))) == 320_000
    assert int_to_bitmap(bitmap_to_int(words)) == words


def test_requested_attrs_is_bounded() -> None:
    assert requested_attrs([0x12, 0x2, 0xFFFFFFFF] + [0xFFFFFFFF] * 10_000) == {1, 4, 33}
    assert requested_attrs([]) == frozenset()
    assert requested_attrs(set_to_bitmap(SUPPORTED_ATTRS)) == SUPPORTED_ATTRS


# --------------------------------------------------------------------------- layouts


@settings(max_examples=300, deadline=None)
@given(st.sets(st.sampled_from(READABLE)))
def test_any_layout_matches_the_generated_codec(attrs: set[int]) -> None:
    """A layout packs runs of fixed-size attributes together: any choice of attributes
    encodes as the generated codec's packers in ascending order."""
    p = Packer()
    for attr in sorted(attrs):
        packer, value = EXPECTED[attr]
        packer(p, value)
    f = encode_fattr4(frozenset(attrs), S)
    assert f.attrmask == set_to_bitmap(attrs)
    assert f.attr_vals == p.get_buffer()


def test_layout_values_change_with_the_object() -> None:
    """One layout serves every object: nothing of the first object stays in it."""
    req = frozenset({x.FATTR4_TYPE, x.FATTR4_SIZE, x.FATTR4_FILEHANDLE, x.FATTR4_OWNER,
                     x.FATTR4_TIME_MODIFY})
    one = encode_fattr4(req, S)
    other = make_src(attrs=make_attrs(type=FileType.DIR, size=5, mtime_ns=-1), fh=b"\x07",
                     owner="bob")
    values = decode_fattr4(encode_fattr4(req, other))
    assert values[x.FATTR4_TYPE] == x.NF4DIR and values[x.FATTR4_SIZE] == 5
    assert values[x.FATTR4_FILEHANDLE] == b"\x07" and values[x.FATTR4_OWNER] == b"bob"
    assert values[x.FATTR4_TIME_MODIFY] == x.nfstime4(-1, 999_999_999)
    assert encode_fattr4(req, S) == one
