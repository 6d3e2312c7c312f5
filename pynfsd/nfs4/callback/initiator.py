"""The server as RPCSEC_GSS initiator for callbacks (RFC 7530 §3.3.3): its keytab identity
and, per context, python-gssapi for the token exchange then pynfsd's RFC 4121 code."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Sequence
from typing import Any

from pynfsd.gss.accept import PerPacket
from pynfsd.rpc.flavors import KRB5_MECH_OID
from pynfsd.rpc.gss_initiator import GssClientError

_CCACHE_SERIAL = itertools.count(1)


class ServerGssIdentity:
    """The server's initiator credentials: `name` ("nfs@<server host>", a host-based service
    name, RFC 7530 §3.3.3) with its key from `keytab` (default: KRB5_KTNAME, else
    /etc/krb5.keytab), tickets in a private in-memory ccache.  Thread-safe; acquired lazily."""

    def __init__(self, name: str | None = None, keytab: str | None = None, *,
                 enctypes: Sequence[int] = (), ccache: str | None = None) -> None:
        import socket

        self.name = name or f"nfs@{socket.getfqdn()}"
        self.keytab = keytab or os.environ.get("KRB5_KTNAME") or "/etc/krb5.keytab"
        self.enctypes = tuple(enctypes)
        # A MEMORY ccache lives as long as the process: its name must never be used again by
        # another identity (an id() is reused once its object is gone), or that identity would
        # find this one's tickets instead of its own keytab's.
        self.ccache = ccache or f"MEMORY:pynfsd-callback-{os.getpid()}-{next(_CCACHE_SERIAL)}"
        self._lock = threading.Lock()
        self._creds: Any = None

    def creds(self) -> Any:
        """The GSS credential handle (blocking: may read the keytab)."""
        with self._lock:
            if self._creds is None:
                self._creds = self._acquire()
            return self._creds

    def _acquire(self) -> Any:
        import gssapi.raw as gr

        name = gr.import_name(self.name.encode(), gr.NameType.hostbased_service)
        store: dict[bytes | str, bytes | str] = {b"client_keytab": os.fsencode(self.keytab), b"ccache": self.ccache.encode()}
        creds = gr.acquire_cred_from(store, name, usage="initiate").creds
        if self.enctypes:
            gr.krb5_set_allowable_enctypes(creds, list(self.enctypes))
        return creds


class CallbackInitiator:
    """One callback context's initiator (the `Initiator` protocol of `pynfsd.rpc.gss_initiator`):
    python-gssapi for the token exchange, then pynfsd's RFC 4121 code per packet."""

    def __init__(self, identity: ServerGssIdentity, target: str) -> None:
        self.identity = identity
        self.target = target
        self._ctx: Any = None
        self._pp: PerPacket | None = None

    def step(self, token: bytes | None) -> tuple[bytes, bool]:
        """Blocking: run it off the event loop."""
        import gssapi.raw as gr

        try:
            res = self._init(gr, token)
            self._ctx = res.context
            if not res.more_steps:
                self._pp = self._export(res.context)
        except gr.GSSError as e:
            raise GssClientError(f"GSS initiator {self.identity.name} for {self.target}: "
                                 f"{e.gen_message()}", e.maj_code, e.min_code) from None
        return res.token or b"", not res.more_steps

    def _init(self, gr: Any, token: bytes | None) -> Any:
        target = gr.import_name(self.target.encode(), gr.NameType.kerberos_principal)
        flags = gr.RequirementFlag
        # Mutual authentication: the server learns it reached the client's principal (§3.3.3);
        # no replay or sequence flags, as RPCSEC_GSS keeps its own window (RFC 2203 §5.3.3.1).
        wanted = [flags.mutual_authentication, flags.integrity, flags.confidentiality]
        return gr.init_sec_context(target, self.identity.creds(), self._ctx,
                                   gr.OID(elements=KRB5_MECH_OID), wanted, input_token=token)

    def _export(self, ctx: Any) -> PerPacket:
        from gssapi.raw.ext_krb5 import krb5_export_lucid_sec_context

        from pynfsd.gss.lucid import Krb5Context

        return Krb5Context(krb5_export_lucid_sec_context(ctx, 1))

    def per_packet(self) -> PerPacket:
        if self._pp is None:
            raise GssClientError("the callback context is not established")
        return self._pp
