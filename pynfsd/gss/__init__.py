"""GSS-API for RPCSEC_GSS: context establishment elsewhere, per-message krb5 crypto here.

`pynfsd.gss.krb5crypto` (RFC 3961/3962/8009 enctypes), `pynfsd.gss.rfc4121` (MIC and Wrap
tokens) and `pynfsd.gss.lucid` (`Krb5Context`, built from an exported lucid context) need only
`cryptography`; nothing here imports python-gssapi at import time.

The per-message errors below carry the GSS-API major status (RFC 2744 §3.9.1) that an
RPCSEC_GSS reply reports.
"""

from __future__ import annotations

GSS_S_BAD_SIG = 6 << 16  # a.k.a. GSS_S_BAD_MIC
GSS_S_DEFECTIVE_TOKEN = 9 << 16
GSS_S_CONTEXT_EXPIRED = 12 << 16


class GssError(Exception):
    """A per-message token was rejected."""

    major: int = 13 << 16  # GSS_S_FAILURE


class DefectiveToken(GssError):
    """Malformed token: wrong ID, filler, direction, lengths, or a key the context lacks."""

    major = GSS_S_DEFECTIVE_TOKEN


class BadMic(GssError):
    """The checksum (MIC, or the integrity check of a Wrap token) does not verify."""

    major = GSS_S_BAD_SIG


class ContextExpired(GssError):
    """The context's end time (the ticket's) has passed."""

    major = GSS_S_CONTEXT_EXPIRED


__all__ = [
    "GSS_S_BAD_SIG",
    "GSS_S_CONTEXT_EXPIRED",
    "GSS_S_DEFECTIVE_TOKEN",
    "BadMic",
    "ContextExpired",
    "DefectiveToken",
    "GssError",
]
