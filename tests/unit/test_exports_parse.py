"""exports(5) parser: syntax, every option, every error with its line number."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import pytest

from pynfsd.exports import (
    ClientSpec,
    ExportOptions,
    ExportsError,
    load_exports,
    parse_export_line,
    parse_exports,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "exports"


def one(text: str) -> tuple[ClientSpec, ExportOptions]:
    (entry,) = parse_exports(text)
    (client,) = entry.clients
    return client


def opts(options: str) -> ExportOptions:
    return one(f"/srv *({options})")[1]


def error(text: str) -> ExportsError:
    with pytest.raises(ExportsError) as info:
        parse_exports(text, "ex")
    return info.value


def test_defaults() -> None:
    o = opts("")
    assert o == ExportOptions()
    assert (o.rw, o.sec, o.squash, o.anonuid, o.anongid, o.secure) == (
        False, ("sys",), "root", 65534, 65534, True)  # fmt: skip
    assert o.fsid is None and not o.pseudo_root and o.flags == frozenset()


def test_client_without_options_gets_defaults() -> None:
    assert one("/srv host1")[1] == ExportOptions()


@pytest.mark.parametrize(
    ("options", "field", "value"),
    [
        ("rw", "rw", True),
        ("rw,ro", "rw", False),
        ("sec=krb5p:krb5i:sys", "sec", ("krb5p", "krb5i", "sys")),
        ("sec=none", "sec", ("none",)),
        ("no_root_squash", "squash", "none"),
        ("root_squash", "squash", "root"),
        ("all_squash", "squash", "all"),
        ("no_root_squash,all_squash", "squash", "all"),
        ("all_squash,no_all_squash", "squash", "root"),
        ("all_squash,no_all_squash,no_root_squash", "squash", "none"),
        ("anonuid=1000", "anonuid", 1000),
        ("anongid=0", "anongid", 0),
        ("anonuid=4294967294", "anonuid", 4294967294),
        ("insecure", "secure", False),
        ("insecure,secure", "secure", True),
        ("fsid=5", "fsid", 5),
        ("fsid=0", "pseudo_root", True),
        ("fsid=root", "pseudo_root", True),
        ("fsid=5", "pseudo_root", False),
        ("fsid=0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0", "fsid",
         "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"),
        ("fsid=00112233445566778899aabbccddeeff", "fsid", "00112233445566778899aabbccddeeff"),
    ],
)  # fmt: skip
def test_each_option(options: str, field: str, value: object) -> None:
    assert getattr(opts(options), field) == value


@pytest.mark.parametrize(
    ("options", "flags"),
    [
        ("sync", {"sync"}),
        ("sync,async", {"async"}),
        ("subtree_check,no_subtree_check", {"no_subtree_check"}),
        ("wdelay", {"wdelay"}),
        ("no_wdelay", {"no_wdelay"}),
        ("hide,nohide", {"nohide"}),
        ("crossmnt", {"crossmnt"}),
        ("insecure_locks", {"insecure_locks"}),
        ("no_auth_nlm", {"no_auth_nlm"}),
        ("no_auth_nlm,secure_locks", {"secure_locks"}),
        ("mountpoint", {"mountpoint"}),
        ("mp", {"mountpoint"}),
        ("mountpoint=/mnt/x", {"mountpoint=/mnt/x"}),
        ("mp=/mnt/x", {"mountpoint=/mnt/x"}),
        ("no_acl,nordirplus,pnfs", {"no_acl", "nordirplus", "pnfs"}),
        ("refer=/a@otherhost", {"refer=/a@otherhost"}),
        ("xprtsec=tls:mtls", {"xprtsec=tls:mtls"}),
        ("security_label", {"security_label"}),
        ("manage-gids", {"manage-gids"}),
    ],
)
def test_flags_kept(options: str, flags: set[str]) -> None:
    o = opts(options)
    assert o.flags == flags
    assert o.raw == tuple(options.split(","))
    assert all(o.has(f) for f in flags)


def test_default_options_then_client_options() -> None:
    (entry,) = parse_exports("/srv -rw,sec=krb5,async h1 h2(ro) h3(sec=sys)")
    o1, o2, o3 = (o for _, o in entry.clients)
    assert (o1.rw, o1.sec, o1.has("async")) == (True, ("krb5",), True)
    assert (o2.rw, o2.sec) == (False, ("krb5",))
    assert (o3.rw, o3.sec) == (True, ("sys",))
    assert o2.raw == ("rw", "sec=krb5", "async", "ro")


def test_path_without_client_means_everyone(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pynfsd.exports"):
        (entry,) = parse_exports("\n/srv/x\n", "ex")
    assert entry.clients == ((ClientSpec("*", "anonymous"), ExportOptions()),)
    assert "ex:2:" in caplog.text and "no client" in caplog.text


def test_path_with_default_options_only() -> None:
    spec, o = one("/srv -rw")
    assert spec.kind == "anonymous" and o.rw


def test_options_without_client_mean_everyone(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pynfsd.exports"):
        (entry,) = parse_exports("/srv host1 (rw)")
    (s1, o1), (s2, o2) = entry.clients
    assert (s1.pattern, o1.rw) == ("host1", False)
    assert (s2.kind, o2.rw) == ("anonymous", True)
    assert "without a client" in caplog.text


def test_comments_blank_lines_and_continuation() -> None:
    text = "# a comment\n\n   \t\n/a  h1(rw) \\\n    h2(ro)   # trailing comment\n/b\th3 # c\n"
    a, b = parse_exports(text)
    assert [s.pattern for s, _ in a.clients] == ["h1", "h2"]
    assert [s.pattern for s, _ in b.clients] == ["h3"]


def test_crlf_lines_and_continuation() -> None:
    (a,) = parse_exports("/a h1 \\\r\n h2\r\n")
    assert [s.pattern for s, _ in a.clients] == ["h1", "h2"]


def test_quoted_and_escaped_paths() -> None:
    entries = parse_exports('"/srv/my dir" *\n/srv/a\\040b *\n"/srv/q\\"x" *\n/srv/\\303\\251 *\n')
    assert [e.path for e in entries] == ["/srv/my dir", "/srv/a b", '/srv/q"x', "/srv/é"]


def test_continuation_at_end_of_file_and_escaped_backslash() -> None:
    # Line 2 is: /b\\ h2 \   (an escaped backslash in the path, then a final continuation)
    _, b = parse_exports("/a h1\n/b\\\\ h2 \\")
    assert b.path == "/b\\"
    assert [s.pattern for s, _ in b.clients] == ["h2"]


def test_quoted_hash_is_not_a_comment() -> None:
    (e,) = parse_exports('"/srv/#x" *')
    assert e.path == "/srv/#x"


def test_path_normalised() -> None:
    (e,) = parse_exports("//srv//a/./b/ *")
    assert e.path == "/srv/a/b"
    (root,) = parse_exports("/ *")
    assert root.path == "/"


def test_same_path_twice_is_merged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pynfsd.exports"):
        entries = parse_exports("/a h1(rw)\n/b *\n/a h2 h1(ro)\n")
    assert [e.path for e in entries] == ["/a", "/b"]
    assert [(s.pattern, o.rw) for s, o in entries[0].clients] == [
        ("h1", True), ("h2", False), ("h1", False)]  # fmt: skip
    assert "more than once" in caplog.text


@pytest.mark.parametrize(
    ("text", "kind", "network"),
    [
        ("*", "anonymous", None),
        ("host.example.com", "host", None),
        ("Host_1", "host", None),
        ("10.1.2.3", "host", "10.1.2.3/32"),
        ("::1", "host", "::1/128"),
        ("[fe80::1]", "host", "fe80::1/128"),
        ("::ffff:10.0.0.1", "host", "10.0.0.1/32"),
        ("10.0.0.0/8", "network", "10.0.0.0/8"),
        ("10.1.2.3/24", "network", "10.1.2.0/24"),
        ("192.168.0.0/255.255.0.0", "network", "192.168.0.0/16"),
        ("fd00::/64", "network", "fd00::/64"),
        ("[fd00::]/64", "network", "fd00::/64"),
        ("::ffff:10.0.0.0/104", "network", "10.0.0.0/8"),
        ("*.example.com", "wildcard", None),
        ("host?.example.com", "wildcard", None),
        ("host[0-9].example.com", "wildcard", None),
        ("@trusted", "netgroup", None),
    ],
)
def test_client_kinds(text: str, kind: str, network: str | None) -> None:
    spec, _ = one(f"/srv {text}(rw)")
    assert (spec.pattern, spec.kind) == (text, kind)
    assert spec.network == (ipaddress.ip_network(network) if network else None)


@pytest.mark.parametrize(
    ("text", "lineno", "message"),
    [
        ("\n\nsrv *", 3, "not absolute"),
        ("/ok *\n/srv/../etc *", 2, "'..'"),
        ("/srv *(bogus)", 1, "unknown option 'bogus'"),
        ("/srv *(rw=1)", 1, "unknown option 'rw=1'"),
        ("/srv *(anonuid=abc)", 1, "bad number 'abc'"),
        ("/srv *(anonuid=-2)", 1, "bad number"),
        ("/srv *(anongid=4294967296)", 1, "bad number"),
        ("/srv *(anonuid=4294967295)", 1, "not an id"),
        ("/srv *(anonuid=)", 1, "needs a value"),
        ("/srv *(anonuid)", 1, "needs a value"),
        ("/srv *(fsid=xyz)", 1, "bad fsid"),
        ("/srv *(fsid=0x10)", 1, "bad fsid"),
        ("/srv *(sec=krb6)", 1, "unknown security flavour 'krb6'"),
        ("/srv *(sec=sys:sys)", 1, "duplicate"),
        ("/srv *(sec=)", 1, "needs a value"),
        ("/srv *(sec=krb5,rw,sec=sys)", 1, "more than one sec="),
        ("/srv *(rw,,sync)", 1, "empty option"),
        ("/srv *(rw", 1, "bad client"),
        ("/srv *(rw))", 1, "bad client"),
        ("/srv h(rw)(ro)", 1, "bad client"),
        ("/srv 10.0.0.0/33", 1, "bad network"),
        ("/srv 10.0.0.0/", 1, "bad network"),
        ("/srv ::ffff:10.0.0.0/95", 1, "bad network"),
        ("/srv host/24", 1, "bad network"),
        ("/srv 10.0.0.300", 1, "bad client"),
        ("/srv ho$t", 1, "bad client"),
        ("/srv @", 1, "bad netgroup"),
        ("/srv *.ex$ample", 1, "bad wildcard"),
        ("/srv -", 1, "empty default options"),
        ("/srv -bogus h", 1, "unknown option 'bogus'"),
        ('"/srv/x *', 1, "unterminated quote"),
        ("/srv *(mountpoint=rel)", 1, "must be absolute"),
        ("/srv *(xprtsec=ssl)", 1, "unknown xprtsec"),
        ("/srv *(refer=otherhost)", 1, "path@host"),
        ("/srv *(replicas=/a@h1+:/b@h2)", 1, "path@host"),
        ("/a h \\\n  h2(bad)", 2, "unknown option 'bad'"),
        ("/a h \\\n  \\\n /b", 3, "bad network '/b'"),
        ("/srv\\777 *", 1, "bad octal"),
        ("/srv\n/a\ud800 *", 2, "invalid character"),
        ("/srv\n/a\\\ud800 *", 2, "invalid character"),
    ],
)
def test_errors_name_file_and_line(text: str, lineno: int, message: str) -> None:
    err = error(text)
    assert (err.filename, err.lineno) == ("ex", lineno)
    assert str(err).startswith(f"ex:{lineno}: ")
    assert message in str(err)


def test_nul_in_path() -> None:
    assert "NUL" in str(error("/srv\\000x *"))


def test_parse_export_line_bare_directory() -> None:
    entry = parse_export_line("/srv/data")
    (spec, o), = entry.clients  # fmt: skip
    assert (entry.path, spec.kind) == ("/srv/data", "anonymous")
    assert (o.rw, o.squash, o.sec) == (True, "root", ("sys",))


def test_parse_export_line_full_syntax() -> None:
    entry = parse_export_line("'/srv/x' 127.0.0.1(ro,sec=krb5)".replace("'", '"'))
    (spec, o), = entry.clients  # fmt: skip
    assert (entry.path, spec.pattern, o.rw, o.sec) == ("/srv/x", "127.0.0.1", False, ("krb5",))


@pytest.mark.parametrize("line", ["", "   ", "# just a comment", "relative *", "/x *(nope)"])
def test_parse_export_line_errors(line: str) -> None:
    with pytest.raises(ExportsError, match="^--export"):
        parse_export_line(line)


def test_load_exports_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ExportsError, match=f"^{tmp_path}/nope: does not exist$"):
        load_exports(tmp_path / "nope")
    with pytest.raises(ExportsError, match=f"^{tmp_path}: cannot read: Is a directory$"):
        load_exports(tmp_path)


def test_load_exports_undecodable_bytes(tmp_path: Path) -> None:
    f = tmp_path / "exports"
    f.write_bytes(b"/srv/\xff *(rw)\n")
    (entry,) = load_exports(f)
    assert entry.path.encode("utf-8", "surrogateescape") == b"/srv/\xff"


@pytest.mark.parametrize("name", ["simple", "kerberos", "pseudo-root"])
def test_example_files_parse(name: str) -> None:
    entries = load_exports(EXAMPLES / f"{name}.exports")
    assert entries and all(e.path.startswith("/srv/") for e in entries)


def test_example_files_content() -> None:
    krb = {e.path: e for e in load_exports(EXAMPLES / "kerberos.exports")}
    (spec, o), (_, o2) = krb["/srv/projects"].clients
    assert (spec.kind, o.sec, o.rw, o2.rw, o2.sec) == (
        "wildcard", ("krb5i", "krb5p"), True, False, ("sys", "krb5i"))  # fmt: skip
    root = load_exports(EXAMPLES / "pseudo-root.exports")[0]
    assert root.path == "/srv/nfs4" and root.clients[0][1].pseudo_root
