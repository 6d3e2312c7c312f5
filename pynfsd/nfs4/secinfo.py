"""Security flavour lists for SECINFO (RFC 7530 §16.31, RFC 2203 §5)."""

from __future__ import annotations

from pynfsd.gen import nfs4 as N

AUTH_NONE = 0
AUTH_SYS = 1
RPCSEC_GSS = 6
# The Kerberos V5 mechanism OID 1.2.840.113554.1.2.2 (DER contents, no tag: as knfsd sends it).
KRB5_OID = bytes.fromhex("2a864886f712010202")
_GSS_SERVICE = {"krb5": 1, "krb5i": 2, "krb5p": 3}  # rpc_gss_svc_t


def secinfo_list(flavours: tuple[str, ...]) -> list[N.secinfo4]:
    """The export's flavours in the administrator's order of preference."""
    out = []
    for name in flavours:
        if name in _GSS_SERVICE:
            info = N.rpcsec_gss_info(KRB5_OID, 0, _GSS_SERVICE[name])
            out.append(N.secinfo4(RPCSEC_GSS, info))
        elif name == "sys":
            out.append(N.secinfo4(AUTH_SYS, None))
        elif name == "none":
            out.append(N.secinfo4(AUTH_NONE, None))
    return out
