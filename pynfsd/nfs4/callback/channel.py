"""One TCP connection (and RPCSEC_GSS context) to a client's callback service."""

from __future__ import annotations

import asyncio

from pynfsd.gen import rpc as R
from pynfsd.nfs4.callback.codec import CB_VERSION
from pynfsd.nfs4.callback.errors import CallbackError
from pynfsd.nfs4.callback.initiator import CallbackInitiator, ServerGssIdentity
from pynfsd.nfs4.callback.target import AuthSysSecurity, CallbackTarget, GssSecurity
from pynfsd.rpc.client import AuthRejected, RpcClient, RpcError
from pynfsd.rpc.gss_initiator import GssClientError, RpcsecGssAuth

MAX_CB_REPLY = 256 << 10
_STALE_CONTEXT = (R.RPCSEC_GSS_CREDPROBLEM, R.RPCSEC_GSS_CTXPROBLEM)


class CallbackChannel:
    """One TCP connection to a client's callback service and, under RPCSEC_GSS, one context.
    Concurrent calls share it; `call` opens it (again, after a loss) when needed."""

    def __init__(self, target: CallbackTarget, gss: ServerGssIdentity | None, timeout: float) -> None:
        self.target = target
        self.gss = gss
        self.timeout = timeout
        self._rpc: RpcClient | None = None
        self._lock = asyncio.Lock()

    async def call(self, proc: int, args: bytes) -> bytes:
        """Results of one callback procedure; CallbackError on any failure."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._call(proc, args)
        except CallbackError:
            raise
        except TimeoutError:
            self.close()
            raise CallbackError(f"no answer from {self.target.uaddr} in {self.timeout:g} s") from None
        except (OSError, RpcError) as e:
            self.close()
            raise CallbackError(_describe(e)) from None

    async def _call(self, proc: int, args: bytes) -> bytes:
        rpc = await self._open()
        auth = rpc.auth
        try:
            return await rpc.call(self.target.program, CB_VERSION, proc, args)
        except AuthRejected as e:
            sec = self.target.security
            if not isinstance(sec, GssSecurity) or e.auth_stat not in _STALE_CONTEXT:
                raise
        # RFC 2203 §5.3.3.3: the client's service dropped our context; the call never reached
        # the procedure, so a new context and one retry are safe.
        async with self._lock:
            if rpc.auth is auth:
                rpc.auth = await self._establish(rpc, sec)
        return await rpc.call(self.target.program, CB_VERSION, proc, args)

    async def _open(self) -> RpcClient:
        async with self._lock:
            if self._rpc is None or self._rpc.is_closed:
                self._rpc = await self._connect()
            return self._rpc

    async def _connect(self) -> RpcClient:
        addr = self.target.address()
        sec = self.target.security
        cred = sec if isinstance(sec, AuthSysSecurity) else None
        rpc = await RpcClient.connect(addr.host, addr.port, cred=cred, max_record=MAX_CB_REPLY)
        if isinstance(sec, GssSecurity):
            try:
                rpc.auth = await self._establish(rpc, sec)
            except BaseException:
                rpc.close()
                raise
        return rpc

    async def _establish(self, rpc: RpcClient, sec: GssSecurity) -> RpcsecGssAuth:
        if self.gss is None:
            raise CallbackError("RPCSEC_GSS callback, but the server has no GSS identity")
        initiator = CallbackInitiator(self.gss, sec.target)
        auth = RpcsecGssAuth(initiator, sec.service, prog=self.target.program, vers=CB_VERSION)
        try:
            await auth.establish(rpc)  # the blocking GSS steps run in worker threads
        except GssClientError as e:
            raise CallbackError(f"RPCSEC_GSS context with {sec.target}: {e}") from None
        return auth

    def close(self) -> None:
        if self._rpc is not None:
            self._rpc.close()
            self._rpc = None


def _describe(e: Exception) -> str:
    if isinstance(e, OSError):
        return f"cannot reach the callback service: {e.strerror or e}"
    return f"{type(e).__name__}: {e}"
