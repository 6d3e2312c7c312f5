"""The flavour table: exports(5) names, RPC flavours, pseudoflavours, GSS services, the OID."""

from __future__ import annotations

import pytest

from pynfsd.gen import nfs4 as N
from pynfsd.gen import rpc as R
from pynfsd.nfs4.secinfo import secinfo_list
from pynfsd.rpc import flavors as F
from pynfsd.rpc.auth import Credential


def test_krb5_oid_is_the_der_contents_of_rfc1964() -> None:
    # 1.2.840.113554.1.2.2: 06 09 2a 86 48 86 f7 12 01 02 02 without tag and length.
    assert F.KRB5_MECH_OID == bytes.fromhex("2a864886f712010202")
    assert F.der_oid_contents("1.3.6.1.5.5.2") == bytes.fromhex("2b0601050502")  # SPNEGO


@pytest.mark.parametrize("name, sec_flavor, service", [
    ("none", 0, None), ("sys", 1, None),
    ("krb5", 390003, 1), ("krb5i", 390004, 2), ("krb5p", 390005, 3),
])
def test_each_name_maps_both_ways(name: str, sec_flavor: int, service: int | None) -> None:
    f = F.BY_NAME[name]
    assert f.sec_flavor == sec_flavor and f.service == service
    assert F.sec_name(sec_flavor) == name
    assert F.service_of(sec_flavor) == service
    assert f.auth_flavor == (R.RPCSEC_GSS if service else sec_flavor)


def test_a_credential_names_its_flavour() -> None:
    assert F.sec_name(Credential(R.AUTH_SYS, 1, 1).sec_flavor) == "sys"
    gss = Credential(R.RPCSEC_GSS, 1, 1, (), "u@R", "", F.KRB5_PSEUDOFLAVORS[F.SVC_PRIVACY])
    assert F.sec_name(gss.sec_flavor) == "krb5p"
    assert F.sec_name(R.RPCSEC_GSS) is None and F.service_of(None) is None


def test_secinfo_follows_the_export_order() -> None:
    got = [(s.flavor, s.value) for s in secinfo_list(("krb5p", "sys", "bogus", "none"))]
    assert got == [(R.RPCSEC_GSS, N.rpcsec_gss_info(F.KRB5_MECH_OID, 0, 3)),
                   (R.AUTH_SYS, None), (R.AUTH_NONE, None)]
