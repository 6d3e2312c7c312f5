"""The server's NFSv4.0 callback client: CB_NULL and CB_COMPOUND to a client's callback service
(RFC 7530 §3.3.3, §16.33, §17), under AUTH_NONE, AUTH_SYS or RPCSEC_GSS krb5/krb5i/krb5p.

Theory of operation.  SETCLIENTID hands the server a `cb_client4` (the callback program and a
universal address) and a `callback_ident`; `CallbackTarget.from_setclientid` records them with
the security the call itself used (§3.3.3: the callback uses "the security flavor of the
original SETCLIENTID operation").  After SETCLIENTID_CONFIRM, `CallbackClient.confirmed` resets
the client's `CallbackPath` (unknown) and probes it in the background: probing → up, or down
with the reason.  The server consults `path(clientid).up` before it grants a delegation.

The modules, sans-IO first: `uaddr` (universal addresses, RFC 5665 §5.2.3.3-4), `target`
(what SETCLIENTID records, with its security), `codec` (the CB_COMPOUND builders and a checking
decoder over the generated codec), `path` (the path state with generations, so that a probe
started for old callback information cannot mark the new path); then `initiator` (the server's
GSS identity), `channel` (one connection and context) and `registry` (`CallbackClient`).

RPCSEC_GSS (the seed design of the kernel): the server is the GSS *initiator*.  It names itself
with the host-based service `nfs@<server host>` (§3.3.3 MUST), takes its key from its keytab
(never the caller's ccache), and targets the principal that acquired the client ID, whose
callback service accepts and so authenticates the server.  Establishment runs in a worker
thread through python-gssapi; the context is then exported as a lucid context and every MIC
and Wrap token is made by pynfsd (`pynfsd.gss.lucid.Krb5Context`, initiator role).  The RPC
framing and RFC 2203 call encoding are `pynfsd.rpc.client` and `pynfsd.rpc.gss_initiator`.
A context the client's service drops (CREDPROBLEM/CTXPROBLEM) is replaced once per call.

Wiring (`pynfsd.nfs4.server` builds it, `pynfsd.nfs4.ops.client` uses it):
    callbacks = CallbackClient(ServerGssIdentity(f"nfs@{host}", keytab), clock=config.clock)
    # SETCLIENTID: record the target as the client's (opaque) `callback`
    callback = CallbackTarget.from_setclientid(args, ctx.cred)
    # SETCLIENTID_CONFIRM, after the state accepted it (through `Services.start_callback`):
    callbacks.confirmed(clientid, <the confirmed record>.callback)
    # client dropped: callbacks.forget(clientid) (the state manager's on_client_dropped);
    # shutdown: await callbacks.close()
"""

from __future__ import annotations

from pynfsd.nfs4.callback.channel import MAX_CB_REPLY, CallbackChannel
from pynfsd.nfs4.callback.codec import (
    CB_COMPOUND,
    CB_NULL,
    CB_VERSION,
    cb_getattr,
    cb_recall,
    decode_cb_compound_res,
    encode_cb_compound,
)
from pynfsd.nfs4.callback.errors import (
    BadCallbackReply,
    BadUniversalAddress,
    CallbackError,
)
from pynfsd.nfs4.callback.initiator import CallbackInitiator, ServerGssIdentity
from pynfsd.nfs4.callback.path import CallbackPath, PathState
from pynfsd.nfs4.callback.registry import CallbackClient, HasCallback
from pynfsd.nfs4.callback.target import (
    AuthSysSecurity,
    CallbackSecurity,
    CallbackTarget,
    GssSecurity,
    security_from_credential,
)
from pynfsd.nfs4.callback.uaddr import (
    MAX_NETID,
    MAX_UADDR,
    CallbackAddress,
    parse_universal_address,
    universal_address,
)

__all__ = [
    "AuthSysSecurity", "BadCallbackReply", "BadUniversalAddress", "CB_COMPOUND", "CB_NULL",
    "CB_VERSION", "CallbackAddress", "CallbackChannel", "CallbackClient", "CallbackError",
    "CallbackInitiator", "CallbackPath", "CallbackSecurity", "CallbackTarget", "GssSecurity",
    "HasCallback", "MAX_CB_REPLY", "MAX_NETID", "MAX_UADDR", "PathState", "ServerGssIdentity",
    "cb_getattr", "cb_recall", "decode_cb_compound_res", "encode_cb_compound",
    "parse_universal_address", "security_from_credential", "universal_address",
]
