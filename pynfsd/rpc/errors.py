"""Exceptions that steer the RPC layer's reply (RFC 5531 §9).

Handlers and auth flavours raise these; `pynfsd.rpc.server.RpcServer` maps each to the reply
in one place.  Any other exception from a handler becomes SYSTEM_ERR, logged with its traceback.
"""

from __future__ import annotations


class RpcServerError(Exception):
    """Base of the exceptions the RPC dispatcher understands."""


class AuthError(RpcServerError):
    """Reject the call with MSG_DENIED / AUTH_ERROR carrying `auth_stat`."""

    def __init__(self, auth_stat: int, why: str = "") -> None:
        super().__init__(why or f"auth_stat {auth_stat}")
        self.auth_stat = auth_stat


class GarbageArgs(RpcServerError):
    """The procedure arguments cannot be decoded: reply GARBAGE_ARGS."""


class DropCall(RpcServerError):
    """Send no reply at all (e.g. an RPCSEC_GSS replay outside the window, RFC 2203 §5.3.3.1)."""
