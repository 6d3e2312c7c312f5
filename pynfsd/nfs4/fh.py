"""NFSv4 filehandles: what the client holds, and what it names.

Layout (at most NFS4_FHSIZE = 128 bytes, RFC 7530 §4):

* pseudo-fs directory: ``01 00`` + the 16-byte pseudo node id;
* object in an export: ``01 01`` + the export's 8-byte fsid + the backend handle (≤ 100 bytes;
  the backend makes it persistent and unforgeable).

Handles are persistent (FH4_PERSISTENT): they carry no boot-time state, so they stay valid
across restarts; the backend reports ESTALE once an object is removed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pynfsd.nfs4 import errors

FH_VERSION = 1
KIND_PSEUDO = 0
KIND_EXPORT = 1
_FSID = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class DecodedFh:
    kind: int
    fsid: int  # export fsid (KIND_EXPORT) or 0
    ident: bytes  # pseudo node id or backend handle


def pseudo_fh(node_id: bytes) -> bytes:
    return bytes((FH_VERSION, KIND_PSEUDO)) + node_id


def export_fh(fsid: int, handle: bytes) -> bytes:
    return bytes((FH_VERSION, KIND_EXPORT)) + _FSID.pack(fsid) + handle


def decode_fh(fh: bytes) -> DecodedFh:
    """Split a filehandle; NFS4ERR_BADHANDLE when it is not one of ours (RFC 7530 §16.20.4)."""
    if len(fh) < 2 or fh[0] != FH_VERSION:
        raise errors.NFS4ERR_BADHANDLE()
    if fh[1] == KIND_PSEUDO and len(fh) == 18:
        return DecodedFh(KIND_PSEUDO, 0, fh[2:])
    if fh[1] == KIND_EXPORT and len(fh) > 10:
        return DecodedFh(KIND_EXPORT, _FSID.unpack_from(fh, 2)[0], fh[10:])
    raise errors.NFS4ERR_BADHANDLE()
