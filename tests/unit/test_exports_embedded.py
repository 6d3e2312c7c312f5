"""The embedded resolver's answers to the four caches' upcalls, with injected name lookups, a
manual clock and its own worker threads: domains (names with forward check, wildcards,
netgroups, the address when the list is too long), exports by precedence, filehandle fsids,
group lists, reload, expiry, and the contract of `send` (one answer or one `lost`)."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pynfsd.cache import lines as L
from pynfsd.exports import ExportOptions, export_fsid, parse_exports
from pynfsd.exports.embedded import DEFAULT_TTL, MAX_DOMAIN, EmbeddedWay, Table
from pynfsd.exports.kernelform import fh_key, fsid_key, info_from_options, path_facts
from pynfsd.exports.match import ClientId, best_match
from pynfsd.exports.resolver import uuid_fold
from tests.clock import ManualClock

TABLE = """
/srv/a  host.example.com(rw,anonuid=1) 192.168.0.0/24(ro,anonuid=2) *.example.com(anonuid=3) @ng(anonuid=4)
/srv/b  *(ro,fsid=7)
/srv/c  10.0.0.0/8(rw) @ng(ro)
"""
HOST = "192.168.0.5"
NOW = 1_700_000_000


@dataclass
class Dns:
    """Injected name service: reverse names, forward addresses, netgroup members; each call
    recorded with the thread it ran on."""

    reverse: dict[str, list[str]] = field(default_factory=lambda: {HOST: ["host.example.com"]})
    forward: dict[str, list[str]] = field(default_factory=lambda: {"host.example.com": [HOST]})
    netgroups: dict[str, set[str]] = field(default_factory=lambda: {"ng": {"host"}})
    groups: dict[int, tuple[int, ...]] = field(default_factory=lambda: {1000: (1000, 24, 27)})
    threads: set[str] = field(default_factory=set)

    def _seen(self) -> None:
        self.threads.add(threading.current_thread().name)

    def reverse_lookup(self, addr: str) -> list[str]:
        self._seen()
        return self.reverse.get(addr, [])

    def forward_lookup(self, name: str) -> list[str]:
        self._seen()
        return self.forward.get(name, [])

    def innetgr(self, group: str, host: str) -> bool:
        self._seen()
        return host in self.netgroups.get(group, set())

    def getgrouplist(self, uid: int) -> tuple[int, ...] | None:
        self._seen()
        return self.groups.get(uid)


def way(dns: Dns, table: str = TABLE, clock: Callable[[], float] = lambda: NOW,
        ttl: int = DEFAULT_TTL) -> EmbeddedWay:
    return EmbeddedWay(parse_exports(table), reverse_lookup=dns.reverse_lookup,
                       forward_lookup=dns.forward_lookup, innetgr=dns.innetgr,
                       getgrouplist=dns.getgrouplist, clock=clock, ttl=ttl)


async def ask(w: EmbeddedWay, cache: str, line: bytes) -> bytes:
    """One upcall; fails if it is lost or answered twice."""
    fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    w.send(cache, line, fut.set_result, lambda why: fut.set_exception(AssertionError(why)))
    return await asyncio.wait_for(fut, 60)


async def domain_of(w: EmbeddedWay, addr: str) -> str | None:
    return L.decode_ip_reply(await ask(w, "auth.unix.ip", b"nfsd %s\n" % addr.encode())).value


async def export_of(w: EmbeddedWay, domain: str, path: str) -> L.ExportInfo | None:
    line = L.encode_export_request(L.ExportKey(domain, path))
    return L.decode_export_reply(await ask(w, "nfsd.export", line)).value


def opts(table: str, path: str, pattern: str) -> ExportOptions:
    entry = next(e for e in parse_exports(table) if e.path == path)
    return next(o for s, o in entry.clients if s.pattern == pattern)


# ------------------------------------------------------------ auth.unix.ip
async def test_the_domain_is_every_matching_spec_sorted_and_joined() -> None:
    dns = Dns()
    w = way(dns)
    try:
        line = await ask(w, "auth.unix.ip", b"nfsd 192.168.0.5\n")
        assert line == (b"nfsd 192.168.0.5 %d *,*.example.com,192.168.0.0/24,@ng,"
                        b"host.example.com\n" % (NOW + DEFAULT_TTL))
        assert dns.threads and all(t.startswith("pynfsd-embedded") for t in dns.threads)
    finally:
        await w.close()


async def test_a_name_that_does_not_resolve_back_counts_for_nothing() -> None:
    dns = Dns(forward={"host.example.com": ["192.168.0.99"]}, netgroups={"ng": {"host.example.com"}})
    w = way(dns)
    try:
        assert await domain_of(w, HOST) == "*,192.168.0.0/24"
    finally:
        await w.close()


async def test_netgroup_by_address_and_no_match_is_negative() -> None:
    dns = Dns(reverse={}, netgroups={"ng": {"10.1.2.3"}})
    w = way(dns, "/srv/c 10.0.0.0/8(rw) @ng(ro)\n/srv/d @other")
    try:
        assert await domain_of(w, "10.1.2.3") == "10.0.0.0/8,@ng"
        assert await domain_of(w, "172.16.0.1") is None
        assert await ask(w, "auth.unix.ip", b"nfsd 172.16.0.1\n") == (
            b"nfsd 172.16.0.1 %d\n" % (NOW + DEFAULT_TTL))
        assert await ask(w, "auth.unix.ip", b"other 10.1.2.3\n") == (
            b"other 10.1.2.3 %d\n" % (NOW + DEFAULT_TTL))  # only the nfsd class has domains
    finally:
        await w.close()


async def test_a_domain_over_the_limit_is_the_address_and_exports_match_it() -> None:
    groups = [f"@group{i:04d}" for i in range(MAX_DOMAIN // 10 + 1)]
    table = "\n".join(f"/srv/n{i} {g}(rw,anonuid={i})" for i, g in enumerate(groups))
    dns = Dns(reverse={}, netgroups={g[1:]: {"10.1.2.3"} for g in groups[1:]})
    w = way(dns, table + "\n/srv/one 10.1.2.3(ro)")
    try:
        assert await domain_of(w, "10.1.2.3") == "10.1.2.3"
        info = await export_of(w, "10.1.2.3", "/srv/n5")
        assert info == info_from_options("/srv/n5", opts(table, "/srv/n5", "@group0005"))
        assert await export_of(w, "10.1.2.3", "/srv/n0") is None  # not in @group0000
        assert (await export_of(w, "10.1.2.3", "/srv/one")) is not None
    finally:
        await w.close()


# ------------------------------------------------------------ nfsd.export
async def test_export_options_follow_exports5_precedence_within_the_domain() -> None:
    w = way(Dns())
    try:
        full = "*,*.example.com,192.168.0.0/24,@ng,host.example.com"
        assert await export_of(w, full, "/srv/a") == info_from_options(
            "/srv/a", opts(TABLE, "/srv/a", "host.example.com"))
        assert await export_of(w, "*,*.example.com,@ng", "/srv/a") == info_from_options(
            "/srv/a", opts(TABLE, "/srv/a", "*.example.com"))
        assert await export_of(w, "@ng", "/srv/c") == info_from_options(
            "/srv/c", opts(TABLE, "/srv/c", "@ng"))
        assert await export_of(w, "*", "/srv/a") is None  # not exported to this domain
        assert await export_of(w, full, "/srv/none") is None
        assert await export_of(w, "-test-client-", "/srv/b") is None
    finally:
        await w.close()


async def test_an_address_domain_is_matched_as_that_address() -> None:
    w = way(Dns())
    try:
        assert await export_of(w, HOST, "/srv/a") == info_from_options(
            "/srv/a", opts(TABLE, "/srv/a", "host.example.com"))
        assert await export_of(w, "10.1.1.1", "/srv/c") == info_from_options(
            "/srv/c", opts(TABLE, "/srv/c", "10.0.0.0/8"))
    finally:
        await w.close()


# ------------------------------------------------------------ nfsd.fh
async def fh_path(w: EmbeddedWay, domain: str, fsid: int) -> str | None:
    fsidtype, data = fsid_key(fsid)
    line = L.encode_fh_request(L.FhKey(domain, fsidtype, data))
    return L.decode_fh_reply(await ask(w, "nfsd.fh", line)).value


async def test_fh_names_the_export_of_that_fsid_the_domain_may_use() -> None:
    w = way(Dns())
    try:
        assert await fh_path(w, "*", 7) == "/srv/b"
        derived = export_fsid("/srv/a", opts(TABLE, "/srv/a", "@ng"))
        assert await fh_path(w, "@ng", derived) == "/srv/a"
        assert await fh_path(w, HOST, derived) == "/srv/a"
        assert await fh_path(w, "*", derived) is None  # /srv/a is not exported to *
        assert await fh_path(w, "*", 8) is None
        line = L.encode_fh_request(L.FhKey("*", 6, bytes(16)))
        assert await ask(w, "nfsd.fh", line) == line[:-1] + b" %d\n" % (NOW + DEFAULT_TTL)
    finally:
        await w.close()


async def test_fh_of_a_uuid_export_answers_the_key_knfsd_and_mountd_use(tmp_path: Path) -> None:
    uuid = "3b241101-e2bb-4255-8caf-4136c566a962"
    table = f"{tmp_path} *(rw,fsid={uuid})\n/ *(ro,fsid=1{uuid[1:]})\n"
    w = way(Dns(), table)
    try:
        o = opts(table, str(tmp_path), "*")
        ino = (tmp_path.stat().st_ino % (1 << 32)).to_bytes(4, sys.byteorder)
        key = fh_key(o, export_fsid(str(tmp_path), o), path_facts(str(tmp_path)))
        assert key == (4, ino + uuid_fold(uuid, 4))
        assert await fh_key_path(w, *key) == str(tmp_path)
        assert await fh_key_path(w, 4, bytes(4) + uuid_fold(uuid, 4)) is None  # other inode
        assert await fh_key_path(w, 5, uuid_fold(uuid, 8)) is None  # not a mount point
        assert await fh_key_path(w, 5, uuid_fold("1" + uuid[1:], 8)) == "/"
    finally:
        await w.close()


async def fh_key_path(w: EmbeddedWay, fsidtype: int, data: bytes) -> str | None:
    line = L.encode_fh_request(L.FhKey("*", fsidtype, data))
    return L.decode_fh_reply(await ask(w, "nfsd.fh", line)).value


# ------------------------------------------------------------ auth.unix.gid
async def test_groups_of_a_user_and_an_unknown_uid() -> None:
    dns = Dns(groups={1000: (1000, 24, 27), 2000: tuple(range(5000, 5040))})
    w = way(dns)
    try:
        exp = NOW + DEFAULT_TTL
        assert await ask(w, "auth.unix.gid", b"1000\n") == b"1000 %d 3 1000 24 27\n" % exp
        r = L.decode_gid_reply(await ask(w, "auth.unix.gid", b"2000\n"))
        assert r.value == tuple(range(5000, 5040))
        assert await ask(w, "auth.unix.gid", b"4242\n") == b"4242 %d\n" % exp
    finally:
        await w.close()


# ------------------------------------------------------------ expiry, reload, the contract
async def test_expiry_is_now_plus_ttl_by_the_injected_clock() -> None:
    clock = ManualClock(now=NOW)
    w = way(Dns(), clock=clock, ttl=60)
    try:
        assert L.decode_gid_reply(await ask(w, "auth.unix.gid", b"1000\n")).expiry == NOW + 60
        clock.advance(100.5)
        assert L.decode_gid_reply(await ask(w, "auth.unix.gid", b"1000\n")).expiry == NOW + 160
    finally:
        await w.close()


async def test_reload_answers_from_the_new_table() -> None:
    w = way(Dns())
    try:
        assert await export_of(w, "*", "/srv/b") is not None
        w.reload(parse_exports("/srv/b 10.0.0.0/8(rw)\n/srv/new *(rw)"))
        assert await export_of(w, "*", "/srv/b") is None
        assert await export_of(w, "*", "/srv/new") is not None
        assert await domain_of(w, HOST) == "*"
    finally:
        await w.close()


async def test_an_answer_computed_across_a_reload_comes_from_the_new_table() -> None:
    started, release = threading.Event(), threading.Event()
    dns = Dns()

    def slow_reverse(addr: str) -> list[str]:
        started.set()
        release.wait(60)
        return dns.reverse_lookup(addr)

    w = EmbeddedWay(parse_exports(TABLE), reverse_lookup=slow_reverse,
                    forward_lookup=dns.forward_lookup, innetgr=dns.innetgr, clock=lambda: NOW)
    try:
        pending = asyncio.ensure_future(domain_of(w, HOST))
        while not started.is_set():
            await asyncio.sleep(0.01)
        w.reload(parse_exports("/srv/z host.example.com(rw)"))
        release.set()
        assert await pending == "host.example.com"
    finally:
        release.set()
        await w.close()


async def test_bad_requests_and_failures_are_lost_once_and_never_answered() -> None:
    def broken(uid: int) -> tuple[int, ...] | None:
        raise RuntimeError("group database on fire")

    w = EmbeddedWay(parse_exports(TABLE), getgrouplist=broken)
    got: list[tuple[str, object]] = []
    done = asyncio.Event()

    def record(kind: str) -> Callable[[object], None]:
        return lambda v: (got.append((kind, v)), done.set())  # type: ignore[func-returns-value]

    try:
        assert w.ready("nfsd.export") and w.name == "embedded"
        w.send("auth.unix.ip", b"nfsd not-an-address\n", record("answer"), record("lost"))
        w.send("no.such.cache", b"x\n", record("answer"), record("lost"))
        assert got == []  # never from inside send
        await asyncio.wait_for(done.wait(), 60)
        await asyncio.sleep(0)
        assert [k for k, _ in got] == ["lost", "lost"] and "bad request" in str(got[0][1])
        got.clear()
        done.clear()
        w.send("auth.unix.gid", b"1000\n", record("answer"), record("lost"))
        await asyncio.wait_for(done.wait(), 60)
        assert got == [("lost", "auth.unix.gid: RuntimeError: group database on fire")]
    finally:
        await w.close()


async def test_close_loses_what_is_still_being_computed() -> None:
    release = threading.Event()

    def stuck(uid: int) -> tuple[int, ...] | None:
        release.wait(60)
        return (uid,)

    w = EmbeddedWay(parse_exports(TABLE), getgrouplist=stuck)
    lost: list[str] = []
    w.send("auth.unix.gid", b"1\n", lambda line: pytest.fail("answered"), lost.append)
    await asyncio.sleep(0)
    await w.close()
    release.set()
    assert lost == ["auth.unix.gid: the embedded resolver was closed"]


def test_a_table_with_one_fsid_on_two_paths_is_refused_and_the_old_one_stays() -> None:
    from pynfsd.exports import ExportsError

    w = EmbeddedWay(parse_exports(TABLE), runner=_NoRunner())
    with pytest.raises(ExportsError):
        w.reload(parse_exports("/a *(fsid=3)\n/b *(fsid=3)"))
    assert "/srv/a" in w.table.by_path


class _NoRunner:
    async def run(self, fn: Callable[..., object], *args: object) -> object:
        raise AssertionError("nothing runs here")


async def test_a_path_below_a_crossmnt_export_gets_its_options_without_its_fsid() -> None:
    table = "/srv/top *(rw,crossmnt,fsid=5,replicas=/x@h)\n/srv/plain *(ro)\n/srv/top/own 10.0.0.0/8(ro)"
    w = way(Dns(), table)
    try:
        top = opts(table, "/srv/top", "*")
        sub = await export_of(w, "*", "/srv/top/disk/deeper")
        assert sub is not None and sub == await export_of(w, "*", "/srv/top/own")
        assert not sub.flags & L.NFSEXP_FSID and sub.fsid == 0 and not sub.fslocations
        assert sub.flags | L.NFSEXP_FSID == info_from_options("/srv/top", top).flags
        assert [f.flags for f in sub.secinfo] == [sub.flags]  # valid for the kernel
        assert await export_of(w, "10.1.1.1", "/srv/top/own") == info_from_options(
            "/srv/top/own", opts(table, "/srv/top/own", "10.0.0.0/8"))
        assert await export_of(w, "*", "/srv/plain/disk") is None  # no crossmnt
        assert await export_of(w, "*", "/srv") is None
    finally:
        await w.close()


# ------------------------------------------------------------ the two readings of a domain agree
_SPECS = ["*", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.3", "h.ex.com", "*.ex.com", "@ng", "@other",
          "::1", "2001:db8::/32"]
_TABLES = st.dictionaries(
    st.sampled_from(["/p0", "/p1", "/p2"]),
    st.lists(st.sampled_from(_SPECS), min_size=1, max_size=5, unique=True), min_size=1)
_CLIENTS = st.builds(
    ClientId, st.sampled_from(["10.1.2.3", "10.2.0.1", "192.0.2.1", "::1", "2001:db8::7"]),
    st.lists(st.sampled_from(["h.ex.com", "x.ex.com", "y.org"]), unique=True).map(tuple),
    st.frozensets(st.sampled_from(["@ng", "@other"])))


@settings(max_examples=300)
@given(_TABLES, _CLIENTS)
def test_a_domain_read_as_its_list_or_as_the_address_gives_the_best_match(
    lines: dict[str, list[str]], client: ClientId
) -> None:
    """A domain that is one address (a lone host spec covers the client) is read as the
    address; any other is read as its list, without lookups."""
    text = "\n".join(f"{path} " + " ".join(f"{s}(anonuid={i * 10 + j})" for j, s in enumerate(specs))
                     for i, (path, specs) in enumerate(lines.items()))
    table = Table(parse_exports(text))
    domain = table.domain(client)
    for entry in table.entries:
        best = best_match(entry.clients, client.addr, client.names, client.netgroups)
        want = None if best is None else info_from_options(entry.path, best)
        by_address = table.export(L.ExportKey(client.addr, entry.path), lambda a: client)
        assert by_address == want
        if domain is None:
            assert want is None
        else:
            who = (lambda a: client) if domain == client.addr else _no_lookup
            assert table.export(L.ExportKey(domain, entry.path), who) == want


def _no_lookup(addr: str) -> ClientId:
    raise AssertionError("a list domain needs no lookup")


async def test_failures_are_logged_at_a_bounded_rate(caplog: pytest.LogCaptureFixture) -> None:
    def broken(uid: int) -> tuple[int, ...] | None:
        raise OSError(5, "directory server unreachable")

    w = EmbeddedWay(parse_exports(TABLE), getgrouplist=broken, clock=lambda: NOW)
    try:
        with caplog.at_level("WARNING", logger="pynfsd.exports.embedded"):
            for uid in range(20):
                with pytest.raises(AssertionError, match="unreachable"):
                    await ask(w, "auth.unix.gid", b"%d\n" % uid)
        assert len(caplog.records) == 1 and "directory server unreachable" in caplog.text
    finally:
        await w.close()
