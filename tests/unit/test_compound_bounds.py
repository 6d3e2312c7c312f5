"""Bounded work per COMPOUND (RFC 7530 §15.2, §13.1.3.4): the op table's reply-size
estimates, the maximum number of ops and of reply bytes, and yielding to the event loop."""

from __future__ import annotations

import asyncio

import pytest
from nfs4_fixtures import ANON, World, attrs_of, expect, export_root, make_file, ops

from pynfsd.cli import build_parser
from pynfsd.client.nfs4 import Nfs4Client, decode_compound, encode_compound, op
from pynfsd.gen import nfs4 as N
from pynfsd.nfs4.acl import MAX_ACL_BYTES
from pynfsd.nfs4.attrs import SUPPORTED_ATTRS, WRITE_ONLY_ATTRS, fattr4_max_size
from pynfsd.nfs4.compound import YIELD_EVERY, make_result
from pynfsd.nfs4.ops import build_op_table
from pynfsd.nfs4.server import DEFAULT_MAX_REPLY, REPLY_HEADROOM, ServerConfig
from pynfsd.rpc.transport import DEFAULT_MAX_RECORD
from pynfsd.xdr.runtime import Packer, Unpacker

MIB = 1 << 20
OPS = build_op_table()
#: Every readable attribute but `acl`, whose estimate alone is MAX_ACL_BYTES.
ALL_ATTRS = sorted(SUPPORTED_ATTRS - WRITE_ONLY_ATTRS - {N.FATTR4_ACL})


def _statuses(res: N.COMPOUND4res) -> list[tuple[int, int]]:
    return [(r.resop, r.value.status) for r in res.resarray]


async def _file(c: Nfs4Client, name: bytes, size: int) -> bytes:
    """A regular file of `size` bytes (zeros) in the export."""
    fh = await make_file(c, await export_root(c), name)
    await c.check([op.putfh(fh), ops.setattr({N.FATTR4_SIZE: size})])
    return fh


# ------------------------------------------------------------------ number of ops


async def test_max_ops_are_served_and_the_next_gets_resource(w: World) -> None:
    c = w.client()
    w.server.config.max_compound_ops = 10
    ok = await c.compound([op.putrootfh()] * 10)
    assert ok.status == N.NFS4_OK and len(ok.resarray) == 10
    res = await expect(c, [op.putrootfh()] * 10 + [op.getfh()] * 5, N.NFS4ERR_RESOURCE)
    assert _statuses(res) == [(N.OP_PUTROOTFH, N.NFS4_OK)] * 10 + [
        (N.OP_GETFH, N.NFS4ERR_RESOURCE)
    ]


async def test_ops_past_the_maximum_are_not_decoded(w: World) -> None:
    """The op past the maximum is RESOURCE before its arguments are looked at."""

    w.server.config.max_compound_ops = 2
    args = encode_compound([op.putrootfh(), op.getfh()])
    args = args[:-12] + (250_000).to_bytes(4, "big") + args[-8:]  # count says 250,000
    bad_lookup = N.OP_LOOKUP.to_bytes(4, "big") + (1000).to_bytes(4, "big")  # truncated
    res = decode_compound(await w.client().compound_raw(args + bad_lookup))
    assert _statuses(res) == [
        (N.OP_PUTROOTFH, N.NFS4_OK), (N.OP_GETFH, N.NFS4_OK),
        (N.OP_LOOKUP, N.NFS4ERR_RESOURCE),
    ]


async def test_default_max_ops_admits_a_long_path_walk(w: World) -> None:
    n = w.server.config.max_compound_ops
    assert n == 200  # knfsd's NFSD_MAX_OPS_PER_COMPOUND
    res = await w.client().compound([op.putrootfh()] + [op.getfh()] * (n - 1))
    assert res.status == N.NFS4_OK and len(res.resarray) == n


# ------------------------------------------------------------------ reply size


async def test_second_read_of_maxread_gets_resource(w: World) -> None:
    c = w.client()
    fh = await _file(c, b"big", 2 * MIB)
    reads = [op.read(ANON, i * MIB, MIB) for i in range(2100)]
    res = await expect(c, [op.putfh(fh), *reads], N.NFS4ERR_RESOURCE)
    assert _statuses(res) == [
        (N.OP_PUTFH, N.NFS4_OK), (N.OP_READ, N.NFS4_OK), (N.OP_READ, N.NFS4ERR_RESOURCE)
    ]
    assert len(res.resarray[1].value.value.data) == MIB


async def test_the_running_total_is_of_encoded_bytes_not_estimates(w: World) -> None:
    """Many READs of 1 MiB of a small file fit: only what was encoded counts, plus the
    estimate of the next op."""

    c = w.client()
    fh = await _file(c, b"small", 100)
    res = await c.compound([op.putfh(fh)] + [op.read(ANON, 0, MIB)] * 150)
    assert res.status == N.NFS4_OK and len(res.resarray) == 151


async def test_reply_never_exceeds_max_reply(w: World) -> None:
    c = w.client()
    w.server.config.max_reply = 4000
    raw = await c.compound_raw(encode_compound([op.putrootfh()]
                                               + [op.getattr(*ALL_ATTRS)] * 50))
    res = decode_compound(raw)
    assert res.status == N.NFS4ERR_RESOURCE
    assert len(raw) <= 4000
    assert res.resarray[-1].resop == N.OP_GETATTR
    assert sum(1 for r in res.resarray if r.value.status == N.NFS4_OK) >= 3


async def test_readdir_maxcount_counts_against_the_reply(w: World) -> None:
    c = w.client()
    fh = await _file(c, b"f", MIB)
    root = await export_root(c)
    res = await expect(c, [op.putfh(fh), op.read(ANON, 0, MIB), op.putfh(root),
                           op.readdir(maxcount=MIB)], N.NFS4ERR_RESOURCE)
    assert res.resarray[-1].resop == N.OP_READDIR
    small = await c.compound([op.putfh(fh), op.read(ANON, 0, MIB), op.putfh(root),
                              op.readdir(maxcount=8192)])
    assert small.status == N.NFS4_OK


async def test_a_huge_tag_leaves_no_room(w: World) -> None:
    w.server.config.max_reply = 4000
    res = await w.client().compound([op.putrootfh()], tag=b"t" * 5000)
    assert _statuses(res) == [(N.OP_PUTROOTFH, N.NFS4ERR_RESOURCE)]


async def test_getattr_estimate_bounds_the_real_encoding(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    for fh in (root, await _file(c, b"e", 5)):
        _, res = await c.check([op.putfh(fh), op.getattr(*ALL_ATTRS)])
        assert len(attrs_of(res)) >= len(ALL_ATTRS) - 1
        real = 4 + 4 * len(res.obj_attributes.attrmask) + 4 + len(
            res.obj_attributes.attr_vals)
        assert real <= fattr4_max_size(res.obj_attributes.attrmask)


def test_estimates_of_read_readdir_and_getattr() -> None:
    cfg = ServerConfig(state_dir="/nonexistent")
    read = OPS[N.OP_READ].reply_size(N.READ4args(ANON, 0, 1 << 31), cfg)
    readdir = OPS[N.OP_READDIR].reply_size(N.READDIR4args(0, b"\0" * 8, 0, 1 << 31, []), cfg)
    assert read == 12 + cfg.maxread
    assert readdir <= cfg.max_reply - 8192  # room for PUTFH and GETATTR around it
    getattr_all = OPS[N.OP_GETATTR].reply_size(N.GETATTR4args([0xFFFFFFFF] * 3), cfg)
    no_acl = [w & ~(1 << N.FATTR4_ACL) if i == 0 else w for i, w in enumerate([0xFFFFFFFF] * 3)]
    getattr_no_acl = OPS[N.OP_GETATTR].reply_size(N.GETATTR4args(no_acl), cfg)
    assert 4 + 12 + 4 < getattr_no_acl < 4096
    assert getattr_all == getattr_no_acl + MAX_ACL_BYTES


@pytest.mark.parametrize("opnum", sorted(OPS), ids=lambda n: N.nfs_opnum4_names[n][3:])
def test_every_op_encodes_a_resource_result(opnum: int) -> None:
    """Any op can be the one that goes past a bound: its RESOURCE result must encode."""
    spec = OPS[opnum]
    p = Packer()
    p.pack_uint(opnum)
    spec.pack_res(p, make_result(spec, N.NFS4ERR_RESOURCE, None))
    u = Unpacker(p.get_buffer())
    res = N.unpack_nfs_resop4(u)
    u.done()
    assert (res.resop, res.value.status) == (opnum, N.NFS4ERR_RESOURCE)


# ------------------------------------------------------------------ limits agree


async def test_announced_maxread_maxwrite_fit_the_limits(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    _, res = await c.check([op.putfh(root), op.getattr(N.FATTR4_MAXREAD, N.FATTR4_MAXWRITE)])
    got = attrs_of(res)
    cfg = w.server.config
    assert got[N.FATTR4_MAXREAD] + REPLY_HEADROOM <= cfg.max_reply
    # a WRITE of maxwrite with its RPC header and the ops around it fits one record
    assert got[N.FATTR4_MAXWRITE] + 4096 <= DEFAULT_MAX_RECORD


def test_config_refuses_a_maxread_that_cannot_fit() -> None:
    with pytest.raises(ValueError, match="max_reply"):
        ServerConfig(state_dir="/x", maxread=MIB, max_reply=MIB)
    with pytest.raises(ValueError):
        ServerConfig(state_dir="/x", max_compound_ops=0)
    assert ServerConfig.io_size_for(DEFAULT_MAX_REPLY) == MIB
    assert ServerConfig.io_size_for(REPLY_HEADROOM + 8192) == 8192


def test_cli_options() -> None:
    args = build_parser().parse_args(
        ["serve", "--max-compound-ops", "16", "--max-reply-size", "200000"])
    assert (args.max_compound_ops, args.max_reply_size) == (16, 200000)
    defaults = build_parser().parse_args(["serve"])
    assert (defaults.max_compound_ops, defaults.max_reply_size) == (200, DEFAULT_MAX_REPLY)
    for bad in (["--max-compound-ops", "0"], ["--max-reply-size", "1000"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", *bad])


# ------------------------------------------------------------------ fairness


async def test_a_long_compound_yields_to_the_event_loop(w: World) -> None:
    w.server.config.max_compound_ops = 2000
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    t = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    start = ticks
    res = await w.client().compound([op.putrootfh()] * 2000)
    done = True
    await t
    assert res.status == N.NFS4_OK
    assert ticks - start >= 2000 // YIELD_EVERY - 2
