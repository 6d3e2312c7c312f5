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
on long-lived CBC contexts, one pair per thread (`_Contexts`), so threads never share one.
CBC chaining state is only the previous ciphertext block: feeding the encryptor that block
again (its output is then E(Ke, 0), dropped) and the masked confounder (`_sealer`), or the
decryptor one zero block first (`_opener`), turns it into a fresh context with the all-zero
IV. `seal` and `open_at` are closures made per key with everything a small message needs
bound (each Python-level step costs about as much as AES on a few blocks); large messages
are fed as a list of buffers (no joining) and written once into the buffer returned.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from pynfsd.gss.primitives import Confounders, HmacKey

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
_PADDING = [bytes(-n % BLOCK) for n in range(BLOCK)]  # to a whole block, by length mod 16


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


class _Contexts(threading.local):
    """This thread's long-lived AES-CBC contexts for one key (a thread never shares them).

    `enc` is [the encryptor's update, the last ciphertext block it wrote (its chaining
    state), the encryptor]; `dec` the decryptor. A thread gets its own on first use
    (`threading.local` runs `__init__` again per thread); `renew()` replaces them after a
    message failed half-way, which could leave a partial block buffered in a context.
    """

    def __init__(self, aes: algorithms.AES) -> None:
        self.aes = aes
        self.renew()

    def renew(self) -> None:
        encryptor = Cipher(self.aes, modes.CBC(_ZERO_BLOCK)).encryptor()
        self.enc: list[Any] = [encryptor.update, _ZERO_BLOCK, encryptor]
        self.dec = Cipher(self.aes, modes.CBC(_ZERO_BLOCK)).decryptor()


# Up to this many octets of plaintext a message is joined into one buffer and run through
# each primitive in one call (fewer Python-level steps); above it, it is streamed in place.
SMALL = 8192
# The ciphertext of a SMALL message with a Wrap token's confounder, header and padding.
SMALL_SEALED = SMALL + 4 * BLOCK
# Streamed messages go through AES and HMAC in chunks of this size, so the chunk that one
# primitive has just read or written is still in cache when the other reads it.
CHUNK = 64 * 1024


class UsageKey:
    """Kc, Ke and Ki for one (enctype, base key, key usage) with reusable crypto objects.

    `kc` is the checksum key's schedule (Kc), for callers that inline a checksum.
    """

    # seal(prefix, msg, trailer, confounder=None) and open_at(data, start, trailer=None),
    # made per key by `_sealer` and `_opener`
    seal: Callable[..., bytes | bytearray]
    open_at: Callable[..., Any]

    __slots__ = ("profile", "usage", "mac_size", "kc", "seal", "open_at", "_ki", "_aes",
                 "_etm")

    def __init__(self, enctype: int, base_key: bytes, usage: int) -> None:
        prof = self.profile = profile(enctype)
        self.usage = usage
        self.mac_size = prof.mac_size
        self._etm = prof.etm
        self.kc = HmacKey(derive_key(enctype, base_key, usage, KC), prof.hash_name)
        # RFC 8009 §5 MACs IV | C with the zero IV: Ki's schedule starts with that block hashed
        ki = derive_key(enctype, base_key, usage, KI)
        self._ki = HmacKey(ki, prof.hash_name, _ZERO_BLOCK if prof.etm else b"")
        ke = derive_key(enctype, base_key, usage, KE)
        self._aes = _Contexts(algorithms.AES(ke))
        self.seal = _sealer(self._aes, self._ki, prof, _aes_block(ke, _ZERO_BLOCK))
        self.open_at = _opener(self._aes, self._ki, prof)

    # -- checksums (RFC 3961 §5.4 get_mic; RFC 8009 §5) ------------------------------------

    def checksum(self, msg: Buffer, trailer: Buffer) -> bytes:
        """The truncated HMAC of `msg | trailer` under Kc (the two are not joined)."""
        state = self.kc.start()
        state.update(msg)
        state.update(trailer)
        return state.finalize()[: self.mac_size]  # type: ignore[no-any-return]

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

    def open(self, segments: Sequence[memoryview]) -> bytes | bytearray:
        """Decrypt C | H given as consecutive segments; returns the plaintext (no confounder).

        Segments let a rotated token (RFC 4121 §4.2.5) be read in place: the logical
        ciphertext is their concatenation.
        """
        total = len(segments[0]) if len(segments) == 1 else sum(len(s) for s in segments)
        if total <= SMALL_SEALED + self.mac_size:
            whole = bytes(segments[0]) if len(segments) == 1 else b"".join(segments)
            return self.open_at(whole, 0)  # type: ignore[no-any-return]
        return self._open_large(segments, total)

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
        contexts = self._aes
        ctx, pos, macced = contexts.dec, 0, 0
        try:
            x = ctx.update(_ZERO_BLOCK + c_m + _ZERO_BLOCK)[BLOCK : 2 * BLOCK]  # as in open_at
            for piece in pieces:
                pos += ctx.update_into(piece, view[pos:])
                mac.update(piece if self._etm else view[macced:pos])
                macced = pos
            ctx.update_into(b"".join((last, x[len(last) :], c_m)), view[pos:])
        except BaseException:
            contexts.renew()  # a segment may end half-way through a block
            raise
        # the rest of C_(m-1)' | C_m as sent (encrypt-then-MAC), or of the plaintext
        mac.update(gather(segments, cut, n) if self._etm else view[macced:n])
        view.release()
        if not hmac.compare_digest(mac.finalize()[: self.mac_size], expected):
            raise CryptoError("integrity check failed")
        del out[n:]
        del out[:BLOCK]
        return out


def _sealer(aes: _Contexts, ki: HmacKey, prof: Profile, k0: bytes) -> Callable[..., Any]:
    """A key's `seal(prefix, msg, trailer, confounder=None)`: `prefix | encrypt(msg |
    trailer)`, with a confounder drawn here unless one is given.

    Small messages take one straight path, with everything it needs bound here once (each
    Python step costs about as much as AES on a few blocks): one join, one CBC call, RFC
    3962 §5's swap and truncation of the last two blocks as output slices, one HMAC. Large
    ones are streamed in place (`_seal_large`).

    CBC chaining: the encryptor is first fed its own last ciphertext block, so that output
    block is E(Ke, 0) = `k0` (dropped) and the chaining state is `k0` for every message.
    Each confounder is drawn with itself XOR `k0` (`Confounders`), which CBC turns back into
    the confounder under the zero IV: no per-message XOR.
    """
    confounders, keyed, size, etm = Confounders(k0), ki.start, prof.mac_size, prof.etm

    def seal(
        prefix: bytes, msg: Buffer, trailer: bytes, confounder: bytes | None = None
    ) -> bytes | bytearray:
        if confounder is None:
            try:
                conf, first = confounders.next()
            except StopIteration:
                conf, first = confounders.refill()
        else:
            conf, first = confounder, _xor_bytes(confounder, k0)
        if len(msg) > SMALL:
            return _seal_large(aes, ki, prof, (prefix, msg, trailer), conf, first)
        n = BLOCK + len(msg) + len(trailer)
        enc = aes.enc
        c = enc[0](b"".join((enc[1], first, msg, trailer, _PADDING[n & 15])))
        enc[1] = c[-BLOCK:]
        if n > BLOCK:  # RFC 3962 §5: swap the last two blocks, truncate the (new) last one
            cut = len(c) - 2 * BLOCK
            head, tail, last = c[BLOCK:cut], c[cut + BLOCK :], c[cut:n]
        else:
            head, tail, last = c[BLOCK:], b"", b""
        mac = keyed()
        if etm:  # RFC 8009 §5: HMAC(Ki, IV | C), IV already in the schedule
            mac.update(head)
            mac.update(tail)
            mac.update(last)
        else:  # RFC 3961 §5.3: HMAC(Ki, confounder | plaintext)
            mac.update(conf)
            mac.update(msg)
            mac.update(trailer)
        return b"".join((prefix, head, tail, last, mac.finalize()[:size]))

    return seal


def _seal_large(
    aes: _Contexts, ki: HmacKey, prof: Profile, parts: tuple[bytes, Buffer, bytes],
    conf: bytes, first: bytes,
) -> bytearray:
    """`_sealer`'s path for large messages: streamed into one output buffer in chunks."""
    prefix, msg, trailer = parts
    start, size, etm = len(prefix), prof.mac_size, prof.etm
    n = BLOCK + len(msg) + len(trailer)
    m = -(-n // BLOCK)
    cut = start + (m - 2) * BLOCK  # the ciphertext before it is final as CBC writes it
    out = bytearray(start + m * BLOCK + size + 2 * BLOCK)
    out[:start] = prefix
    view, mac = memoryview(out), ki.start()
    if not etm:
        mac.update(conf)
    enc = aes.enc
    ctx, macced = enc[2], start
    try:
        ctx.update(enc[1])  # the chaining reset of the small path
        pos = start + ctx.update_into(first, view[start:])
        src = memoryview(msg)
        for off in range(0, len(src), CHUNK):
            chunk = src[off : off + CHUNK]
            pos += ctx.update_into(chunk, view[pos:])
            if etm:
                mac.update(view[macced : min(pos, cut)])
                macced = min(pos, cut)
            else:
                mac.update(chunk)
        pos += ctx.update_into(trailer + _ZERO_BLOCK[: m * BLOCK - n], view[pos:])
    except BaseException:
        aes.renew()  # a chunk may be left half-way in the context
        raise
    enc[1] = bytes(view[pos - BLOCK : pos])
    prev = out[cut : cut + BLOCK]  # RFC 3962 §5 swap, as in the small path (m > 2 here)
    out[cut : cut + BLOCK] = out[cut + BLOCK : cut + 2 * BLOCK]
    out[cut + BLOCK : start + n] = prev[: start + n - cut - BLOCK]
    mac.update(view[macced : start + n] if etm else trailer)
    end = start + n + size
    out[start + n : end] = mac.finalize()[:size]
    view.release()
    del out[end:]
    return out


def _opener(aes: _Contexts, ki: HmacKey, prof: Profile) -> Callable[..., Any]:
    """A key's `open_at(data, start, trailer=None)`: the plaintext (without confounder) of
    the small C | H that fills `data` from `start`, in one straight path as in `_sealer`.

    With a `trailer`, the plaintext must end with it: the plaintext without it is returned,
    or None when it does not.
    """
    keyed, size, etm = ki.start, prof.mac_size, prof.etm

    def open_at(data: bytes, start: int, trailer: bytes | None = None) -> bytes | None:
        end = len(data) - size
        n = end - start
        if n < BLOCK:
            raise CryptoError("ciphertext shorter than one block")
        mac = keyed()
        if etm:  # RFC 8009 §5: verify before decrypting
            mac.update(data[start:end])
            if not hmac.compare_digest(mac.finalize()[:size], data[end:]):
                raise CryptoError("integrity check failed")
        dec = aes.dec
        # Every call starts with a zero block: whatever chaining state the long-lived context
        # was left in, its output block is dropped and the next one chains from the zero IV.
        if n == BLOCK:
            p = dec.update(_ZERO_BLOCK + data[start:end])
        else:
            partial = n & 15  # octets of the last plaintext block, 0 when it is whole
            cut = end - BLOCK - (partial or BLOCK)  # C_m as sent; then C_(m-1), truncated
            c_m, last = data[cut : cut + BLOCK], data[cut + BLOCK : end]
            if partial:
                # D(C_m) = (P_m | 0) xor C_(m-1): its tail completes the truncated C_(m-1).
                last += dec.update(_ZERO_BLOCK + c_m)[BLOCK + partial :]
            # CBC over C_1 … C_(m-1), C_m (RFC 3962 §5's swap undone) gives every block.
            p = dec.update(b"".join((_ZERO_BLOCK, data[start:cut], last, c_m)))
        if not etm:  # RFC 3961 §5.3: HMAC of confounder | plaintext
            mac.update(p[BLOCK : BLOCK + n])
            if not hmac.compare_digest(mac.finalize()[:size], data[end:]):
                raise CryptoError("integrity check failed")
        if trailer is None:
            return p[2 * BLOCK : BLOCK + n]  # type: ignore[no-any-return]
        tail = BLOCK + n - len(trailer)
        if tail < 2 * BLOCK or p[tail : BLOCK + n] != trailer:
            return None
        return p[2 * BLOCK : tail]  # type: ignore[no-any-return]

    return open_at


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
