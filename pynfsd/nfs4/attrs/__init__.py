"""fattr4 encoding and decoding (RFC 7530 §5): GETATTR, READDIR, SETATTR, CREATE, OPEN, VERIFY.

Theory of operation
-------------------
*Encoding* runs for every GETATTR and for every READDIR entry, so it is table driven: each
supported readable attribute is described once in `layout` (a ``struct`` format and its
value, or the expression of its XDR bytes).  A request bitmap is compiled once (cached) into
a ``Layout``: the result bitmap and one generated function that packs each run of fixed-size
attributes with one ``struct.pack``, the variable ones between.  Encoding an object is then
one call.  An ``AttrSource`` holds everything the encoding needs, so it does no I/O; the
caller fills ``fsstat`` only when the request intersects ``NEEDS_FSSTAT`` and
``owner``/``owner_group`` only when it intersects ``NEEDS_OWNER``.
Attributes whose data the caller left as ``None`` are omitted, which RFC 7530 §16.7.4 allows
("cannot approximate a useful value").  The layouts are hand-written beside the generated
codecs; tests check them against ``pack_fattr4_*``.

*Decoding* uses the generated ``unpack_fattr4_*`` functions (bounded, strict padding and
enum checks).  Any ``XdrError`` becomes NFS4ERR_BADXDR.  ``decode_settable`` returns the
writable attributes of SETATTR/CREATE/OPEN as plain values; ``decode_for_verify`` and
``verify_matches`` implement VERIFY/NVERIFY by comparing canonical XDR bytes.

Modules: `table` names the attributes and their classes (required, recommended, settable,
set-only, the ones needing fsstat or owner data); `layout` the attributes' formats and the
compiled layouts; `encode` has `AttrSource`, the layout cache and the encoders;
`decode` the decoders, `SetAttrs` and VERIFY/NVERIFY.  Import from the package.
"""

from __future__ import annotations

from pynfsd.nfs4.attrs.decode import (
    SetAttrs,
    decode_fattr4,
    decode_for_verify,
    decode_settable,
    verify_matches,
)
from pynfsd.nfs4.attrs.encode import (
    OWNER_MAX,
    AttrSource,
    Layout,
    encode_fattr4,
    encode_rdattr_error,
    fattr4_max_size,
    fattr4_xdr,
    layout_for,
    owner_xdr,
    requested_attrs,
    words_xdr,
)
from pynfsd.nfs4.attrs.table import (
    ATTR_NAMES,
    NEEDS_ACL,
    NEEDS_FSSTAT,
    NEEDS_OWNER,
    READ_ONLY_ATTRS,
    RECOMMENDED_ATTRS,
    REQUIRED_ATTRS,
    SETTABLE_ATTRS,
    SUPPORTED_ATTRS,
    WRITE_ONLY_ATTRS,
)

__all__ = [
    "ATTR_NAMES",
    "NEEDS_ACL",
    "NEEDS_FSSTAT",
    "NEEDS_OWNER",
    "OWNER_MAX",
    "READ_ONLY_ATTRS",
    "RECOMMENDED_ATTRS",
    "REQUIRED_ATTRS",
    "SETTABLE_ATTRS",
    "SUPPORTED_ATTRS",
    "WRITE_ONLY_ATTRS",
    "AttrSource",
    "Layout",
    "SetAttrs",
    "decode_fattr4",
    "decode_for_verify",
    "decode_settable",
    "encode_fattr4",
    "encode_rdattr_error",
    "fattr4_max_size",
    "fattr4_xdr",
    "layout_for",
    "owner_xdr",
    "requested_attrs",
    "verify_matches",
    "words_xdr",
]
