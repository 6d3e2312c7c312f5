"""What SETCLIENTID records for a callback: program, address, ident and the security of
the SETCLIENTID call itself (RFC 7530 §3.3.3, §16.33.4)."""

from __future__ import annotations

from dataclasses import dataclass

from pynfsd.gen import nfs4 as N
from pynfsd.gen import rpc as R
from pynfsd.nfs4.callback.errors import CallbackError
from pynfsd.nfs4.callback.uaddr import (
    MAX_NETID,
    MAX_UADDR,
    CallbackAddress,
    parse_universal_address,
)
from pynfsd.rpc.auth import Credential
from pynfsd.rpc.client import AuthSysCred
from pynfsd.rpc.flavors import SVC_NONE, service_of


@dataclass(frozen=True, slots=True)
class AuthSysSecurity(AuthSysCred):
    """§3.3.3: AUTH_SYS callbacks use the AUTH_SYS credential the client used (its
    machinename as sent, by default none)."""

    machinename: str = ""


@dataclass(frozen=True, slots=True)
class GssSecurity:
    """RPCSEC_GSS krb5: `target` is the principal that acquired the client ID (as a krb5
    principal name, e.g. "nfs/client.example.com@REALM"); `service` is 1, 2 or 3."""

    target: str
    service: int = SVC_NONE


CallbackSecurity = AuthSysSecurity | GssSecurity | None  # None: AUTH_NONE


def security_from_credential(cred: Credential) -> CallbackSecurity:
    """The callback security for a SETCLIENTID made under `cred` (RFC 7530 §3.3.3)."""
    if cred.flavor == R.AUTH_SYS:
        return AuthSysSecurity(cred.uid, cred.gid, tuple(cred.gids), cred.machinename)
    if cred.flavor == R.RPCSEC_GSS:
        service = service_of(cred.pseudoflavor)
        if not cred.principal or service is None:
            raise CallbackError("RPCSEC_GSS credential without a principal or krb5 service")
        return GssSecurity(cred.principal, service)
    return None


@dataclass(frozen=True, slots=True)
class CallbackTarget:
    """Everything needed to call a client back, as recorded at SETCLIENTID (§16.33.4)."""

    program: int
    netid: str
    uaddr: str
    ident: int
    security: CallbackSecurity

    @classmethod
    def from_setclientid(cls, args: N.SETCLIENTID4args, cred: Credential) -> CallbackTarget:
        loc = args.callback.cb_location
        netid, uaddr = loc.na_r_netid, loc.na_r_addr
        if len(netid) > MAX_NETID or len(uaddr) > MAX_UADDR:
            # Unusable as a callback address, and the record would hold (and CLID_INUSE echo,
            # §16.33.4) up to a whole request: kept as no callback path instead.
            netid, uaddr = "", ""
        return cls(args.callback.cb_program, netid, uaddr, args.callback_ident,
                   security_from_credential(cred))

    def address(self) -> CallbackAddress:
        return parse_universal_address(self.netid, self.uaddr)
