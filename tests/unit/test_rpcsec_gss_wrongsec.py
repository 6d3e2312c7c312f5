"""Security negotiation with krb5 pseudoflavours at the COMPOUND level (RFC 7530 §3.3, §16.31).

Credentials carry what the RPCSEC_GSS flavour gives them (flavor 6, pseudoflavor 390003/4/5
for krb5/krb5i/krb5p, the mapped uid/gids), so exports' sec= lists apply to them.
"""

from __future__ import annotations

from pathlib import Path

from nfs4_fixtures import expect, export_root, make_world, mkdir, ops, user

from pynfsd.client.nfs4 import op
from pynfsd.gen import nfs4 as N
from pynfsd.rpc.auth import Credential
from pynfsd.rpc.flavors import KRB5_MECH_OID as KRB5_OID
from pynfsd.rpc.gss import KRB5_PSEUDOFLAVORS

KRB5, KRB5I, KRB5P = (KRB5_PSEUDOFLAVORS[s] for s in (1, 2, 3))


def gss(pseudoflavor: int, uid: int = 0) -> Credential:
    return Credential(6, uid, uid, (uid,), "alice@EX.COM", "", pseudoflavor)


async def test_krb5_only_export_refuses_auth_sys_and_lists_its_flavours(tmp_path: Path) -> None:
    w = make_world(tmp_path, ["/export *(rw,no_root_squash,sec=krb5p:krb5i:krb5)"])

    try:
        sys = w.client(user(0))
        root = await export_root(sys)  # PUTROOTFH/LOOKUP/GETFH into it are allowed (§16.31.4)
        await expect(sys, [op.putfh(root), op.getattr(N.FATTR4_TYPE)], N.NFS4ERR_WRONGSEC)
        (_, flavours) = await sys.check([op.putrootfh(), ops.secinfo(b"export")])
        assert [(f.flavor, f.value.oid, f.value.service) for f in flavours] == [
            (6, KRB5_OID, 3), (6, KRB5_OID, 2), (6, KRB5_OID, 1)]
        for flavour in (KRB5, KRB5I, KRB5P):
            c = w.client(gss(flavour))
            assert await export_root(c) == root
            await c.check([op.putfh(root), op.getattr(N.FATTR4_TYPE)])
    finally:
        w.close()


async def test_each_krb5_service_is_its_own_flavour(tmp_path: Path) -> None:
    w = make_world(tmp_path, ["/export *(rw,no_root_squash,sec=krb5p)"])

    try:
        root = await export_root(w.client(gss(KRB5P)))
        for weaker in (KRB5, KRB5I):
            c = w.client(gss(weaker))
            await expect(c, [op.putfh(root), op.getattr(N.FATTR4_TYPE)], N.NFS4ERR_WRONGSEC)
            # LOOKUP out of the pseudo-fs into the export: WRONGSEC at the op after it
            await expect(c, [op.putrootfh(), op.lookup(b"export"), op.getattr(N.FATTR4_TYPE)],
                         N.NFS4ERR_WRONGSEC)
        await w.client(gss(KRB5P)).check([op.putfh(root), op.getattr(N.FATTR4_TYPE)])
    finally:
        w.close()


async def test_krb5_credential_on_a_sys_only_export(tmp_path: Path) -> None:
    w = make_world(tmp_path, ["/export *(rw,sec=sys)", "/secure *(rw,sec=krb5i)"])

    try:
        c = w.client(gss(KRB5I, 1000))
        sys_root = await export_root(c, b"export")
        await expect(c, [op.putfh(sys_root), op.getattr(N.FATTR4_TYPE)], N.NFS4ERR_WRONGSEC)
        secure = await export_root(c, b"secure")
        await c.check([op.putfh(secure), op.getattr(N.FATTR4_TYPE)])
        # the pseudo-fs root itself is open to every flavour
        await c.check([op.putrootfh(), op.getattr(N.FATTR4_TYPE)])
    finally:
        w.close()


async def test_root_squash_applies_to_a_gss_machine_credential(tmp_path: Path) -> None:
    w = make_world(tmp_path, ["/export *(rw,root_squash,sec=krb5)",
                              "/trusted *(rw,no_root_squash,sec=krb5)"])

    try:
        c = w.client(gss(KRB5, 0))  # nfs/host@REALM maps to uid 0 (machine policy "root")
        root = await export_root(c)  # owned by root, mode 0755: the squashed uid may not write
        await expect(c, [op.putfh(root), op.mkdir(b"d")], N.NFS4ERR_ACCESS)
        trusted = await export_root(c, b"trusted")
        await mkdir(c, trusted, b"d")
    finally:
        w.close()
