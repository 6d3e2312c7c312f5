"""`Krb5Context`: per-message GSS-API for a krb5 context exported as a "lucid" context.

Context establishment (AP-REQ/AP-REP, replay cache, keytab) stays in GSS-API or gssproxy;
what comes out is the lucid context (python-gssapi
`gssapi.raw.ext_krb5.krb5_export_lucid_sec_context(ctx, 1)`, or gssproxy's `linux_lucid_v1`
export): the keys, enctypes, both sequence numbers, the end time and our role. From then on,
as in the Linux kernel, every MIC and Wrap token of the context is made and checked here
(RFC 4121 via `pynfsd.gss.rfc4121`), with no call back into the GSS library: exporting
destroys the library's context anyway.

Sequence numbers: we number our tokens from the exported send sequence. Received sequence
numbers are returned by the `*_seq` variants and not checked here: RPCSEC_GSS runs its own
sequence window (RFC 2203 §5.3.3.1), as the kernel does.

Thread safety: one context may be used from several threads at once (the crypto objects are
kept per thread of use, the sequence counter is one C-level iterator, atomic under the GIL).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pynfsd.gss import ContextExpired
from pynfsd.gss import rfc4121 as cfx
from pynfsd.gss.krb5crypto import Buffer

LUCID_VERSION = 1
PROTOCOL_CFX = 1  # lucid "protocol" 1 = RFC 4121; 0 = RFC 1964 (DES, 3DES, RC4: unsupported)


class Krb5Context:
    """MIC and Wrap for one established krb5 context (RFC 4121, enctypes 17, 18, 19, 20).

    Build it from a lucid context object (python-gssapi's `Krb5LucidContextV1`, or anything
    with the same attributes); `from_keys` builds one from `CfxKeys`. `clock` gives the wall
    clock in seconds since the epoch (for the end time), `random` the confounders (by default
    `krb5crypto` draws them from the kernel's CSPRNG itself).
    """

    # GSS_GetMIC and GSS_Wrap (conf: bool = True), made per context by `rfc4121`
    get_mic: Callable[[Buffer], bytes]
    wrap: Callable[..., bytes | bytearray]
    # GSS_VerifyMIC: raises BadMic, DefectiveToken or ContextExpired unless `token` is a MIC
    # of `msg` (made by `rfc4121.mic_checker`)
    verify_mic: Callable[[Buffer, Buffer], None]
    # GSS_Unwrap: (message, confidentiality was applied); raises like `verify_mic`
    unwrap: Callable[[Buffer], tuple[bytes | bytearray, bool]]

    def __init__(
        self,
        lucid: Any,
        *,
        clock: Callable[[], float] = time.time,
        random: Callable[[int], bytes] | None = None,
    ) -> None:
        if lucid.version != LUCID_VERSION or lucid.protocol != PROTOCOL_CFX:
            raise ValueError(
                f"unsupported lucid context (version {lucid.version}, protocol "
                f"{lucid.protocol}): only RFC 4121 (CFX) enctypes are implemented"
            )
        kd = lucid.cfx_kd
        keys = cfx.CfxKeys(
            bool(lucid.is_initiator),
            int(kd.ctx_key_type),
            bytes(kd.ctx_key),
            int(kd.acceptor_subkey_type or 0) or None,
            bytes(kd.acceptor_subkey) if kd.acceptor_subkey else None,
        )
        self._clock = clock
        self._setup(keys, int(lucid.send_seq), int(lucid.recv_seq), float(lucid.endtime), random)

    @classmethod
    def from_keys(
        cls,
        keys: cfx.CfxKeys,
        *,
        send_seq: int = 0,
        recv_seq: int = 0,
        endtime: float = float("inf"),
        clock: Callable[[], float] = time.time,
        random: Callable[[int], bytes] | None = None,
    ) -> Krb5Context:
        """A context from its keys (`rfc4121.CfxKeys`: our role, enctype, key, subkey)."""
        self = cls.__new__(cls)
        self._clock = clock
        self._setup(keys, send_seq, recv_seq, endtime, random)
        return self

    def _setup(
        self,
        keys: cfx.CfxKeys,
        send_seq: int,
        recv_seq: int,
        endtime: float,
        random: Callable[[int], bytes] | None,
    ) -> None:
        self._keys = keys
        self._seq = cfx.sequence_numbers(send_seq)
        self.get_mic = cfx.mic_maker(keys, self._seq)
        self.wrap = cfx.wrap_maker(keys, self._seq, random)
        self.verify_mic = cfx.mic_checker(keys, self._clock, endtime)
        self.unwrap = cfx.unwrapper(keys, self._clock, endtime)
        self.initiator = keys.initiator
        self.enctype = keys.send.seal.profile.enctype
        self.recv_seq = recv_seq  # the peer's next sequence number at export time
        self.endtime = endtime

    # -- variants that also return the token's sequence number -------------------------------

    def verify_mic_seq(self, msg: Buffer, token: Buffer) -> int:
        self.verify_mic(msg, token)
        return cfx.sequence_number(token)

    def unwrap_seq(self, token: Buffer) -> tuple[bytes | bytearray, bool, int]:
        self._check_time()
        return cfx.read_wrap(self._keys, token)

    def expired(self) -> bool:
        return self._clock() >= self.endtime

    def _check_time(self) -> None:
        if self.expired():
            raise ContextExpired("the context's ticket has expired")
