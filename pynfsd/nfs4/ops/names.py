"""Checks of component4 names shared by every op that takes one (RFC 7530 §12.7, §16.15.5)."""

from __future__ import annotations

from pynfsd.nfs4 import errors

NAME_MAX = 255


def check_name(name: bytes, *, allow_dots: bool = False) -> bytes:
    """A single path component: INVAL if empty or not UTF-8, NAMETOOLONG, BADCHAR for '/'
    or NUL."""
    if not name:
        raise errors.NFS4ERR_INVAL("empty name")
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.NFS4ERR_INVAL("name is not UTF-8") from None  # RFC 7530 §12.7
    if len(name) > NAME_MAX:
        raise errors.NFS4ERR_NAMETOOLONG()
    if b"/" in name or b"\0" in name:
        raise errors.NFS4ERR_BADCHAR()
    if not allow_dots and name in (b".", b".."):
        raise errors.NFS4ERR_BADNAME()
    return name
