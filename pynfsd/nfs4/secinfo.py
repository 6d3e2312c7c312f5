"""Security flavour lists for SECINFO (RFC 7530 §16.31, RFC 2203 §5)."""

from __future__ import annotations

from pynfsd.gen import nfs4 as N
from pynfsd.rpc.flavors import BY_NAME


def secinfo_list(flavours: tuple[str, ...]) -> list[N.secinfo4]:
    """The export's flavours in the administrator's order of preference."""
    out = []
    for name in flavours:
        f = BY_NAME.get(name)
        if f is None:
            continue
        info = None
        if f.service is not None and f.mech_oid is not None:
            info = N.rpcsec_gss_info(f.mech_oid, 0, f.service)  # RFC 7530 §16.31.4
        out.append(N.secinfo4(f.auth_flavor, info))
    return out
