"""Auth flavours behind one small interface, and the registry that picks one per call.

Theory of operation: for each call the dispatcher looks the credential's flavour up in the
`AuthRegistry` and awaits `accept(header)`, which verifies credential and verifier and returns
an `Accepted` (the caller's `Credential`, the reply verifier, and any flavour state), or raises
`AuthError` / `DropCall`.  Then `unwrap` yields the procedure arguments and `wrap` protects the
results (identity for AUTH_NONE and AUTH_SYS; RPCSEC_GSS integrity/privacy plug in here).
All three are coroutines so a flavour may do its work off the event loop (GSS-API calls).
A flavour that answers the call itself (RPCSEC_GSS control procedures) sets `Accepted.reply`.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass

from pynfsd.gen import rpc as R
from pynfsd.rpc.errors import AuthError
from pynfsd.rpc.header import CallHeader
from pynfsd.xdr.runtime import Unpacker, XdrError

NOBODY = 65534
#: AUTH_SYS credential bodies whose decoded verdict is remembered (`AuthSys`).
DEFAULT_MAX_CREDENTIALS = 1024


@dataclass(frozen=True, slots=True)
class Credential:
    """Who the caller is, as established by its auth flavour."""

    flavor: int
    uid: int
    gid: int
    gids: tuple[int, ...] = ()
    principal: str | None = None
    machinename: str = ""
    pseudoflavor: int | None = None  # RPCSEC_GSS: krb5/krb5i/krb5p (`pynfsd.rpc.flavors`)

    @property
    def sec_flavor(self) -> int:
        """The security flavour to check against an export's sec= list (RFC 7530 §3.2)."""
        return self.flavor if self.pseudoflavor is None else self.pseudoflavor


@dataclass(slots=True)
class Accepted:
    """A flavour's verdict on a call it accepted."""

    cred: Credential
    verf: R.opaque_auth | None = None  # the reply verifier; None: AUTH_NONE
    reply: bytes | None = None  # results if the flavour handled the call itself
    state: object = None  # flavour-private (e.g. GSS context and sequence number)


class AuthFlavor(ABC):
    """One auth flavour (RFC 5531 §8.2).  Subclasses set `flavor`."""

    flavor: int
    #: Whether `unwrap` or `wrap` change anything (set for each subclass from whether it
    #: overrides them): the dispatcher skips both for a flavour that does not.
    wraps: bool = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.wraps = cls.unwrap is not AuthFlavor.unwrap or cls.wrap is not AuthFlavor.wrap

    @abstractmethod
    async def accept(self, call: CallHeader) -> Accepted:
        """Verify credential and verifier; raise AuthError (or DropCall) to refuse.

        A flavour answering a control procedure itself may raise GarbageArgs when that
        procedure's arguments do not decode."""

    async def unwrap(self, accepted: Accepted, args: memoryview) -> memoryview:
        """The procedure arguments as the program sees them; raise GarbageArgs if damaged."""
        return args

    async def wrap(self, accepted: Accepted, results: list[bytes]) -> list[bytes]:
        """The results as they go on the wire (after the reply header)."""
        return results

    def cache_identity(self, accepted: Accepted) -> bytes:
        """Who the duplicate request cache may replay this call's reply to: the same ids."""
        return credential_identity(accepted.cred)


class AuthNone(AuthFlavor):
    """AUTH_NONE (RFC 5531 §10.1): anonymous; the caller maps to `anon_uid`/`anon_gid`."""

    flavor = R.AUTH_NONE

    def __init__(self, anon_uid: int = NOBODY, anon_gid: int = NOBODY) -> None:
        self._cred = Credential(R.AUTH_NONE, anon_uid, anon_gid)
        self._accepted = Accepted(self._cred)

    async def accept(self, call: CallHeader) -> Accepted:
        # RFC 5531 §10.1 only *recommends* an empty body, so any body is accepted.
        _require_null_verf(call)
        return self._accepted


class AuthSys(AuthFlavor):
    """AUTH_SYS (RFC 5531 §10.2 / Appendix A), decoded strictly.

    A client sends the same few credentials over and over, so the verdict on a credential
    body (its `Accepted`, with the reply cache's identity bytes in `state`) is remembered by
    the body's bytes: the next call with those bytes skips the decode.  At most `max_cached`
    bodies are remembered; one more forgets the oldest.  Only accepted bodies are kept."""

    flavor = R.AUTH_SYS

    def __init__(self, max_cached: int = DEFAULT_MAX_CREDENTIALS) -> None:
        self.max_cached = max_cached
        self._cache: dict[bytes, Accepted] = {}

    def __len__(self) -> int:
        return len(self._cache)

    async def accept(self, call: CallHeader) -> Accepted:
        _require_null_verf(call)  # RFC 5531 Appendix A: the verifier is AUTH_NONE
        body = call.cred.body
        hit = self._cache.get(body)
        if hit is not None:
            return hit
        cred = decode_authsys(body)
        accepted = Accepted(cred, state=credential_identity(cred))
        cache = self._cache
        if len(cache) >= self.max_cached:
            del cache[next(iter(cache))]  # the oldest body first
        cache[body] = accepted
        return accepted

    def cache_identity(self, accepted: Accepted) -> bytes:
        identity = accepted.state
        return identity if isinstance(identity, bytes) else super().cache_identity(accepted)


def decode_authsys(body: bytes) -> Credential:
    """authsys_parms → Credential; machinename ≤ 255, ≤ 16 gids, no trailing bytes."""
    u = Unpacker(body)
    try:
        parms = R.unpack_authsys_parms(u)
        u.done()
    except XdrError as e:
        raise AuthError(R.AUTH_BADCRED, f"bad AUTH_SYS credential: {e}") from None
    return Credential(
        R.AUTH_SYS, parms.uid, parms.gid, tuple(parms.gids), None, parms.machinename
    )


def credential_identity(cred: Credential) -> bytes:
    """A credential's flavour, ids and principal as bytes (equal bytes: the same caller)."""
    head = struct.pack(f">{5 + len(cred.gids)}I", cred.flavor, cred.uid, cred.gid,
                       cred.pseudoflavor or 0, len(cred.gids), *cred.gids)
    return head + (cred.principal or "").encode()


def _require_null_verf(call: CallHeader) -> None:
    if call.verf.flavor != R.AUTH_NONE or call.verf.body:
        raise AuthError(R.AUTH_BADVERF, "verifier must be AUTH_NONE")


class AuthRegistry:
    """Flavour number → implementation.

    An unregistered flavour is refused with `unknown_flavor_stat`: AUTH_REJECTEDCRED by
    default, the one status an RFC prescribes for a flavour the server does not support
    (RFC 2203 §5.1, errata 4067).  Linux knfsd answers AUTH_BADCRED; both make clients give up.
    """

    def __init__(
        self, flavors: Iterable[AuthFlavor] = (), unknown_flavor_stat: int = R.AUTH_REJECTEDCRED
    ) -> None:
        self._flavors: dict[int, AuthFlavor] = {}
        self.unknown_flavor_stat = unknown_flavor_stat
        for impl in flavors:
            self.register(impl)

    @classmethod
    def default(cls) -> AuthRegistry:
        """AUTH_NONE and AUTH_SYS."""
        return cls([AuthNone(), AuthSys()])

    def register(self, impl: AuthFlavor) -> None:
        if impl.flavor in self._flavors:
            raise ValueError(f"auth flavour {impl.flavor} is already registered")
        self._flavors[impl.flavor] = impl

    def lookup(self, flavor: int) -> AuthFlavor:
        impl = self._flavors.get(flavor)
        if impl is None:
            raise AuthError(self.unknown_flavor_stat, f"unsupported auth flavour {flavor}")
        return impl

    def flavors(self) -> list[int]:
        return sorted(self._flavors)
