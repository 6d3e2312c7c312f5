"""AUTH_NONE, AUTH_SYS (strict decoding) and the flavour registry."""

from __future__ import annotations

import struct

import pytest

from pynfsd.gen import rpc as R
from pynfsd.rpc.auth import (
    NOBODY,
    Accepted,
    AuthFlavor,
    AuthNone,
    AuthRegistry,
    AuthSys,
    Credential,
    credential_identity,
    decode_authsys,
)
from pynfsd.rpc.client import AuthSysCred, encode_call
from pynfsd.rpc.errors import AuthError
from pynfsd.rpc.header import CallHeader, decode_call

NULL = R.opaque_auth(R.AUTH_NONE, b"")


def header(cred: R.opaque_auth, verf: R.opaque_auth = NULL) -> CallHeader:
    return decode_call(encode_call(1, 100003, 4, 1, b"", cred, verf))


def authsys_body(machinename: bytes, gids: list[int], trailing: bytes = b"") -> bytes:
    name = struct.pack(">I", len(machinename)) + machinename + b"\0" * (-len(machinename) % 4)
    gid_list = struct.pack(f">I{len(gids)}I", len(gids), *gids)
    return struct.pack(">I", 77) + name + struct.pack(">II", 1000, 100) + gid_list + trailing


async def test_authsys_accepts_and_maps_identity() -> None:
    cred = AuthSysCred(1000, 100, tuple(range(16)), "m" * 255).opaque_auth()
    result = await AuthSys().accept(header(cred))
    assert result.cred == Credential(R.AUTH_SYS, 1000, 100, tuple(range(16)), None, "m" * 255)
    assert result.verf is None and result.reply is None


def test_authsys_strict_bounds() -> None:
    assert decode_authsys(authsys_body(b"h", [1, 2])).gids == (1, 2)
    bad = [
        authsys_body(b"m" * 256, []),  # machinename > 255
        authsys_body(b"h", list(range(17))),  # > 16 gids
        authsys_body(b"h", [], trailing=b"\0\0\0\0"),  # trailing bytes
        authsys_body(b"h", [])[:-4],  # truncated
        authsys_body(b"\xff\xfe", []),  # not UTF-8
    ]
    for body in bad:
        with pytest.raises(AuthError) as info:
            decode_authsys(body)
        assert info.value.auth_stat == R.AUTH_BADCRED


async def test_authsys_requires_null_verifier() -> None:
    cred = AuthSysCred(0, 0).opaque_auth()
    with pytest.raises(AuthError) as info:
        await AuthSys().accept(header(cred, R.opaque_auth(R.AUTH_SYS, b"")))
    assert info.value.auth_stat == R.AUTH_BADVERF
    with pytest.raises(AuthError):
        await AuthSys().accept(header(cred, R.opaque_auth(R.AUTH_NONE, b"xxxx")))


async def test_auth_none_is_anonymous() -> None:
    result = await AuthNone().accept(header(NULL))
    assert (result.cred.flavor, result.cred.uid, result.cred.gid) == (R.AUTH_NONE, NOBODY, NOBODY)
    assert (await AuthNone(7, 8).accept(header(NULL))).cred.uid == 7
    with pytest.raises(AuthError):
        await AuthNone().accept(header(NULL, R.opaque_auth(R.AUTH_SYS, b"")))


async def test_identity_wrap_unwrap() -> None:
    flavor = AuthSys()
    acc = await flavor.accept(header(AuthSysCred(1, 1).opaque_auth()))
    args = memoryview(b"args")
    assert await flavor.unwrap(acc, args) is args
    assert await flavor.wrap(acc, [b"res"]) == [b"res"]


def test_registry_lookup_and_unknown_flavor() -> None:
    reg = AuthRegistry.default()
    assert reg.flavors() == [R.AUTH_NONE, R.AUTH_SYS]
    assert isinstance(reg.lookup(R.AUTH_SYS), AuthSys)
    with pytest.raises(AuthError) as info:
        reg.lookup(R.RPCSEC_GSS)
    assert info.value.auth_stat == R.AUTH_REJECTEDCRED
    with pytest.raises(AuthError) as info:
        AuthRegistry([AuthSys()], unknown_flavor_stat=R.AUTH_BADCRED).lookup(R.AUTH_NONE)
    assert info.value.auth_stat == R.AUTH_BADCRED


async def test_registry_refuses_duplicates_and_accepts_plugins() -> None:
    class Custom(AuthFlavor):
        flavor = 390003

        async def accept(self, call: CallHeader) -> Accepted:
            return Accepted(Credential(self.flavor, 0, 0, principal="x@REALM"))

    reg = AuthRegistry.default()
    with pytest.raises(ValueError):
        reg.register(AuthSys())
    reg.register(Custom())
    cred = (await reg.lookup(390003).accept(header(NULL))).cred
    assert cred.principal == "x@REALM" and cred.sec_flavor == 390003
    assert Credential(6, 0, 0, pseudoflavor=390005).sec_flavor == 390005


async def test_authsys_remembers_a_credential_by_its_bytes_within_its_bound() -> None:
    flavor = AuthSys(max_cached=2)
    creds = [AuthSysCred(uid, uid).opaque_auth() for uid in (1, 2, 3)]
    first = await flavor.accept(header(creds[0]))
    assert await flavor.accept(header(creds[0])) is first  # the same bytes: not decoded again
    assert flavor.cache_identity(first) == credential_identity(first.cred)
    await flavor.accept(header(creds[1]))
    third = await flavor.accept(header(creds[2]))  # one more: the oldest body is forgotten
    assert len(flavor) == 2 and third.cred.uid == 3
    again = await flavor.accept(header(creds[0]))
    assert again is not first and again.cred == first.cred
    # A remembered body with a bad verifier is refused as before; a bad body is never kept.
    with pytest.raises(AuthError) as info:
        await flavor.accept(header(creds[0], R.opaque_auth(R.AUTH_SYS, b"")))
    assert info.value.auth_stat == R.AUTH_BADVERF
    with pytest.raises(AuthError):
        await flavor.accept(header(R.opaque_auth(R.AUTH_SYS, authsys_body(b"h", [])[:-4])))
    assert len(flavor) == 2


def test_only_flavours_that_protect_their_bodies_are_awaited_for_it() -> None:
    class Wrapping(AuthFlavor):
        flavor = 99

        async def accept(self, call: CallHeader) -> Accepted:
            raise AssertionError

        async def wrap(self, accepted: Accepted, results: list[bytes]) -> list[bytes]:
            return results

    assert not AuthSys.wraps and not AuthNone.wraps and Wrapping.wraps
