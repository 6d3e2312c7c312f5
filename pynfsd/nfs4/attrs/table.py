"""The fattr4 attributes pynfsd knows (RFC 7530 §5): names, and which are supported, settable,
set-only or need data the caller fetches only on request (filesystem counts, owner names).

Plain constants: the encoders (`encode`) and decoders (`decode`) check requests against them.
"""

from __future__ import annotations

from typing import Final

from pynfsd.gen import nfs4 as x

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

#: RFC 7530 §5.7: the RECOMMENDED attributes we implement (no archive, hidden, system,
#: time_backup, time_create, mimetype, quota_*, fs_locations).  `acl` only where ACLs are
#: served: an object's ``AttrSource.supported`` drops it elsewhere.
RECOMMENDED_ATTRS: Final = frozenset(
    {
        x.FATTR4_ACL,
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
        x.FATTR4_ACL,
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

#: Requesting any of these needs ``AttrSource.acl`` / ``aclsupport`` (a backend call).
NEEDS_ACL: Final = frozenset({x.FATTR4_ACL, x.FATTR4_ACLSUPPORT, x.FATTR4_SUPPORTED_ATTRS})

#: Nanoseconds in a second (nfstime4).
NS: Final = 1_000_000_000
