"""fattr4 decoding (RFC 7530 §5): SETATTR, CREATE and OPEN attributes, VERIFY/NVERIFY.

Decoding uses the generated ``unpack_fattr4_*`` functions (bounded, strict padding and enum
checks); any ``XdrError`` becomes NFS4ERR_BADXDR.  ``decode_settable`` returns the writable
attributes as plain values (`SetAttrs`); ``decode_for_verify`` and ``verify_matches``
compare canonical XDR bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final, TypeVar

from pynfsd.fs.backend import SET_TO_NOW, SetToNow
from pynfsd.gen import nfs4 as x
from pynfsd.nfs4 import errors
from pynfsd.nfs4.acl import MAX_ACES
from pynfsd.nfs4.attrs.encode import AttrSource, bitmap_xdr, encode_fattr4
from pynfsd.nfs4.attrs.table import (
    ATTR_NAMES,
    NEEDS_OWNER,
    NS,
    SETTABLE_ATTRS,
    SUPPORTED_ATTRS,
    WRITE_ONLY_ATTRS,
)
from pynfsd.nfs4.bitmap import bitmap_to_int, int_to_bitmap, iter_bits
from pynfsd.xdr.runtime import Unpacker, XdrError

_T = TypeVar("_T")

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
    acl: list[x.nfsace4] | None = None
    mask: list[int] = field(default_factory=list)


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise XdrError(f"owner or ACE who string is not valid UTF-8: {e}") from None


def _settime(st: x.settime4) -> int | SetToNow:
    if st.set_it == x.SET_TO_SERVER_TIME4:
        return SET_TO_NOW
    t = st.value
    assert t is not None  # the SET_TO_CLIENT_TIME4 arm always carries an nfstime4
    if t.nseconds >= NS:
        raise errors.NFS4ERR_INVAL(f"nseconds {t.nseconds} >= 10**9")  # RFC 7530 §3.3.1
    return t.seconds * NS + t.nseconds


def _decode_values(bits: int, data: bytes) -> dict[int, object]:
    """Decoded values of the settable attributes in ``bits``; BADXDR unless exact."""
    u = Unpacker(data)
    try:
        values = {b: _DECODERS[b](u) for b in iter_bits(bits)}
        for b in NEEDS_OWNER & values.keys():
            raw = values[b]
            assert isinstance(raw, bytes)
            values[b] = _utf8(raw)
        for ace in _typed(values, x.FATTR4_ACL, list) or ():
            _utf8(ace.who)
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
    acl = _typed(values, x.FATTR4_ACL, list)
    if acl is not None and len(acl) > MAX_ACES:
        raise errors.NFS4ERR_FBIG(f"an ACL of {len(acl)} ACEs (at most {MAX_ACES})")
    atime = _typed(values, x.FATTR4_TIME_ACCESS_SET, x.settime4)
    mtime = _typed(values, x.FATTR4_TIME_MODIFY_SET, x.settime4)
    return SetAttrs(
        mode=mode,
        owner=_typed(values, x.FATTR4_OWNER, str),
        owner_group=_typed(values, x.FATTR4_OWNER_GROUP, str),
        size=_typed(values, x.FATTR4_SIZE, int),
        atime=None if atime is None else _settime(atime),
        mtime=None if mtime is None else _settime(mtime),
        acl=acl,
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
        values[x.FATTR4_SUPPORTED_ATTRS] = bitmap_xdr(frozenset(iter_bits(bitmap_to_int(words))))
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
