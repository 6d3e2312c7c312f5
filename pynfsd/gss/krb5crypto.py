"""Kerberos 5 encryption and checksum profiles for the AES enctypes.

* RFC 3961 §5 "simplified profile": n-fold, DR/DK key derivation, encrypt = AES-CTS over
  confounder|plaintext followed by a truncated HMAC-SHA1 of the plaintext (MAC-then-encrypt);
  with RFC 3962 this gives aes128/aes256-cts-hmac-sha1-96 (enctypes 17 and 18).
* RFC 8009: aes128-cts-hmac-sha256-128 and aes256-cts-hmac-sha384-192 (enctypes 19 and 20):
  KDF-HMAC-SHA2 key derivation, and an HMAC over IV|ciphertext (encrypt-then-MAC).

Theory of operation (the hot path): a `UsageKey` holds the derived Kc, Ke and Ki of one base
key and one key usage, with pre-keyed OpenSSL objects that are reused across messages:
building an AES context costs more than encrypting a small message. AES-CTS (RFC 3962 §5:
CBC with the last two blocks swapped and the last one truncated, also when it is full) runs
on a long-lived CBC context: CBC chaining state is only the previous ciphertext block, so
XOR-ing that block into the first input block (encryption) or the first output block
(decryption) turns it into a fresh context with the all-zero IV. Contexts sit in a small
pool, one per concurrent caller, so threads never share one. Messages are fed as a list of
buffers (no joining) and the output is written once into the buffer that is returned.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

Buffer = bytes | bytearray | memoryview

AES128_CTS_HMAC_SHA1_96 = 17
AES256_CTS_HMAC_SHA1_96 = 18
AES128_CTS_HMAC_SHA256_128 = 19
AES256_CTS_HMAC_SHA384_192 = 20

# RFC 3961 §3 key-usage "well-known constant" suffixes.
KC = 0x99  # checksum key
KE = 0xAA  # encryption key
KI = 0x55  # integrity key

BLOCK = 16
_ZERO_BLOCK = bytes(BLOCK)


class CryptoError(Exception):
    """Integrity check failed, or the ciphertext is malformed."""


@dataclass(frozen=True, slots=True)
class Profile:
    """The parameters of one enctype."""

    enctype: int
    name: str
    key_size: int  # bytes
    hash_name: str
    mac_size: int  # h: truncated HMAC length, bytes
    etm: bool  # RFC 8009 encrypt-then-MAC (HMAC over IV|C); else RFC 3961 MAC of plaintext
    kc_size: int
    ke_size: int
    ki_size: int
    default_iterations: int


PROFILES: dict[int, Profile] = {
    p.enctype: p
    for p in (
        # RFC 3962 §6: h = 96 bits; keys are as long as the protocol key.
        Profile(17, "aes128-cts-hmac-sha1-96", 16, "sha1", 12, False, 16, 16, 16, 4096),
        Profile(18, "aes256-cts-hmac-sha1-96", 32, "sha1", 12, False, 32, 32, 32, 4096),
        # RFC 8009 §5: Kc and Ki are h bits long, Ke is the AES key length.
        Profile(19, "aes128-cts-hmac-sha256-128", 16, "sha256", 16, True, 16, 16, 16, 32768),
        Profile(20, "aes256-cts-hmac-sha384-192", 32, "sha384", 24, True, 24, 32, 24, 32768),
    )
}


def profile(enctype: int) -> Profile:
    try:
        return PROFILES[enctype]
    except KeyError:
        raise ValueError(f"unsupported Kerberos enctype {enctype}") from None


def _xor16(a: Buffer, b: Buffer) -> bytes:
    return (int.from_bytes(a) ^ int.from_bytes(b)).to_bytes(BLOCK)


def nfold(data: bytes, nbytes: int) -> bytes:
    """RFC 3961 §5.1 n-fold: replicate with 13-bit right rotations, ones'-complement sum."""
    inbits, outbits = len(data) * 8, nbytes * 8
    lcm = inbits * outbits // math.gcd(inbits, outbits)
    value, inmask = int.from_bytes(data), (1 << inbits) - 1
    stream = 0
    for i in range(lcm // inbits):
        rot = (13 * i) % inbits
        stream = (stream << inbits) | (((value >> rot) | (value << (inbits - rot))) & inmask)
    outmask, total = (1 << outbits) - 1, 0
    while stream:
        total += stream & outmask
        stream >>= outbits
    while total >> outbits:  # end-around carry
        total = (total & outmask) + (total >> outbits)
    return total.to_bytes(nbytes)


def _aes_block(key: bytes, block: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def dk(base_key: bytes, constant: bytes, nbytes: int) -> bytes:
    """RFC 3961 §5.1 DK = random-to-key(DR(key, constant)); RFC 3962: random-to-key is identity."""
    block = constant if len(constant) == BLOCK else nfold(constant, BLOCK)
    out = b""
    while len(out) < nbytes:  # K1 = E(key, n-fold(constant)), K(i+1) = E(key, Ki)
        block = _aes_block(base_key, block)
        out += block
    return out[:nbytes]


def kdf_hmac_sha2(hash_name: str, key: bytes, label: bytes, nbits: int) -> bytes:
    """RFC 8009 §3 KDF-HMAC-SHA2(key, label, k) = k-truncate(HMAC(key, 1 | label | 0 | k))."""
    msg = b"\x00\x00\x00\x01" + label + b"\x00" + nbits.to_bytes(4)
    return hmac.digest(key, msg, hash_name)[: nbits // 8]


def derive_key(enctype: int, base_key: bytes, usage: int, kind: int) -> bytes:
    """Kc, Ke or Ki (kind = KC, KE or KI) of `base_key` for a key usage number."""
    prof = profile(enctype)
    if len(base_key) != prof.key_size:
        raise ValueError(f"{prof.name} keys are {prof.key_size} bytes, not {len(base_key)}")
    label = usage.to_bytes(4) + bytes([kind])
    size = {KC: prof.kc_size, KE: prof.ke_size, KI: prof.ki_size}[kind]
    if prof.etm:
        return kdf_hmac_sha2(prof.hash_name, base_key, label, size * 8)
    return dk(base_key, label, size)


def string_to_key(
    enctype: int, password: bytes, salt: bytes, iterations: int | None = None
) -> bytes:
    """RFC 3962 §4 and RFC 8009 §4 string-to-key (PBKDF2, then derivation with "kerberos")."""
    prof = profile(enctype)
    count = prof.default_iterations if iterations is None else iterations
    if prof.etm:
        saltp = prof.name.encode() + b"\x00" + salt
        tkey = hashlib.pbkdf2_hmac(prof.hash_name, password, saltp, count, prof.key_size)
        return kdf_hmac_sha2(prof.hash_name, tkey, b"kerberos", prof.key_size * 8)
    tkey = hashlib.pbkdf2_hmac("sha1", password, salt, count, prof.key_size)
    return dk(tkey, b"kerberos", prof.key_size)


def cts_encrypt(key: bytes, plaintext: bytes) -> bytes:
    """AES-CTS with the all-zero IV (RFC 3962 §5), one-shot; the hot path uses `UsageKey`."""
    if len(plaintext) < BLOCK:
        raise ValueError("AES-CTS needs at least one block")
    m = -(-len(plaintext) // BLOCK)
    padded = plaintext + bytes(m * BLOCK - len(plaintext))
    enc = Cipher(algorithms.AES(key), modes.CBC(_ZERO_BLOCK)).encryptor()
    out = enc.update(padded) + enc.finalize()
    if m == 1:
        return out
    cut = (m - 2) * BLOCK
    return out[:cut] + out[cut + BLOCK :] + out[cut : cut + BLOCK][: len(plaintext) - cut - BLOCK]


def cts_decrypt(key: bytes, ciphertext: bytes) -> bytes:
    """Inverse of `cts_encrypt`."""
    n = len(ciphertext)
    if n < BLOCK:
        raise ValueError("AES-CTS needs at least one block")
    m = -(-n // BLOCK)
    ecb = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    if m == 1:
        return ecb.update(ciphertext)
    cut = (m - 2) * BLOCK
    last = ciphertext[cut + BLOCK :]
    x = ecb.update(ciphertext[cut : cut + BLOCK])  # = (P_m | 0) xor C_(m-1)
    prev = last + x[len(last) :]
    cbc = Cipher(algorithms.AES(key), modes.CBC(_ZERO_BLOCK)).decryptor()
    head = cbc.update(ciphertext[:cut] + prev)
    return head + bytes(a ^ b for a, b in zip(x[: len(last)], last, strict=True))


class _ChainPool:
    """Long-lived CBC contexts for one key, each with the last ciphertext block it chained on.

    A context is taken out for one message and put back afterwards (list pop/append are
    atomic), so concurrent callers never share one; a context whose message failed half-way
    is dropped.
    """

    __slots__ = ("_factory", "_free")

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._free: list[list[Any]] = []

    def take(self) -> list[Any]:
        try:
            return self._free.pop()
        except IndexError:
            return [self._factory(), _ZERO_BLOCK]

    def give(self, entry: list[Any]) -> None:
        self._free.append(entry)


def _hmac_factory(key: bytes, hash_name: str) -> Callable[[], Any]:
    """A constructor of HMAC objects already keyed (copying a keyed context is cheapest)."""
    base = hmac.new(key, digestmod=hash_name)
    return base.copy


class UsageKey:
    """Kc, Ke and Ki for one (enctype, base key, key usage) with reusable crypto objects."""

    __slots__ = (
        "profile",
        "usage",
        "mac_size",
        "_kc",
        "_ki",
        "_enc",
        "_dec",
        "_ecb_dec",
        "_etm",
    )

    def __init__(self, enctype: int, base_key: bytes, usage: int) -> None:
        prof = self.profile = profile(enctype)
        self.usage = usage
        self.mac_size = prof.mac_size
        self._etm = prof.etm
        self._kc = _hmac_factory(derive_key(enctype, base_key, usage, KC), prof.hash_name)
        self._ki = _hmac_factory(derive_key(enctype, base_key, usage, KI), prof.hash_name)
        aes = algorithms.AES(derive_key(enctype, base_key, usage, KE))
        self._enc = _ChainPool(lambda: Cipher(aes, modes.CBC(_ZERO_BLOCK)).encryptor())
        self._dec = _ChainPool(lambda: Cipher(aes, modes.CBC(_ZERO_BLOCK)).decryptor())
        self._ecb_dec = _ChainPool(lambda: Cipher(aes, modes.ECB()).decryptor())

    # -- checksums (RFC 3961 §5.4 get_mic; RFC 8009 §5) ------------------------------------

    def checksum(self, parts: Sequence[Buffer]) -> bytes:
        """The truncated HMAC of the concatenation of `parts` under Kc."""
        mac = self._kc()
        for part in parts:
            mac.update(part)
        return mac.digest()[: self.mac_size]

    def verify_checksum(self, parts: Sequence[Buffer], expected: Buffer) -> bool:
        return hmac.compare_digest(self.checksum(parts), expected)

    # -- encryption ------------------------------------------------------------------------

    def ciphertext_size(self, plain_size: int) -> int:
        return BLOCK + plain_size + self.mac_size

    def encrypt(self, plaintext: Buffer, confounder: bytes | None = None) -> bytes:
        """RFC 3961 encrypt with the initial cipher state: C | H."""
        return bytes(self.seal(b"", (plaintext,), confounder))

    def decrypt(self, ciphertext: Buffer) -> bytes:
        return bytes(self.open((memoryview(ciphertext),)))

    def seal(
        self, prefix: bytes, parts: Sequence[Buffer], confounder: bytes | None = None
    ) -> bytearray:
        """`prefix | encrypt(parts...)` as one new buffer (the parts are not joined first)."""
        conf = os.urandom(BLOCK) if confounder is None else confounder
        start = len(prefix)
        n = BLOCK + sum(len(p) for p in parts)
        m = -(-n // BLOCK)
        out = bytearray(start + m * BLOCK + self.mac_size + 2 * BLOCK)
        out[:start] = prefix
        self._cbc_encrypt(out, start, conf, parts, m * BLOCK - n)
        if m > 1:  # RFC 3962 §5: swap the last two blocks, truncate the (new) last one
            cut = start + (m - 2) * BLOCK
            prev = out[cut : cut + BLOCK]
            out[cut : cut + BLOCK] = out[cut + BLOCK : cut + 2 * BLOCK]
            out[cut + BLOCK : start + n] = prev[: n - (m - 1) * BLOCK]
        mac = self._ki()
        if self._etm:  # RFC 8009 §5: HMAC(Ki, IV | C)
            mac.update(_ZERO_BLOCK)
            mac.update(memoryview(out)[start : start + n])
        else:  # RFC 3961 §5.3: HMAC(Ki, confounder | plaintext)
            mac.update(conf)
            for part in parts:
                mac.update(part)
        end = start + n + self.mac_size
        out[start + n : end] = mac.digest()[: self.mac_size]
        del out[end:]
        return out

    def _cbc_encrypt(
        self, out: bytearray, start: int, conf: bytes, parts: Sequence[Buffer], pad: int
    ) -> None:
        entry = self._enc.take()
        ctx = entry[0]
        view = memoryview(out)
        pos = start + ctx.update_into(_xor16(conf, entry[1]), view[start:])
        for part in parts:
            if part:
                pos += ctx.update_into(part, view[pos:])
        if pad:
            pos += ctx.update_into(_ZERO_BLOCK[:pad], view[pos:])
        entry[1] = bytes(view[pos - BLOCK : pos])
        self._enc.give(entry)

    def open(self, segments: Sequence[memoryview]) -> bytearray:
        """Decrypt C | H given as consecutive segments; returns the plaintext (no confounder).

        Segments let a rotated token (RFC 4121 §4.2.5) be read in place: the logical
        ciphertext is their concatenation.
        """
        total = sum(len(s) for s in segments)
        n = total - self.mac_size
        if n < BLOCK:
            raise CryptoError("ciphertext shorter than one block")
        expected = gather(segments, n, total)
        if self._etm and not hmac.compare_digest(self._etm_mac(segments, n), expected):
            raise CryptoError("integrity check failed")  # RFC 8009 §5: verify before decrypt
        out = self._cts_decrypt(segments, n)
        if not self._etm:
            mac = self._ki()
            mac.update(memoryview(out)[:n])
            if not hmac.compare_digest(mac.digest()[: self.mac_size], expected):
                raise CryptoError("integrity check failed")
        del out[n:]
        del out[:BLOCK]  # O(1) for a bytearray
        return out

    def _etm_mac(self, segments: Sequence[memoryview], n: int) -> bytes:
        mac = self._ki()
        mac.update(_ZERO_BLOCK)
        for piece in slices(segments, 0, n):
            mac.update(piece)
        return mac.digest()[: self.mac_size]

    def _cts_decrypt(self, segments: Sequence[memoryview], n: int) -> bytearray:
        m = -(-n // BLOCK)
        out = bytearray(m * BLOCK + 2 * BLOCK)
        if m == 1:
            self._cbc_decrypt(out, [], gather(segments, 0, BLOCK))
            return out
        cut = (m - 2) * BLOCK
        last = gather(segments, cut + BLOCK, n)
        ecb = self._ecb_dec.take()
        x = ecb[0].update(gather(segments, cut, cut + BLOCK))  # (P_m | 0) xor C_(m-1)
        self._ecb_dec.give(ecb)
        d = len(last)
        self._cbc_decrypt(out, slices(segments, 0, cut), last + x[d:])
        out[cut + BLOCK : cut + BLOCK + d] = (
            int.from_bytes(x[:d]) ^ int.from_bytes(last)
        ).to_bytes(d)
        return out

    def _cbc_decrypt(self, out: bytearray, bulk: list[memoryview], tail: bytes) -> None:
        """CBC-decrypt `bulk` then the one-block `tail` into `out` with the all-zero IV."""
        entry = self._dec.take()
        ctx = entry[0]
        view = memoryview(out)
        pos = 0
        for piece in bulk:
            pos += ctx.update_into(piece, view[pos:])
        ctx.update_into(tail, view[pos:])
        out[:BLOCK] = _xor16(view[:BLOCK], entry[1])  # undo the chaining from the last message
        entry[1] = tail
        self._dec.give(entry)


def slices(segments: Sequence[memoryview], start: int, end: int) -> list[memoryview]:
    """The pieces of the logical concatenation of `segments` in [start, end)."""
    pieces: list[memoryview] = []
    base = 0
    for seg in segments:
        lo, hi = max(start - base, 0), min(end - base, len(seg))
        if lo < hi:
            pieces.append(seg[lo:hi])
        base += len(seg)
    return pieces


def gather(segments: Sequence[memoryview], start: int, end: int) -> bytes:
    """The octets [start, end) of the logical concatenation of `segments`, as bytes."""
    pieces = slices(segments, start, end)
    return bytes(pieces[0]) if len(pieces) == 1 else b"".join(pieces)
