"""NFSv4 errors: one exception class per nfsstat4 (generated), and the one errno table.

Handlers raise e.g. ``errors.NFS4ERR_STALE()``; the COMPOUND executor turns any `NFS4Error`
into the operation's result status in one place.  The filesystem backend raises only OSError;
`from_errno` is the single errno -> nfsstat4 mapping.
"""

from __future__ import annotations

import errno as _errno

from pynfsd.gen.nfs4_errors import *  # noqa: F403  (the generated classes, NFS4ERR_*)
from pynfsd.gen.nfs4_errors import BY_STATUS, NFS4Error

_ERRNO_TO_STATUS: dict[int, int] = {
    _errno.EPERM: 1,  # NFS4ERR_PERM
    _errno.ENOENT: 2,  # NFS4ERR_NOENT
    _errno.EIO: 5,  # NFS4ERR_IO
    _errno.ENXIO: 6,  # NFS4ERR_NXIO
    _errno.EACCES: 13,  # NFS4ERR_ACCESS
    _errno.EEXIST: 17,  # NFS4ERR_EXIST
    _errno.EXDEV: 18,  # NFS4ERR_XDEV
    _errno.ENOTDIR: 20,  # NFS4ERR_NOTDIR
    _errno.EISDIR: 21,  # NFS4ERR_ISDIR
    _errno.EINVAL: 22,  # NFS4ERR_INVAL
    _errno.EFBIG: 27,  # NFS4ERR_FBIG
    _errno.ENOSPC: 28,  # NFS4ERR_NOSPC
    _errno.EROFS: 30,  # NFS4ERR_ROFS
    _errno.EMLINK: 31,  # NFS4ERR_MLINK
    _errno.ENAMETOOLONG: 63,  # NFS4ERR_NAMETOOLONG
    _errno.ENOTEMPTY: 66,  # NFS4ERR_NOTEMPTY
    _errno.EDQUOT: 69,  # NFS4ERR_DQUOT
    _errno.ESTALE: 70,  # NFS4ERR_STALE
    _errno.EBADF: 10001,  # NFS4ERR_BADHANDLE
    _errno.ENOTSUP: 10004,  # NFS4ERR_NOTSUPP
    _errno.EOVERFLOW: 27,  # NFS4ERR_FBIG
    _errno.ELOOP: 10029,  # NFS4ERR_SYMLINK
    _errno.EAGAIN: 10008,  # NFS4ERR_DELAY
    _errno.EBUSY: 10008,  # NFS4ERR_DELAY
    _errno.ETXTBSY: 10008,  # NFS4ERR_DELAY
    _errno.ENOSYS: 10004,  # NFS4ERR_NOTSUPP
    _errno.ENODEV: 6,  # NFS4ERR_NXIO
}


def error_for_status(status: int, message: str = "") -> NFS4Error:
    cls = BY_STATUS.get(status)
    if cls is None:
        raise ValueError(f"{status} is not an nfsstat4")
    return cls(message)


def from_errno(err: int, message: str = "") -> NFS4Error:
    """The nfsstat4 exception for an errno (NFS4ERR_IO for anything unlisted)."""
    return error_for_status(_ERRNO_TO_STATUS.get(err, 5), message or _errno.errorcode.get(err, ""))


def from_oserror(exc: OSError) -> NFS4Error:
    return from_errno(exc.errno or _errno.EIO, str(exc))
