"""Property tests of the cache channel lines: every decoder raises only LineError on any
bytes, and what the encoders write decodes back to the same value."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pynfsd.cache import lines as L
from pynfsd.cache.qword import LineError, text

DECODERS: list[Callable[[bytes], object]] = [
    L.decode_ip_request, L.decode_ip_reply, L.decode_export_request, L.decode_export_reply,
    L.decode_fh_request, L.decode_fh_reply, L.decode_gid_request, L.decode_gid_reply,
]
# Pieces that matter to the grammar, so that random lines often get deep into it.
PIECES = st.sampled_from([
    " ", "  ", "\\x", "\\x00", "\\x0", "\\040", "\\134", "\\", "\\477", "/", "/srv/a", "*",
    "127.0.0.1", "::1", "nfsd", "0", "1", "-1", "3", "9252", "65534", "4294967295",
    "2147483647", "99999999999999999999999", "secinfo", "uuid", "fsloc", "xprtsec", "1 1 9252",
    "\\x000102030405060708090a0b0c0d0e0f", "\t", "\x00", "é", "\udcff",
])
GRAMMARISH = st.lists(PIECES, max_size=40).map(
    lambda parts: "".join(parts).encode("utf-8", "surrogateescape") + b"\n")


def decode_all(data: bytes) -> None:
    for decode in DECODERS:
        try:
            decode(data)
        except LineError as e:
            assert str(e)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    decode_all(data)
    decode_all(data + b"\n")


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@given(GRAMMARISH)
def test_grammar_shaped_lines(data: bytes) -> None:
    decode_all(data)


# ------------------------------------------------------------ round trips
def texts(prefix: bytes = b"", max_size: int = 40) -> st.SearchStrategy[str]:
    body = st.binary(min_size=0 if prefix else 1, max_size=max_size)
    return body.filter(lambda b: b"\x00" not in b).map(lambda b: text(prefix + b))


U32 = st.integers(0, (1 << 32) - 1)
EXPIRY = st.integers(0, (1 << 63) - 1)
IPS = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
IP_KEYS = st.builds(L.ip_key, IPS, texts(max_size=7))
EXPORT_KEYS = st.builds(L.ExportKey, texts(), texts(b"/"))


@st.composite
def export_infos(draw: st.DrawFn) -> L.ExportInfo:
    flags = draw(st.integers(0, L.NFSEXP_ALLFLAGS)) & L.NFSEXP_ALLFLAGS
    sec_flags = st.integers(0, L.NFSEXP_SECINFO_FLAGS).map(lambda d: flags ^ d)
    secinfo = draw(st.lists(st.builds(L.SecFlavor, U32, sec_flags), max_size=L.MAX_SECINFO_LIST))
    return L.ExportInfo(
        flags, draw(st.integers(0, (1 << 32) - 2)), draw(st.integers(0, (1 << 32) - 2)),
        draw(st.integers(-(1 << 31), (1 << 31) - 1)),
        draw(st.none() | st.binary(min_size=16, max_size=16)), tuple(secinfo),
        tuple(draw(st.lists(st.tuples(texts(), texts()), max_size=3))), draw(st.booleans()),
        tuple(draw(st.lists(st.integers(0, L.NFSEXP_XPRTSEC_MTLS), max_size=3))),
        draw(st.booleans()))


@st.composite
def fh_keys(draw: st.DrawFn) -> L.FhKey:
    fsidtype = draw(st.sampled_from(sorted(L.FSID_LENGTHS)))
    n = L.FSID_LENGTHS[fsidtype]
    return L.FhKey(draw(texts()), fsidtype, draw(st.binary(min_size=n, max_size=n)))


@given(IP_KEYS, EXPIRY, st.none() | texts())
def test_ip_round_trip(key: L.IpKey, expiry: int, domain: str | None) -> None:
    assert L.decode_ip_request(L.encode_ip_request(key)) == key
    r = L.IpReply(key, expiry, domain)
    assert L.decode_ip_reply(L.encode_ip_reply(r)) == r


@settings(max_examples=300)
@given(EXPORT_KEYS, EXPIRY, st.none() | export_infos())
def test_export_round_trip(key: L.ExportKey, expiry: int, info: L.ExportInfo | None) -> None:
    assert L.decode_export_request(L.encode_export_request(key)) == key
    r = L.ExportReply(key, expiry, info)
    assert L.decode_export_reply(L.encode_export_reply(r)) == r
    L.content_export(r, True)


@given(fh_keys(), EXPIRY, st.none() | texts(b"/"))
def test_fh_round_trip(key: L.FhKey, expiry: int, path: str | None) -> None:
    assert L.decode_fh_request(L.encode_fh_request(key)) == key
    r = L.FhReply(key, expiry, path)
    assert L.decode_fh_reply(L.encode_fh_reply(r)) == r


@given(U32, EXPIRY, st.none() | st.lists(U32, max_size=200).map(tuple))
def test_gid_round_trip(uid: int, expiry: int, gids: tuple[int, ...] | None) -> None:
    assert L.decode_gid_request(L.encode_gid_request(uid)) == uid
    r = L.GidReply(uid, expiry, gids)
    assert L.decode_gid_reply(L.encode_gid_reply(r)) == r


def test_ip_addresses_are_normalized() -> None:
    assert str(ipaddress.ip_address("0:0::1")) == L.decode_ip_request(b"nfsd 0:0::1\n").ip
