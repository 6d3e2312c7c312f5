"""The RPC client, re-exported under its former name: it lives in `pynfsd.rpc.client`."""

from pynfsd.rpc.client import (
    NULL_AUTH,
    AuthRejected,
    AuthSysCred,
    BadReply,
    CallAuth,
    ConnectionClosed,
    GarbageArgsError,
    ProcUnavail,
    ProgMismatch,
    ProgUnavail,
    RpcAcceptedError,
    RpcClient,
    RpcDeniedError,
    RpcError,
    RpcMismatch,
    SystemErr,
    decode_reply,
    decode_reply_verf,
    encode_call,
)

__all__ = [
    "NULL_AUTH", "AuthRejected", "AuthSysCred", "BadReply", "CallAuth", "ConnectionClosed",
    "GarbageArgsError", "ProcUnavail", "ProgMismatch", "ProgUnavail", "RpcAcceptedError",
    "RpcClient", "RpcDeniedError", "RpcError", "RpcMismatch", "SystemErr", "decode_reply",
    "decode_reply_verf", "encode_call",
]
