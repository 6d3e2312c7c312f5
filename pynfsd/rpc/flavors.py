"""The security flavours pynfsd speaks, in one table (RFC 5531 §8.2, RFC 2203, RFC 2623 §2).

Theory of operation: an export's `sec=` list names flavours as exports(5) does (none, sys,
krb5, krb5i, krb5p).  On the wire a call carries an RPC auth flavour (AUTH_NONE, AUTH_SYS,
RPCSEC_GSS); under RPCSEC_GSS the mechanism and service select a pseudoflavour (RFC 2623
§2.1: 390003 krb5, 390004 krb5i, 390005 krb5p), which is what a `Credential.sec_flavor` holds
and what SECINFO lists.  Each `Flavour` row ties these together; the lookups below go from a
name, a credential's `sec_flavor` or a GSS service to the row.  The wire numbers come from the
generated codecs (rpc.x, rpcsec_gss.x); the krb5 mechanism OID is written once, in dotted
form, and encoded here.
"""

from __future__ import annotations

from dataclasses import dataclass

from pynfsd.gen import rpc as R
from pynfsd.gen import rpcsec_gss as G

AUTH_NONE, AUTH_SYS, RPCSEC_GSS = R.AUTH_NONE, R.AUTH_SYS, R.RPCSEC_GSS
SVC_NONE, SVC_INTEGRITY, SVC_PRIVACY = (
    G.rpc_gss_svc_none, G.rpc_gss_svc_integrity, G.rpc_gss_svc_privacy,
)
# The Kerberos V5 GSS-API mechanism (RFC 1964 §1).
KRB5_MECH_DOTTED = "1.2.840.113554.1.2.2"


def der_oid_contents(dotted: str) -> bytes:
    """The contents octets of a DER OBJECT IDENTIFIER (X.690 §8.19), without tag and length:
    the form SECINFO sends (RFC 7530 §16.31.4, as knfsd) and GSS-API's `gss_OID` elements."""
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.append(0x80 | (arc & 0x7F))
        out += bytes(reversed(chunk))
    return bytes(out)


KRB5_MECH_OID = der_oid_contents(KRB5_MECH_DOTTED)  # 2a864886f712010202


@dataclass(frozen=True, slots=True)
class Flavour:
    """One security flavour: its exports(5) name, the RPC auth flavour of its calls, the number
    a credential's `sec_flavor` carries (the pseudoflavour under RPCSEC_GSS) and, under
    RPCSEC_GSS, the service (rpc_gss_service_t) and mechanism OID (DER contents)."""

    name: str
    auth_flavor: int
    sec_flavor: int
    service: int | None = None
    mech_oid: bytes | None = None


FLAVOURS: tuple[Flavour, ...] = (
    Flavour("none", AUTH_NONE, AUTH_NONE),
    Flavour("sys", AUTH_SYS, AUTH_SYS),
    Flavour("krb5", RPCSEC_GSS, G.RPC_AUTH_GSS_KRB5, SVC_NONE, KRB5_MECH_OID),
    Flavour("krb5i", RPCSEC_GSS, G.RPC_AUTH_GSS_KRB5I, SVC_INTEGRITY, KRB5_MECH_OID),
    Flavour("krb5p", RPCSEC_GSS, G.RPC_AUTH_GSS_KRB5P, SVC_PRIVACY, KRB5_MECH_OID),
)
BY_NAME = {f.name: f for f in FLAVOURS}
BY_SEC_FLAVOR = {f.sec_flavor: f for f in FLAVOURS}
_KRB5_BY_SERVICE = {f.service: f for f in FLAVOURS if f.service is not None}
# The krb5 pseudoflavour of each RPCSEC_GSS service (RFC 2623 §2.1).
KRB5_PSEUDOFLAVORS = {svc: f.sec_flavor for svc, f in _KRB5_BY_SERVICE.items()}


def sec_name(sec_flavor: int) -> str | None:
    """The exports(5) sec= name of a credential's `sec_flavor`; None when not in the table."""
    f = BY_SEC_FLAVOR.get(sec_flavor)
    return None if f is None else f.name


def service_of(pseudoflavor: int | None) -> int | None:
    """The RPCSEC_GSS service of a krb5 pseudoflavour; None for anything else."""
    f = BY_SEC_FLAVOR.get(pseudoflavor) if pseudoflavor is not None else None
    return None if f is None else f.service
