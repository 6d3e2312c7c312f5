"""The COMPOUND loop's shortcut against the generated codecs, on random values.

`OpSpec.pack_ok` (a successful result encoded straight from the handler's value) gives the
same bytes as the op number and `pack_res` of the result object `make_result` builds, for every
op of the server's table that uses it; the ops that may not use it are the ones with a
hand-tuned encoder or a result that is not a status and an NFS4_OK arm.  The COMPOUND4res
head `encode_reply` builds with struct is what the packer would build.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pynfsd.gen import nfs4 as N
from pynfsd.nfs4.compound import encode_reply, make_result
from pynfsd.nfs4.ops import build_op_table
from pynfsd.nfs4.optable import OpSpec
from pynfsd.xdr.runtime import Packer
from tests.fuzz.test_xdr_fuzz import FAST, SPECS

TABLE = build_op_table()
STRATEGIES = SPECS[N]


def _fast_ops() -> list[Any]:
    return [pytest.param(s, id=s.name) for s in sorted(TABLE.values(), key=lambda s: s.opnum)
            if s.fast_ok]


def test_the_hot_ops_use_pack_ok_and_hand_tuned_encoders_do_not() -> None:
    fast = {s.name for s in TABLE.values() if s.fast_ok}
    assert {"PUTFH", "GETATTR", "LOOKUP", "ACCESS", "GETFH", "CLOSE", "RENEW", "WRITE",
            "OPEN", "SAVEFH", "RESTOREFH", "REMOVE"} <= fast
    assert "READ" in fast  # a hand-tuned pack_res with its hand-tuned NFS4_OK arm
    assert "READDIR" not in fast  # a hand-tuned pack_res alone
    assert "SETATTR" not in fast  # a status and a bitmap, not a union


def _ok_value(spec: OpSpec) -> st.SearchStrategy[Any]:
    """Values a handler may return for NFS4_OK (the OK arm's value, or None)."""
    if not spec.res_is_union:
        return st.none()
    return STRATEGIES.arm(f"{spec.name}4res", N.NFS4_OK).map(lambda res: res.value)


@pytest.mark.parametrize("spec", _fast_ops())
@FAST
@given(data=st.data())
def test_pack_ok_matches_the_result_object(spec: OpSpec, data: st.DataObject) -> None:
    value = data.draw(_ok_value(spec))
    fast = Packer()
    spec.pack_ok(fast, value)
    slow = Packer()
    slow.pack_uint(spec.opnum)
    spec.pack_res(slow, make_result(spec, N.NFS4_OK, value))
    assert fast.get_buffer() == slow.get_buffer()


@FAST
@given(status=st.sampled_from(sorted(N.nfsstat4_values)), tag=st.binary(max_size=64),
       numres=st.integers(0, 2**32 - 1))
def test_reply_head_matches_the_packer(status: int, tag: bytes, numres: int) -> None:
    p = Packer()
    p.pack_int(status)
    p.pack_opaque(tag)
    p.pack_uint(numres)
    assert encode_reply(status, tag, numres, None) == [p.get_buffer()]


@pytest.mark.parametrize("size", [0, 4095, 4096, 65537])
def test_pack_ok_of_read_references_large_data_as_pack_res_does(size: int) -> None:
    spec = TABLE[N.OP_READ]
    ok = N.READ4resok(True, bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    fast = Packer()
    spec.pack_ok(fast, ok)
    slow = Packer()
    slow.pack_uint(N.OP_READ)
    spec.pack_res(slow, make_result(spec, N.NFS4_OK, ok))
    assert len(fast.get_buffers()) == len(slow.get_buffers())  # the data out of line alike
    assert fast.get_buffer() == slow.get_buffer()
