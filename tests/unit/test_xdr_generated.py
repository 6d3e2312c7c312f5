"""Generated XDR codecs: freshness, hand-built RFC byte vectors both ways, xdrlib3 cross-checks,
enum and union validation, and a long directory listing (entry4 linked list)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import xdrlib3

import xdr.xdrgen as xdrgen
from pynfsd.gen import nfs4 as N
from pynfsd.gen import nfs4_errors as E
from pynfsd.gen import rpc as R
from pynfsd.gen import rpcsec_gss as G
from pynfsd.xdr.runtime import Packer, Unpacker, XdrError

H = bytes.fromhex


T = TypeVar("T")


def encode(pack: Callable[[Packer, T], None], value: T) -> bytes:
    p = Packer()
    pack(p, value)
    return p.get_buffer()


def decode(unpack: Callable[[Unpacker], T], data: bytes) -> T:
    u = Unpacker(data)
    value = unpack(u)
    u.done()
    return value


# ---------------------------------------------------------------- the generated code is current


def test_generated_modules_are_up_to_date() -> None:
    assert xdrgen.main(["--check"]) == 0


def test_check_detects_and_regeneration_repairs_a_stale_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(xdrgen.ROOT / "xdr", tmp_path / "xdr", ignore=shutil.ignore_patterns("*.py*"))
    shutil.copytree(xdrgen.ROOT / "pynfsd" / "gen", tmp_path / "pynfsd" / "gen")
    monkeypatch.setattr(xdrgen, "ROOT", tmp_path)
    assert xdrgen.main(["--check"]) == 0
    stale = tmp_path / "pynfsd" / "gen" / "rpc.py"
    stale.write_text(stale.read_text() + "# hand edit\n")
    assert xdrgen.main(["--check"]) == 1
    assert xdrgen.main([]) == 0
    assert xdrgen.main(["--check"]) == 0
    assert stale.read_text() == (xdrgen.ROOT / "pynfsd" / "gen" / "rpc.py").read_text()


def test_every_unpack_function_has_a_pack_function() -> None:
    for module in (R, G, N):
        unpackers = {n[len("unpack_") :] for n in vars(module) if n.startswith("unpack_")}
        packers = {n[len("pack_") :] for n in vars(module) if n.startswith("pack_")}
        assert unpackers == packers, module.__name__
        assert len(unpackers) > 5


def test_error_classes_cover_every_nfsstat4() -> None:
    for status, name in N.nfsstat4_names.items():
        if status == N.NFS4_OK:
            continue
        cls = getattr(E, name)
        assert issubclass(cls, E.NFS4Error)
        assert cls.status == status == getattr(N, name)
        assert E.BY_STATUS[status] is cls
    assert len(E.BY_STATUS) == len(N.nfsstat4_values) - 1
    err = E.NFS4ERR_DENIED(value="payload")
    assert (err.status, err.value, str(err)) == (10010, "payload", "NFS4ERR_DENIED")


# ---------------------------------------------------------------- RPC CALL with AUTH_SYS (RFC 5531)

AUTHSYS = R.authsys_parms(
    stamp=1234567890, machinename="client", uid=1000, gid=1000, gids=[1000, 10]
)
AUTHSYS_WIRE = H(
    "499602d2"  # stamp
    "00000006" "636c6965" "6e740000"  # machinename "client" + 2 bytes fill
    "000003e8" "000003e8"  # uid, gid
    "00000002" "000003e8" "0000000a"  # gids<16>
)
CALL = R.rpc_msg(
    xid=0x12345678,
    body=R.rpc_msg_body(
        R.CALL,
        R.call_body(
            rpcvers=2,
            prog=100003,
            vers=4,
            proc=1,
            cred=R.opaque_auth(R.AUTH_SYS, AUTHSYS_WIRE),
            verf=R.opaque_auth(R.AUTH_NONE, b""),
        ),
    ),
)
CALL_WIRE = (
    H("12345678" "00000000" "00000002" "000186a3" "00000004" "00000001")  # xid CALL 2 NFS 4 COMPOUND
    + H("00000001" "00000024")  # cred: AUTH_SYS, 36 bytes
    + AUTHSYS_WIRE
    + H("00000000" "00000000")  # verf: AUTH_NONE, empty
)


def test_rpc_call_with_auth_sys() -> None:
    # RFC 5531 §9 (call_body) and Appendix A (authsys_parms).
    assert encode(R.pack_authsys_parms, AUTHSYS) == AUTHSYS_WIRE
    assert decode(R.unpack_authsys_parms, AUTHSYS_WIRE) == AUTHSYS
    assert encode(R.pack_rpc_msg, CALL) == CALL_WIRE
    assert decode(R.unpack_rpc_msg, CALL_WIRE) == CALL


def test_authsys_bounds() -> None:
    too_many = R.authsys_parms(0, "m", 0, 0, list(range(17)))
    with pytest.raises(XdrError):
        encode(R.pack_authsys_parms, too_many)
    with pytest.raises(XdrError):
        encode(R.pack_authsys_parms, R.authsys_parms(0, "m" * 256, 0, 0, []))
    wire = H("00000000" "00000001" "6d000000" "00000000" "00000000" "00000011") + bytes(68)
    with pytest.raises(XdrError, match="maximum 16"):
        decode(R.unpack_authsys_parms, wire)
    with pytest.raises(XdrError):  # trailing bytes after the credential
        decode(R.unpack_authsys_parms, AUTHSYS_WIRE + bytes(4))


def test_rpc_replies() -> None:
    accepted = R.rpc_msg(
        7,
        R.rpc_msg_body(
            R.REPLY,
            R.reply_body(
                R.MSG_ACCEPTED,
                R.accepted_reply(
                    R.opaque_auth(R.AUTH_NONE, b""),
                    R.rpc_reply_data(R.PROG_MISMATCH, R.rpc_mismatch_info(4, 4)),
                ),
            ),
        ),
    )
    wire = H("00000007 00000001 00000000 00000000 00000000 00000002 00000004 00000004")
    assert encode(R.pack_rpc_msg, accepted) == wire
    assert decode(R.unpack_rpc_msg, wire) == accepted
    denied = R.rpc_msg(
        8,
        R.rpc_msg_body(
            R.REPLY, R.reply_body(R.MSG_DENIED, R.rejected_reply(R.AUTH_ERROR, R.AUTH_TOOWEAK))
        ),
    )
    wire = H("00000008 00000001 00000001 00000001 00000005")
    assert encode(R.pack_rpc_msg, denied) == wire
    assert decode(R.unpack_rpc_msg, wire) == denied


def test_union_default_arm() -> None:
    # rpc_reply_data: SUCCESS is opaque[0], PROG_UNAVAIL falls to "default: void".
    assert decode(R.unpack_rpc_reply_data, H("00000001")) == R.rpc_reply_data(R.PROG_UNAVAIL)
    assert decode(R.unpack_rpc_reply_data, H("00000000")) == R.rpc_reply_data(R.SUCCESS, b"")
    assert encode(R.pack_rpc_reply_data, R.rpc_reply_data(R.SYSTEM_ERR)) == H("00000005")
    # LOCK4res: an error other than DENIED takes the void default arm.
    assert decode(N.unpack_LOCK4res, H("00000046")) == N.LOCK4res(N.NFS4ERR_STALE, None)
    assert encode(N.pack_LOCK4res, N.LOCK4res(N.NFS4ERR_STALE)) == H("00000046")
    assert decode(N.unpack_openflag4, H("00000000")) == N.openflag4(N.OPEN4_NOCREATE)


# ---------------------------------------------------------------- NFSv4 COMPOUND (RFC 7530 §16.2)

COMPOUND = N.COMPOUND4args(
    tag=b"mnt",
    minorversion=0,
    argarray=[
        N.nfs_argop4(N.OP_PUTROOTFH),
        N.nfs_argop4(N.OP_GETFH),
        # type (1), size (4), fileid (20) in word 0; mode (33) in word 1
        N.nfs_argop4(N.OP_GETATTR, N.GETATTR4args([0x00100012, 0x00000002])),
    ],
)
COMPOUND_WIRE = H(
    "00000003" "6d6e7400"  # tag "mnt"
    "00000000"  # minorversion
    "00000003"  # argarray<>
    "00000018"  # OP_PUTROOTFH
    "0000000a"  # OP_GETFH
    "00000009" "00000002" "00100012" "00000002"  # OP_GETATTR, bitmap4 of 2 words
)


def test_compound_putrootfh_getfh_getattr() -> None:
    assert encode(N.pack_COMPOUND4args, COMPOUND) == COMPOUND_WIRE
    assert decode(N.unpack_COMPOUND4args, COMPOUND_WIRE) == COMPOUND


def test_compound_decodes_against_xdrlib3() -> None:
    ref = xdrlib3.Unpacker(encode(N.pack_COMPOUND4args, COMPOUND))
    assert (ref.unpack_opaque(), ref.unpack_uint(), ref.unpack_uint()) == (b"mnt", 0, 3)
    assert [ref.unpack_enum(), ref.unpack_enum(), ref.unpack_enum()] == [24, 10, 9]
    assert ref.unpack_array(ref.unpack_uint) == [0x00100012, 2]
    ref.done()


# ---------------------------------------------------------------- OPEN4args, GUARDED4 (RFC 7530 §16.16)

CREATE_ATTRS = N.fattr4(
    attrmask=[1 << N.FATTR4_SIZE, 1 << (N.FATTR4_MODE - 32)],
    attr_vals=H("0000000000000000" "000001a4"),  # size 0, mode 0644
)
OPEN = N.OPEN4args(
    seqid=1,
    share_access=N.OPEN4_SHARE_ACCESS_BOTH,
    share_deny=N.OPEN4_SHARE_DENY_NONE,
    owner=N.state_owner4(clientid=0x0102030405060708, owner=b"owner1"),
    openhow=N.openflag4(N.OPEN4_CREATE, N.createhow4(N.GUARDED4, CREATE_ATTRS)),
    claim=N.open_claim4(N.CLAIM_NULL, b"newfile"),
)
OPEN_WIRE = H(
    "00000001" "00000003" "00000000"  # seqid, share_access BOTH, share_deny NONE
    "0102030405060708" "00000006" "6f776e65" "72310000"  # open_owner4
    "00000001" "00000001"  # OPEN4_CREATE, GUARDED4
    "00000002" "00000010" "00000002"  # attrmask: size, mode
    "0000000c" "00000000" "00000000" "000001a4"  # attr_vals
    "00000000" "00000007" "6e657766" "696c6500"  # CLAIM_NULL "newfile"
)


def test_open4args_guarded_with_fattr4() -> None:
    assert encode(N.pack_OPEN4args, OPEN) == OPEN_WIRE
    assert decode(N.unpack_OPEN4args, OPEN_WIRE) == OPEN
    op = N.nfs_argop4(N.OP_OPEN, OPEN)
    assert encode(N.pack_nfs_argop4, op) == H("00000012") + OPEN_WIRE
    assert decode(N.unpack_nfs_argop4, H("00000012") + OPEN_WIRE) == op


def test_open4args_from_xdrlib3() -> None:
    ref = xdrlib3.Packer()
    for v in (1, 3, 0):
        ref.pack_uint(v)
    ref.pack_uhyper(0x0102030405060708)
    ref.pack_opaque(b"owner1")
    ref.pack_enum(N.OPEN4_CREATE)
    ref.pack_enum(N.GUARDED4)
    ref.pack_array([0x10, 0x2], ref.pack_uint)
    ref.pack_opaque(H("0000000000000000000001a4"))
    ref.pack_enum(N.CLAIM_NULL)
    ref.pack_opaque(b"newfile")
    assert ref.get_buffer() == OPEN_WIRE
    assert decode(N.unpack_OPEN4args, ref.get_buffer()) == OPEN


def test_createhow4_exclusive_arm() -> None:
    how = N.createhow4(N.EXCLUSIVE4, b"12345678")
    wire = H("00000002") + b"12345678"
    assert encode(N.pack_createhow4, how) == wire
    assert decode(N.unpack_createhow4, wire) == how
    with pytest.raises(XdrError):
        encode(N.pack_createhow4, N.createhow4(N.EXCLUSIVE4, b"short"))


# ---------------------------------------------------------------- READDIR4resok (RFC 7530 §16.24)


def entries(specs: list[tuple[int, bytes, int]]) -> N.entry4 | None:
    head: N.entry4 | None = None
    for cookie, name, fileid in reversed(specs):
        attrs = N.fattr4([1 << N.FATTR4_FILEID], fileid.to_bytes(8, "big"))
        head = N.entry4(cookie, name, attrs, head)
    return head


READDIR = N.READDIR4resok(
    cookieverf=H("0001020304050607"),
    reply=N.dirlist4(entries([(3, b"a", 100), (4, b"bb", 101), (5, b"ccc", 102)]), eof=True),
)
READDIR_WIRE = H(
    "0001020304050607"  # cookieverf
    "00000001"  # entries present
    "0000000000000003" "00000001" "61000000" "00000001" "00100000" "00000008" "0000000000000064"
    "00000001"  # nextentry present
    "0000000000000004" "00000002" "62620000" "00000001" "00100000" "00000008" "0000000000000065"
    "00000001"
    "0000000000000005" "00000003" "63636300" "00000001" "00100000" "00000008" "0000000000000066"
    "00000000"  # end of list
    "00000001"  # eof
)


def test_readdir4resok_three_entries() -> None:
    assert encode(N.pack_READDIR4resok, READDIR) == READDIR_WIRE
    assert decode(N.unpack_READDIR4resok, READDIR_WIRE) == READDIR
    res = N.READDIR4res(N.NFS4_OK, READDIR)
    assert decode(N.unpack_READDIR4res, H("00000000") + READDIR_WIRE) == res


def test_readdir_entries_match_xdrlib3_optional_list() -> None:
    # xdrlib3.pack_list writes "1 item" per element then "0": the optional-data linked list
    # of RFC 4506 §4.19.
    ref = xdrlib3.Packer()
    ref.pack_fopaque(8, H("0001020304050607"))

    def pack_entry(e: tuple[int, bytes, int]) -> None:
        ref.pack_uhyper(e[0])
        ref.pack_opaque(e[1])
        ref.pack_array([1 << 20], ref.pack_uint)
        ref.pack_opaque(e[2].to_bytes(8, "big"))

    ref.pack_list([(3, b"a", 100), (4, b"bb", 101), (5, b"ccc", 102)], pack_entry)
    ref.pack_bool(True)
    assert ref.get_buffer() == READDIR_WIRE
    back = xdrlib3.Unpacker(encode(N.pack_READDIR4resok, READDIR))
    back.unpack_fopaque(8)

    def unpack_entry() -> tuple[int, bytes]:
        cookie, name = back.unpack_uhyper(), back.unpack_opaque()
        back.unpack_array(back.unpack_uint)
        back.unpack_opaque()
        return cookie, name

    assert back.unpack_list(unpack_entry) == [(3, b"a"), (4, b"bb"), (5, b"ccc")]
    assert back.unpack_bool() is True
    back.done()


def test_empty_directory() -> None:
    empty = N.READDIR4resok(bytes(8), N.dirlist4(None, True))
    wire = bytes(8) + H("00000000 00000001")
    assert encode(N.pack_READDIR4resok, empty) == wire
    assert decode(N.unpack_READDIR4resok, wire) == empty


def test_linked_list_of_100000_entries_needs_no_recursion() -> None:
    count = 100_000
    attrs = N.fattr4([], b"")
    head: N.entry4 | None = None
    for cookie in range(count, 0, -1):
        head = N.entry4(cookie, b"f%d" % cookie, attrs, head)
    listing = N.dirlist4(head, True)
    wire = encode(N.pack_dirlist4, listing)
    got = decode(N.unpack_dirlist4, wire)
    assert got.eof is True
    node, seen = got.entries, 0
    while node is not None:  # compare iteratively: dataclass == would recurse
        seen += 1
        assert (node.cookie, node.name, node.attrs) == (seen, b"f%d" % seen, attrs)
        node = node.nextentry
    assert seen == count
    assert encode(N.pack_dirlist4, got) == wire


def test_long_linked_list_compares_and_reprs_without_recursion() -> None:
    def listing(count: int, last_name: bytes) -> N.entry4 | None:
        head: N.entry4 | None = None
        for cookie in range(count, 0, -1):
            name = last_name if cookie == count else b"f%d" % cookie
            head = N.entry4(cookie, name, N.fattr4([], b""), head)
        return head

    a, b, c = listing(5000, b"end"), listing(5000, b"end"), listing(5000, b"END")
    assert a == b
    assert a != c
    assert repr(a).startswith("entry4(cookie=1, name=b'f1', ")


def test_truncated_linked_list_is_refused() -> None:
    with pytest.raises(XdrError):
        decode(N.unpack_READDIR4resok, READDIR_WIRE[:-8])


# ---------------------------------------------------------------- result unions with error arms

DENIED = N.LOCK4res(
    N.NFS4ERR_DENIED,
    N.LOCK4denied(
        offset=0,
        length=N.NFS4_UINT64_MAX,
        locktype=N.WRITE_LT,
        owner=N.state_owner4(0x1122334455667788, b"lockowner"),
    ),
)
DENIED_WIRE = H(
    "0000271a"  # NFS4ERR_DENIED (10010)
    "0000000000000000" "ffffffffffffffff" "00000002"  # offset, length, WRITE_LT
    "1122334455667788" "00000009" "6c6f636b" "6f776e65" "72000000"  # lock_owner4
)


def test_lock4res_denied_arm() -> None:
    # RFC 7530 §16.10.2: LOCK4res carries LOCK4denied for NFS4ERR_DENIED.
    assert encode(N.pack_LOCK4res, DENIED) == DENIED_WIRE
    assert decode(N.unpack_LOCK4res, DENIED_WIRE) == DENIED
    ref = xdrlib3.Unpacker(DENIED_WIRE)
    assert (ref.unpack_int(), ref.unpack_uhyper(), ref.unpack_uhyper()) == (10010, 0, 2**64 - 1)


INUSE = N.SETCLIENTID4res(N.NFS4ERR_CLID_INUSE, N.netaddr4("tcp", "192.168.1.2.8.1"))
INUSE_WIRE = H(
    "00002721"  # NFS4ERR_CLID_INUSE (10017)
    "00000003" "74637000"  # na_r_netid "tcp"
    "0000000f" "3139322e" "3136382e" "312e322e" "382e3100"  # na_r_addr "192.168.1.2.8.1"
)


def test_setclientid4res_clid_inuse_arm() -> None:
    # RFC 7530 §16.33.2: CLID_INUSE returns the client address using the id.
    assert encode(N.pack_SETCLIENTID4res, INUSE) == INUSE_WIRE
    assert decode(N.unpack_SETCLIENTID4res, INUSE_WIRE) == INUSE
    ref = xdrlib3.Packer()
    ref.pack_enum(N.NFS4ERR_CLID_INUSE)
    ref.pack_string(b"tcp")
    ref.pack_string(b"192.168.1.2.8.1")
    assert ref.get_buffer() == INUSE_WIRE


def test_setclientid4res_ok_arm() -> None:
    ok = N.SETCLIENTID4res(N.NFS4_OK, N.SETCLIENTID4resok(42, b"verifier"))
    wire = H("00000000 000000000000002a") + b"verifier"
    assert encode(N.pack_SETCLIENTID4res, ok) == wire
    assert decode(N.unpack_SETCLIENTID4res, wire) == ok


# ---------------------------------------------------------------- RPCSEC_GSS (RFC 2203 §5)


def test_rpc_gss_cred() -> None:
    cred = G.rpc_gss_cred_t(
        G.RPCSEC_GSS_VERS_1,
        G.rpc_gss_cred_vers_1_t(G.RPCSEC_GSS_DATA, 17, G.rpc_gss_svc_integrity, b"hdl"),
    )
    wire = H("00000001 00000000 00000011 00000002 00000003 68646c00")
    assert encode(G.pack_rpc_gss_cred_t, cred) == wire
    assert decode(G.unpack_rpc_gss_cred_t, wire) == cred


# ---------------------------------------------------------------- enum and union validation


@pytest.mark.parametrize(
    ("unpack", "wire"),
    [
        (N.unpack_nfs_ftype4, H("00000000")),
        (N.unpack_nfs_ftype4, H("0000000a")),
        (N.unpack_nfsstat4, H("00003039")),
        (N.unpack_nfsstat4, H("ffffffff")),
        (N.unpack_nfs_opnum4, H("00000002")),
        (R.unpack_msg_type, H("00000002")),
        (R.unpack_auth_stat, H("0000000f")),
        (G.unpack_rpc_gss_service_t, H("00000000")),
        (N.unpack_fattr4_type, H("00000063")),  # typedef of an enum validates too
        (N.unpack_fattr4_rdattr_error, H("00000003")),
    ],
)
def test_invalid_enum_value_is_refused(
    unpack: Callable[[Unpacker], object], wire: bytes
) -> None:
    with pytest.raises(XdrError, match="invalid"):
        decode(unpack, wire)


@pytest.mark.parametrize(
    ("unpack", "wire"),
    [
        (N.unpack_nfs_argop4, H("00000002")),  # not an nfs_opnum4
        (N.unpack_nfs_argop4, H("00000028")),  # OP_CREATE_SESSION is NFSv4.1
        (N.unpack_createhow4, H("00000003")),
        (N.unpack_open_claim4, H("00000004" "00000000")),
        (G.unpack_rpc_gss_cred_t, H("00000002" "00000000")),  # unsigned discriminant, no default
        (R.unpack_rpc_msg_body, H("00000002")),
        (N.unpack_LOCK4res, H("00001234")),  # default arm, but not an nfsstat4
        (N.unpack_locker4, H("00000002")),  # bool discriminant
    ],
)
def test_union_with_unknown_discriminant_is_refused(
    unpack: Callable[[Unpacker], object], wire: bytes
) -> None:
    with pytest.raises(XdrError):
        decode(unpack, wire)


def test_packing_an_unknown_union_arm_is_refused() -> None:
    with pytest.raises(XdrError):
        encode(N.pack_nfs_argop4, N.nfs_argop4(2))
    with pytest.raises(XdrError):
        encode(G.pack_rpc_gss_cred_t, G.rpc_gss_cred_t(2))


def test_illegal_op_decodes() -> None:
    # RFC 7530 §15.2: OP_ILLEGAL (10044) is a valid operation code with a void argument.
    assert decode(N.unpack_nfs_argop4, H("0000273c")) == N.nfs_argop4(N.OP_ILLEGAL)


def test_compound_count_is_checked_before_allocation() -> None:
    wire = H("00000000" "00000000" "ffffffff" "00000018")
    with pytest.raises(XdrError, match="cannot fit"):
        decode(N.unpack_COMPOUND4args, wire)
