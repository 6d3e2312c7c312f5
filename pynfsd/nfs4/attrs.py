"""fattr4 encoding and decoding (RFC 7530 §5): GETATTR, READDIR, SETATTR, CREATE, OPEN, VERIFY.

Theory of operation
-------------------
*Encoding* runs for every GETATTR and for every READDIR entry, so it is table driven: each
supported readable attribute has an encoder ``AttrSource -> bytes`` in ``_ENCODERS``.  A
request bitmap is compiled once (cached) into a ``_Plan``: the encoders of the requested and
supported attributes in ascending order and the result bitmap.  Encoding an object is then
one list comprehension and one ``bytes.join``.  An ``AttrSource`` holds everything the encoders
need, so encoding does no I/O; the caller fills ``fsstat`` only when the request intersects
``NEEDS_FSSTAT`` and ``owner``/``owner_group`` only when it intersects ``NEEDS_OWNER``.
Attributes whose data the caller left as ``None`` are omitted, which RFC 7530 §16.7.4 allows
("cannot approximate a useful value").  The encoders are hand-written beside the generated
codecs; tests check them against ``pack_fattr4_*``.

*Decoding* uses the generated ``unpack_fattr4_*`` functions (bounded, strict padding and
enum checks).  Any ``XdrError`` becomes NFS4ERR_BADXDR.  ``decode_settable`` returns the
writable attributes of SETATTR/CREATE/OPEN as plain values; ``decode_for_verify`` and
``verify_matches`` implement VERIFY/NVERIFY by comparing canonical XDR bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final, TypeVar

from pynfsd.fs.backend import SET_TO_NOW, Attrs, FileType, FsStat, SetToNow
from pynfsd.gen import nfs4 as x
from pynfsd.nfs4 import errors
from pynfsd.nfs4.bitmap import bitmap_to_int, int_to_bitmap, iter_bits, set_to_bitmap
from pynfsd.xdr.runtime import Unpacker, XdrError

__all__ = [
    "ATTR_NAMES",
    "NEEDS_FSSTAT",
    "NEEDS_OWNER",
    "READ_ONLY_ATTRS",
    "RECOMMENDED_ATTRS",
    "REQUIRED_ATTRS",
    "SETTABLE_ATTRS",
    "SUPPORTED_ATTRS",
    "WRITE_ONLY_ATTRS",
    "AttrSource",
    "SetAttrs",
    "decode_fattr4",
    "decode_for_verify",
    "decode_settable",
    "encode_fattr4",
    "encode_rdattr_error",
    "fattr4_max_size",
    "requested_attrs",
    "verify_matches",
]

#: Attribute number -> RFC name ("supported_attrs", "type", ...), for every FATTR4_* constant.
ATTR_NAMES: Final[dict[int, str]] = {
    getattr(x, n): n[len("FATTR4_") :].lower() for n in dir(x) if n.startswith("FATTR4_")
}

#: RFC 7530 §5.6, Table 3: every server MUST support these.
REQUIRED_ATTRS: Final = frozenset(
    {
        x.FATTR4_SUPPORTED_ATTRS,
        x.FATTR4_TYPE,
        x.FATTR4_FH_EXPIRE_TYPE,
        x.FATTR4_CHANGE,
        x.FATTR4_SIZE,
        x.FATTR4_LINK_SUPPORT,
        x.FATTR4_SYMLINK_SUPPORT,
        x.FATTR4_NAMED_ATTR,
        x.FATTR4_FSID,
        x.FATTR4_UNIQUE_HANDLES,
        x.FATTR4_LEASE_TIME,
        x.FATTR4_RDATTR_ERROR,
        x.FATTR4_FILEHANDLE,
    }
)

#: RFC 7530 §5.7: the RECOMMENDED attributes we implement (no acl, archive, hidden, system,
#: time_backup, time_create, mimetype, quota_*, fs_locations).
RECOMMENDED_ATTRS: Final = frozenset(
    {
        x.FATTR4_ACLSUPPORT,
        x.FATTR4_CANSETTIME,
        x.FATTR4_CASE_INSENSITIVE,
        x.FATTR4_CASE_PRESERVING,
        x.FATTR4_CHOWN_RESTRICTED,
        x.FATTR4_FILEID,
        x.FATTR4_FILES_AVAIL,
        x.FATTR4_FILES_FREE,
        x.FATTR4_FILES_TOTAL,
        x.FATTR4_HOMOGENEOUS,
        x.FATTR4_MAXFILESIZE,
        x.FATTR4_MAXLINK,
        x.FATTR4_MAXNAME,
        x.FATTR4_MAXREAD,
        x.FATTR4_MAXWRITE,
        x.FATTR4_MODE,
        x.FATTR4_NO_TRUNC,
        x.FATTR4_NUMLINKS,
        x.FATTR4_OWNER,
        x.FATTR4_OWNER_GROUP,
        x.FATTR4_RAWDEV,
        x.FATTR4_SPACE_AVAIL,
        x.FATTR4_SPACE_FREE,
        x.FATTR4_SPACE_TOTAL,
        x.FATTR4_SPACE_USED,
        x.FATTR4_TIME_ACCESS,
        x.FATTR4_TIME_ACCESS_SET,
        x.FATTR4_TIME_DELTA,
        x.FATTR4_TIME_METADATA,
        x.FATTR4_TIME_MODIFY,
        x.FATTR4_TIME_MODIFY_SET,
        x.FATTR4_MOUNTED_ON_FILEID,
    }
)

SUPPORTED_ATTRS: Final = REQUIRED_ATTRS | RECOMMENDED_ATTRS

#: RFC 7530 §5.5: set-only attributes (GETATTR/READDIR/VERIFY of them is NFS4ERR_INVAL).
WRITE_ONLY_ATTRS: Final = frozenset({x.FATTR4_TIME_ACCESS_SET, x.FATTR4_TIME_MODIFY_SET})

#: Supported attributes that SETATTR may set (RFC 7530 §5.6/§5.7 tables, access "R/W"/"W").
SETTABLE_ATTRS: Final = frozenset(
    {
        x.FATTR4_SIZE,
        x.FATTR4_MODE,
        x.FATTR4_OWNER,
        x.FATTR4_OWNER_GROUP,
        x.FATTR4_TIME_ACCESS_SET,
        x.FATTR4_TIME_MODIFY_SET,
    }
)

#: RFC 7530 §5.5: get-only attributes (setting them is NFS4ERR_INVAL).
READ_ONLY_ATTRS: Final = SUPPORTED_ATTRS - SETTABLE_ATTRS

#: Requesting any of these needs ``AttrSource.fsstat``.
NEEDS_FSSTAT: Final = frozenset(
    {
        x.FATTR4_FILES_AVAIL,
        x.FATTR4_FILES_FREE,
        x.FATTR4_FILES_TOTAL,
        x.FATTR4_SPACE_AVAIL,
        x.FATTR4_SPACE_FREE,
        x.FATTR4_SPACE_TOTAL,
    }
)

#: Requesting any of these needs ``AttrSource.owner`` / ``owner_group`` (via the idmapper).
NEEDS_OWNER: Final = frozenset({x.FATTR4_OWNER, x.FATTR4_OWNER_GROUP})

_NS: Final = 1_000_000_000
_T = TypeVar("_T")


@dataclass(slots=True)
class AttrSource:
    """Everything needed to encode one object's attributes without I/O.

    ``fsstat``, ``owner`` and ``owner_group`` may be left ``None`` when not requested (see
    ``NEEDS_FSSTAT``/``NEEDS_OWNER``); requested attributes whose data is ``None`` are omitted.
    """

    attrs: Attrs
    fh: bytes
    fsid: tuple[int, int]
    mounted_on_fileid: int
    lease_time: int
    maxread: int
    maxwrite: int
    maxfilesize: int
    maxlink: int
    maxname: int
    fsstat: FsStat | None = None
    owner: str | None = None
    owner_group: str | None = None
    supported: frozenset[int] = SUPPORTED_ATTRS
    rdattr_error: int = 0
    time_delta_ns: int = 1
    unique_handles: bool = True


# --------------------------------------------------------------------------- encoding

_U32 = struct.Struct(">I").pack
_U64 = struct.Struct(">Q").pack
_TIME = struct.Struct(">qI").pack
_PAIR64 = struct.Struct(">QQ").pack
_PAIR32 = struct.Struct(">II").pack
_TRUE: Final = _U32(1)
_FALSE: Final = _U32(0)

_Encoder = Callable[[AttrSource], bytes]


def _nfstime4(ns: int) -> bytes:
    """nfstime4 for integer nanoseconds (seconds may be negative; 0 <= nseconds < 1e9)."""
    seconds, nseconds = divmod(ns, _NS)
    return _TIME(seconds, nseconds)


def _opaque(data: bytes) -> bytes:
    n = len(data)
    return _U32(n) + data + b"\0" * (-n & 3)


@lru_cache(maxsize=64)
def _bitmap_xdr(bits: frozenset[int]) -> bytes:
    words = set_to_bitmap(bits)
    return _U32(len(words)) + b"".join(_U32(w) for w in words)


def _const(value: bytes) -> _Encoder:
    return lambda _s: value


def _fsstat(s: AttrSource) -> FsStat:
    assert s.fsstat is not None  # _plan_for() drops NEEDS_FSSTAT attributes when None
    return s.fsstat


def _owner(s: AttrSource) -> bytes:
    assert s.owner is not None  # dropped by _plan_for() when None
    return _opaque(s.owner.encode("utf-8"))


def _owner_group(s: AttrSource) -> bytes:
    assert s.owner_group is not None  # dropped by _plan_for() when None
    return _opaque(s.owner_group.encode("utf-8"))


#: Readable supported attribute -> encoder, types as in RFC 7530 §5.6/§5.7 tables.
_ENCODERS: Final[dict[int, _Encoder]] = {
    x.FATTR4_SUPPORTED_ATTRS: lambda s: _bitmap_xdr(s.supported),
    x.FATTR4_TYPE: lambda s: _U32(s.attrs.type),
    x.FATTR4_FH_EXPIRE_TYPE: _const(_U32(x.FH4_PERSISTENT)),  # §4.2.3: handles never expire
    x.FATTR4_CHANGE: lambda s: _U64(s.attrs.change),
    x.FATTR4_SIZE: lambda s: _U64(s.attrs.size),
    x.FATTR4_LINK_SUPPORT: _const(_TRUE),
    x.FATTR4_SYMLINK_SUPPORT: _const(_TRUE),
    x.FATTR4_NAMED_ATTR: _const(_FALSE),
    x.FATTR4_FSID: lambda s: _PAIR64(s.fsid[0], s.fsid[1]),
    x.FATTR4_UNIQUE_HANDLES: lambda s: _TRUE if s.unique_handles else _FALSE,
    x.FATTR4_LEASE_TIME: lambda s: _U32(s.lease_time),
    x.FATTR4_RDATTR_ERROR: lambda s: _U32(s.rdattr_error),
    x.FATTR4_FILEHANDLE: lambda s: _opaque(s.fh),
    x.FATTR4_ACLSUPPORT: _const(_U32(0)),
    x.FATTR4_CANSETTIME: _const(_TRUE),
    x.FATTR4_CASE_INSENSITIVE: _const(_FALSE),
    x.FATTR4_CASE_PRESERVING: _const(_TRUE),
    x.FATTR4_CHOWN_RESTRICTED: _const(_TRUE),
    x.FATTR4_FILEID: lambda s: _U64(s.attrs.fileid),
    x.FATTR4_FILES_AVAIL: lambda s: _U64(_fsstat(s).files_avail),
    x.FATTR4_FILES_FREE: lambda s: _U64(_fsstat(s).files_free),
    x.FATTR4_FILES_TOTAL: lambda s: _U64(_fsstat(s).files_total),
    x.FATTR4_HOMOGENEOUS: _const(_TRUE),
    x.FATTR4_MAXFILESIZE: lambda s: _U64(s.maxfilesize),
    x.FATTR4_MAXLINK: lambda s: _U32(s.maxlink),
    x.FATTR4_MAXNAME: lambda s: _U32(s.maxname),
    x.FATTR4_MAXREAD: lambda s: _U64(s.maxread),
    x.FATTR4_MAXWRITE: lambda s: _U64(s.maxwrite),
    x.FATTR4_MODE: lambda s: _U32(s.attrs.mode & 0o7777),
    x.FATTR4_NO_TRUNC: _const(_TRUE),
    x.FATTR4_NUMLINKS: lambda s: _U32(s.attrs.nlink),
    x.FATTR4_OWNER: _owner,
    x.FATTR4_OWNER_GROUP: _owner_group,
    x.FATTR4_RAWDEV: lambda s: _PAIR32(s.attrs.rdev[0], s.attrs.rdev[1]),
    x.FATTR4_SPACE_AVAIL: lambda s: _U64(_fsstat(s).bytes_avail),
    x.FATTR4_SPACE_FREE: lambda s: _U64(_fsstat(s).bytes_free),
    x.FATTR4_SPACE_TOTAL: lambda s: _U64(_fsstat(s).bytes_total),
    x.FATTR4_SPACE_USED: lambda s: _U64(s.attrs.space_used),
    x.FATTR4_TIME_ACCESS: lambda s: _nfstime4(s.attrs.atime_ns),
    x.FATTR4_TIME_DELTA: lambda s: _nfstime4(s.time_delta_ns),
    x.FATTR4_TIME_METADATA: lambda s: _nfstime4(s.attrs.ctime_ns),
    x.FATTR4_TIME_MODIFY: lambda s: _nfstime4(s.attrs.mtime_ns),
    x.FATTR4_MOUNTED_ON_FILEID: lambda s: _U64(s.mounted_on_fileid),
}


#: The longest owner/owner_group string counted in reply-size estimates ("user@domain").
OWNER_MAX: Final = 512


def _largest_source() -> AttrSource:
    """An AttrSource whose variable-size attributes are as long as they get."""
    attrs = Attrs(FileType.REG, 0, 0, 0, 0, 0, 0, (0, 0), 0, 0, 0, 0, 0)
    return AttrSource(
        attrs, b"\0" * x.NFS4_FHSIZE, (0, 0), 0, 0, 0, 0, 0, 0, 0,
        fsstat=FsStat(0, 0, 0, 0, 0, 0, 0), owner="o" * OWNER_MAX, owner_group="g" * OWNER_MAX,
    )


#: Attribute -> the most bytes its value encodes to (from the encoders themselves).
_MAX_SIZE: Final = {a: len(enc(_largest_source())) for a, enc in _ENCODERS.items()}


@lru_cache(maxsize=1024)
def _max_size_of(bits: int) -> int:
    plan = _compile(bits, SUPPORTED_ATTRS)
    values = sum(_MAX_SIZE[a] for a in iter_bits(plan.bits))
    return 4 + 4 * len(plan.mask) + 4 + values


def fattr4_max_size(words: list[int] | tuple[int, ...]) -> int:
    """An upper bound of the fattr4 that a request bitmap4 `words` encodes to (GETATTR, one
    READDIR entry): the reply-size estimate of the op table."""
    return _max_size_of(_request_bits(words))


@dataclass(slots=True, frozen=True)
class _Plan:
    """A compiled request: what to encode, in order, and the resulting bitmap."""

    encoders: tuple[_Encoder, ...]
    mask: tuple[int, ...]
    bits: int
    write_only: bool


@lru_cache(maxsize=1024)
def _compile(requested: int, supported: frozenset[int]) -> _Plan:
    """Plan for ``requested`` (a bit-integer) over ``supported``; ascending order (§16.7.4)."""
    wanted = [b for b in iter_bits(requested) if b in supported]
    write_only = any(b in WRITE_ONLY_ATTRS for b in wanted)
    readable = [b for b in wanted if b not in WRITE_ONLY_ATTRS]
    missing = [ATTR_NAMES.get(b, str(b)) for b in readable if b not in _ENCODERS]
    if missing:
        raise ValueError(f"supported attributes without an encoder: {missing}")
    bits = sum(1 << b for b in readable)
    return _Plan(
        tuple(_ENCODERS[b] for b in readable), tuple(int_to_bitmap(bits)), bits, write_only
    )


#: bitmap4 words that can hold an RFC 7530 attribute; later words only name unsupported ones.
_DEFINED_WORDS: Final = max(ATTR_NAMES) // 32 + 1


@lru_cache(maxsize=1024)
def _words_to_int(words: tuple[int, ...]) -> int:
    return bitmap_to_int(words)


@lru_cache(maxsize=1024)
def _set_to_int(attrs: frozenset[int]) -> int:
    return sum(1 << b for b in attrs if b in ATTR_NAMES)


def _request_bits(requested: frozenset[int] | list[int] | tuple[int, ...]) -> int:
    """The requested RFC 7530 attributes as a bit-integer (others can only be omitted)."""
    if isinstance(requested, frozenset):
        return _set_to_int(requested)
    return _words_to_int(tuple(requested[:_DEFINED_WORDS]))


def requested_attrs(words: list[int] | tuple[int, ...]) -> frozenset[int]:
    """The RFC 7530 attributes named by a client's bitmap4, bounded in time and size.

    Use this rather than ``bitmap_to_set`` on client bitmaps: bits beyond the attributes
    RFC 7530 defines can only be omitted or refused, and a huge bitmap would be expensive.
    """
    return frozenset(iter_bits(_request_bits(words)))


_NO_FSSTAT: Final = 1
_NO_OWNER: Final = 2
_NO_GROUP: Final = 4


@lru_cache(maxsize=1024)
def _compile_available(bits: int, supported: frozenset[int], absent: int) -> _Plan:
    """``_compile`` minus the attributes whose data is ``absent`` (``_NO_*`` flags)."""
    gone: set[int] = set()
    if absent & _NO_FSSTAT:
        gone |= NEEDS_FSSTAT
    if absent & _NO_OWNER:
        gone.add(x.FATTR4_OWNER)
    if absent & _NO_GROUP:
        gone.add(x.FATTR4_OWNER_GROUP)
    return _compile(bits, supported - gone)


def _plan_for(requested: frozenset[int] | list[int] | tuple[int, ...], src: AttrSource) -> _Plan:
    bits = _request_bits(requested)
    if _compile(bits, src.supported).write_only:
        raise errors.NFS4ERR_INVAL("a set-only attribute was requested")  # RFC 7530 §5.5
    absent = (
        (_NO_FSSTAT if src.fsstat is None else 0)
        | (_NO_OWNER if src.owner is None else 0)
        | (_NO_GROUP if src.owner_group is None else 0)
    )
    return _compile_available(bits, src.supported, absent)


def encode_fattr4(
    requested: frozenset[int] | list[int] | tuple[int, ...], src: AttrSource
) -> x.fattr4:
    """fattr4 of the requested attributes that are supported (RFC 7530 §16.7.4).

    ``requested`` is either attribute numbers (a frozenset) or bitmap4 words (a list).
    Unsupported attributes are omitted and their bits cleared in the result mask; a set-only
    attribute (``WRITE_ONLY_ATTRS``) raises NFS4ERR_INVAL (RFC 7530 §5.5).
    """
    plan = _plan_for(requested, src)
    return x.fattr4(list(plan.mask), b"".join([enc(src) for enc in plan.encoders]))


def encode_rdattr_error(
    requested: frozenset[int] | list[int] | tuple[int, ...],
    status: int,
    supported: frozenset[int] = SUPPORTED_ATTRS,
    *,
    mounted_on_fileid: int | None = None,
) -> x.fattr4 | None:
    """READDIR entry attributes when getting them failed with ``status`` (RFC 7530 §16.24.4).

    rdattr_error is returned, and ``mounted_on_fileid`` when it is given and requested (the
    one attribute a directory entry tells without its object, as in the RFC 7530 §8.7
    example; knfsd returns rdattr_error alone). ``None`` when the client did not request
    rdattr_error, in which case the caller fails the whole READDIR with ``status``.
    """
    bits = _request_bits(requested)
    if not (bits >> x.FATTR4_RDATTR_ERROR) & 1 or x.FATTR4_RDATTR_ERROR not in supported:
        return None
    attrs, values = [x.FATTR4_RDATTR_ERROR], _U32(status)
    on = x.FATTR4_MOUNTED_ON_FILEID
    if mounted_on_fileid is not None and (bits >> on) & 1 and on in supported:
        attrs.append(on)
        values += _U64(mounted_on_fileid)
    return x.fattr4(set_to_bitmap(attrs), values)


# --------------------------------------------------------------------------- decoding

#: Every attribute number defined by RFC 7530 -> its generated decoder.
_DECODERS: Final[dict[int, Callable[[Unpacker], object]]] = {
    num: getattr(x, f"unpack_fattr4_{name}") for num, name in ATTR_NAMES.items()
}


@lru_cache(maxsize=64)
def _mask_of(attrs: frozenset[int]) -> int:
    return sum(1 << b for b in attrs)


def _lowest(bits: int) -> str:
    b = (bits & -bits).bit_length() - 1
    return ATTR_NAMES.get(b, str(b))


def _check_mask(bits: int, supported: frozenset[int], forbidden: frozenset[int], why: str) -> None:
    """ATTRNOTSUPP for unsupported bits, then INVAL for ``forbidden`` ones."""
    unsupported = bits & ~_mask_of(supported)
    if unsupported:
        raise errors.NFS4ERR_ATTRNOTSUPP(f"attribute {_lowest(unsupported)} not supported")
    bad = bits & _mask_of(forbidden)
    if bad:
        raise errors.NFS4ERR_INVAL(f"attribute {_lowest(bad)} {why}")


def _split(bits: int, data: bytes) -> dict[int, bytes]:
    """Each attribute's XDR bytes, in ascending order; BADXDR unless ``data`` is exactly them."""
    u = Unpacker(data)
    out: dict[int, bytes] = {}
    try:
        for b in iter_bits(bits):
            start = u.pos
            _DECODERS[b](u)
            out[b] = data[start : u.pos]
        u.done()
    except XdrError as e:
        raise errors.NFS4ERR_BADXDR(str(e)) from None
    return out


def decode_fattr4(f: x.fattr4) -> dict[int, object]:
    """Decode any fattr4 into {attribute number: generated-codec value} (for clients/tests).

    Raises XdrError on malformed values or bits with no RFC 7530 definition.
    """
    u = Unpacker(f.attr_vals)
    out: dict[int, object] = {}
    for b in iter_bits(bitmap_to_int(f.attrmask)):
        dec = _DECODERS.get(b)
        if dec is None:
            raise XdrError(f"attribute {b} is not defined by RFC 7530")
        out[b] = dec(u)
    u.done()
    return out


# SETATTR / CREATE / OPEN


@dataclass(slots=True)
class SetAttrs:
    """Writable attributes from SETATTR/CREATE/OPEN; ``None`` = not given.

    Times are integer nanoseconds or ``SET_TO_NOW``; ``owner``/``owner_group`` are the raw
    strings (the caller maps them via the idmapper, NFS4ERR_BADOWNER on failure).
    """

    mode: int | None = None
    owner: str | None = None
    owner_group: str | None = None
    size: int | None = None
    atime: int | SetToNow | None = None
    mtime: int | SetToNow | None = None
    mask: list[int] = field(default_factory=list)


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise XdrError(f"owner string is not valid UTF-8: {e}") from None


def _settime(st: x.settime4) -> int | SetToNow:
    if st.set_it == x.SET_TO_SERVER_TIME4:
        return SET_TO_NOW
    t = st.value
    assert t is not None  # the SET_TO_CLIENT_TIME4 arm always carries an nfstime4
    if t.nseconds >= _NS:
        raise errors.NFS4ERR_INVAL(f"nseconds {t.nseconds} >= 10**9")  # RFC 7530 §3.3.1
    return t.seconds * _NS + t.nseconds


def _decode_values(bits: int, data: bytes) -> dict[int, object]:
    """Decoded values of the settable attributes in ``bits``; BADXDR unless exact."""
    u = Unpacker(data)
    try:
        values = {b: _DECODERS[b](u) for b in iter_bits(bits)}
        for b in NEEDS_OWNER & values.keys():
            raw = values[b]
            assert isinstance(raw, bytes)
            values[b] = _utf8(raw)
        u.done()
    except XdrError as e:
        raise errors.NFS4ERR_BADXDR(str(e)) from None
    return values


def _typed(values: dict[int, object], attr: int, kind: type[_T]) -> _T | None:
    v = values.get(attr)
    assert v is None or isinstance(v, kind)
    return v


def _to_setattrs(values: dict[int, object], mask: list[int]) -> SetAttrs:
    """Validate decoded values: mode within 0o7777, nseconds below 10**9 (else INVAL)."""
    mode = _typed(values, x.FATTR4_MODE, int)
    if mode is not None and mode & ~0o7777:
        raise errors.NFS4ERR_INVAL(f"mode {mode:#o} has bits above 0o7777")
    atime = _typed(values, x.FATTR4_TIME_ACCESS_SET, x.settime4)
    mtime = _typed(values, x.FATTR4_TIME_MODIFY_SET, x.settime4)
    return SetAttrs(
        mode=mode,
        owner=_typed(values, x.FATTR4_OWNER, str),
        owner_group=_typed(values, x.FATTR4_OWNER_GROUP, str),
        size=_typed(values, x.FATTR4_SIZE, int),
        atime=None if atime is None else _settime(atime),
        mtime=None if mtime is None else _settime(mtime),
        mask=mask,
    )


def decode_settable(
    f: x.fattr4,
    *,
    allowed: frozenset[int] = SETTABLE_ATTRS,
    supported: frozenset[int] = SUPPORTED_ATTRS,
) -> SetAttrs:
    """The attributes of SETATTR (RFC 7530 §16.32), CREATE (§16.4) or OPEN createattrs.

    Unsupported bit: NFS4ERR_ATTRNOTSUPP.  Supported but get-only (§5.5) or not in
    ``allowed``: NFS4ERR_INVAL.  Values that do not decode to exactly ``attr_vals``:
    NFS4ERR_BADXDR.  Out-of-range values (mode above 0o7777, nseconds >= 10**9): NFS4ERR_INVAL.
    """
    bits = bitmap_to_int(f.attrmask)
    _check_mask(bits, supported, supported - (allowed & SETTABLE_ATTRS), "cannot be set here")
    return _to_setattrs(_decode_values(bits, f.attr_vals), int_to_bitmap(bits))


# VERIFY / NVERIFY

_NOT_VERIFIABLE: Final = WRITE_ONLY_ATTRS | {x.FATTR4_RDATTR_ERROR}


def decode_for_verify(f: x.fattr4, supported: frozenset[int] = SUPPORTED_ATTRS) -> dict[int, bytes]:
    """{attribute: canonical XDR bytes} of a VERIFY/NVERIFY argument, ascending.

    RFC 7530 §16.35.5/§16.15.5: unsupported attribute -> NFS4ERR_ATTRNOTSUPP; rdattr_error or
    a set-only attribute -> NFS4ERR_INVAL.  Malformed values -> NFS4ERR_BADXDR.
    """
    bits = bitmap_to_int(f.attrmask)
    _check_mask(bits, supported, _NOT_VERIFIABLE, "cannot be verified")
    values = _split(bits, f.attr_vals)
    if x.FATTR4_SUPPORTED_ATTRS in values:  # a bitmap may carry trailing zero words
        words = x.unpack_fattr4_supported_attrs(Unpacker(values[x.FATTR4_SUPPORTED_ATTRS]))
        values[x.FATTR4_SUPPORTED_ATTRS] = _bitmap_xdr(frozenset(iter_bits(bitmap_to_int(words))))
    return values


def verify_matches(f: x.fattr4, src: AttrSource) -> bool:
    """True when every attribute in ``f`` equals the object's (VERIFY: else NOT_SAME;
    NVERIFY: if so SAME).  Raises as ``decode_for_verify``."""
    wanted = decode_for_verify(f, src.supported)
    ours = encode_fattr4(f.attrmask, src)
    if bitmap_to_int(ours.attrmask) != bitmap_to_int(f.attrmask):
        missing = set(wanted) - set(iter_bits(bitmap_to_int(ours.attrmask)))
        raise ValueError(f"AttrSource lacks data for attributes {sorted(missing)}")
    return b"".join(wanted.values()) == ours.attr_vals
