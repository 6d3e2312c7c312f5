"""Client matching and the static resolver: precedence, address forms, injected lookups."""

from __future__ import annotations

import threading

import pytest

from pynfsd.exports import (
    PSEUDO_ROOT_FSID,
    ClientSpec,
    ExportOptions,
    ExportsError,
    StaticExportResolver,
    best_match,
    export_fsid,
    parse_exports,
)
from pynfsd.exports.match import ClientId, checked_names, identify, needs_names, parse_client_addr
from pynfsd.exports.netgroup import candidates


def clients(line: str) -> tuple[tuple[ClientSpec, ExportOptions], ...]:
    (entry,) = parse_exports(line)
    return entry.clients


def winner(
    line: str, addr: str, names: tuple[str, ...] = (), netgroups: frozenset[str] = frozenset()
) -> str | None:
    """The anonuid of the winning client (the tests tag each client with one)."""
    options = best_match(clients(line), addr, names, netgroups)
    return None if options is None else str(options.anonuid)


LINE = (
    "/srv *(anonuid=5) @ng(anonuid=4) *.ex.com(anonuid=3) 10.0.0.0/8(anonuid=2) h.ex.com(anonuid=1)"
)


@pytest.mark.parametrize(
    ("addr", "names", "expected"),
    [
        ("10.1.1.1", ("h.ex.com",), "1"),  # single host beats everything
        ("10.1.1.1", ("other.ex.com",), "2"),  # network beats wildcard
        ("192.0.2.1", ("other.ex.com",), "3"),  # wildcard beats netgroup and *
        ("192.0.2.1", ("other.org",), "5"),  # not in @ng: *
        ("192.0.2.1", (), "5"),
    ],
)
def test_precedence_regardless_of_line_order(
    addr: str, names: tuple[str, ...], expected: str
) -> None:
    assert winner(LINE, addr, names) == expected


def test_a_netgroup_member_gets_the_netgroup_beats_only_the_anonymous_spec() -> None:
    ng = frozenset({"@ng"})
    assert winner(LINE, "192.0.2.1", ("other.org",), ng) == "4"
    assert winner(LINE, "192.0.2.1", ("other.ex.com",), ng) == "3"
    assert winner(LINE, "192.0.2.1", ("other.org",), frozenset({"@other"})) == "5"


def test_first_of_same_kind_wins() -> None:
    line = "/srv 10.0.0.0/8(anonuid=1) 10.1.0.0/16(anonuid=2) *.com(anonuid=3) *.ex.com(anonuid=4)"
    assert winner(line, "10.1.2.3") == "1"
    assert winner(line, "192.0.2.1", ("a.ex.com",)) == "3"


def test_no_match() -> None:
    assert winner("/srv 10.0.0.0/8 h.ex.com *.org", "192.0.2.1", ("h.ex.com.evil",)) is None


@pytest.mark.parametrize(
    ("spec", "addr", "matches"),
    [
        ("10.0.0.1", "10.0.0.1", True),
        ("10.0.0.1", "10.0.0.2", False),
        ("10.0.0.1", "::ffff:10.0.0.1", True),
        ("10.0.0.0/8", "::ffff:10.9.9.9", True),
        ("10.0.0.0/255.0.0.0", "10.200.0.1", True),
        ("10.0.0.0/255.0.0.0", "11.0.0.1", False),
        ("::1", "::1", True),
        ("::1", "[::1]", True),
        ("::1", "127.0.0.1", False),
        ("fe80::/10", "fe80::1%eth0", True),
        ("fd00::/8", "10.0.0.1", False),
        ("0.0.0.0/0", "::1", False),
        ("::/0", "::1", True),
        ("*", "not-an-address", True),
        ("10.0.0.0/8", "not-an-address", False),
    ],
)
def test_addresses(spec: str, addr: str, matches: bool) -> None:
    assert (winner(f"/srv {spec}", addr) is not None) is matches


@pytest.mark.parametrize(
    ("spec", "names", "matches"),
    [
        ("h.ex.com", ("H.EX.COM.",), True),
        ("h.ex.com", ("alias", "h.ex.com"), True),
        ("h.ex.com", ("h.ex.com.au",), False),
        ("*.ex.com", ("a.b.ex.com",), True),
        ("*.ex.com", ("ex.com",), False),
        ("h?.ex.com", ("h1.ex.com",), True),
        ("h?.ex.com", ("h12.ex.com",), False),
        ("h[0-3].ex.com", ("h2.ex.com",), True),
        ("h[0-3].ex.com", ("h7.ex.com",), False),
    ],
)
def test_names(spec: str, names: tuple[str, ...], matches: bool) -> None:
    assert (winner(f"/srv {spec}", "192.0.2.7", names) is not None) is matches


def test_parse_client_addr() -> None:
    assert str(parse_client_addr("::ffff:192.0.2.1")) == "192.0.2.1"
    assert str(parse_client_addr(" [fe80::1%lo] ")) == "fe80::1"
    with pytest.raises(ValueError):
        parse_client_addr("host")


def test_needs_names() -> None:
    assert not needs_names([s for s, _ in clients("/srv * 10.0.0.0/8 ::1")])
    assert needs_names([s for s, _ in clients("/srv @ng")])
    assert needs_names([s for s, _ in clients("/srv h.ex.com")])
    assert needs_names([s for s, _ in clients("/srv *.ex.com")])


class FakeDns:
    """A reverse lookup that records its calls and the thread they ran on."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[str] = []
        self.threads: set[int] = set()

    def __call__(self, addr: str) -> list[str]:
        self.calls.append(addr)
        self.threads.add(threading.get_ident())
        return self.table.get(addr, [])


TABLE = """
/srv/nfs4     *(ro,fsid=0)
/srv/home     *.ex.com(rw,sec=krb5p)
/srv/build    10.0.0.0/8(rw,fsid=12) 192.0.2.0/24(ro,fsid=12)
/srv/private  192.0.2.10(rw,fsid=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0)
"""


async def test_static_resolver_filters_and_assigns_fsids() -> None:
    dns = FakeDns({"192.0.2.10": ["ws.ex.com"]})
    resolver = StaticExportResolver(parse_exports(TABLE), reverse_lookup=dns)
    got = await resolver.exports_for("::ffff:192.0.2.10")
    assert [(e.path, e.options.rw) for e in got] == [
        ("/srv/nfs4", False), ("/srv/home", True), ("/srv/build", False), ("/srv/private", True)]  # fmt: skip
    fsids = {e.path: e.fsid for e in got}
    assert fsids["/srv/nfs4"] == PSEUDO_ROOT_FSID == 0
    assert fsids["/srv/build"] == 12
    assert fsids["/srv/home"] >= 2**63 and fsids["/srv/private"] >= 2**63
    assert dns.calls == ["192.0.2.10"]  # mapped address resolved as IPv4
    assert threading.get_ident() not in dns.threads  # ran off the event loop thread


async def test_static_resolver_no_lookup_without_names() -> None:
    dns = FakeDns({})
    resolver = StaticExportResolver(parse_exports("/a 10.0.0.0/8\n/b *"), reverse_lookup=dns)
    got = await resolver.exports_for("10.0.0.1")
    assert [e.path for e in got] == ["/a", "/b"] and dns.calls == []
    assert [e.path for e in await resolver.exports_for("192.0.2.1")] == ["/b"]


async def test_static_resolver_sees_dns_changes() -> None:
    dns = FakeDns({"192.0.2.1": ["a.ex.com"]})
    resolver = StaticExportResolver(parse_exports("/a *.ex.com"), reverse_lookup=dns)
    assert len(await resolver.exports_for("192.0.2.1")) == 1
    dns.table.clear()
    assert await resolver.exports_for("192.0.2.1") == ()


def test_fsids_are_stable_and_distinct() -> None:
    (a, b) = parse_exports("/a *\n/b *")
    fa, fb = export_fsid(a.path, a.clients[0][1]), export_fsid(b.path, b.clients[0][1])
    assert fa != fb
    assert fa == export_fsid("/a", parse_exports("/a h(rw)")[0].clients[0][1])
    assert fa == 0xE381601CB8387457  # golden: filehandles survive restarts and upgrades


def test_uuid_fsid_ignores_separators() -> None:
    dashed, plain = parse_exports(
        "/x *(fsid=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0)\n/y *(fsid=0f1e2d3c4b5a69788796a5b4c3d2e1f0)"
    )
    fx = export_fsid("/x", dashed.clients[0][1])
    # golden: a hash of the uuid and the path (filehandles survive restarts and upgrades)
    assert fx == export_fsid("/x", plain.clients[0][1]) == 0xCF0CD4D442CA344A
    assert export_fsid("/y", plain.clients[0][1]) != fx


@pytest.mark.parametrize(
    "table",
    [
        "/a *(fsid=3)\n/b *(fsid=3)",
        "/a *(fsid=0)\n/b *(fsid=root)",
        "/a h1(fsid=1) h2(fsid=2)\n/b *(fsid=2)",
    ],
)
def test_duplicate_fsid_rejected(table: str) -> None:
    with pytest.raises(ExportsError, match="already used"):
        StaticExportResolver(parse_exports(table))


def test_same_fsid_same_path_allowed() -> None:
    StaticExportResolver(parse_exports("/a h1(fsid=3,rw) h2(fsid=3)"))


# ------------------------------------------------------------ names with forward check, netgroups
FORWARD = {"good.ex.com": ["192.0.2.7"], "liar.ex.com": ["198.51.100.1"],
           "v6.ex.com": ["::ffff:192.0.2.7"]}


def test_a_name_counts_only_if_it_resolves_back_to_the_address() -> None:
    def reverse(addr: str) -> list[str]:
        assert addr == "192.0.2.7"
        return ["liar.ex.com", "good.ex.com", "good.ex.com", "v6.ex.com", "gone.ex.com"]

    names = checked_names("::ffff:192.0.2.7", reverse, lambda n: FORWARD.get(n, []))
    assert names == ["good.ex.com", "v6.ex.com"]
    assert checked_names("not an address", reverse, lambda n: []) == []


def test_identify_asks_the_netgroups_of_the_table_with_names_address_and_short_names() -> None:
    asked: list[tuple[str, str]] = []

    def innetgr(group: str, host: str) -> bool:
        asked.append((group, host))
        return (group, host) in {("short", "good"), ("byaddr", "192.0.2.7")}

    specs = [s for s, _ in clients("/srv @short @byaddr @none 10.0.0.0/8")]
    client = identify("192.0.2.7", specs, lambda a: ["good.ex.com"], innetgr)
    assert client == ClientId("192.0.2.7", ("good.ex.com",), frozenset({"@short", "@byaddr"}))
    assert {h for g, h in asked if g == "none"} == {"good.ex.com", "192.0.2.7", "good"}


def test_identify_looks_nothing_up_when_no_spec_needs_it() -> None:
    def fail(*_: str) -> list[str]:
        raise AssertionError("looked up")

    specs = [s for s, _ in clients("/srv * 10.0.0.0/8")]
    assert identify("10.0.0.1", specs, fail, fail) == ClientId("10.0.0.1")  # type: ignore[arg-type]


def test_netgroup_candidates() -> None:
    assert candidates("192.0.2.7", ["a.ex.com", "b"]) == ["a.ex.com", "b", "192.0.2.7", "a"]


async def test_static_resolver_matches_netgroup_members() -> None:
    resolver = StaticExportResolver(parse_exports("/a @trusted\n/b *"),
                                    reverse_lookup=lambda a: ["h.ex.com"],
                                    innetgr=lambda g, h: (g, h) == ("trusted", "h"))
    assert [e.path for e in await resolver.exports_for("192.0.2.9")] == ["/a", "/b"]
