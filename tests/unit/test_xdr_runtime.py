"""XDR runtime primitives (RFC 4506): byte vectors both ways, bounds, and xdrlib3 cross-checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import xdrlib3
from hypothesis import given
from hypothesis import strategies as st

from pynfsd.xdr.runtime import Packer, Unpacker, XdrError

H = bytes.fromhex


def packed(method: str, *args: Any) -> bytes:
    p = Packer()
    getattr(p, method)(*args)
    return p.get_buffer()


def unpacked(method: str, data: bytes, *args: Any) -> Any:
    u = Unpacker(data)
    value = getattr(u, method)(*args)
    u.done()
    return value


# (pack method, unpack method, value, encoding) — RFC 4506 §4.1-§4.5, §4.9-§4.11.
SCALARS: list[tuple[str, str, Any, bytes]] = [
    ("pack_int", "unpack_int", 0, H("00000000")),
    ("pack_int", "unpack_int", 1, H("00000001")),
    ("pack_int", "unpack_int", -1, H("ffffffff")),
    ("pack_int", "unpack_int", 2**31 - 1, H("7fffffff")),
    ("pack_int", "unpack_int", -(2**31), H("80000000")),
    ("pack_uint", "unpack_uint", 0xDEADBEEF, H("deadbeef")),
    ("pack_uint", "unpack_uint", 2**32 - 1, H("ffffffff")),
    ("pack_enum", "unpack_int", 2, H("00000002")),
    ("pack_hyper", "unpack_hyper", -2, H("fffffffffffffffe")),
    ("pack_hyper", "unpack_hyper", 2**63 - 1, H("7fffffffffffffff")),
    ("pack_hyper", "unpack_hyper", -(2**63), H("8000000000000000")),
    ("pack_uhyper", "unpack_uhyper", 2**64 - 1, H("ffffffffffffffff")),
    ("pack_uhyper", "unpack_uhyper", 0x0102030405060708, H("0102030405060708")),
    ("pack_bool", "unpack_bool", False, H("00000000")),
    ("pack_bool", "unpack_bool", True, H("00000001")),
]


@pytest.mark.parametrize(("pack", "unpack", "value", "wire"), SCALARS)
def test_scalar_both_ways(pack: str, unpack: str, value: Any, wire: bytes) -> None:
    assert packed(pack, value) == wire
    assert unpacked(unpack, wire) == value


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b"", b""),
        (b"a", H("61000000")),
        (b"ab", H("61620000")),
        (b"abc", H("61626300")),
        (b"abcd", H("61626364")),
        (b"abcde", H("6162636465000000")),
    ],
)
def test_fixed_opaque_is_padded_with_zeros(data: bytes, wire: bytes) -> None:
    # RFC 4506 §4.9: fixed-length opaque, padded with zero bytes to a multiple of four.
    assert packed("pack_fopaque", len(data), data) == wire
    assert unpacked("unpack_fopaque", wire, len(data)) == data


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b"", H("00000000")),
        (b"a", H("0000000161000000")),
        (b"abcd", H("0000000461626364")),
        (b"abcde", H("000000056162636465000000")),
    ],
)
def test_variable_opaque_has_length_and_padding(data: bytes, wire: bytes) -> None:
    # RFC 4506 §4.10.
    assert packed("pack_opaque", data) == wire
    assert unpacked("unpack_opaque", wire) == data
    assert bytes(unpacked("unpack_opaque_view", wire)) == data


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("", H("00000000")),
        ("sillyprog", H("0000000973696c6c7970726f67000000")),
        ("é", H("00000002c3a90000")),
        ("日本", H("00000006e697a5e69cac0000")),
    ],
)
def test_string_is_utf8_with_length_and_padding(text: str, wire: bytes) -> None:
    # RFC 4506 §4.11.
    assert packed("pack_string", text) == wire
    assert unpacked("unpack_string", wire) == text


def test_rfc4506_section7_file_example() -> None:
    """The worked example of RFC 4506 §7: struct file {"sillyprog", EXEC "lisp", "john", "(quit)"}."""
    wire = H(
        "00000009" "73696c6c" "7970726f" "67000000"  # filename
        "00000002"  # filekind EXEC
        "00000004" "6c697370"  # interpreter "lisp"
        "00000004" "6a6f686e"  # owner "john"
        "00000006" "28717569" "74290000"  # data "(quit)"
    )
    p = Packer()
    p.pack_string("sillyprog", 255)
    p.pack_enum(2)
    p.pack_string("lisp", 255)
    p.pack_string("john", 32)
    p.pack_opaque(b"(quit)", 65535)
    assert p.get_buffer() == wire
    assert len(p) == 48
    u = Unpacker(wire)
    got = (u.unpack_string(255), u.unpack_int(), u.unpack_string(255), u.unpack_string(32))
    assert got == ("sillyprog", 2, "lisp", "john")
    assert u.unpack_opaque(65535) == b"(quit)"
    u.done()


def test_packer_appends_raw_and_exposes_its_buffer() -> None:
    p = Packer()
    p.pack_uint(1)
    p.pack_raw(H("00000002"))
    p.get_bytearray().extend(H("00000003"))
    assert p.get_buffer() == H("000000010000000200000003")


# ---------------------------------------------------------------- bounds and malformed input


def test_opaque_maxlen_exceeded_both_ways() -> None:
    with pytest.raises(XdrError):
        packed("pack_opaque", b"abcde", 4)
    with pytest.raises(XdrError):
        packed("pack_string", "abcde", 4)
    wire = H("000000056162636465000000")
    for method in ("unpack_opaque", "unpack_opaque_view", "unpack_string"):
        with pytest.raises(XdrError):
            getattr(Unpacker(wire), method)(4)
        assert len(getattr(Unpacker(wire), method)(5)) == 5


def test_maxlen_is_checked_before_the_length_is_trusted() -> None:
    # A huge declared length must be refused by its bound, not by reading past the end.
    with pytest.raises(XdrError, match="maximum"):
        Unpacker(H("ffffffff")).unpack_opaque(1024)


def test_fixed_opaque_needs_exact_length() -> None:
    with pytest.raises(XdrError):
        packed("pack_fopaque", 4, b"abc")


@pytest.mark.parametrize(
    ("method", "args", "wire"),
    [
        ("unpack_int", (), H("000000")),
        ("unpack_uint", (), b""),
        ("unpack_bool", (), H("00")),
        ("unpack_hyper", (), H("00000000000000")),
        ("unpack_uhyper", (), H("0000")),
        ("unpack_fopaque", (3,), H("616263")),  # padding missing
        ("unpack_fopaque", (8,), H("61626364")),
        ("unpack_opaque", (), H("0000")),  # truncated length
        ("unpack_opaque", (), H("00000005616263646500")),  # truncated padding
        ("unpack_opaque", (), H("0000000861626364")),  # truncated body
        ("unpack_opaque", (), H("ffffffff")),  # 4 GiB declared, unbounded type
        ("unpack_opaque_view", (), H("0000000861626364")),
        ("unpack_string", (), H("00000004616263")),
    ],
)
def test_truncated_input_is_refused(method: str, args: tuple[int, ...], wire: bytes) -> None:
    u = Unpacker(wire)
    with pytest.raises(XdrError):
        getattr(u, method)(*args)


@pytest.mark.parametrize(
    ("method", "args", "wire"),
    [
        ("unpack_fopaque", (1,), H("61000001")),
        ("unpack_fopaque", (3,), H("61626380")),
        ("unpack_opaque", (), H("0000000161ff0000")),
        ("unpack_opaque", (), H("00000002616200ff")),
        ("unpack_opaque_view", (), H("0000000161000100")),
        ("unpack_string", (), H("0000000161002000")),
    ],
)
def test_nonzero_padding_is_refused(method: str, args: tuple[int, ...], wire: bytes) -> None:
    with pytest.raises(XdrError, match="padding"):
        getattr(Unpacker(wire), method)(*args)


@pytest.mark.parametrize("value", [2, 3, 0x100, 0x80000000, 0xFFFFFFFF])
def test_invalid_bool_is_refused(value: int) -> None:
    with pytest.raises(XdrError):
        Unpacker(value.to_bytes(4, "big")).unpack_bool()


@pytest.mark.parametrize(
    "raw",
    [b"\xff", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80", b"abc\x80", b"\xf4\x90\x80\x80"],
)
def test_invalid_utf8_string_is_refused(raw: bytes) -> None:
    # overlong, lone continuation, surrogate half, beyond U+10FFFF: all invalid UTF-8
    wire = packed("pack_opaque", raw)
    with pytest.raises(XdrError, match="UTF-8"):
        Unpacker(wire).unpack_string()
    assert Unpacker(wire).unpack_opaque() == raw


def test_done_refuses_trailing_bytes() -> None:
    u = Unpacker(H("0000000100"))
    assert u.unpack_uint() == 1
    assert u.remaining() == 1
    with pytest.raises(XdrError, match="1 unexpected"):
        u.done()
    u2 = Unpacker(H("00000001"))
    u2.unpack_uint()
    assert u2.remaining() == 0
    u2.done()


def test_failed_read_does_not_move_the_position() -> None:
    u = Unpacker(H("000000"))
    with pytest.raises(XdrError):
        u.unpack_int()
    assert u.pos == 0
    assert u.remaining() == 3


def test_unpacker_starts_at_an_offset_and_accepts_buffer_types() -> None:
    wire = H("ffffffff00000007")
    assert Unpacker(wire, 4).unpack_uint() == 7
    assert Unpacker(bytearray(wire), 4).unpack_uint() == 7
    assert Unpacker(memoryview(wire)).unpack_int() == -1
    view = Unpacker(memoryview(H("0000000261620000"))).unpack_opaque_view()
    assert isinstance(view, memoryview)
    assert view.tobytes() == b"ab"
    assert isinstance(Unpacker(memoryview(H("0000000161000000"))).unpack_opaque(), bytes)


def test_check_count_refuses_counts_that_cannot_fit() -> None:
    u = Unpacker(bytes(16))
    u.check_count(4, None, 4)  # exactly fits
    u.check_count(4, 4, 4)
    u.check_count(0, 0, 4)
    with pytest.raises(XdrError, match="cannot fit"):
        u.check_count(5, None, 4)
    with pytest.raises(XdrError, match="cannot fit"):
        u.check_count(0xFFFFFFFF, None, 4)
    with pytest.raises(XdrError, match="cannot fit"):
        u.check_count(3, None, 8)
    with pytest.raises(XdrError, match="maximum"):
        u.check_count(2, 1, 4)
    u.unpack_hyper()
    with pytest.raises(XdrError, match="cannot fit"):
        u.check_count(3, None, 4)  # only 8 bytes remain now


# ---------------------------------------------------------------- cross-check with xdrlib3

XDRLIB3_CASES: list[tuple[str, str, Any]] = [
    ("int", "int", v) for v in (0, 1, -1, 12345678, 2**31 - 1, -(2**31))
] + [
    ("uint", "uint", v) for v in (0, 7, 2**31, 2**32 - 1)
] + [
    ("hyper", "hyper", v) for v in (0, -2, 2**63 - 1, -(2**63))
] + [
    ("uhyper", "uhyper", v) for v in (0, 2**32, 2**64 - 1)
] + [
    ("bool", "bool", v) for v in (False, True)
]


@pytest.mark.parametrize(("ours", "theirs", "value"), XDRLIB3_CASES)
def test_scalars_match_xdrlib3(ours: str, theirs: str, value: Any) -> None:
    ref = xdrlib3.Packer()
    getattr(ref, f"pack_{theirs}")(value)
    assert packed(f"pack_{ours}", value) == ref.get_buffer()
    assert unpacked(f"unpack_{ours}", ref.get_buffer()) == value
    back = xdrlib3.Unpacker(packed(f"pack_{ours}", value))
    assert getattr(back, f"unpack_{theirs}")() == value


@pytest.mark.parametrize("n", range(0, 10))
def test_opaques_and_strings_match_xdrlib3(n: int) -> None:
    data = bytes(range(65, 65 + n))
    pairs: list[tuple[Callable[[Packer], None], Callable[[Any], None]]] = [
        (lambda p: p.pack_fopaque(n, data), lambda r: r.pack_fopaque(n, data)),
        (lambda p: p.pack_opaque(data), lambda r: r.pack_opaque(data)),
        (lambda p: p.pack_string(data.decode()), lambda r: r.pack_string(data)),
    ]
    for ours, theirs in pairs:
        p, ref = Packer(), xdrlib3.Packer()
        ours(p)
        theirs(ref)
        assert p.get_buffer() == ref.get_buffer()
    ref = xdrlib3.Packer()
    ref.pack_fopaque(n, data)
    ref.pack_opaque(data)
    ref.pack_string(data)
    u = Unpacker(ref.get_buffer())
    assert (u.unpack_fopaque(n), u.unpack_opaque(), u.unpack_string()) == (data, data, data.decode())
    u.done()


def test_arrays_match_xdrlib3() -> None:
    # variable-length array (RFC 4506 §4.13): count then items; fixed array §4.12: items only.
    ref = xdrlib3.Packer()
    ref.pack_array([1, 2, 3], ref.pack_uint)
    ref.pack_farray(2, [-1, 5], ref.pack_int)
    u = Unpacker(ref.get_buffer())
    count = u.unpack_uint()
    u.check_count(count, 16, 4)
    assert [u.unpack_uint() for _ in range(count)] == [1, 2, 3]
    assert [u.unpack_int(), u.unpack_int()] == [-1, 5]
    u.done()


@pytest.mark.parametrize("items", [[], [0], [1, 2, 3], [0xFFFFFFFF] * 16])
def test_uint_arrays_in_one_call_match_xdrlib3(items: list[int]) -> None:
    ref = xdrlib3.Packer()
    ref.pack_array(items, ref.pack_uint)
    assert packed("pack_uint_array", items) == packed("pack_uint_array", items, 16)
    assert packed("pack_uint_array", items) == ref.get_buffer()
    assert unpacked("unpack_uint_array", ref.get_buffer(), 16) == items


def test_uint_arrays_are_bounded_before_anything_is_read() -> None:
    with pytest.raises(XdrError, match="maximum"):
        Packer().pack_uint_array([1, 2, 3], 2)
    with pytest.raises(XdrError, match="maximum"):
        Unpacker(H("00000003" + "00000001" * 3)).unpack_uint_array(2)
    u = Unpacker(H("ffffffff00000001"))
    with pytest.raises(XdrError, match="needs"):  # a count that cannot fit allocates nothing
        u.unpack_uint_array()
    with pytest.raises(XdrError):
        Unpacker(H("0000000200000001000000")).unpack_uint_array()  # truncated item


def _opaque_in_two_steps(u: Unpacker, maxlen: int | None) -> bytes:
    n = u.unpack_uint()
    if maxlen is not None and n > maxlen:
        raise XdrError("exceeds its maximum")
    return u.unpack_fopaque(n)


@given(data=st.binary(max_size=24) | st.lists(st.integers(0, 9), max_size=3).map(
    lambda ns: b"".join(n.to_bytes(4, "big") + bytes([0, 1][: n % 3]) * n for n in ns)),
    maxlen=st.none() | st.integers(0, 8))
def test_opaque_in_one_call_matches_length_then_bytes(data: bytes, maxlen: int | None) -> None:
    """`unpack_opaque` reads as `unpack_uint` then `unpack_fopaque` would: the same value, or
    XdrError at the same position; what it accepts leaves both at the same offset."""
    ours, ref = Unpacker(data), Unpacker(data)
    try:
        expected: bytes | None = _opaque_in_two_steps(ref, maxlen)
    except XdrError:
        expected = None
    if expected is None:
        with pytest.raises(XdrError):
            ours.unpack_opaque(maxlen)
    else:
        assert ours.unpack_opaque(maxlen) == expected
    assert ours.pos == ref.pos
