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
XOR-ing that block into the first input block (encryption), or feeding one zero block first
(decryption), turns it into a fresh context with the all-zero IV. Contexts sit in a small
pool, one per concurrent caller, so threads never share one. Messages are fed as a list of
buffers (no joining) and the output is written once into the buffer that is returned.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from pynfsd.gss.primitives import HmacKey, random_block

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


class _Pool:
    """Long-lived crypto contexts for one key, one per concurrent caller.

    A context is taken out for one message and put back afterwards (list pop/append are
    atomic), so callers in different threads never share one; a context whose message failed
    half-way is simply dropped. The hot paths use `free` directly (a method call costs as
    much as AES on a few blocks); `take` is the same thing spelled out.
    """

    __slots__ = ("new", "free")

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.new = factory
        self.free: list[Any] = []

    def take(self) -> Any:
        try:
            return self.free.pop()
        except IndexError:
            return self.new()


# Up to this many octets of plaintext a message is joined into one buffer and run through
# each primitive in one call (fewer Python-level steps); above it, it is streamed in place.
SMALL = 8192
# The ciphertext of a SMALL message with a Wrap token's confounder, header and padding.
SMALL_SEALED = SMALL + 4 * BLOCK
# Streamed messages go through AES and HMAC in chunks of this size, so the chunk that one
# primitive has just read or written is still in cache when the other reads it.
CHUNK = 64 * 1024


class UsageKey:
    """Kc, Ke and Ki for one (enctype, base key, key usage) with reusable crypto objects."""

    __slots__ = ("profile", "usage", "mac_size", "hmac", "_kc", "_ki", "_enc", "_dec", "_etm")

    def __init__(self, enctype: int, base_key: bytes, usage: int) -> None:
        prof = self.profile = profile(enctype)
        self.usage = usage
        self.mac_size = prof.mac_size
        self._etm = prof.etm
        # the checksum key's schedule (Kc), for callers that inline a checksum
        self.hmac = self._kc = HmacKey(derive_key(enctype, base_key, usage, KC), prof.hash_name)
        # RFC 8009 §5 MACs IV | C with the zero IV: Ki's schedule starts with that block hashed
        ki = derive_key(enctype, base_key, usage, KI)
        self._ki = HmacKey(ki, prof.hash_name, _ZERO_BLOCK if prof.etm else b"")
        aes = algorithms.AES(derive_key(enctype, base_key, usage, KE))
        # an encryption entry is [context, the last ciphertext block it wrote, as an int]
        self._enc = _Pool(lambda: [Cipher(aes, modes.CBC(_ZERO_BLOCK)).encryptor(), 0])
        self._dec = _Pool(lambda: Cipher(aes, modes.CBC(_ZERO_BLOCK)).decryptor())

    # -- checksums (RFC 3961 §5.4 get_mic; RFC 8009 §5) ------------------------------------

    def checksum(self, msg: Buffer, trailer: Buffer) -> bytes:
        """The truncated HMAC of `msg | trailer` under Kc (the two are not joined)."""
        inner = self._kc.start()
        inner.update(msg)
        inner.update(trailer)
        outer = self._kc.outer()
        outer.update(inner.digest())
        return outer.digest()[: self.mac_size]  # type: ignore[no-any-return]

    def verify_checksum(self, msg: Buffer, trailer: Buffer, expected: Buffer) -> bool:
        """Whether `expected` is `checksum(msg, trailer)` (compared in constant time)."""
        return hmac.compare_digest(self.checksum(msg, trailer), expected)

    # -- encryption ------------------------------------------------------------------------

    def ciphertext_size(self, plain_size: int) -> int:
        return BLOCK + plain_size + self.mac_size

    def encrypt(self, plaintext: Buffer, confounder: bytes | None = None) -> bytes:
        """RFC 3961 encrypt with the initial cipher state: C | H."""
        return bytes(self.seal(b"", plaintext, b"", confounder))

    def decrypt(self, ciphertext: Buffer) -> bytes:
        return bytes(self.open((memoryview(ciphertext),)))

    def seal(
        self, prefix: bytes, msg: Buffer, trailer: bytes, confounder: bytes | None = None
    ) -> bytes | bytearray:
        """`prefix | encrypt(msg | trailer)` (the plaintext pieces are not joined when large).

        Small messages take one straight path (every Python step here costs about as much
        as AES on a few blocks): join, one CBC call, RFC 3962 §5's swap and truncation of
        the last two blocks as output slices, one HMAC.
        """
        if len(msg) > SMALL:
            conf = random_block() if confounder is None else confounder
            return self._seal_large(prefix, msg, trailer, conf)
        n = BLOCK + len(msg) + len(trailer)
        try:
            entry = self._enc.free.pop()
        except IndexError:
            entry = self._enc.new()
        if confounder is None and self._etm:
            # The context chains the previous message's last block into the first one, so
            # the confounder is this random block XOR that one: as random, and here it is
            # not needed in the clear (RFC 8009 MACs the ciphertext).
            first = conf = random_block()
        else:
            conf = random_block() if confounder is None else confounder
            first = (int.from_bytes(conf) ^ entry[1]).to_bytes(BLOCK)  # undo the chaining
        c = entry[0].update(b"".join((first, msg, trailer, _ZERO_BLOCK[: -n % BLOCK])))
        entry[1] = int.from_bytes(c[-BLOCK:])
        self._enc.free.append(entry)
        mac = self._ki.start()
        if n > BLOCK:  # RFC 3962 §5: swap the last two blocks, truncate the (new) last one
            cut = len(c) - 2 * BLOCK
            c = b"".join((c[:cut], c[cut + BLOCK :], c[cut : n - BLOCK]))
        if self._etm:  # RFC 8009 §5: HMAC(Ki, IV | C), IV already in the schedule
            mac.update(c)
        else:  # RFC 3961 §5.3: HMAC(Ki, confounder | plaintext)
            mac.update(conf)
            mac.update(msg)
            mac.update(trailer)
        outer = self._ki.outer()
        outer.update(mac.digest())
        return b"".join((prefix, c, outer.digest()[: self.mac_size]))

    def _seal_large(self, prefix: bytes, msg: Buffer, trailer: bytes, conf: bytes) -> bytearray:
        start = len(prefix)
        n = BLOCK + len(msg) + len(trailer)
        m = -(-n // BLOCK)
        cut = start + (m - 2) * BLOCK  # the ciphertext before it is final as CBC writes it
        out = bytearray(start + m * BLOCK + self.mac_size + 2 * BLOCK)
        out[:start] = prefix
        view, mac = memoryview(out), self._ki.start()
        if not self._etm:
            mac.update(conf)
        entry = self._enc.take()
        ctx = entry[0]
        first = (int.from_bytes(conf) ^ entry[1]).to_bytes(BLOCK)
        pos = start + ctx.update_into(first, view[start:])
        macced = start
        src = memoryview(msg)
        for off in range(0, len(src), CHUNK):
            chunk = src[off : off + CHUNK]
            pos += ctx.update_into(chunk, view[pos:])
            if self._etm:
                mac.update(view[macced : min(pos, cut)])
                macced = min(pos, cut)
            else:
                mac.update(chunk)
        pos += ctx.update_into(trailer + _ZERO_BLOCK[: m * BLOCK - n], view[pos:])
        entry[1] = int.from_bytes(view[pos - BLOCK : pos])
        self._enc.free.append(entry)
        prev = out[cut : cut + BLOCK]  # RFC 3962 §5 swap, as in the small path (m > 2 here)
        out[cut : cut + BLOCK] = out[cut + BLOCK : cut + 2 * BLOCK]
        out[cut + BLOCK : start + n] = prev[: start + n - cut - BLOCK]
        mac.update(view[macced : start + n] if self._etm else trailer)
        end = start + n + self.mac_size
        out[start + n : end] = self._ki.finish(mac)[: self.mac_size]
        view.release()
        del out[end:]
        return out

    def open(self, segments: Sequence[memoryview]) -> bytes | bytearray:
        """Decrypt C | H given as consecutive segments; returns the plaintext (no confounder).

        Segments let a rotated token (RFC 4121 §4.2.5) be read in place: the logical
        ciphertext is their concatenation.
        """
        total = len(segments[0]) if len(segments) == 1 else sum(len(s) for s in segments)
        if total <= SMALL_SEALED + self.mac_size:
            whole = bytes(segments[0]) if len(segments) == 1 else b"".join(segments)
            return self.open_at(whole, 0)
        return self._open_large(segments, total)

    def open_at(self, data: bytes, start: int) -> bytes:
        """Decrypt the small C | H that fills `data` from `start` (`open`'s one straight path)."""
        end = len(data) - self.mac_size
        n = end - start
        if n < BLOCK:
            raise CryptoError("ciphertext shorter than one block")
        mac = self._ki.start()
        if self._etm:  # RFC 8009 §5: verify before decrypting
            mac.update(memoryview(data)[start:end])
            if not hmac.compare_digest(self._ki.finish(mac)[: self.mac_size], data[end:]):
                raise CryptoError("integrity check failed")
        m = -(-n // BLOCK)
        try:
            ctx = self._dec.free.pop()
        except IndexError:
            ctx = self._dec.new()
        # Every call starts with a zero block: whatever chaining state the long-lived context
        # was left in, its output block is dropped and the next one chains from the zero IV.
        if m == 1:
            p = ctx.update(_ZERO_BLOCK + data[start:end])
        else:
            cut = start + (m - 2) * BLOCK
            c_m, last = data[cut : cut + BLOCK], data[cut + BLOCK : end]
            if len(last) < BLOCK:
                # D(C_m) = (P_m | 0) xor C_(m-1): its tail completes the truncated C_(m-1).
                last += ctx.update(_ZERO_BLOCK + c_m)[BLOCK + len(last) :]
            # CBC over C_1 … C_(m-1), C_m (RFC 3962 §5's swap undone) gives every block.
            p = ctx.update(b"".join((_ZERO_BLOCK, data[start:cut], last, c_m)))
        self._dec.free.append(ctx)
        if not self._etm:  # RFC 3961 §5.3: HMAC of confounder | plaintext
            mac.update(memoryview(p)[BLOCK : BLOCK + n])
            if not hmac.compare_digest(self._ki.finish(mac)[: self.mac_size], data[end:]):
                raise CryptoError("integrity check failed")
        return p[2 * BLOCK : BLOCK + n]

    def _open_large(self, segments: Sequence[memoryview], total: int) -> bytearray:
        n = total - self.mac_size
        m = -(-n // BLOCK)
        cut = (m - 2) * BLOCK
        if len(segments) == 1:  # the usual unrotated token: plain slices
            data = segments[0]
            expected, last = bytes(data[n:]), bytes(data[cut + BLOCK : n])
            c_m = bytes(data[cut : cut + BLOCK])
            pieces = [data[off : min(off + CHUNK, cut)] for off in range(0, cut, CHUNK)]
        else:
            expected, last = gather(segments, n, total), gather(segments, cut + BLOCK, n)
            c_m, pieces = gather(segments, cut, cut + BLOCK), _chunks(slices(segments, 0, cut))
        out = bytearray(m * BLOCK + 2 * BLOCK)
        view, mac = memoryview(out), self._ki.start()
        ctx, pos, macced = self._dec.take(), 0, 0
        x = ctx.update(_ZERO_BLOCK + c_m + _ZERO_BLOCK)[BLOCK : 2 * BLOCK]  # as in open_at
        for piece in pieces:
            pos += ctx.update_into(piece, view[pos:])
            mac.update(piece if self._etm else view[macced:pos])
            macced = pos
        ctx.update_into(b"".join((last, x[len(last) :], c_m)), view[pos:])
        self._dec.free.append(ctx)
        # the rest of C_(m-1)' | C_m as sent (encrypt-then-MAC), or of the plaintext
        mac.update(gather(segments, cut, n) if self._etm else view[macced:n])
        view.release()
        if not hmac.compare_digest(self._ki.finish(mac)[: self.mac_size], expected):
            raise CryptoError("integrity check failed")
        del out[n:]
        del out[:BLOCK]
        return out


def _xor_bytes(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a) ^ int.from_bytes(b)).to_bytes(len(a))


def _chunks(pieces: list[memoryview]) -> list[memoryview]:
    return [p[off : off + CHUNK] for p in pieces for off in range(0, len(p), CHUNK)]


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


def keep_large_buffers_in_heap(limit: int = 64 << 20) -> bool:
    """Ask glibc to serve buffers up to `limit` bytes from the heap and keep freed memory.

    Every sealed 1 MiB Wrap token or unwrapped message is a fresh buffer; from mmap (glibc's
    default for large blocks until its dynamic threshold adapts) each one costs a page fault
    per 4 KiB on first touch, which measured here as ~0.7 ms per MiB, a third of the crypto.
    This is process-wide malloc tuning (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD), so it is for the
    server's start-up, never done implicitly. Returns False where it is not available.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, limit)) and bool(mallopt(m_trim_threshold, 4 * limit))
