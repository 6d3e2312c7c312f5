"""The COMPOUND procedure itself (RFC 7530 §15.2, §16.2): tag, minor version, unknown and
undecodable operations, stopping at the first error, and operations pynfsd does not support."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from nfs4_fixtures import World, expect, export_root, ops

from pynfsd.client.nfs4 import decode_compound, op
from pynfsd.gen import nfs4 as N
from pynfsd.xdr.runtime import Packer


def _raw(ops_: Sequence[N.nfs_argop4], tail: bytes, count: int, tag: bytes = b"t") -> bytes:
    """COMPOUND4args with `count` operations: the encoded `ops_`, then `tail` as is."""
    p = Packer()
    p.pack_opaque(tag)
    p.pack_uint(0)
    p.pack_uint(count)
    for o in ops_:
        N.pack_nfs_argop4(p, o)
    return p.get_buffer() + tail


async def _send(w: World, args: bytes) -> N.COMPOUND4res:
    return decode_compound(await w.client().compound_raw(args))


def _statuses(res: N.COMPOUND4res) -> list[tuple[int, int]]:
    return [(r.resop, r.value.status) for r in res.resarray]


async def test_tag_is_echoed(w: World) -> None:
    c = w.client()
    ok = await c.compound([op.putrootfh()], tag=b"hello tag")
    assert ok.tag == b"hello tag"
    bad = await c.compound([op.getfh()], tag=b"\xffnot utf-8 but opaque")
    assert bad.tag == b"\xffnot utf-8 but opaque" and bad.status == N.NFS4ERR_NOFILEHANDLE


@pytest.mark.parametrize("minor", [1, 2, 7])
async def test_other_minor_versions_get_no_results(w: World, minor: int) -> None:
    res = await w.client().compound([op.putrootfh(), op.getfh()], b"mv", minorversion=minor)
    assert res.status == N.NFS4ERR_MINOR_VERS_MISMATCH
    assert res.resarray == [] and res.tag == b"mv"


async def test_empty_compound_is_ok(w: World) -> None:
    res = await w.client().compound([])
    assert res.status == N.NFS4_OK and res.resarray == []


@pytest.mark.parametrize("opnum", [0, 1, 2, 40, 99, 10043, 10044, 0xFFFFFFFF])
async def test_unknown_opnum_is_op_illegal_and_stops(w: World, opnum: int) -> None:
    tail = opnum.to_bytes(4, "big") + op.getfh().argop.to_bytes(4, "big")
    res = await _send(w, _raw([op.putrootfh()], tail, 3))
    assert res.status == N.NFS4ERR_OP_ILLEGAL
    assert _statuses(res) == [(N.OP_PUTROOTFH, N.NFS4_OK), (N.OP_ILLEGAL, N.NFS4ERR_OP_ILLEGAL)]


async def test_undecodable_arguments_are_badxdr_and_stop(w: World) -> None:
    # LOOKUP whose component claims 1000 bytes but the call ends after 3
    tail = N.OP_LOOKUP.to_bytes(4, "big") + (1000).to_bytes(4, "big") + b"abc"
    res = await _send(w, _raw([op.putrootfh()], tail, 3))
    assert res.status == N.NFS4ERR_BADXDR
    assert _statuses(res) == [(N.OP_PUTROOTFH, N.NFS4_OK), (N.OP_LOOKUP, N.NFS4ERR_BADXDR)]


async def test_bad_enum_in_arguments_is_badxdr(w: World) -> None:
    # CREATE with an objtype outside nfs_ftype4
    tail = N.OP_CREATE.to_bytes(4, "big") + (77).to_bytes(4, "big")
    res = await _send(w, _raw([op.putrootfh()], tail, 2))
    assert _statuses(res)[-1] == (N.OP_CREATE, N.NFS4ERR_BADXDR)


async def test_missing_operations_are_badxdr(w: World) -> None:
    res = await _send(w, _raw([op.putrootfh()], b"", 5))  # count says 5, one is there
    assert res.status == N.NFS4ERR_BADXDR
    assert _statuses(res)[0] == (N.OP_PUTROOTFH, N.NFS4_OK)
    assert len(res.resarray) == 2


async def test_processing_stops_at_the_first_error(w: World) -> None:
    c = w.client()
    res = await c.compound(
        [
            op.putrootfh(),
            op.lookup(b"export"),
            op.lookup(b"missing"),
            op.getfh(),
            op.mkdir(b"never"),
        ]
    )
    assert res.status == N.NFS4ERR_NOENT
    assert [r.resop for r in res.resarray] == [N.OP_PUTROOTFH, N.OP_LOOKUP, N.OP_LOOKUP]
    root = await export_root(c)
    await expect(c, [op.putfh(root), op.lookup(b"never")], N.NFS4ERR_NOENT)


async def test_status_is_that_of_the_last_result(w: World) -> None:
    res = await w.client().compound([op.putrootfh(), op.getfh()])
    assert res.status == N.NFS4_OK and len(res.resarray) == 2


async def test_openattr_is_notsupp(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    await expect(c, [op.putfh(root), ops.openattr(False)], N.NFS4ERR_NOTSUPP)
    await expect(c, [op.putfh(root), ops.openattr(True)], N.NFS4ERR_NOTSUPP)


async def test_many_operations_in_one_compound(w: World) -> None:
    c = w.client()
    ops_ = [op.putrootfh()] + [op.getfh()] * 199  # the default maximum: 200 ops
    res = await c.compound(ops_)
    assert res.status == N.NFS4_OK and len(res.resarray) == 200


async def test_state_does_not_leak_between_compounds(w: World) -> None:
    c = w.client()
    await c.check([op.putrootfh()])
    await expect(c, [op.getfh()], N.NFS4ERR_NOFILEHANDLE)


def test_every_errno_maps_to_a_real_status() -> None:
    from pynfsd.gen.nfs4_errors import BY_STATUS
    from pynfsd.nfs4 import errors as E

    for err, status in E._ERRNO_TO_STATUS.items():
        assert status in BY_STATUS, (err, status)
        assert E.from_errno(err).status == status
