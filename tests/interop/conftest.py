"""A throwaway MIT Kerberos realm for interop tests (k5test + the Debian KDC binaries).

`krb5_realm` (session scope) creates the realm in a temporary directory, a service principal
`nfs/<fqdn>` with keys of all four AES enctypes (17, 18, 19, 20) in the realm's keytab, a
user principal with a TGT in the realm's credential cache, and exports the realm's
environment (KRB5_CONFIG, KRB5CCNAME, KRB5_KTNAME, ...) into this process before any GSS
call. The KDC listens on loopback ports picked free at start (k5test's fixed 61000 would
collide with a KDC left by a crashed run, or with a parallel test session), and it is stopped
by its PID at teardown. Needs scripts/krb5-deps.sh.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

ALL_AES_ENCTYPES = (
    "aes256-cts-hmac-sha1-96:normal,aes128-cts-hmac-sha1-96:normal,"
    "aes256-cts-hmac-sha384-192:normal,aes128-cts-hmac-sha256-128:normal"
)
PORTS_PER_REALM = 10


@dataclass
class Krb5Realm:
    """What tests need to know about the running realm."""

    realm: str
    hostname: str
    service: str  # host-based name for import_name: "nfs@localhost"
    service_principal: str  # "nfs/localhost@KRBTEST.COM"
    user_principal: str
    keytab: str
    ccache: str
    env: dict[str, str]
    kdc_pid: int
    tmpdir: str
    k5: Any = field(repr=False)

    def kadmin(self, query: str) -> bytes:
        """Run one `kadmin.local` query against the realm's database."""
        out: bytes = self.k5.run_kadminl(query)
        return out

    def add_service(self, principal: str, keytab: str | None = None) -> None:
        """Another principal with all four AES keys, added to `keytab` (default: the realm's)."""
        self.kadmin(f"addprinc -randkey -e {ALL_AES_ENCTYPES} {principal}")
        self.kadmin(f"ktadd -k {keytab or self.keytab} -norandkey {principal}")


def _ports_free(base: int) -> bool:
    for port in range(base, base + PORTS_PER_REALM):
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    return False
    return True


def _free_portbase() -> int:
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000, PORTS_PER_REALM)
        if _ports_free(base):
            return base
    raise RuntimeError("no free block of ports for the test KDC")


def start_realm() -> Any:
    from k5test import K5Realm

    k5 = K5Realm(portbase=_free_portbase(), create_host=False, start_kdc=False, get_creds=False)
    try:
        k5.run_kadminl(f"addprinc -randkey -e {ALL_AES_ENCTYPES} {k5.nfs_princ}")
        k5.extract_keytab(k5.nfs_princ, k5.keytab)
        k5.start_kdc()
        k5.kinit(k5.user_princ, k5.password("user"))
    except BaseException:
        stop_realm(k5)
        raise
    return k5


def stop_realm(k5: Any) -> None:
    proc = getattr(k5, "_kdc_proc", None)
    if proc is not None:  # by PID: only the KDC this fixture started
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except Exception:
            proc.kill()
            proc.wait()
        k5._kdc_proc = None
    shutil.rmtree(k5.tmpdir, ignore_errors=True)


def establish_mit_pair(service: str, enctype: int, flags: list[Any]) -> tuple[Any, Any]:
    """An MIT initiator and acceptor context for ``service`` (python-gssapi raw contexts),
    with the initiator limited to ``enctype``; the realm's environment must be set."""
    import gssapi.raw as gr

    name = gr.import_name(service.encode(), gr.NameType.hostbased_service)
    icred = gr.acquire_cred(None, usage="initiate").creds
    gr.krb5_set_allowable_enctypes(icred, [enctype])
    acred = gr.acquire_cred(None, usage="accept").creds
    first = gr.init_sec_context(name, icred, flags=flags)
    assert first.token is not None
    accepted = gr.accept_sec_context(first.token, acred)
    done = gr.init_sec_context(
        name, icred, context=first.context, input_token=accepted.token, flags=flags
    )
    assert not done.more_steps and not accepted.more_steps
    return done.context, accepted.context


@pytest.fixture(scope="session")
def krb5_realm() -> Iterator[Krb5Realm]:
    k5 = start_realm()
    saved = {name: os.environ.get(name) for name in k5.env}
    os.environ.update(k5.env)
    host = k5.hostname
    try:
        yield Krb5Realm(
            realm=k5.realm,
            hostname=host,
            service=f"nfs@{host}",
            service_principal=k5.nfs_princ,
            user_principal=k5.user_princ,
            keytab=k5.keytab,
            ccache=k5.ccache,
            env=dict(k5.env),
            kdc_pid=k5._kdc_proc.pid,
            tmpdir=k5.tmpdir,
            k5=k5,
        )
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        stop_realm(k5)
