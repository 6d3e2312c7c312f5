"""Hand-tuned codecs beside the generated ones produce the same bytes (docs/HABITS.md, "The wire
format has one source")."""

from __future__ import annotations

import pytest

from pynfsd.gen import nfs4 as N
from pynfsd.xdr.runtime import Packer, Unpacker, XdrError


@pytest.mark.parametrize("size", [0, 1, 3, 4095, 4096, 4097, 65537, 1 << 20])
def test_read_reply_out_of_line_matches_generated(size: int) -> None:
    from pynfsd.nfs4.ops.io import _pack_read_res

    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    res = N.READ4res(N.NFS4_OK, N.READ4resok(size % 2 == 0, data))
    fast, ref = Packer(), Packer()
    fast.pack_uint(7)
    _pack_read_res(fast, res)
    fast.pack_uint(9)
    ref.pack_uint(7)
    N.pack_READ4res(ref, res)
    ref.pack_uint(9)
    assert fast.get_buffer() == ref.get_buffer()
    assert b"".join(fast.get_buffers()) == ref.get_buffer()
    assert len(fast) == len(ref)


def test_read_error_reply_matches_generated() -> None:
    from pynfsd.nfs4.ops.io import _pack_read_res

    res = N.READ4res(N.NFS4ERR_OPENMODE, None)
    fast, ref = Packer(), Packer()
    _pack_read_res(fast, res)
    N.pack_READ4res(ref, res)
    assert fast.get_buffer() == ref.get_buffer()


def test_out_of_line_segments_refuse_get_bytearray() -> None:
    p = Packer()
    p.pack_opaque_ref(b"x" * 5000)
    with pytest.raises(XdrError):
        p.get_bytearray()


@pytest.mark.parametrize("size", [0, 5, 4096, 70000])
def test_write_args_view_decoder_matches_generated(size: int) -> None:
    from pynfsd.nfs4.ops.io import _unpack_write_args

    args = N.WRITE4args(N.stateid4(3, b"a" * 12), 1 << 40, 1, b"\x5a" * size)
    p = Packer()
    N.pack_WRITE4args(p, args)
    wire = p.get_buffer() + b"tail"
    u1, u2 = Unpacker(wire), Unpacker(wire)
    fast, ref = _unpack_write_args(u1), N.unpack_WRITE4args(u2)
    assert u1.pos == u2.pos
    assert (fast.stateid, fast.offset, fast.stable, bytes(fast.data)) == (
        ref.stateid, ref.offset, ref.stable, ref.data)


def test_write_args_view_decoder_is_bounded() -> None:
    from pynfsd.nfs4.ops.io import _unpack_write_args

    args = N.WRITE4args(N.stateid4(3, b"a" * 12), 0, 1, b"abcdef")
    p = Packer()
    N.pack_WRITE4args(p, args)
    wire = p.get_buffer()
    for cut in range(len(wire)):
        with pytest.raises(XdrError):
            _unpack_write_args(Unpacker(wire[:cut]))
    bad_pad = wire[:-1] + b"\x01"
    with pytest.raises(XdrError):
        _unpack_write_args(Unpacker(bad_pad))


@pytest.mark.parametrize("size", [0, 3, 4096, 70000])
def test_gss_body_view_decoders_match_generated(size: int) -> None:
    from pynfsd.gen import rpcsec_gss as G
    from pynfsd.rpc.gss import unpack_integ_data_view, unpack_priv_data_view

    body = bytes(range(256)) * (size // 256) + b"\x07" * (size % 256)
    p = Packer()
    G.pack_rpc_gss_integ_data(p, G.rpc_gss_integ_data(body, b"mic-bytes"))
    wire = p.get_buffer() + b"tail"
    u1, u2 = Unpacker(wire), Unpacker(wire)
    view, checksum = unpack_integ_data_view(u1)
    ref = G.unpack_rpc_gss_integ_data(u2)
    assert (bytes(view), checksum, u1.pos) == (ref.databody_integ, ref.checksum, u2.pos)
    p = Packer()
    G.pack_rpc_gss_priv_data(p, G.rpc_gss_priv_data(body))
    wire = p.get_buffer()
    u1, u2 = Unpacker(wire), Unpacker(wire)
    assert bytes(unpack_priv_data_view(u1)) == G.unpack_rpc_gss_priv_data(u2).databody_priv
    assert u1.pos == u2.pos
    for cut in [*range(0, len(wire), max(1, len(wire) // 50)), len(wire) - 1]:
        with pytest.raises(XdrError):
            unpack_priv_data_view(Unpacker(wire[:cut]))
