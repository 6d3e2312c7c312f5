"""The hand-tuned call/reply header codec agrees with the generated one, byte for byte."""

from __future__ import annotations

import struct

import pytest

from pynfsd.gen import rpc as R
from pynfsd.rpc.client import AuthSysCred, encode_call
from pynfsd.rpc.header import (
    BadCall,
    Verdict,
    decode_call,
    encode_accepted,
    encode_auth_error,
    encode_rpc_mismatch,
)
from pynfsd.xdr.runtime import Packer, Unpacker

SYS = AuthSysCred(1000, 100, (4, 24, 27), "host.example").opaque_auth()
VERF = R.opaque_auth(R.RPCSEC_GSS, b"\x01\x02\x03\x04\x05")


def generated_reply(xid: int, body: R.reply_body) -> bytes:
    p = Packer()
    R.pack_rpc_msg(p, R.rpc_msg(xid, R.rpc_msg_body(R.REPLY, body)))
    return p.get_buffer()


def accepted(verf: R.opaque_auth, stat: int, value: object = None) -> R.reply_body:
    data = R.rpc_reply_data(stat, value)  # type: ignore[arg-type]
    return R.reply_body(R.MSG_ACCEPTED, R.accepted_reply(verf, data))


@pytest.mark.parametrize("cred", [R.opaque_auth(R.AUTH_NONE, b""), SYS, VERF])
@pytest.mark.parametrize("args", [b"", b"\0\0\0\x07", b"abcdefgh" * 10])
def test_decode_call_matches_generated(cred: R.opaque_auth, args: bytes) -> None:
    record = encode_call(0xDEADBEEF, 100003, 4, 1, args, cred, VERF)
    u = Unpacker(record)
    msg = R.unpack_rpc_msg(u)
    call = decode_call(record)
    body = msg.body.value
    assert isinstance(body, R.call_body)
    assert (call.xid, call.prog, call.vers, call.proc) == (msg.xid, body.prog, body.vers, body.proc)
    assert call.cred == body.cred and call.verf == body.verf
    assert call.args_offset == u.pos and bytes(call.args) == args
    p = Packer()
    p.pack_uint(msg.xid)
    p.pack_uint(R.CALL)
    for word in (2, 100003, 4, 1):
        p.pack_uint(word)
    R.pack_opaque_auth(p, cred)
    assert bytes(call.header) == p.get_buffer()


def test_unknown_flavor_is_not_a_decoding_error() -> None:
    record = struct.pack(">IIIIII", 1, 0, 2, 2, 3, 4) + struct.pack(">II", 390039, 0) + b"\0" * 8
    assert decode_call(record).cred.flavor == 390039


@pytest.mark.parametrize("verf", [R.opaque_auth(R.AUTH_NONE, b""), VERF])
@pytest.mark.parametrize("stat", [R.SUCCESS, R.PROG_UNAVAIL, R.PROC_UNAVAIL, R.GARBAGE_ARGS, R.SYSTEM_ERR])
def test_encode_accepted(verf: R.opaque_auth, stat: int) -> None:
    value = b"" if stat == R.SUCCESS else None
    assert encode_accepted(7, stat, verf) == generated_reply(7, accepted(verf, stat, value))


def test_encode_accepted_default_verifier_is_null() -> None:
    null = R.opaque_auth(R.AUTH_NONE, b"")
    assert encode_accepted(9, R.SUCCESS) == generated_reply(9, accepted(null, R.SUCCESS, b""))


def test_encode_prog_mismatch() -> None:
    info = R.rpc_mismatch_info(2, 4)
    want = generated_reply(0xFFFFFFFF, accepted(VERF, R.PROG_MISMATCH, info))
    assert encode_accepted(0xFFFFFFFF, R.PROG_MISMATCH, VERF, 2, 4) == want


def test_encode_denied() -> None:
    mismatch = R.rejected_reply(R.RPC_MISMATCH, R.rpc_mismatch_info(2, 2))
    assert encode_rpc_mismatch(5) == generated_reply(5, R.reply_body(R.MSG_DENIED, mismatch))
    auth = R.rejected_reply(R.AUTH_ERROR, R.AUTH_TOOWEAK)
    want = generated_reply(6, R.reply_body(R.MSG_DENIED, auth))
    assert encode_auth_error(6, R.AUTH_TOOWEAK) == want


def verdict(record: bytes) -> tuple[Verdict, int, int]:
    with pytest.raises(BadCall) as info:
        decode_call(record)
    return info.value.verdict, info.value.xid, info.value.auth_stat


FIXED = struct.pack(">IIIIII", 42, R.CALL, 2, 100003, 4, 1)
NULL = struct.pack(">II", 0, 0)


def test_short_records() -> None:
    assert verdict(b"")[0] is Verdict.DROP
    assert verdict(b"\0\0\0")[0] is Verdict.DROP
    for cut in range(4, len(FIXED)):
        assert verdict(FIXED[:cut])[:2] == (Verdict.GARBAGE_ARGS, 42), cut
    assert verdict(FIXED)[0] is Verdict.AUTH_ERROR


def test_reply_is_dropped_and_bad_mtype_is_garbage() -> None:
    assert verdict(struct.pack(">II", 42, R.REPLY) + b"junk")[0] is Verdict.DROP
    assert verdict(struct.pack(">III", 42, 7, 2))[:2] == (Verdict.GARBAGE_ARGS, 42)


def test_rpc_version_mismatch() -> None:
    record = struct.pack(">III", 42, R.CALL, 3)
    assert verdict(record)[:2] == (Verdict.RPC_MISMATCH, 42)
    assert BadCall(Verdict.RPC_MISMATCH, 42).reply() == encode_rpc_mismatch(42)


def test_bad_credential_and_verifier() -> None:
    too_long = struct.pack(">II", R.AUTH_SYS, 404) + b"\0" * 404
    assert verdict(FIXED + too_long + NULL)[1:] == (42, R.AUTH_BADCRED)
    truncated = struct.pack(">II", R.AUTH_SYS, 8) + b"\0" * 4
    assert verdict(FIXED + truncated)[2] == R.AUTH_BADCRED
    bad_pad = struct.pack(">II", R.AUTH_SYS, 3) + b"abc\x01"
    assert verdict(FIXED + bad_pad + NULL)[2] == R.AUTH_BADCRED
    assert verdict(FIXED + NULL + b"\0\0\0\0")[2] == R.AUTH_BADVERF
    reply = BadCall(Verdict.AUTH_ERROR, 42, R.AUTH_BADVERF).reply()
    assert reply == encode_auth_error(42, R.AUTH_BADVERF)


def test_max_auth_body_accepted() -> None:
    cred = struct.pack(">II", R.AUTH_SYS, 400) + b"\0" * 400
    assert len(decode_call(FIXED + cred + NULL).cred.body) == 400


def test_garbage_reply_bytes() -> None:
    assert BadCall(Verdict.GARBAGE_ARGS, 3).reply() == encode_accepted(3, R.GARBAGE_ARGS)
    assert BadCall(Verdict.DROP).reply() is None
