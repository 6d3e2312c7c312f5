"""Attribute layouts: one ``struct.pack`` per run of fixed-size attributes (RFC 7530 §5).

Theory of operation
-------------------
GETATTR encodes one object's attributes and READDIR one per entry listed, so the values are
not encoded attribute by attribute. Each readable attribute is described once, in
``_FIXED`` (a ``struct`` format and the Python expression of its value) or in ``_VARIABLE``
(an expression that gives its XDR bytes: the filehandle, owner strings, the ACL, the
supported bitmap). ``compile_layout`` turns a set of attributes (ascending, as §16.7.4
orders them) into one Python function, made once per set and kept by the caller's bounded
cache: consecutive fixed-size attributes become one ``struct.Struct`` whose ``pack`` takes
all their values, and the variable ones sit between those runs. The Linux client's READDIR
mask (17 attributes) is three packs and three ready-made opaques.

The function's arguments are what changes from object to object:
``encode(s, a, fh, fsid, owner, group, mounted_on)``: the ``AttrSource`` ``s`` (limits,
filesystem counts, the ACL: what one READDIR's entries share), the object's ``Attrs`` ``a``,
its filehandle, fsid and mounted-on fileid, and ``owner``/``group`` already as XDR opaques
(READDIR encodes each owner once per reply). Nothing of a request reaches the generated
source but the choice of attributes from these two tables.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final

from pynfsd.gen import nfs4 as x
from pynfsd.nfs4.attrs.table import NS

_U32 = struct.Struct(">I").pack

#: ``encode(s, a, fh, fsid, owner, group, mounted_on) -> bytes`` (see the module docstring).
Encode = Callable[..., bytes]

#: Fixed-size readable attributes: (struct format, expression of the value or values).
_FIXED: Final[dict[int, tuple[str, str]]] = {
    x.FATTR4_TYPE: ("I", "a.type"),
    x.FATTR4_FH_EXPIRE_TYPE: ("I", str(x.FH4_PERSISTENT)),  # §4.2.3: handles never expire
    x.FATTR4_CHANGE: ("Q", "a.change"),
    x.FATTR4_SIZE: ("Q", "a.size"),
    x.FATTR4_LINK_SUPPORT: ("I", "1"),
    x.FATTR4_SYMLINK_SUPPORT: ("I", "1"),
    x.FATTR4_NAMED_ATTR: ("I", "0"),
    x.FATTR4_FSID: ("QQ", "*fsid"),
    x.FATTR4_UNIQUE_HANDLES: ("I", "1 if s.unique_handles else 0"),
    x.FATTR4_LEASE_TIME: ("I", "s.lease_time"),
    x.FATTR4_RDATTR_ERROR: ("I", "s.rdattr_error"),
    x.FATTR4_ACLSUPPORT: ("I", "s.aclsupport"),
    x.FATTR4_CANSETTIME: ("I", "1"),
    x.FATTR4_CASE_INSENSITIVE: ("I", "0"),
    x.FATTR4_CASE_PRESERVING: ("I", "1"),
    x.FATTR4_CHOWN_RESTRICTED: ("I", "1"),
    x.FATTR4_FILEID: ("Q", "a.fileid"),
    x.FATTR4_FILES_AVAIL: ("Q", "s.fsstat.files_avail"),
    x.FATTR4_FILES_FREE: ("Q", "s.fsstat.files_free"),
    x.FATTR4_FILES_TOTAL: ("Q", "s.fsstat.files_total"),
    x.FATTR4_HOMOGENEOUS: ("I", "1"),
    x.FATTR4_MAXFILESIZE: ("Q", "s.maxfilesize"),
    x.FATTR4_MAXLINK: ("I", "s.maxlink"),
    x.FATTR4_MAXNAME: ("I", "s.maxname"),
    x.FATTR4_MAXREAD: ("Q", "s.maxread"),
    x.FATTR4_MAXWRITE: ("Q", "s.maxwrite"),
    x.FATTR4_MODE: ("I", "a.mode & 0o7777"),
    x.FATTR4_NO_TRUNC: ("I", "1"),
    x.FATTR4_NUMLINKS: ("I", "a.nlink"),
    x.FATTR4_RAWDEV: ("II", "*a.rdev"),
    x.FATTR4_SPACE_AVAIL: ("Q", "s.fsstat.bytes_avail"),
    x.FATTR4_SPACE_FREE: ("Q", "s.fsstat.bytes_free"),
    x.FATTR4_SPACE_TOTAL: ("Q", "s.fsstat.bytes_total"),
    x.FATTR4_SPACE_USED: ("Q", "a.space_used"),
    # nfstime4: seconds may be negative, 0 <= nseconds < 1e9 (divmod floors)
    x.FATTR4_TIME_ACCESS: ("qI", f"*divmod(a.atime_ns, {NS})"),
    x.FATTR4_TIME_DELTA: ("qI", f"*divmod(s.time_delta_ns, {NS})"),
    x.FATTR4_TIME_METADATA: ("qI", f"*divmod(a.ctime_ns, {NS})"),
    x.FATTR4_TIME_MODIFY: ("qI", f"*divmod(a.mtime_ns, {NS})"),
    x.FATTR4_MOUNTED_ON_FILEID: ("Q", "mounted_on"),
}

#: Variable-size readable attributes: expression of their XDR bytes.
_VARIABLE: Final[dict[int, str]] = {
    x.FATTR4_SUPPORTED_ATTRS: "_bitmap(s.supported)",
    x.FATTR4_FILEHANDLE: "_opaque(fh)",
    x.FATTR4_ACL: "_acl(s.acl)",
    x.FATTR4_OWNER: "owner",
    x.FATTR4_OWNER_GROUP: "group",
}

#: Every attribute a layout can hold.
ENCODABLE: Final = frozenset(_FIXED) | frozenset(_VARIABLE)


def opaque(data: bytes) -> bytes:
    """XDR ``opaque<>``: length, bytes, zero padding to four."""
    n = len(data)
    return _U32(n) + data + b"\0" * (-n & 3)


def acl_xdr(acl: list[x.nfsace4]) -> bytes:
    """XDR ``nfsace4<>``."""
    return b"".join(
        [_U32(len(acl))]
        + [_U32(a.type) + _U32(a.flag) + _U32(a.access_mask) + opaque(a.who) for a in acl]
    )


def compile_layout(attrs: tuple[int, ...], bitmap: Callable[[frozenset[int]], bytes]) -> Encode:
    """The encoding function of ``attrs`` (ascending, each in ``ENCODABLE``); ``bitmap``
    gives the XDR of a supported-attributes set."""
    names: dict[str, Any] = {"_opaque": opaque, "_acl": acl_xdr, "_bitmap": bitmap}
    parts: list[str] = []
    fmt, values = "", list[str]()

    def close_run() -> None:
        nonlocal fmt, values
        if fmt:
            name = f"_pack{len(names)}"
            names[name] = struct.Struct(">" + fmt).pack
            parts.append(f"{name}({', '.join(values)})")
            fmt, values = "", []

    for attr in attrs:
        if attr in _FIXED:
            f, v = _FIXED[attr]
            fmt, values = fmt + f, [*values, v]
        else:
            close_run()
            parts.append(_VARIABLE[attr])
    close_run()
    body = parts[0] if len(parts) == 1 else f"b''.join(({', '.join(parts)},))" if parts else "b''"
    source = f"def encode(s, a, fh, fsid, owner, group, mounted_on):\n    return {body}\n"
    exec(compile(source, "<attribute layout>", "exec"), names)  # noqa: S102 -- see docstring
    encode: Encode = names["encode"]
    return encode
