"""RFC 4121 tokens and `Krb5Context` without a KDC: tokens captured from MIT krb5 (known
answers), round trips, rotation, filler, flags, sequence numbers, expiry, bad input."""

from __future__ import annotations

import itertools
import os
import struct
import sys
from types import SimpleNamespace

import pytest

from pynfsd.gss import BadMic, ContextExpired, DefectiveToken, GssError
from pynfsd.gss import rfc4121 as cfx
from pynfsd.gss.lucid import Krb5Context
from tests.threads import run_in_threads

# Captured from MIT krb5 1.20 (Debian): an initiator's tokens under the acceptor subkey
# (flags 0x04, or 0x06 sealed); Wrap tokens from gss_wrap_iov without a trailer, so rotated
# (RRC 28 / 40 sealed, RRC = EC unsealed). (enctype, subkey, session key, MIC of b"hello",
# sealed and unsealed Wrap of b"captured message")
CAPTURED = [
    (
        18,
        "f096896ff91935da2531225b317d0c5e9ffb77fc6634d71fe61f917fb9541a4e",
        "c3dc8d08dc4b0e54b146d6e0d7695b59310fd7779e0bc4f5ac3866bb2ff82889",
        "040404ffffffffff0000000015f407a2a191dcc53e0fc43af4b40872",
        "050406ff0000001c0000000015f407a3244c3d551b69ebecbe48ee965fd1c79c81e000d7ab0aa68a"
        "c1360fb7a27dcd9f2f8396c6f588d04a9449259906763c2f1931bff757be8a9aaf81ee82",
        "050404ff000c000c0000000015f407a48b260a7057e54364c9dc5a8c6361707475726564206d657373616765",
    ),
    (
        20,
        "43036ef459b82a4e0fcb9383540d9a06981c06f261aeed90f81babfdd10e3e4e",
        "19b8f2af5d8184afdf21b3846b376e0d93b8c0e6be248818edeff7acfb1534e5",
        "040404ffffffffff000000000d3394334cffacbfab37c08d6519c23c5a9080262064237ded7815ab",
        "050406ff00000028000000000d339434d041fb42518f6dffb9e4ccd582fb5403e83bb1930c24baab"
        "33fdc025384a5639812871b7719546c10f7e2c974d1dd62c5a4fa9ef7c0bb9865d7c8f067cba7e2e"
        "2e054c3524e572b2",
        "050404ff00180018000000000d339435c4129ed366e1106206ef855e88060d6a3f1a7085aacfbf8a"
        "6361707475726564206d657373616765",
    ),
]


@pytest.mark.parametrize(("enctype", "subkey", "key", "mic", "sealed", "signed"), CAPTURED)
def test_tokens_captured_from_mit(
    enctype: int, subkey: str, key: str, mic: str, sealed: str, signed: str
) -> None:
    acceptor = Krb5Context.from_keys(
        cfx.CfxKeys(False, enctype, bytes.fromhex(key), acceptor_subkey=bytes.fromhex(subkey))
    )
    assert acceptor.verify_mic_seq(b"hello", bytes.fromhex(mic)) > 0
    assert acceptor.unwrap(bytes.fromhex(sealed)) == (b"captured message", True)
    assert acceptor.unwrap(bytes.fromhex(signed)) == (b"captured message", False)
    with pytest.raises(BadMic):
        acceptor.verify_mic(b"hellO", bytes.fromhex(mic))


def key_size(enctype: int) -> int:
    return 16 if enctype in (17, 19) else 32


def peers(enctype: int, subkey: bool = True, **kw: object) -> tuple[Krb5Context, Krb5Context]:
    key, sub = os.urandom(key_size(enctype)), os.urandom(key_size(enctype))
    made = [
        Krb5Context.from_keys(
            cfx.CfxKeys(initiator, enctype, key, acceptor_subkey=sub if subkey else None),
            **kw,  # type: ignore[arg-type]
        )
        for initiator in (True, False)
    ]
    return made[0], made[1]


@pytest.mark.parametrize("subkey", [True, False], ids=["subkey", "session-key"])
@pytest.mark.parametrize("enctype", [17, 18, 19, 20])
def test_round_trips(enctype: int, subkey: bool) -> None:
    init, acc = peers(enctype, subkey)
    for size in (0, 1, 15, 16, 17, 31, 33, 1000, 70000):
        msg = os.urandom(size)
        for a, b in ((init, acc), (acc, init)):
            b.verify_mic(msg, a.get_mic(msg))
            for conf in (True, False):
                assert b.unwrap(a.wrap(msg, conf)) == (msg, conf)
    flags = init.wrap(b"x")[2]
    assert flags == (cfx.FLAG_SEALED | (cfx.FLAG_ACCEPTOR_SUBKEY if subkey else 0))
    assert acc.get_mic(b"x")[2] == cfx.FLAG_SENT_BY_ACCEPTOR | (
        cfx.FLAG_ACCEPTOR_SUBKEY if subkey else 0
    )


def rotate(token: bytes, rrc: int) -> bytes:
    """Rotate a token's data right by rrc (RFC 4121 §4.2.5) and record it in the header."""
    data = token[16:]
    r = rrc % len(data)
    return token[:6] + struct.pack(">H", rrc) + token[8:16] + data[-r:] + data[:-r]


@pytest.mark.parametrize("enctype", [17, 18, 19, 20])
def test_any_rotation_is_undone(enctype: int) -> None:
    init, acc = peers(enctype)
    for size in (0, 5, 16, 100):
        msg = os.urandom(size)
        for conf in (True, False):
            token = bytes(init.wrap(msg, conf))
            for rrc in (1, 12, 16, 28, 40, len(token) - 17, len(token) - 16, 65535):
                assert acc.unwrap(rotate(token, rrc)) == (msg, conf), (size, conf, rrc)


def sealed_token(ctx: Krb5Context, msg: bytes, ec: int, inner_ec: int | None = None) -> bytes:
    """A sealed Wrap token with `ec` filler octets, built by hand with the sender's keys."""
    seal = ctx._keys.send.seal
    flags = ctx._keys.send_flags | cfx.FLAG_SEALED
    header = struct.pack(">2sBBHHQ", cfx.TOK_WRAP, flags, 0xFF, ec, 0, 7)
    inner = struct.pack(
        ">2sBBHHQ", cfx.TOK_WRAP, flags, 0xFF, ec if inner_ec is None else inner_ec, 0, 7
    )
    return bytes(seal.seal(header, msg + b"\xaa" * ec, inner))


def test_filler_is_removed_and_headers_compared() -> None:
    init, acc = peers(18)
    for ec in (0, 1, 16, 300):
        assert acc.unwrap(sealed_token(init, b"payload", ec)) == (b"payload", True)
    with pytest.raises(DefectiveToken):  # EC in the clear differs from the encrypted copy
        acc.unwrap(sealed_token(init, b"payload", 3, inner_ec=4))
    with pytest.raises(DefectiveToken):  # EC claims more filler than there is data
        tok = bytearray(sealed_token(init, b"payload", 0))
        tok[4:6] = struct.pack(">H", 100)
        acc.unwrap(bytes(tok))


def test_unsealed_ec_must_be_the_checksum_length() -> None:
    init, acc = peers(20)
    tok = bytearray(init.wrap(b"payload", conf=False))
    assert struct.unpack(">H", tok[4:6])[0] == 24
    tok[4:6] = struct.pack(">H", 12)
    with pytest.raises(DefectiveToken):
        acc.unwrap(bytes(tok))


def test_bad_tokens() -> None:
    init, acc = peers(17)
    mic, wrap = init.get_mic(b"m"), bytes(init.wrap(b"m"))
    for bad in (b"", mic[:15], mic[:-1], mic + b"x", wrap):
        with pytest.raises(DefectiveToken):
            acc.verify_mic(b"m", bad)
    for bad in (b"", wrap[:15], mic, b"\x05\x04\x06\xfe" + wrap[4:]):
        with pytest.raises(DefectiveToken):
            acc.unwrap(bad)
    with pytest.raises(DefectiveToken):  # Sealed flag on a MIC token
        acc.verify_mic(b"m", mic[:2] + bytes([mic[2] | cfx.FLAG_SEALED]) + mic[3:])
    with pytest.raises(DefectiveToken):  # reflection: our own token
        init.unwrap(wrap)
    for i in range(len(wrap)):
        flipped = bytearray(wrap)
        flipped[i] ^= 0x80
        with pytest.raises(GssError):
            acc.unwrap(bytes(flipped))


def test_acceptor_subkey_flag_without_a_subkey() -> None:
    init, acc = peers(18, subkey=False)
    mic = bytearray(init.get_mic(b"m"))
    mic[2] |= cfx.FLAG_ACCEPTOR_SUBKEY
    with pytest.raises(DefectiveToken):
        acc.verify_mic(b"m", bytes(mic))


def test_sequence_numbers_are_64_bit_and_count_up() -> None:
    init, acc = peers(19, send_seq=(1 << 64) - 2)
    seqs = [acc.verify_mic_seq(b"a", init.get_mic(b"a")) for _ in range(2)]
    seqs.append(acc.unwrap_seq(init.wrap(b"b"))[2])
    assert seqs == [(1 << 64) - 2, (1 << 64) - 1, 0]


def test_expiry_uses_the_injected_clock() -> None:
    now = [1000.0]
    init, acc = peers(18, endtime=1500.0, clock=lambda: now[0])
    acc.verify_mic(b"a", init.get_mic(b"a"))
    now[0] = 1500.0
    assert acc.expired()
    with pytest.raises(ContextExpired):
        acc.verify_mic(b"a", init.get_mic(b"a"))
    with pytest.raises(ContextExpired):
        acc.unwrap(init.wrap(b"a"))


def test_confounder_comes_from_the_injected_source() -> None:
    calls: list[int] = []

    def source(n: int) -> bytes:
        calls.append(n)
        return bytes(n)

    init, acc = peers(18, random=source)
    assert acc.unwrap(init.wrap(b"sealed")) == (b"sealed", True)
    assert acc.unwrap(init.wrap(b"signed", conf=False)) == (b"signed", False)
    assert calls == [16]


def lucid(**kw: object) -> SimpleNamespace:
    fields: dict[str, object] = dict(
        version=1,
        protocol=1,
        is_initiator=0,
        endtime=2_000_000_000,
        send_seq=5,
        recv_seq=9,
        cfx_kd=SimpleNamespace(
            ctx_key_type=18,
            ctx_key=bytes(32),
            acceptor_subkey_type=20,
            acceptor_subkey=bytes(range(32)),
        ),
    )
    fields.update(kw)
    return SimpleNamespace(**fields)


def test_from_lucid() -> None:
    ctx = Krb5Context(lucid())
    assert (ctx.initiator, ctx.enctype, ctx.recv_seq, ctx.endtime) == (False, 20, 9, 2e9)
    assert struct.unpack(">Q", ctx.get_mic(b"x")[8:16])[0] == 5
    with pytest.raises(ValueError):
        Krb5Context(lucid(protocol=0))
    with pytest.raises(ValueError):
        Krb5Context(lucid(version=2))
    bad_kd = SimpleNamespace(
        ctx_key_type=23, ctx_key=bytes(16), acceptor_subkey_type=0, acceptor_subkey=None
    )
    with pytest.raises(ValueError):
        Krb5Context(lucid(cfx_kd=bad_kd))


def test_the_fast_paths_keep_every_check() -> None:
    """Once a context has seen a good token, equal headers skip the header parse: a token
    whose encrypted header copy differs, whose data is shorter than its header copy, or
    which comes as a view or bytearray, is still refused or read as before."""
    init, acc = peers(18)
    msg = os.urandom(100)
    for _ in range(2):  # cold, then with the first 8 octets already checked
        token = bytes(init.wrap(msg))
        assert acc.unwrap(token) == (msg, True)
        assert acc.unwrap(memoryview(bytearray(token))) == (msg, True)
        mic = init.get_mic(msg)
        acc.verify_mic(msg, mic)
        acc.verify_mic(memoryview(bytearray(msg)), memoryview(bytearray(mic)))
        acc.verify_mic(msg, bytearray(mic))
        with pytest.raises(BadMic):
            acc.verify_mic(msg[1:], mic)
    seal = init._keys.send.seal
    header = token[:16]
    other = header[:8] + struct.pack(">Q", 99)  # the same clear header, another copy
    with pytest.raises(DefectiveToken):
        acc.unwrap(bytes(seal.seal(header, msg, other)))
    with pytest.raises(DefectiveToken):  # msg | header copy shorter than a header
        acc.unwrap(bytes(seal.seal(header, b"", header[:10])))
    with pytest.raises(BadMic):
        acc.unwrap(token[:-1] + bytes([token[-1] ^ 1]))
    assert acc.verify_mic_seq(msg, init.get_mic(msg)) == struct.unpack(">Q", header[8:])[0] + 2


def test_sequence_numbers_run_on_past_machine_integers_and_wrap_at_64_bits() -> None:
    big = sys.maxsize
    assert list(itertools.islice(cfx.sequence_numbers(big - 1), 3)) == [big - 1, big, big + 1]
    assert list(itertools.islice(cfx.sequence_numbers((1 << 64) - 1), 3)) == [(1 << 64) - 1, 0, 1]
    assert list(itertools.islice(cfx.sequence_numbers(1 << 64), 2)) == [0, 1]


def test_one_context_used_by_several_threads_never_repeats_a_sequence_number() -> None:
    init, acc = peers(18, send_seq=(1 << 64) - 1000)
    seqs: list[int] = []

    def work() -> None:
        mine = []
        for i in range(300):
            msg = b"m%d" % i
            mine.append(acc.verify_mic_seq(msg, init.get_mic(msg)))
            mine.append(acc.unwrap_seq(init.wrap(msg))[2])
        seqs.extend(mine)

    run_in_threads(work)
    expected = [*range((1 << 64) - 1000, 1 << 64), *range(4 * 600 - 1000)]
    assert sorted(seqs) == sorted(expected)
