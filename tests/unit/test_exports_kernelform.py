"""The conversion between exports(5) options and the kernel's nfsd.export form: what rpc.mountd
was seen to write, every option the parser accepts through a round trip (property tests), any
kernel-form export a daemon may send read back, and the nfsd.fh fsid keys."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pynfsd.cache import lines as L
from pynfsd.exports import ExportOptions, export_fsid, parse_exports
from pynfsd.exports import kernelform as K
from pynfsd.exports.options import _FLAG_GROUPS, SEC_FLAVOURS
from pynfsd.exports.resolver import derived_fsid, uuid_fold

EXP = 1_700_001_800


def options(text: str) -> ExportOptions:
    (entry,) = parse_exports(f"/srv/a *({text})")
    return entry.clients[0][1]


def kernel_line(o: ExportOptions) -> bytes:
    info = K.info_from_options("/srv/a", o)
    return L.encode_export_reply(L.ExportReply(L.ExportKey("127.0.0.1", "/srv/a"), EXP, info))


# ------------------------------------------------------------ what rpc.mountd writes
def test_rw_with_fsid_is_the_line_rpc_mountd_wrote() -> None:
    """NFS-UTILS-INTEROP.md: `127.0.0.1 /srv/a <exp> 9252 65534 65534 1 secinfo 1 1 9252`."""
    assert kernel_line(options("rw,fsid=1")) == (
        b"127.0.0.1 /srv/a %d 9252 65534 65534 1 secinfo 1 1 9252\n" % EXP)


@pytest.mark.parametrize(("text", "flags"), [
    ("ro", L.NFSEXP_READONLY | L.NFSEXP_ROOTSQUASH | L.NFSEXP_GATHERED_WRITES
     | L.NFSEXP_NOSUBTREECHECK),
    ("rw,no_root_squash,insecure,no_wdelay,subtree_check", L.NFSEXP_INSECURE_PORT),
    ("rw,all_squash,no_wdelay", L.NFSEXP_ROOTSQUASH | L.NFSEXP_ALLSQUASH | L.NFSEXP_NOSUBTREECHECK),
    ("rw,no_wdelay,async,crossmnt,nohide,insecure_locks,no_acl,pnfs,nordirplus,security_label",
     L.NFSEXP_ROOTSQUASH | L.NFSEXP_NOSUBTREECHECK | L.NFSEXP_ASYNC | L.NFSEXP_CROSSMOUNT
     | L.NFSEXP_NOHIDE | L.NFSEXP_NOAUTHNLM | L.NFSEXP_NOACL | L.NFSEXP_PNFS
     | L.NFSEXP_NOREADDIRPLUS | L.NFSEXP_SECURITY_LABEL),
])
def test_flags(text: str, flags: int) -> None:
    assert K.info_from_options("/x", options(text)).flags == flags


def test_fsid_forms() -> None:
    root = K.info_from_options("/x", options("fsid=root"))
    assert (root.flags & L.NFSEXP_FSID, root.fsid, root.uuid) == (L.NFSEXP_FSID, 0, None)
    assert K.info_from_options("/x", options("fsid=0")) == root
    big = K.info_from_options("/x", options("fsid=4294967295"))
    assert big.fsid == -1  # rpc.mountd's %d of an int; the kernel reads it with get_int
    uuid = K.info_from_options("/x", options("fsid=00112233-4455-6677-8899-aabbccddeeff"))
    assert uuid.uuid == bytes.fromhex("00112233445566778899aabbccddeeff")
    assert not uuid.flags & L.NFSEXP_FSID
    assert K.options_from_info(uuid).fsid == "00112233445566778899aabbccddeeff"
    assert K.options_from_info(root).pseudo_root


def test_sec_flavours_carry_the_export_flags() -> None:
    info = K.info_from_options("/x", options("ro,sec=krb5p:krb5i:krb5:sys:none"))
    assert [f.flavor for f in info.secinfo] == [390005, 390004, 390003, 1, 0]
    assert {f.flags for f in info.secinfo} == {info.flags}


def test_locations_xprtsec_and_manage_gids() -> None:
    info = K.info_from_options("/x", options("rw,replicas=/a@h1+h2:/b@h3,refer=/r@h4,"
                                             "xprtsec=tls:mtls,manage-gids"))
    assert info.fslocations == (("h4", "/r"),) and info.migrated  # the last written wins
    assert info.xprtsec == (L.NFSEXP_XPRTSEC_TLS, L.NFSEXP_XPRTSEC_MTLS)
    assert info.manage_gids
    replicas = K.info_from_options("/x", options("replicas=/a@h1+h2:/b@h3"))
    assert replicas.fslocations == (("h1:h2", "/a"), ("h3", "/b")) and not replicas.migrated
    assert K.options_from_info(replicas).has("replicas=/a@h1+h2:/b@h3")
    back = K.options_from_info(info)
    assert back.has("manage-gids") and back.has("xprtsec=tls:mtls") and back.has("refer=/r@h4")


def test_a_daemons_per_flavour_flags_become_the_most_restrictive() -> None:
    base = L.NFSEXP_INSECURE_PORT
    info = L.ExportInfo(base, 65534, 65534, 0, secinfo=(
        L.SecFlavor(390005, base), L.SecFlavor(1, L.NFSEXP_READONLY | L.NFSEXP_ALLSQUASH)))
    o = K.options_from_info(info)
    assert (o.rw, o.squash, o.secure, o.sec) == (False, "all", True, ("krb5p", "sys"))


def test_xprtsec_words_may_hold_several_mode_bits() -> None:
    info = L.ExportInfo(0, 1, 2, 0, xprtsec=(L.NFSEXP_XPRTSEC_MTLS, 3))
    assert K.options_from_info(info).has("xprtsec=mtls:none:tls")


def test_unknown_flavours_are_left_out_and_no_secinfo_means_sys() -> None:
    info = L.ExportInfo(0, 1, 2, 0, secinfo=(L.SecFlavor(390006, 0), L.SecFlavor(390004, 0)))
    assert K.options_from_info(info).sec == ("krb5i",)
    assert K.options_from_info(L.ExportInfo(0, 1, 2, 0)).sec == ("sys",)


def test_client_export_has_the_fsid_of_the_options() -> None:
    info = K.info_from_options("/srv/a", options("rw"))
    export = K.client_export("/srv/a", info)
    assert export.fsid == derived_fsid(b"path", b"/srv/a") == export_fsid("/srv/a", options("rw"))
    assert K.client_export("/srv/a", K.info_from_options("/srv/a", options("fsid=7"))).fsid == 7


# ------------------------------------------------------------ round trips
_SEC = st.lists(st.sampled_from(SEC_FLAVOURS), min_size=1, unique=True).map(
    lambda f: "sec=" + ":".join(f))
_ID = st.integers(0, (1 << 32) - 2).map(str)
_FSID = st.integers(0, (1 << 32) - 1).map(str)
_UUID = st.binary(min_size=16, max_size=16).map(bytes.hex)
_HOST = st.sampled_from(["h1", "h2.ex.com", "10.0.0.1"])
_LOC = st.builds(lambda p, hs: f"/{p}@" + "+".join(hs), st.sampled_from(["a", "b/c"]),
                 st.lists(_HOST, min_size=1, max_size=3))
_LOCS = st.lists(_LOC, min_size=1, max_size=3).map(":".join)
_OPTION = st.one_of(
    st.sampled_from(["rw", "ro", "root_squash", "no_root_squash", "all_squash",
                     "no_all_squash", "secure", "insecure", *_FLAG_GROUPS]),
    _ID.map("anonuid={}".format), _ID.map("anongid={}".format),
    st.one_of(_FSID, st.just("root"), _UUID).map("fsid={}".format),
    st.sampled_from(["/m", "/mnt/x"]).map("mountpoint={}".format),
    _LOCS.map("refer={}".format), _LOCS.map("replicas={}".format),
    st.lists(st.sampled_from(["none", "tls", "mtls"]), min_size=1, max_size=3, unique=True).map(
        lambda m: "xprtsec=" + ":".join(m)),
)
_OPTIONS = st.tuples(st.lists(_OPTION, max_size=12), st.none() | _SEC).map(
    lambda t: ",".join([*t[0], *([t[1]] if t[1] else [])]))
#: Written flags that survive the kernel form (a default's name does not: it is no change).
_SURVIVE = {"async", "no_wdelay", "subtree_check", "nohide", "crossmnt", "insecure_locks",
            "no_acl", "pnfs", "nordirplus", "security_label", "manage-gids", "no_delegations"}


@settings(max_examples=400)
@given(_OPTIONS)
def test_every_parsed_option_survives_a_round_trip(text: str) -> None:
    o = options(text)
    info = K.info_from_options("/srv/a", o)
    line = kernel_line(o)
    assert L.decode_export_reply(line).value == info  # the kernel's checks accept it
    back = K.options_from_info(info)
    assert (back.rw, back.sec, back.squash, back.anonuid, back.anongid, back.secure) == (
        o.rw, o.sec, o.squash, o.anonuid, o.anongid, o.secure)
    assert back.pseudo_root == o.pseudo_root
    assert export_fsid("/srv/a", back) == export_fsid("/srv/a", o)
    written = {"insecure_locks" if f == "no_auth_nlm" else f for f in o.flags}
    kept = {f for f in written if f in _SURVIVE or f.startswith(("xprtsec=", "refer=", "replicas="))}
    if "refer=" in text and "replicas=" in text:  # one location list travels: the last written
        kept -= {f for f in kept if f.startswith(("refer=", "replicas="))}
        kept |= {f for f in back.flags if f.startswith(("refer=", "replicas="))}
    assert back.flags == kept
    assert K.info_from_options("/srv/a", back) == info
    assert K.canonical(back) == back


@st.composite
def infos(draw: st.DrawFn) -> L.ExportInfo:
    flags = draw(st.integers(0, L.NFSEXP_ALLFLAGS)) & L.NFSEXP_ALLFLAGS
    flavors = st.sampled_from([0, 1, 390003, 390004, 390005, 390006])
    sec_flags = st.integers(0, L.NFSEXP_SECINFO_FLAGS).map(lambda d: flags ^ d)
    secinfo = draw(st.lists(st.builds(L.SecFlavor, flavors, sec_flags), max_size=4))
    locs = draw(st.lists(st.tuples(st.sampled_from(["h1", "h1:h2"]), st.just("/p")), max_size=2))
    return L.ExportInfo(
        flags, draw(st.integers(0, (1 << 32) - 2)), draw(st.integers(0, (1 << 32) - 2)),
        draw(st.integers(-(1 << 31), (1 << 31) - 1)),
        draw(st.none() | st.binary(min_size=16, max_size=16)), tuple(secinfo), tuple(locs),
        draw(st.booleans()), tuple(draw(st.lists(st.integers(0, L.NFSEXP_XPRTSEC_MTLS), max_size=3))),
        draw(st.booleans()))


@settings(max_examples=300)
@given(infos())
def test_any_kernel_form_reads_back_to_options_that_convert_stably(info: L.ExportInfo) -> None:
    o = K.options_from_info(info)
    if info.secinfo and not o.sec:  # only flavours pynfsd does not speak: nobody may use it
        assert {f.flavor for f in info.secinfo} == {390006}
        return
    again = K.info_from_options("/srv/a", o)
    assert K.options_from_info(again) == o
    ro = bool(info.flags & L.NFSEXP_READONLY) or any(
        f.flags & L.NFSEXP_READONLY for f in info.secinfo)
    assert o.rw is not ro
    if info.flags & L.NFSEXP_FSID:
        assert o.fsid == info.fsid % (1 << 32)


# ------------------------------------------------------------ nfsd.fh keys
def test_fsid_keys() -> None:
    assert K.fsid_key(0) == (1, b"\0\0\0\0")
    assert K.fsid_key(1) == (1, (1).to_bytes(4, sys.byteorder))
    derived = derived_fsid(b"path", b"/srv/a")
    assert K.fsid_key(derived) == (5, derived.to_bytes(8, "big"))
    assert K.fsid_key(1 << 32) == (5, (1 << 32).to_bytes(8, "big"))
    with pytest.raises(ValueError):
        K.fsid_key(1 << 64)
    assert K.fsid_of_key(5, (1).to_bytes(8, "big")) is None  # would read as fsid=1
    assert K.fsid_of_key(6, bytes(16)) is None
    assert K.fsid_of_key(1, bytes(3)) is None


@given(st.integers(0, (1 << 64) - 1))
def test_fsid_keys_round_trip_and_are_valid_fh_keys(fsid: int) -> None:
    fsidtype, data = K.fsid_key(fsid)
    assert K.fsid_of_key(fsidtype, data) == fsid
    key = L.FhKey("*", fsidtype, data)
    assert L.decode_fh_request(L.encode_fh_request(key)) == key


def test_manage_gids_is_shown_with_the_export_options() -> None:
    from pynfsd.exports.describe import option_text

    assert option_text(options("rw,manage-gids")).endswith(",manage-gids")


UUID = "3b241101-e2bb-4255-8caf-4136c566a962"


def test_a_uuid_is_folded_as_mountd_and_knfsd_fold_it() -> None:
    u = bytes.fromhex(UUID.replace("-", ""))
    fold8 = bytes(a ^ b for a, b in zip(u[:8], u[8:], strict=True))
    fold4 = bytes(u[i] ^ u[i + 4] ^ u[i + 8] ^ u[i + 12] for i in range(4))
    assert uuid_fold(UUID, 8) == fold8 and uuid_fold(UUID.upper(), 4) == fold4
    assert uuid_fold("3:b241101e2bb42558caf4136c566a962", 8) == fold8  # separators skipped
    o = options(f"rw,fsid={UUID}")
    back = K.options_from_info(K.info_from_options("/srv/a", o))
    assert export_fsid("/srv/a", back) == export_fsid("/srv/a", o)  # mountd's answer too
    # two exports of one filesystem (one uuid) get two fsids: their handles stay apart
    assert export_fsid("/srv/b", o) != export_fsid("/srv/a", o)


def test_the_fh_key_of_a_uuid_export_is_knfsds_for_its_directory(tmp_path: Path) -> None:
    o = options(f"rw,fsid={UUID}")
    fsid = export_fsid(str(tmp_path), o)
    facts = K.path_facts(str(tmp_path))
    assert facts == K.PathFacts(False, tmp_path.stat().st_ino)
    ino = (tmp_path.stat().st_ino % (1 << 32)).to_bytes(4, sys.byteorder)
    assert K.fh_key(o, fsid, facts) == (4, ino + uuid_fold(UUID, 4))  # FSID_UUID4_INUM
    root = K.path_facts("/")
    assert root is not None and root.mountpoint
    assert K.fh_key(o, fsid, root) == (5, uuid_fold(UUID, 8))  # FSID_UUID8
    assert K.fh_key(o, fsid, None) == (5, uuid_fold(UUID, 8))
    assert K.path_facts(str(tmp_path / "missing")) is None
    numbered = options("rw,fsid=9")
    assert K.fh_key(numbered, 9, facts) == K.fsid_key(9)  # only uuid exports depend on it
