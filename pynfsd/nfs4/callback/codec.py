"""CB_NULL and CB_COMPOUND (RFC 7530 §17): builders and a checking decoder over the
generated codec (`pynfsd.gen.nfs4`), sans-IO."""

from __future__ import annotations

from collections.abc import Sequence

from pynfsd.gen import nfs4 as N
from pynfsd.nfs4.callback.errors import BadCallbackReply
from pynfsd.rpc.client import decode_results
from pynfsd.xdr.runtime import Packer

# NFS4_CALLBACK's version and procedures (RFC 7530 §17); the program number is the client's.
CB_VERSION, CB_NULL, CB_COMPOUND = N.NFS_CB, N.CB_NULL, N.CB_COMPOUND


def cb_recall(stateid: N.stateid4, truncate: bool, fh: bytes) -> N.nfs_cb_argop4:
    """CB_RECALL (RFC 7530 §18.2)."""
    return N.nfs_cb_argop4(N.OP_CB_RECALL, N.CB_RECALL4args(stateid, truncate, fh))


def cb_getattr(fh: bytes, attr_request: list[int]) -> N.nfs_cb_argop4:
    """CB_GETATTR (RFC 7530 §18.1); `attr_request` is a bitmap4 (list of words)."""
    return N.nfs_cb_argop4(N.OP_CB_GETATTR, N.CB_GETATTR4args(fh, attr_request))


def encode_cb_compound(ident: int, ops: Sequence[N.nfs_cb_argop4], tag: bytes = b"") -> bytes:
    """CB_COMPOUND4args, minor version 0, with the client's callback_ident (§17.2.4 MUST)."""
    p = Packer()
    N.pack_CB_COMPOUND4args(p, N.CB_COMPOUND4args(tag, 0, ident, list(ops)))
    return p.get_buffer()


def decode_cb_compound_res(results: bytes, ops: Sequence[N.nfs_cb_argop4]) -> N.CB_COMPOUND4res:
    """Decode a CB_COMPOUND reply and check it answers `ops` (§17.2.4, §17.2.5)."""
    res = decode_results(results, N.unpack_CB_COMPOUND4res, BadCallbackReply,
                         "undecodable CB_COMPOUND reply")
    if len(res.resarray) > len(ops):
        raise BadCallbackReply(f"{len(res.resarray)} results for {len(ops)} operations")
    for i, (resop, argop) in enumerate(zip(res.resarray, ops, strict=False)):
        if resop.resop != argop.argop:
            raise BadCallbackReply(f"result {i} is for op {resop.resop}, not {argop.argop}")
    if res.resarray:
        last = res.resarray[-1].value.status
        # §17.2.4: the COMPOUND status is the last executed op's; §17.2.5: it stops at an error.
        if last != res.status or (len(res.resarray) < len(ops) and last == N.NFS4_OK):
            raise BadCallbackReply(f"status {res.status} contradicts the op results")
    return res
