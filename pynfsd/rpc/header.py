"""Hand-tuned codec for the ONC RPC v2 call header and reply headers (RFC 5531 §9).

These run once per call, so they sit *beside* the generated `pynfsd.gen.rpc` codec (tests check
that both produce and accept identical bytes).  The call decoder is also stricter about *which*
reply a malformed header deserves than a whole-message decode could be: the fields are read in
order, and the first bad one decides (drop, GARBAGE_ARGS, RPC_MISMATCH or AUTH_ERROR).
An unknown credential flavour is not a decoding error here; the auth registry judges it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

from pynfsd.gen import rpc as R

RPC_VERSION = 2  # RFC 5531 §9: rpcvers MUST be equal to 2
MAX_AUTH_BYTES = 400  # RFC 5531 §8.2: opaque_auth body<400>

_U32 = struct.Struct(">I")
_CALL_FIXED = struct.Struct(">IIIIII")  # xid, mtype, rpcvers, prog, vers, proc
_CALL_AND_CRED = struct.Struct(">IIIIIIII")  # the above, then the credential's flavour, length
_ACCEPTED = struct.Struct(">IIII")  # xid, REPLY, MSG_ACCEPTED, verf flavor
_DENIED_MISMATCH = struct.Struct(">IIIIII")
_DENIED_AUTH = struct.Struct(">IIIII")
#: After the xid: REPLY, MSG_ACCEPTED, a null verifier (AUTH_NONE, no body) and SUCCESS.
_ACCEPTED_NULL_SUCCESS = b"\0\0\0\x01" + b"\0" * 16


@dataclass(frozen=True, slots=True)
class CallHeader:
    """A decoded call header; `record[args_offset:]` holds the (still wrapped) arguments."""

    xid: int
    prog: int
    vers: int
    proc: int
    cred: R.opaque_auth
    verf: R.opaque_auth
    record: bytes
    cred_end: int
    args_offset: int

    @property
    def header(self) -> memoryview:
        """xid through the credential: what an RPCSEC_GSS verifier checksums (RFC 2203 §5.3.1)."""
        return memoryview(self.record)[: self.cred_end]

    @property
    def args(self) -> memoryview:
        return memoryview(self.record)[self.args_offset :]


class Verdict(Enum):
    DROP = "drop"
    GARBAGE_ARGS = "garbage_args"
    RPC_MISMATCH = "rpc_mismatch"
    AUTH_ERROR = "auth_error"


class BadCall(Exception):
    """The header decides the reply before any handler runs."""

    def __init__(self, verdict: Verdict, xid: int = 0, auth_stat: int = 0) -> None:
        super().__init__(verdict.value)
        self.verdict = verdict
        self.xid = xid
        self.auth_stat = auth_stat

    def reply(self) -> bytes | None:
        """The reply this verdict calls for (None: drop)."""
        if self.verdict is Verdict.DROP:
            return None
        if self.verdict is Verdict.GARBAGE_ARGS:
            return encode_accepted(self.xid, R.GARBAGE_ARGS)
        if self.verdict is Verdict.RPC_MISMATCH:
            return encode_rpc_mismatch(self.xid)
        return encode_auth_error(self.xid, self.auth_stat)


def decode_call(record: bytes) -> CallHeader:
    """Decode a call header or raise `BadCall` saying how to answer."""
    if len(record) >= _CALL_AND_CRED.size:
        # The usual call: the fixed words and the credential's flavour and length in one read.
        xid, mtype, rpcvers, prog, vers, proc, _, _ = _CALL_AND_CRED.unpack_from(record, 0)
        if mtype == R.CALL and rpcvers == RPC_VERSION:
            cred, cred_end = _opaque_auth(record, _CALL_FIXED.size, xid, R.AUTH_BADCRED)
            verf, args_offset = _opaque_auth(record, cred_end, xid, R.AUTH_BADVERF)
            return CallHeader(xid, prog, vers, proc, cred, verf, record, cred_end, args_offset)
    return _decode_call_checked(record)


def _decode_call_checked(record: bytes) -> CallHeader:
    """`decode_call` field by field: the first bad one decides the reply."""
    size = len(record)
    if size < 4:
        raise BadCall(Verdict.DROP)  # not even an xid to answer to
    xid = _U32.unpack_from(record, 0)[0]
    if size >= 8 and _U32.unpack_from(record, 4)[0] == R.REPLY:
        raise BadCall(Verdict.DROP, xid)  # a server ignores replies
    if size < 12 or _U32.unpack_from(record, 4)[0] != R.CALL:
        raise BadCall(Verdict.GARBAGE_ARGS, xid)
    if _U32.unpack_from(record, 8)[0] != RPC_VERSION:
        raise BadCall(Verdict.RPC_MISMATCH, xid)  # RFC 5531 §9: reply RPC_MISMATCH, low=high=2
    if size < _CALL_FIXED.size:
        raise BadCall(Verdict.GARBAGE_ARGS, xid)
    _, _, _, prog, vers, proc = _CALL_FIXED.unpack_from(record, 0)
    cred, cred_end = _opaque_auth(record, _CALL_FIXED.size, xid, R.AUTH_BADCRED)
    verf, args_offset = _opaque_auth(record, cred_end, xid, R.AUTH_BADVERF)
    return CallHeader(xid, prog, vers, proc, cred, verf, record, cred_end, args_offset)


def _opaque_auth(record: bytes, pos: int, xid: int, bad: int) -> tuple[R.opaque_auth, int]:
    """Decode opaque_auth at `pos`; an ill-formed one is an AUTH_ERROR with status `bad`."""
    if len(record) - pos < 8:
        raise BadCall(Verdict.AUTH_ERROR, xid, bad)
    flavor, length = struct.unpack_from(">II", record, pos)
    padded = (length + 3) & ~3
    body_at = pos + 8
    if length > MAX_AUTH_BYTES or padded > len(record) - body_at:
        raise BadCall(Verdict.AUTH_ERROR, xid, bad)
    if any(record[body_at + length : body_at + padded]):
        raise BadCall(Verdict.AUTH_ERROR, xid, bad)  # RFC 4506 §4.10: padding is zero
    return R.opaque_auth(flavor, bytes(record[body_at : body_at + length])), body_at + padded


def _verf_bytes(verf: R.opaque_auth | None) -> bytes:
    if verf is None or (verf.flavor == R.AUTH_NONE and not verf.body):
        return b"\0\0\0\0\0\0\0\0"
    body = verf.body
    pad = b"\0" * (-len(body) % 4)
    return _U32.pack(verf.flavor) + _U32.pack(len(body)) + body + pad


def encode_accepted(
    xid: int, stat: int, verf: R.opaque_auth | None = None, low: int = 0, high: int = 0
) -> bytes:
    """MSG_ACCEPTED reply header; for SUCCESS the results follow it on the wire."""
    if verf is None and stat == R.SUCCESS:
        return _U32.pack(xid) + _ACCEPTED_NULL_SUCCESS  # AUTH_NONE and AUTH_SYS replies
    verf_bytes = _verf_bytes(verf)
    head = _U32.pack(xid) + b"\0\0\0\x01\0\0\0\0" + verf_bytes + _U32.pack(stat)
    if stat == R.PROG_MISMATCH:
        head += struct.pack(">II", low, high)
    return head


def encode_rpc_mismatch(xid: int) -> bytes:
    """MSG_DENIED / RPC_MISMATCH with low = high = 2 (RFC 5531 §9)."""
    return _DENIED_MISMATCH.pack(
        xid, R.REPLY, R.MSG_DENIED, R.RPC_MISMATCH, RPC_VERSION, RPC_VERSION
    )


def encode_auth_error(xid: int, auth_stat: int) -> bytes:
    """MSG_DENIED / AUTH_ERROR carrying `auth_stat`."""
    return _DENIED_AUTH.pack(xid, R.REPLY, R.MSG_DENIED, R.AUTH_ERROR, auth_stat)
