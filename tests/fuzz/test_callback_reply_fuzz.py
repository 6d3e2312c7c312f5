"""Hostile CB_GETATTR answers: `decode_size_change` reads the size and change attribute a
write delegation's holder reports (bytes a client sends, RFC 7530 §10.4.3).  Whatever the
mask and bytes, it returns None or two 64-bit values and never raises; a well-formed answer
decodes to what was packed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pynfsd.gen import nfs4 as N
from pynfsd.nfs4.recall import GETATTR_MASK, decode_size_change
from pynfsd.xdr.runtime import Packer

_U64 = st.integers(0, (1 << 64) - 1)


@settings(deadline=None, max_examples=500)
@given(mask=st.lists(st.integers(0, 0xFFFFFFFF), max_size=4), data=st.binary(max_size=64))
def test_any_answer_decodes_or_is_refused(mask: list[int], data: bytes) -> None:
    got = decode_size_change(N.fattr4(mask, data))
    assert got is None or all(0 <= v < 1 << 64 for v in got)


@settings(deadline=None, max_examples=200)
@given(size=_U64, change=_U64, extra=st.binary(max_size=8))
def test_a_well_formed_answer_decodes_and_trailing_bytes_are_refused(
    size: int, change: int, extra: bytes
) -> None:
    p = Packer()
    p.pack_uhyper(change)  # bit 3 (change) comes before bit 4 (size)
    p.pack_uhyper(size)
    body = p.get_buffer()
    assert decode_size_change(N.fattr4(list(GETATTR_MASK), body)) == (size, change)
    if extra:
        assert decode_size_change(N.fattr4(list(GETATTR_MASK), body + extra)) is None
    assert decode_size_change(N.fattr4([GETATTR_MASK[0] | 1 << N.FATTR4_TYPE], body)) is None
