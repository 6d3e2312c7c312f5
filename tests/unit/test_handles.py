"""The handle codec's MAC is HMAC-SHA256 (RFC 2104) spelled out over precomputed states:
it must equal ``hmac`` for every key length (a key longer than the SHA-256 block is hashed
first), so handles issued before stay valid."""

from __future__ import annotations

import errno
import hmac

import pytest

from pynfsd.fs.handles import MAC_LEN, HandleCodec

EXPORT = b"\x01\x00\x00\x00" + b"root-handle"
PREFIX = b"pynfsd-fh-v1\0" + EXPORT


@pytest.mark.parametrize("key_len", [0, 1, 32, 63, 64, 65, 200])
def test_mac_is_hmac_sha256(key_len: int) -> None:
    key = bytes(range(key_len % 256))[:key_len] + b"k" * max(0, key_len - 256)
    codec = HandleCodec(key, EXPORT)
    for body in (b"", b"x", bytes(range(40)), b"y" * 200):
        assert codec.mac(body) == hmac.digest(key, PREFIX + body, "sha256")[:MAC_LEN]


def test_round_trip_and_forgery() -> None:
    codec = HandleCodec(b"secret" * 6, EXPORT)
    h = codec.encode(1, b"\x0c\x00\x00\x00\x2a\x00\x00\x00")
    assert codec.decode(h) == (1, b"\x0c\x00\x00\x00\x2a\x00\x00\x00")
    for bad in (h[:-1] + bytes([h[-1] ^ 1]), HandleCodec(b"other", EXPORT).encode(1, b"ab")):
        with pytest.raises(OSError) as e:
            codec.decode(bad)
        assert e.value.errno == errno.ESTALE
