"""RFC 4121 (Kerberos 5 GSS-API mechanism, version 2 "CFX") per-message tokens.

MIC token (§4.2.6.1):  04 04 | flags | FF x5 | SND_SEQ(8) | checksum(msg | header)
Wrap token (§4.2.6.2): 05 04 | flags | FF | EC(2) | RRC(2) | SND_SEQ(8) | data
  sealed:   data = encrypt(msg | EC filler octets | header with RRC 0)
  unsealed: data = msg | checksum(msg | header with EC 0 and RRC 0), EC = checksum length
  data may be rotated right by RRC octets (§4.2.5); we send RRC 0, and read any RRC in place.

Theory of operation: `CfxKeys` holds the per-message keys of one context for both
directions (the key usages of §2: acceptor seal/sign 22/23, initiator seal/sign 24/25) and
the flags we send. The functions here are pure: sequence numbers, the confounder and the
clock come from the caller (`pynfsd.gss.lucid.Krb5Context`).
"""

from __future__ import annotations

import itertools
import struct
import sys
from collections.abc import Callable, Iterator
from hmac import compare_digest
from typing import Any

from pynfsd.gss import BadMic, ContextExpired, DefectiveToken
from pynfsd.gss.krb5crypto import BLOCK, SMALL_SEALED, Buffer, CryptoError, UsageKey, gather

TOK_MIC = b"\x04\x04"
TOK_WRAP = b"\x05\x04"
# §4.2.2 flags
FLAG_SENT_BY_ACCEPTOR = 0x01
FLAG_SEALED = 0x02
FLAG_ACCEPTOR_SUBKEY = 0x04
# §2 key usage numbers
KG_USAGE_ACCEPTOR_SEAL = 22
KG_USAGE_ACCEPTOR_SIGN = 23
KG_USAGE_INITIATOR_SEAL = 24
KG_USAGE_INITIATOR_SIGN = 25

HEADER_SIZE = 16
_SEQ_MASK = (1 << 64) - 1
_MIC_HEADER = struct.Struct(">2sB5sQ")
_WRAP_HEADER = struct.Struct(">2sBBHHQ")
_MIC_FILLER = b"\xff" * 5
_PREFIX_SEQ = struct.Struct(">8sQ")  # a header: its first 8 octets, then SND_SEQ
_SEQ = struct.Struct(">8xQ")
_NO_EC_RRC = bytes(4)
# Wrap tokens up to this size are copied whole and decrypted in one piece.
_SMALL_TOKEN = HEADER_SIZE + SMALL_SEALED + 24


class _Direction:
    """The seal and sign keys of one sender (initiator or acceptor) under one base key."""

    __slots__ = ("seal", "sign")

    def __init__(self, enctype: int, key: bytes, acceptor: bool) -> None:
        seal = KG_USAGE_ACCEPTOR_SEAL if acceptor else KG_USAGE_INITIATOR_SEAL
        sign = KG_USAGE_ACCEPTOR_SIGN if acceptor else KG_USAGE_INITIATOR_SIGN
        self.seal = UsageKey(enctype, key, seal)
        self.sign = UsageKey(enctype, key, sign)


class CfxKeys:
    """Per-message keys of one context, for tokens we send and tokens we receive.

    §2: when the acceptor asserted a subkey, both sides protect tokens with it and set
    AcceptorSubkey; otherwise the context key (initiator subkey or session key) is used.
    """

    __slots__ = ("initiator", "send", "send_flags", "sealed_prefix", "mic_prefix", "_recv",
                 "_by_flags", "_spec")

    def __init__(
        self,
        initiator: bool,
        enctype: int,
        key: bytes,
        acceptor_subkey_enctype: int | None = None,
        acceptor_subkey: bytes | None = None,
    ) -> None:
        self.initiator = initiator
        self._spec: dict[bool, tuple[int, bytes]] = {False: (enctype, key)}
        if acceptor_subkey:
            self._spec[True] = (acceptor_subkey_enctype or enctype, acceptor_subkey)
        use_subkey = True in self._spec
        self.send = _Direction(*self._spec[use_subkey], acceptor=not initiator)
        self.send_flags = (0 if initiator else FLAG_SENT_BY_ACCEPTOR) | (
            FLAG_ACCEPTOR_SUBKEY if use_subkey else 0
        )
        # the first 8 octets of every sealed Wrap token we send (EC 0, RRC 0)
        self.sealed_prefix = _WRAP_HEADER.pack(TOK_WRAP, self.send_flags | FLAG_SEALED,
                                               0xFF, 0, 0, 0)[:8]
        self.mic_prefix = _MIC_HEADER.pack(TOK_MIC, self.send_flags, _MIC_FILLER, 0)[:8]
        self._recv: dict[bool, _Direction] = {}
        self._by_flags: dict[int, _Direction] = {}  # flags octets already checked

    def receive(self, flags: int) -> _Direction:
        """The peer's keys for a token with these flags (checks direction and key choice)."""
        try:
            return self._by_flags[flags]
        except KeyError:
            keys = self._by_flags[flags] = self._check_flags(flags)
            return keys

    def _check_flags(self, flags: int) -> _Direction:
        if bool(flags & FLAG_SENT_BY_ACCEPTOR) != self.initiator:
            # §4.2.2: a token must come from the other side (this also stops reflection).
            raise DefectiveToken("token sent in the wrong direction")
        subkey = bool(flags & FLAG_ACCEPTOR_SUBKEY)
        keys = self._recv.get(subkey)
        if keys is None:
            if subkey not in self._spec:
                raise DefectiveToken("token uses an acceptor subkey this context lacks")
            keys = self._recv[subkey] = _Direction(*self._spec[subkey], acceptor=self.initiator)
        return keys


def sequence_numbers(first: int) -> Iterator[int]:
    """A context's SND_SEQ counter from `first`, modulo 2**64 (§4.2.6: it wraps); shared by
    its MIC and Wrap tokens. All C-level, so one number is never handed out twice; below
    sys.maxsize it runs on machine integers (the fastest C-level counter measured)."""
    first &= _SEQ_MASK
    return itertools.chain(
        range(first, sys.maxsize),
        range(max(first, sys.maxsize), _SEQ_MASK + 1),
        itertools.chain.from_iterable(itertools.repeat(range(_SEQ_MASK + 1))),
    )


def _headers(prefix: bytes, seqs: Iterator[int]) -> Callable[[], bytes]:
    """Each call: the next token header, `prefix` (its first 8 octets) and SND_SEQ."""
    return map(_PREFIX_SEQ.pack, itertools.repeat(prefix), seqs).__next__


def mic_maker(keys: CfxKeys, seqs: Iterator[int]) -> Callable[[Buffer], bytes]:
    """A context's get_mic: §4.2.6.1 tokens numbered from `seqs` (`sequence_numbers`).

    Everything a token needs but the message is looked up here once: a MIC token is small
    and frequent (one per RPCSEC_GSS reply verifier), and each lookup costs about as much
    as hashing a block.
    """
    prefix, sign = keys.mic_prefix, keys.send.sign
    header_for, start = _headers(prefix, seqs), sign.kc.start
    # header | the HMAC truncated to the checksum's size, in one call
    token = struct.Struct(f"{HEADER_SIZE}s{sign.mac_size}s").pack

    def get_mic(msg: Buffer) -> bytes:
        header = header_for()
        state = start()
        state.update(msg)
        state.update(header)  # the checksum covers msg | header
        return token(header, state.finalize())

    return get_mic


def mic_checker(
    keys: CfxKeys, clock: Callable[[], float], endtime: float
) -> Callable[[Buffer, Buffer], None]:
    """A context's verify_mic(msg, token): checks a MIC token over `msg`; raises
    ContextExpired once `clock()` reaches `endtime`.

    The first 8 octets of a MIC token are all of its header but the sequence number; once a
    token's have passed the checks, equal ones map straight to the key's schedule.
    """
    checked: dict[bytes, tuple[Callable[[], Any], int]] = {}

    def verify_mic(msg: Buffer, token: Buffer) -> None:
        if clock() >= endtime:
            raise ContextExpired("the context's ticket has expired")
        try:
            start, size = checked[token[:8]]  # type: ignore[index]
        except (KeyError, TypeError, ValueError):  # not seen yet, or a view that is no key
            token = bytes(token)
            sign = _mic_key(keys, token)
            start, size = checked[token[:8]] = sign.kc.start, sign.mac_size
        state = start()
        state.update(msg)
        state.update(token[:HEADER_SIZE])
        if not compare_digest(state.finalize()[:size], token[HEADER_SIZE:]):
            # a token of the wrong length never verifies; it is named for what it is
            if len(token) != HEADER_SIZE + size:
                raise DefectiveToken("MIC token has the wrong length")
            raise BadMic("MIC does not verify")

    return verify_mic


def sequence_number(token: Buffer) -> int:
    """SND_SEQ of a MIC or Wrap token (of one that verified: its header is checked)."""
    return _SEQ.unpack_from(token)[0]  # type: ignore[no-any-return]


def _mic_key(keys: CfxKeys, token: bytes) -> UsageKey:
    """The peer's sign key for a MIC token, once its header is checked (§4.2.6.1)."""
    if len(token) < HEADER_SIZE:
        raise DefectiveToken("MIC token too short")
    tok_id, flags, filler, _ = _MIC_HEADER.unpack_from(token)
    if tok_id != TOK_MIC or filler != _MIC_FILLER or flags & FLAG_SEALED:
        raise DefectiveToken("not a CFX MIC token")  # §4.2.6.1; Sealed SHALL NOT be set
    return keys.receive(flags).sign


def wrap_maker(
    keys: CfxKeys, seqs: Iterator[int], random: Callable[[int], bytes] | None
) -> Callable[[Buffer, bool], bytes | bytearray]:
    """A context's wrap(msg, conf): §4.2.6.2 tokens with RRC 0 and no filler when sealed.

    Numbered from `seqs` (shared with the MIC tokens); confounders come from `random`, or
    when it is None from `krb5crypto`'s own source.
    """
    header_for, seal = _headers(keys.sealed_prefix, seqs), keys.send.seal.seal

    def wrap(msg: Buffer, conf: bool = True) -> bytes | bytearray:
        if conf:
            header = header_for()
            # §4.2.4: the encrypted copy of the header has RRC 0 (and EC as in the token).
            return seal(header, msg, header, random(BLOCK) if random else None)
        return _make_signed_wrap(keys, next(seqs), msg)

    return wrap


def _make_signed_wrap(keys: CfxKeys, seq: int, msg: Buffer) -> bytearray:
    seal = keys.send.seal
    header = _WRAP_HEADER.pack(TOK_WRAP, keys.send_flags, 0xFF, seal.mac_size, 0, seq)
    signed = _WRAP_HEADER.pack(TOK_WRAP, keys.send_flags, 0xFF, 0, 0, seq)
    out = bytearray(HEADER_SIZE + len(msg) + seal.mac_size)
    out[:HEADER_SIZE] = header
    out[HEADER_SIZE : HEADER_SIZE + len(msg)] = msg
    # §4.2.4: the checksum covers msg | header with EC and RRC set to zero.
    out[HEADER_SIZE + len(msg) :] = seal.checksum(msg, signed)
    return out


def unwrapper(
    keys: CfxKeys, clock: Callable[[], float], endtime: float
) -> Callable[[Buffer], tuple[bytes | bytearray, bool]]:
    """A context's unwrap(token): (message, sealed?); raises like `mic_checker`'s.

    The usual token is small and sealed, with no filler and no rotation (what pynfsd, MIT
    and Linux send). Its first 8 octets are then all of its header but SND_SEQ: once a
    token's have passed `read_wrap`'s checks, equal ones go straight to the key's
    small-message decryption, and the encrypted header copy is compared whole.
    """
    checked: dict[bytes, Callable[[bytes, int, bytes], bytes | None]] = {}

    def unwrap(token: Buffer) -> tuple[bytes | bytearray, bool]:
        if clock() >= endtime:
            raise ContextExpired("the context's ticket has expired")
        if len(token) <= _SMALL_TOKEN:
            token = bytes(token)
            open_at = checked.get(token[:8])
            if open_at is not None:
                try:
                    msg = open_at(token, HEADER_SIZE, token[:HEADER_SIZE])
                except CryptoError as e:
                    raise BadMic(f"Wrap token does not decrypt: {e}") from None
                if msg is None:  # §4.2.4
                    raise DefectiveToken("encrypted Wrap header does not match")
                return msg, True
        plain, sealed, _ = read_wrap(keys, token)
        if sealed and token[4:8] == _NO_EC_RRC and len(token) <= _SMALL_TOKEN:
            checked[bytes(token[:8])] = keys.receive(token[2]).seal.open_at
        return plain, sealed

    return unwrap


def read_wrap(keys: CfxKeys, token: Buffer) -> tuple[bytes | bytearray, bool, int]:
    """Open any Wrap token: (message, sealed?, sequence number)."""
    if len(token) < HEADER_SIZE:
        raise DefectiveToken("Wrap token too short")
    tok_id, flags, filler, ec, rrc, seq = _WRAP_HEADER.unpack_from(token)
    if tok_id != TOK_WRAP or filler != 0xFF:
        raise DefectiveToken("not a CFX Wrap token")
    seal = keys.receive(flags).seal
    header = bytes(token[:HEADER_SIZE])
    size = len(token) - HEADER_SIZE
    segments = _segments(token, rrc % size if size else 0)  # §4.2.5: undo a rotation
    if not flags & FLAG_SEALED:
        return _open_signed(seal, header, segments, ec), False, seq
    try:
        plain = seal.open(segments)
    except CryptoError as e:
        raise BadMic(f"Wrap token does not decrypt: {e}") from None
    return _check_sealed(plain, header, ec), True, seq


def _segments(token: Buffer, rot: int) -> list[memoryview]:
    """The token's data in logical order: rotated right by `rot` octets as sent."""
    data = memoryview(token)[HEADER_SIZE:]
    return [data[rot:], data[:rot]] if rot else [data]


def _check_sealed(plain: bytes | bytearray, header: bytes, ec: int) -> bytes | bytearray:
    """The message from a decrypted `msg | filler | header copy`, once the copy is checked."""
    end = len(plain) - HEADER_SIZE - ec
    if end < 0:
        raise DefectiveToken("Wrap token filler longer than its data")
    # §4.2.4: the encrypted header must match the one in the clear (RRC excepted).
    if plain[-16:-10] != header[:6] or plain[-8:] != header[8:]:
        raise DefectiveToken("encrypted Wrap header does not match")
    if isinstance(plain, bytearray):
        del plain[end:]  # no copy of a large message
        return plain
    return plain[:end]


def _open_signed(seal: UsageKey, header: bytes, segments: list[memoryview], ec: int) -> bytes:
    size = sum(len(s) for s in segments)
    if ec != seal.mac_size or size < ec:  # §4.2.4: EC is the checksum length
        raise DefectiveToken("unsealed Wrap token has a bad EC")
    msg = gather(segments, 0, size - ec)
    signed = header[:4] + b"\x00\x00\x00\x00" + header[8:]
    if not seal.verify_checksum(msg, signed, gather(segments, size - ec, size)):
        raise BadMic("Wrap token checksum does not verify")
    return msg
