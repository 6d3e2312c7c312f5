"""Interop of pynfsd's RFC 4121 tokens (`pynfsd.gss.lucid.Krb5Context`) with MIT krb5.

Contexts are established between MIT's initiator and MIT's acceptor (python-gssapi) against
the throwaway KDC of `krb5_realm`, one per enctype; then one side is exported as a lucid
context and driven by pynfsd while the other stays MIT's. Both roles, both directions, MIC
and Wrap (sealed and not, and MIT's rotated IOV tokens), sizes 0 B to 1 MiB.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gssapi.raw as gr
import pytest
from gssapi.raw import IOV
from gssapi.raw import IOVBufferType as IOVType
from gssapi.raw import RequirementFlag as Flag
from gssapi.raw.ext_krb5 import krb5_export_lucid_sec_context

from pynfsd.gss import BadMic, DefectiveToken, GssError
from pynfsd.gss.lucid import Krb5Context
from tests.interop.conftest import Krb5Realm, establish_mit_pair

ENCTYPES = [17, 18, 19, 20]
ROLES = ["acceptor", "initiator"]  # pynfsd's side
SIZES = [0, 1, 15, 16, 17, 1000, 65536, 1 << 20]
# No replay or sequence detection on MIT's side: tests drop and tamper with tokens. The
# sequence test below turns both on.
FLAGS = [Flag.mutual_authentication, Flag.integrity, Flag.confidentiality]
SEQ_FLAGS = [*FLAGS, Flag.replay_detection, Flag.out_of_sequence_detection]


@dataclass
class Pair:
    mit: Any  # python-gssapi SecurityContext (raw) of the other side
    ours: Krb5Context
    lifetime: int  # seconds left on the context when it was exported
    exported_at: float


def make_pair(realm: Krb5Realm, enctype: int, role: str, flags: list[Flag] = FLAGS) -> Pair:
    initiator, acceptor = establish_mit_pair(realm.service, enctype, flags)
    mine, theirs = (acceptor, initiator) if role == "acceptor" else (initiator, acceptor)
    lifetime = gr.inquire_context(mine, lifetime=True).lifetime
    assert lifetime is not None
    now = time.time()
    ours = Krb5Context(krb5_export_lucid_sec_context(mine, 1))
    assert ours.enctype == enctype and ours.initiator == (role == "initiator")
    return Pair(theirs, ours, lifetime, now)


@pytest.fixture(scope="module")
def pairs(krb5_realm: Krb5Realm) -> Iterator[dict[tuple[int, str], Pair]]:
    yield {(e, r): make_pair(krb5_realm, e, r) for e in ENCTYPES for r in ROLES}


def mit_wrap(ctx: Any, msg: bytes, conf: bool, rotated: bool) -> bytes:
    """MIT's gss_wrap (RRC 0), or gss_wrap_iov without a trailer buffer (RRC > 0)."""
    if not rotated:
        res = gr.wrap(ctx, msg, conf)
        assert res.encrypted == conf
        return bytes(res.message)
    iov = IOV((IOVType.header, True, None), (IOVType.data, False, msg), std_layout=False)
    gr.wrap_iov(ctx, iov, conf)
    token = bytes(iov[0].value or b"") + bytes(iov[1].value or b"")
    assert int.from_bytes(token[6:8]) > 0  # the rotated layout really is exercised
    return token


def data(size: int) -> bytes:
    return os.urandom(size)


@pytest.mark.parametrize("conf", [True, False], ids=["sealed", "signed"])
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("enctype", ENCTYPES)
def test_mit_wrap_our_unwrap(
    pairs: dict[tuple[int, str], Pair], enctype: int, role: str, conf: bool
) -> None:
    pair = pairs[enctype, role]
    for size in SIZES:
        for rotated in (False, True):
            msg = data(size)
            out, sealed = pair.ours.unwrap(mit_wrap(pair.mit, msg, conf, rotated))
            assert (out == msg, sealed) == (True, conf), (size, rotated)


@pytest.mark.parametrize("conf", [True, False], ids=["sealed", "signed"])
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("enctype", ENCTYPES)
def test_our_wrap_mit_unwrap(
    pairs: dict[tuple[int, str], Pair], enctype: int, role: str, conf: bool
) -> None:
    pair = pairs[enctype, role]
    for size in SIZES:
        msg = data(size)
        token = pair.ours.wrap(msg, conf)
        res = gr.unwrap(pair.mit, bytes(token))
        assert (res.message == msg, res.encrypted) == (True, conf), size


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("enctype", ENCTYPES)
def test_mics_both_ways(pairs: dict[tuple[int, str], Pair], enctype: int, role: str) -> None:
    pair = pairs[enctype, role]
    for size in SIZES:
        msg = data(size)
        pair.ours.verify_mic(msg, gr.get_mic(pair.mit, msg))
        gr.verify_mic(pair.mit, msg, pair.ours.get_mic(msg))
        with pytest.raises(BadMic):
            pair.ours.verify_mic(msg + b"!", gr.get_mic(pair.mit, msg))
        with pytest.raises(gr.GSSError):
            gr.verify_mic(pair.mit, msg + b"!", pair.ours.get_mic(msg))


def flipped(token: bytes, index: int) -> bytes:
    bad = bytearray(token)
    bad[index] ^= 0x01
    return bytes(bad)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("enctype", ENCTYPES)
def test_tampered_mit_tokens_are_rejected(
    pairs: dict[tuple[int, str], Pair], enctype: int, role: str
) -> None:
    pair = pairs[enctype, role]
    msg = data(100)
    mic = bytes(gr.get_mic(pair.mit, msg))
    for i in (0, 2, 3, 8, 15, 16, len(mic) - 1):
        with pytest.raises(GssError):
            pair.ours.verify_mic(msg, flipped(mic, i))
    for conf in (True, False):
        for rotated in (False, True):
            token = mit_wrap(pair.mit, msg, conf, rotated)
            for i in (0, 2, 4, 7, 9, 15, 16, 40, len(token) - 1):
                with pytest.raises(GssError):
                    pair.ours.unwrap(flipped(token, i))
            with pytest.raises(GssError):
                pair.ours.unwrap(token[:-1])
            with pytest.raises(DefectiveToken):
                pair.ours.verify_mic(msg, token)
    with pytest.raises(DefectiveToken):  # a truncated MIC
        pair.ours.verify_mic(msg, mic[:20])


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("enctype", [18, 20])
def test_our_tampered_tokens_are_rejected_by_mit(
    pairs: dict[tuple[int, str], Pair], enctype: int, role: str
) -> None:
    pair = pairs[enctype, role]
    msg = data(100)
    for conf in (True, False):
        token = bytes(pair.ours.wrap(msg, conf))
        for i in (2, 9, 16, len(token) - 1):
            with pytest.raises(gr.GSSError):
                gr.unwrap(pair.mit, flipped(token, i))
    with pytest.raises(DefectiveToken):  # our own token reflected back at us
        pair.ours.unwrap(pair.ours.wrap(msg))
    with pytest.raises(DefectiveToken):
        pair.ours.verify_mic(msg, pair.ours.get_mic(msg))


@pytest.mark.parametrize("role", ROLES)
def test_sequence_numbers_continue_the_exported_context(krb5_realm: Krb5Realm, role: str) -> None:
    """With MIT's replay and sequence detection on, our numbering must be exactly right."""
    pair = make_pair(krb5_realm, 20, role, SEQ_FLAGS)
    tokens = [pair.ours.get_mic(b"m%d" % i) for i in range(3)]
    for i, token in enumerate(tokens):
        gr.verify_mic(pair.mit, b"m%d" % i, token)
    with pytest.raises(gr.GSSError):  # a replay
        gr.verify_mic(pair.mit, b"m0", tokens[0])
    gr.unwrap(pair.mit, bytes(pair.ours.wrap(b"after the MICs")))
    first = pair.ours.verify_mic_seq(b"x", gr.get_mic(pair.mit, b"x"))
    _, _, second = pair.ours.unwrap_seq(gr.wrap(pair.mit, b"y", True).message)
    assert (first, second) == (pair.ours.recv_seq, pair.ours.recv_seq + 1)


def test_endtime_is_the_ticket_end_time(pairs: dict[tuple[int, str], Pair]) -> None:
    for (_, role), pair in pairs.items():
        # MIT's acceptor reports the ticket's lifetime plus the allowed clock skew (300 s).
        skew = 300 if role == "acceptor" else 0
        assert abs(pair.ours.endtime - (pair.exported_at + pair.lifetime - skew)) <= 2
        assert not pair.ours.expired()
