"""The kernel cache channel lines: word quoting, the four caches' requests and replies (the
lines rpc.mountd and exportfs were seen to write, docs NFS-UTILS-INTEROP.md), the kernel's
checks, the bounds, and the `content` rows."""

from __future__ import annotations

import pytest

from pynfsd.cache import lines as L
from pynfsd.cache.qword import (
    MAX_LINE,
    MAX_WORD,
    NGROUPS_MAX,
    LineError,
    hexword,
    split_line,
    word,
)

EXP = 1_700_001_800


# ------------------------------------------------------------ words
def test_text_words_escape_space_tab_newline_backslash_in_octal() -> None:
    assert word("/srv/my dir\t\n\\x") == b"/srv/my\\040dir\\011\\012\\134x"
    assert split_line(b"/srv/my\\040dir\\011\\012\\134x\n") == [b"/srv/my dir\t\n\\x"]


def test_hex_words_and_the_empty_word() -> None:
    assert hexword(b"\x00\x01\xfe") == b"\\x0001fe"
    assert split_line(b"\\x0001FE \\x\n") == [b"\x00\x01\xfe", b""]
    assert word("") == b"\\x"


def test_a_backslash_not_followed_by_an_octal_byte_is_itself() -> None:
    assert split_line(b"a\\b \\477 \\07\n") == [b"a\\b", b"\\477", b"\\07"]


def test_several_spaces_separate_like_one() -> None:
    """exportfs writes `-test-client- /path  3 ...` with two spaces."""
    assert split_line(b"a  b   c\n") == [b"a", b"b", b"c"]


@pytest.mark.parametrize("bad, why", [
    (b"no newline", "newline"),
    (b"a\nb\n", "inside"),
    (b"a\x00b\n", "inside"),
    (b"\\x0\n", "bad hex"),
    (b"\\xzz\n", "bad hex"),
    (b"x" * (MAX_WORD + 1) + b"\n", "more than"),
])
def test_malformed_words(bad: bytes, why: str) -> None:
    with pytest.raises(LineError, match=why):
        split_line(bad)


def test_line_and_word_count_bounds() -> None:
    with pytest.raises(LineError, match="more than"):
        split_line(b"1 " * (MAX_LINE // 2) + b"\n")
    with pytest.raises(LineError, match="words"):
        split_line(b"1 " * (NGROUPS_MAX + 100) + b"\n")


# ------------------------------------------------------------ auth.unix.ip
def test_ip_mountd_reply() -> None:
    r = L.decode_ip_reply(b"nfsd 127.0.0.1 %d *,127.0.0.1\n" % EXP)
    assert r == L.IpReply(L.IpKey("nfsd", "127.0.0.1"), EXP, "*,127.0.0.1")
    assert L.encode_ip_reply(r) == b"nfsd 127.0.0.1 %d *,127.0.0.1\n" % EXP


def test_ip_exportfs_test_entry() -> None:
    r = L.decode_ip_reply(b"nfsd 0.0.0.0 2147483647 -test-client-\n")
    assert r.value == "-test-client-" and r.expiry == 2147483647


def test_ip_negative_and_ipv6() -> None:
    r = L.decode_ip_reply(b"nfsd 0000:0000::0001 %d\n" % EXP)
    assert r.value is None and r.key.ip == "::1"
    assert L.decode_ip_reply(b"nfsd ::1 %d \\x\n" % EXP).value is None


def test_ip_request() -> None:
    key = L.IpKey("nfsd", "192.0.2.7")
    assert L.encode_ip_request(key) == b"nfsd 192.0.2.7\n"
    assert L.decode_ip_request(b"nfsd 192.0.2.7\n") == key


@pytest.mark.parametrize("bad", [
    b"nfsd 127.0.0.1\n",  # no expiry
    b"nfsd 127.0.0.1 -5 dom\n",  # negative expiry
    b"nfsd 127.0.0.1 soon dom\n",
    b"nfsd 300.0.0.1 %d dom\n" % EXP,
    b"toolongclass 127.0.0.1 %d dom\n" % EXP,
    b"nfsd 127.0.0.1 %d dom extra\n" % EXP,
])
def test_ip_malformed(bad: bytes) -> None:
    with pytest.raises(LineError):
        L.decode_ip_reply(bad)


def test_ip_content() -> None:
    r = L.decode_ip_reply(b"nfsd 127.0.0.1 %d *,127.0.0.1\n" % EXP)
    assert L.content_ip(r, True) == b"nfsd 127.0.0.1 *,127.0.0.1\n"
    neg = L.IpReply(r.key, EXP, None)
    assert L.content_ip(neg, True) == b"nfsd 127.0.0.1 -no-domain-\n"
    assert L.content_ip(r, False) == b"# nfsd 127.0.0.1 -no-domain-\n"
    assert L.CONTENT_HEADERS["auth.unix.ip"] == b"#class IP domain\n"


# ------------------------------------------------------------ nfsd.export
def test_export_mountd_reply() -> None:
    line = b"127.0.0.1 /srv/a %d 9252 65534 65534 1 secinfo 1 1 9252\n" % EXP
    r = L.decode_export_reply(line)
    assert r.key == L.ExportKey("127.0.0.1", "/srv/a") and r.expiry == EXP
    info = r.value
    assert info is not None
    assert (info.flags, info.anonuid, info.anongid, info.fsid) == (9252, 65534, 65534, 1)
    assert info.flags == (L.NFSEXP_FSID | L.NFSEXP_NOSUBTREECHECK | L.NFSEXP_GATHERED_WRITES
                          | L.NFSEXP_ROOTSQUASH)
    assert info.secinfo == (L.SecFlavor(1, 9252),) and info.uuid is None
    assert L.encode_export_reply(r) == line


def test_export_mountd_negative() -> None:
    r = L.decode_export_reply(b"127.0.0.1 /nonexistent %d\n" % EXP)
    assert r.value is None and r.key.path == "/nonexistent"
    assert L.encode_export_reply(r) == b"127.0.0.1 /nonexistent %d\n" % EXP


def test_export_exportfs_test_entry() -> None:
    r = L.decode_export_reply(b"-test-client- /path  3 9252 65534 65534 0\n")
    assert r.expiry == 3 and r.value is not None and r.value.fsid == 0


def test_export_uuid_secinfo_fsloc_xprtsec() -> None:
    uuid = bytes(range(16))
    line = (b"* /srv/b %d 8195 1000 1000 0 fsloc 1 host\\040a /p 0 uuid %s "
            b"secinfo 2 390003 8194 1 8195 xprtsec 2 1 4\n" % (EXP, hexword(uuid)))
    info = L.decode_export_reply(line).value
    assert info is not None and info.uuid == uuid
    assert info.secinfo == (L.SecFlavor(390003, 8194), L.SecFlavor(1, 8195))
    assert info.fslocations == (("host a", "/p"),) and not info.migrated
    assert info.xprtsec == (L.NFSEXP_XPRTSEC_NONE, L.NFSEXP_XPRTSEC_MTLS)
    assert L.decode_export_reply(L.encode_export_reply(L.decode_export_reply(line))).value == info


def test_export_manage_gids_is_a_trailing_word_the_kernel_stops_at() -> None:
    info = L.ExportInfo(0x2424, 65534, 65534, 1, secinfo=(L.SecFlavor(1, 0x2424),),
                        manage_gids=True)
    line = L.encode_export_reply(L.ExportReply(L.ExportKey("*", "/a"), EXP, info))
    assert line.endswith(b" secinfo 1 1 9252 manage_gids\n")
    assert L.decode_export_reply(line).value == info
    assert L.decode_export_reply(line.replace(b" manage_gids", b"")).value == L.ExportInfo(
        0x2424, 65534, 65534, 1, secinfo=(L.SecFlavor(1, 0x2424),))
    assert b"manage-gids" in L.content_export(L.ExportReply(L.ExportKey("*", "/a"), EXP, info), True)


def test_export_unknown_word_ends_the_options() -> None:
    r = L.decode_export_reply(b"* /a %d 0 0 0 0 future 7 x secinfo 1 1 0\n" % EXP)
    assert r.value is not None and r.value.secinfo == ()


@pytest.mark.parametrize("bad, why", [
    (b"* /a %d 256 0 0 0\n", "unknown export flags"),  # 0x100 is not an export flag
    (b"* /a %d 0x1 0 0 0\n", "not a number"),
    (b"* /a %d 0 0\n", "anongid missing"),
    (b"* /a %d 0 4294967295 0 0\n", "not a valid id"),
    (b"* /a %d 0 0 -1 0\n", "anongid: not a valid id"),
    (b"* /a %d 0 0 0 0 uuid \\x0011\n", "uuid"),
    (b"* /a %d 0 0 0 0 secinfo 9\n", "secinfo count"),
    (b"* /a %d 0 0 0 0 secinfo 2 1 0\n", "secinfo flavour 2 missing"),
    (b"* /a %d 0 0 0 0 secinfo 1 1 16\n", "differ"),  # async differs: not a secinfo flag
    (b"* /a %d 0 0 0 0 secinfo 1 1 0 secinfo 1 1 0\n", "twice"),
    (b"* /a %d 0 0 0 0 fsloc 129\n", "fsloc count"),
    (b"* /a %d 0 0 0 0 xprtsec 1 5\n", "xprtsec mode"),
    (b"* relative %d\n", "not absolute"),
])
def test_export_malformed(bad: bytes, why: str) -> None:
    with pytest.raises(LineError, match=why):
        L.decode_export_reply(bad % EXP)


def test_export_request_quotes_the_path() -> None:
    key = L.ExportKey("*.example.com", "/srv/with space")
    assert L.encode_export_request(key) == b"*.example.com /srv/with\\040space\n"
    assert L.decode_export_request(L.encode_export_request(key)) == key


def test_export_content() -> None:
    r = L.decode_export_reply(b"127.0.0.1 /srv/a %d 9252 65534 65534 1 secinfo 1 1 9252\n" % EXP)
    assert L.content_export(r, True) == (
        b"/srv/a\t127.0.0.1(rw,root_squash,sync,wdelay,no_subtree_check,fsid=1,sec=1)\n")
    assert L.content_export(r, False) == b"# /srv/a\t127.0.0.1()\n"
    two = L.decode_export_reply(
        b"* /b %d 1 1000 1000 0 uuid \\x000102030405060708090a0b0c0d0e0f "
        b"secinfo 2 390003 1 1 0\n" % EXP)
    assert L.content_export(two, True) == (
        b"/b\t*(ro,no_root_squash,sync,no_wdelay,anonuid=1000,anongid=1000,"
        b"uuid=00010203:04050607:08090a0b:0c0d0e0f,sec=390003,sec=1,rw,no_root_squash)\n")


# ------------------------------------------------------------ nfsd.fh
def test_fh_request_and_reply() -> None:
    key = L.FhKey("127.0.0.1", 1, b"\x00\x00\x00\x01")
    assert L.encode_fh_request(key) == b"127.0.0.1 1 \\x00000001\n"
    assert L.decode_fh_request(b"127.0.0.1 1 \\x00000001\n") == key
    r = L.decode_fh_reply(b"127.0.0.1 1 \\x00000001 %d /srv/a\n" % EXP)
    assert r == L.FhReply(key, EXP, "/srv/a")
    assert L.encode_fh_reply(r) == b"127.0.0.1 1 \\x00000001 %d /srv/a\n" % EXP
    assert L.decode_fh_reply(b"127.0.0.1 1 \\x00000001 %d\n" % EXP).value is None


def test_fh_uuid_fsid_type() -> None:
    key = L.FhKey("*", 6, bytes(16))
    assert L.decode_fh_request(L.encode_fh_request(key)) == key


@pytest.mark.parametrize("bad", [
    b"d 1 \\x000001 %d /a\n",  # 3 bytes for type 1
    b"d 8 \\x00000001 %d /a\n",  # no such type
    b"d 1 \\x00000001 %d relative\n",
    b"d 1 \\x00000001\n",
])
def test_fh_malformed(bad: bytes) -> None:
    with pytest.raises(LineError):
        L.decode_fh_reply(bad.replace(b"%d", b"%d" % EXP))


def test_fh_content() -> None:
    r = L.decode_fh_reply(b"127.0.0.1 1 \\x00000001 %d /srv/a\n" % EXP)
    assert L.content_fh(r, True) == b"127.0.0.1 1 0x00000001 /srv/a\n"
    assert L.content_fh(r, False) == b"# 127.0.0.1 1 0x00000001\n"


# ------------------------------------------------------------ auth.unix.gid
def test_gid_request_and_reply() -> None:
    assert L.encode_gid_request(1000) == b"1000\n" and L.decode_gid_request(b"1000\n") == 1000
    r = L.decode_gid_reply(b"1000 %d 3 1000 24 27\n" % EXP)
    assert r == L.GidReply(1000, EXP, (1000, 24, 27))
    assert L.encode_gid_reply(r) == b"1000 %d 3 1000 24 27\n" % EXP
    assert L.decode_gid_reply(b"1000 %d 0\n" % EXP).value == ()


def test_gid_reply_without_groups_is_negative_as_mountd_writes_for_an_unknown_uid() -> None:
    r = L.decode_gid_reply(b"4242 %d\n" % EXP)
    assert r == L.GidReply(4242, EXP, None)
    assert L.encode_gid_reply(r) == b"4242 %d\n" % EXP


def test_gid_ngroups_max() -> None:
    gids = tuple(range(NGROUPS_MAX))
    r = L.GidReply(7, EXP, gids)
    assert L.decode_gid_reply(L.encode_gid_reply(r)) == r
    with pytest.raises(LineError, match="group count"):
        L.decode_gid_reply(b"7 %d %d 1\n" % (EXP, NGROUPS_MAX + 1))


@pytest.mark.parametrize("bad", [
    b"1000 x%d\n", b"1000 %d 2 1\n", b"1000 %d 1 1 2\n", b"1000 %d 1 -1\n", b"-1 %d 0\n",
    b"1000 %d 1 4294967296\n",
])
def test_gid_malformed(bad: bytes) -> None:
    with pytest.raises(LineError):
        L.decode_gid_reply(bad % EXP)


def test_gid_content() -> None:
    r = L.GidReply(1000, EXP, (1000, 24))
    assert L.content_gid(r, True) == b"1000 2: 1000 24\n"
    assert L.content_gid(r, False) == b"# 1000 0:\n"


def test_ip_key_of_a_client_address() -> None:
    assert L.ip_key("::ffff:192.0.2.7") == L.IpKey("nfsd", "192.0.2.7")
    assert L.ip_key("2001:db8:0::1") == L.IpKey("nfsd", "2001:db8::1")
    assert L.ip_key("fe80::1%eth0").ip == "fe80::1"
    assert L.decode_ip_request(b"nfsd ::ffff:10.0.0.1\n").ip == "10.0.0.1"
    with pytest.raises(ValueError):
        L.ip_key("host.example.com")
