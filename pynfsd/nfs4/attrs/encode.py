"""fattr4 encoding (RFC 7530 §5, §16.7.4): GETATTR and READDIR, table driven.

Each supported readable attribute has an encoder ``AttrSource -> bytes`` in ``_ENCODERS``; a
request bitmap is compiled once (cached) into a ``_Plan`` of encoders in ascending order and
the result bitmap.  See the package docstring for the theory.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from pynfsd.fs.backend import Attrs, FileType, FsStat
from pynfsd.gen import nfs4 as x
from pynfsd.nfs4 import errors
from pynfsd.nfs4.acl import MAX_ACL_BYTES
from pynfsd.nfs4.attrs.table import (
    ATTR_NAMES,
    NEEDS_FSSTAT,
    NS,
    SUPPORTED_ATTRS,
    WRITE_ONLY_ATTRS,
)
from pynfsd.nfs4.bitmap import bitmap_to_int, int_to_bitmap, iter_bits, set_to_bitmap


@dataclass(slots=True)
class AttrSource:
    """Everything needed to encode one object's attributes without I/O.

    ``fsstat``, ``owner`` and ``owner_group`` may be left ``None`` when not requested (see
    ``NEEDS_FSSTAT``/``NEEDS_OWNER``), ``acl`` and ``aclsupport`` too (``NEEDS_ACL``);
    requested attributes whose data is ``None`` are omitted.  ``supported`` lacks `acl`
    where ACLs are not served.
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
    acl: list[x.nfsace4] | None = None
    aclsupport: int | None = None
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
    seconds, nseconds = divmod(ns, NS)
    return _TIME(seconds, nseconds)


def _opaque(data: bytes) -> bytes:
    n = len(data)
    return _U32(n) + data + b"\0" * (-n & 3)


@lru_cache(maxsize=64)
def bitmap_xdr(bits: frozenset[int]) -> bytes:
    return words_xdr(tuple(set_to_bitmap(bits)))


@lru_cache(maxsize=64)
def words_xdr(words: tuple[int, ...]) -> bytes:
    """A bitmap4 already in words, as XDR (READDIR packs one per entry)."""
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


def _acl(s: AttrSource) -> bytes:
    assert s.acl is not None  # dropped by _plan_for() when None
    return b"".join(
        [_U32(len(s.acl))]
        + [_U32(a.type) + _U32(a.flag) + _U32(a.access_mask) + _opaque(a.who) for a in s.acl]
    )


def _aclsupport(s: AttrSource) -> bytes:
    assert s.aclsupport is not None  # dropped by _plan_for() when None
    return _U32(s.aclsupport)


#: Readable supported attribute -> encoder, types as in RFC 7530 §5.6/§5.7 tables.
_ENCODERS: Final[dict[int, _Encoder]] = {
    x.FATTR4_SUPPORTED_ATTRS: lambda s: bitmap_xdr(s.supported),
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
    x.FATTR4_ACL: _acl,
    x.FATTR4_ACLSUPPORT: _aclsupport,
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
        acl=[x.nfsace4(0, 0, 0, b"w" * (MAX_ACL_BYTES - 20))], aclsupport=0,
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
_NO_ACL: Final = 8
_NO_ACLSUPPORT: Final = 16


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
    if absent & _NO_ACL:
        gone.add(x.FATTR4_ACL)
    if absent & _NO_ACLSUPPORT:
        gone.add(x.FATTR4_ACLSUPPORT)
    return _compile(bits, supported - gone)


def _plan_for(requested: frozenset[int] | list[int] | tuple[int, ...], src: AttrSource) -> _Plan:
    bits = _request_bits(requested)
    if _compile(bits, src.supported).write_only:
        raise errors.NFS4ERR_INVAL("a set-only attribute was requested")  # RFC 7530 §5.5
    absent = (
        (_NO_FSSTAT if src.fsstat is None else 0)
        | (_NO_OWNER if src.owner is None else 0)
        | (_NO_GROUP if src.owner_group is None else 0)
        | (_NO_ACL if src.acl is None else 0)
        | (_NO_ACLSUPPORT if src.aclsupport is None else 0)
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
