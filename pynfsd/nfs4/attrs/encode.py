"""fattr4 encoding (RFC 7530 §5, §16.7.4): GETATTR and READDIR, table driven.

A request bitmap is compiled once (cached) into a ``_Plan``: the requested and supported
attributes in ascending order and the result bitmap; the attributes an object can give become
a ``Layout`` (cached, at most ``MAX_LAYOUTS``), whose function packs all the values at once
(`layout`). See the package docstring for the theory.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from pynfsd.fs.backend import Attrs, FileType, FsStat
from pynfsd.gen import nfs4 as x
from pynfsd.nfs4 import errors
from pynfsd.nfs4.acl import MAX_ACL_BYTES
from pynfsd.nfs4.attrs.layout import ENCODABLE, Encode, compile_layout, opaque
from pynfsd.nfs4.attrs.table import (
    ATTR_NAMES,
    NEEDS_FSSTAT,
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


@lru_cache(maxsize=64)
def bitmap_xdr(bits: frozenset[int]) -> bytes:
    return words_xdr(tuple(set_to_bitmap(bits)))


@lru_cache(maxsize=64)
def words_xdr(words: tuple[int, ...]) -> bytes:
    """A bitmap4 already in words, as XDR (READDIR packs one per entry)."""
    return _U32(len(words)) + b"".join(_U32(w) for w in words)


def fattr4_xdr(f: x.fattr4) -> bytes:
    """A ``fattr4`` as XDR (its bitmap4, then its values as an opaque)."""
    vals = f.attr_vals
    return b"".join((words_xdr(tuple(f.attrmask)), _U32(len(vals)), vals, b"\0" * (-len(vals) & 3)))


def owner_xdr(name: str | None) -> bytes:
    """An owner or owner_group string as the XDR opaque a layout takes (b"" when absent)."""
    return b"" if name is None else opaque(name.encode("utf-8"))


def _encode_with(encode: Encode, s: AttrSource) -> bytes:
    return encode(s, s.attrs, s.fh, s.fsid, owner_xdr(s.owner), owner_xdr(s.owner_group),
                  s.mounted_on_fileid)


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


#: Attribute -> the most bytes its value encodes to (from the layouts themselves).
_MAX_SIZE: Final = {
    a: len(_encode_with(compile_layout((a,), bitmap_xdr), _largest_source())) for a in ENCODABLE
}


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
    """A compiled request: the attributes to encode, in order, and the resulting bitmap."""

    attrs: tuple[int, ...]
    mask: tuple[int, ...]
    bits: int
    write_only: bool


@lru_cache(maxsize=1024)
def _compile(requested: int, supported: frozenset[int]) -> _Plan:
    """Plan for ``requested`` (a bit-integer) over ``supported``; ascending order (§16.7.4)."""
    wanted = [b for b in iter_bits(requested) if b in supported]
    write_only = any(b in WRITE_ONLY_ATTRS for b in wanted)
    readable = tuple(b for b in wanted if b not in WRITE_ONLY_ATTRS)
    missing = [ATTR_NAMES.get(b, str(b)) for b in readable if b not in ENCODABLE]
    if missing:
        raise ValueError(f"supported attributes without an encoder: {missing}")
    bits = sum(1 << b for b in readable)
    return _Plan(readable, tuple(int_to_bitmap(bits)), bits, write_only)


@dataclass(slots=True, frozen=True)
class Layout:
    """What to send for one request over one kind of object: the result bitmap (words and
    XDR) and the function that encodes the values (`layout.compile_layout`)."""

    mask: tuple[int, ...]
    mask_xdr: bytes
    encode: Encode


#: Layouts kept (each a compiled function of a few KiB): requests name few distinct bitmaps.
MAX_LAYOUTS: Final = 256


@lru_cache(maxsize=MAX_LAYOUTS)
def _layout(plan: _Plan) -> Layout:
    return Layout(plan.mask, words_xdr(plan.mask), compile_layout(plan.attrs, bitmap_xdr))


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


def layout_for(requested: frozenset[int] | list[int] | tuple[int, ...], src: AttrSource) -> Layout:
    """The layout of ``requested`` for objects like ``src``: its supported attributes, and
    those whose data it has (``fsstat``, owners, ACL); NFS4ERR_INVAL for a set-only one."""
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
    return _layout(_compile_available(bits, src.supported, absent))


def encode_fattr4(
    requested: frozenset[int] | list[int] | tuple[int, ...], src: AttrSource
) -> x.fattr4:
    """fattr4 of the requested attributes that are supported (RFC 7530 §16.7.4).

    ``requested`` is either attribute numbers (a frozenset) or bitmap4 words (a list).
    Unsupported attributes are omitted and their bits cleared in the result mask; a set-only
    attribute (``WRITE_ONLY_ATTRS``) raises NFS4ERR_INVAL (RFC 7530 §5.5).
    """
    layout = layout_for(requested, src)
    return x.fattr4(list(layout.mask), _encode_with(layout.encode, src))


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
