"""The duplicate request cache: the sans-IO `ReplyCache`, its key, its hook in `RpcServer`
(AUTH_SYS and RPCSEC_GSS) and which COMPOUNDs it keeps.  A manual clock drives every age."""

from __future__ import annotations

import asyncio
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from nfs4_fixtures import ManualClock, World, export_root, make_world
from test_rpcsec_gss import PROG, SVC_INTEGRITY, SVC_NONE, SVC_PRIVACY, Dropped, Setup, Wire, make

from pynfsd import admin
from pynfsd.cli import build_parser
from pynfsd.client.nfs4 import decode_compound, encode_compound, op
from pynfsd.gen import nfs4 as N
from pynfsd.gen import rpc as R
from pynfsd.rpc.auth import AuthRegistry
from pynfsd.rpc.client import AuthSysCred, decode_reply, encode_call
from pynfsd.rpc.drc import (
    DEFAULT_MAX_AGE,
    DEFAULT_MAX_BYTES,
    ENTRY_OVERHEAD,
    ReplyCache,
    Verdict,
    drc_key,
)
from pynfsd.rpc.server import ConnInfo, RpcCall, RpcServer

ARGS = memoryview(bytes(range(256)) * 2)


def key(xid: int = 1, *, addr: str = "10.0.0.1", prog: int = 100003, vers: int = 4,
        proc: int = 1, args: memoryview = ARGS, identity: bytes = b"uid0") -> bytes:
    return drc_key(addr, xid, prog, vers, proc, args, identity)


def stored(cache: ReplyCache, k: bytes, reply: bytes) -> None:
    assert cache.begin(k) is Verdict.NEW
    cache.finish(k, [reply])


# ------------------------------------------------------------------ the key
def test_key_covers_what_a_retransmission_repeats() -> None:
    base = key()
    assert key() == base
    changed = [key(addr="10.0.0.2"), key(xid=2), key(prog=100005), key(vers=3), key(proc=2),
               key(identity=b"uid1"), key(args=ARGS[:-1]), key(args=memoryview(b"\1" + bytes(ARGS[1:])))]
    assert base not in changed and len(set(changed)) == len(changed)


def test_key_checksums_only_the_first_256_bytes_as_knfsd() -> None:
    tail_differs = memoryview(bytes(ARGS[:300]) + b"\xff" * (len(ARGS) - 300))
    assert key(args=tail_differs) == key()


# ------------------------------------------------------------------ ReplyCache
def test_new_then_in_progress_then_hit() -> None:
    cache = ReplyCache(clock=ManualClock())
    k = key()
    assert cache.begin(k) is Verdict.NEW
    assert cache.begin(k) is Verdict.IN_PROGRESS
    cache.finish(k, [b"abc", bytearray(b"de"), memoryview(b"f")])
    assert cache.begin(k) == b"abcdef"
    assert cache.status()["hits"] == 1 and cache.status()["in_progress_drops"] == 1


def test_finish_without_results_forgets_the_call() -> None:
    cache = ReplyCache(clock=ManualClock())
    k = key()
    assert cache.begin(k) is Verdict.NEW
    cache.finish(k, None)
    assert cache.begin(k) is Verdict.NEW
    assert len(cache) == 0 and cache.bytes == 0


def test_large_replies_are_never_cached() -> None:
    cache = ReplyCache(max_reply=100, clock=ManualClock())
    stored(cache, key(1), b"x" * 100)
    stored(cache, key(2), b"x" * 101)
    assert isinstance(cache.begin(key(1)), bytes)
    assert cache.begin(key(2)) is Verdict.NEW
    assert cache.stats["too_large"] == 1


def test_entries_expire_after_max_age() -> None:
    clock = ManualClock()
    cache = ReplyCache(clock=clock)
    stored(cache, key(1), b"old")
    clock.advance(DEFAULT_MAX_AGE - 1)
    stored(cache, key(2), b"new")
    assert cache.begin(key(1)) == b"old"
    clock.advance(1)
    assert cache.begin(key(1)) is Verdict.NEW  # 120 s old: gone, as in knfsd
    assert cache.begin(key(2)) == b"new"
    assert cache.stats["evicted_age"] == 1


def test_byte_cap_evicts_oldest_first_and_is_never_exceeded() -> None:
    entry = 100 + ENTRY_OVERHEAD
    cache = ReplyCache(max_bytes=10 * entry, clock=ManualClock())
    for xid in range(11):  # one past the cap
        stored(cache, key(xid), b"r" * 100)
        assert cache.bytes <= cache.max_bytes
    assert len(cache) == 10 and cache.bytes == 10 * entry
    assert cache.stats["evicted_size"] == 1
    assert cache.begin(key(0)) is Verdict.NEW
    assert cache.begin(key(10)) == b"r" * 100


def test_byte_count_covers_the_real_memory() -> None:
    """ENTRY_OVERHEAD is at least what an entry costs (key, bookkeeping, bytes object)."""
    cache = ReplyCache(max_bytes=1 << 40, clock=ManualClock())
    args = [memoryview(os.urandom(300)) for _ in range(5000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for xid, a in enumerate(args):
            k = drc_key("10.0.0.1", xid, 100003, 4, 1, a, b"uid0")
            assert cache.begin(k) is Verdict.NEW
            cache.finish(k, [b"head", os.urandom(60)])
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert used <= cache.bytes
    assert cache.bytes <= 2 * used  # and not wildly more


# ------------------------------------------------------------------ RpcServer with AUTH_SYS
SYS0 = AuthSysCred(0, 0).opaque_auth()
SYS1 = AuthSysCred(1000, 1000).opaque_auth()
PROGRAM = 0x20000099
KEEP, PLAIN, SLOW, FAIL = 1, 2, 3, 4


class Counting:
    def __init__(self) -> None:
        self.runs = 0
        self.gate = asyncio.Event()

    async def keep(self, call: RpcCall) -> bytes:
        self.runs += 1
        call.cacheable = True
        return b"run%d" % self.runs

    async def plain(self, call: RpcCall) -> bytes:
        self.runs += 1
        return b"run%d" % self.runs

    async def slow(self, call: RpcCall) -> bytes:
        await self.gate.wait()
        return await self.keep(call)

    async def fail(self, call: RpcCall) -> bytes:
        self.runs += 1
        call.cacheable = True
        raise RuntimeError("boom")


def rpc_server(clock: ManualClock | None = None) -> tuple[RpcServer, Counting]:
    counting = Counting()
    server = RpcServer(AuthRegistry.default(), ReplyCache(clock=clock or ManualClock()))
    server.register(PROGRAM, 1, {KEEP: counting.keep, PLAIN: counting.plain,
                                 SLOW: counting.slow, FAIL: counting.fail})
    return server, counting


async def send(server: RpcServer, proc: int, *, xid: int = 7, port: int = 700,
               cred: R.opaque_auth = SYS0, ip: str = "10.0.0.1") -> bytes | None:
    record = encode_call(xid, PROGRAM, 1, proc, b"\0\0\0\x05", cred)
    return await server.handle_record(record, ConnInfo((ip, port)))


async def test_retransmission_on_a_new_connection_gets_the_same_reply() -> None:
    server, counting = rpc_server()
    first = await send(server, KEEP, port=700)
    again = await send(server, KEEP, port=701)
    assert first is not None and again == first
    assert counting.runs == 1


async def test_uncacheable_calls_run_again() -> None:
    server, counting = rpc_server()
    assert await send(server, PLAIN) != await send(server, PLAIN)
    assert counting.runs == 2


async def test_another_caller_or_address_with_the_same_xid_is_not_replayed() -> None:
    server, counting = rpc_server()
    first = await send(server, KEEP)
    assert await send(server, KEEP, cred=SYS1) != first
    assert await send(server, KEEP, ip="10.0.0.2") != first
    assert counting.runs == 3


async def test_a_failed_call_is_not_cached() -> None:
    server, counting = rpc_server()
    for _ in range(2):
        reply = await send(server, FAIL)
        assert reply is not None
        with pytest.raises(Exception, match="SYSTEM_ERR"):
            decode_reply(reply)
    assert counting.runs == 2


async def test_duplicate_of_a_call_in_progress_is_dropped() -> None:
    server, counting = rpc_server()
    record = encode_call(9, PROGRAM, 1, SLOW, b"", SYS0)
    original = asyncio.ensure_future(server.handle_record(record, ConnInfo(("10.0.0.1", 700))))
    await asyncio.sleep(0)
    duplicate = await server.handle_record(record, ConnInfo(("10.0.0.1", 701)))
    counting.gate.set()
    assert await original is not None and duplicate is None
    assert counting.runs == 1
    assert server.drc is not None and server.drc.stats["in_progress_drops"] == 1


async def test_null_procedure_is_not_cached() -> None:
    server, _ = rpc_server()
    await send(server, 0)
    await send(server, 0)
    assert server.drc is not None and server.drc.stats["hits"] == 0 and len(server.drc) == 0


# ------------------------------------------------------------------ RPCSEC_GSS
def gss_counting() -> tuple[Setup, Counting]:
    s = make()
    counting = Counting()
    s.wire.server.drc = ReplyCache(clock=ManualClock())
    s.wire.server.register(PROG, 7, {KEEP: counting.keep})
    return s, counting


@pytest.mark.parametrize("service", [SVC_NONE, SVC_INTEGRITY, SVC_PRIVACY])
async def test_gss_retransmission_is_rewrapped_under_its_new_sequence_number(service: int) -> None:
    s, counting = gss_counting()

    a = await s.auth(service=service)
    seq1 = a.next_seq()
    first = await s.wire.call_record(50, a.data_call(50, seq1, PROG, 7, KEEP, b"args"))
    seq2 = a.next_seq()
    other = Wire(s.wire.server, conn=ConnInfo(("127.0.0.1", 701)))
    again = await other.call_record(50, a.data_call(50, seq2, PROG, 7, KEEP, b"args"))
    assert a.check_reply(seq1, first) == a.check_reply(seq2, again) == b"run1"
    assert counting.runs == 1


async def test_gss_reply_is_not_replayed_to_another_context() -> None:
    s, counting = gss_counting()

    a = await s.auth()
    b = await s.auth()  # the same principal, a second context
    for ctx in (a, b):
        seq = ctx.next_seq()
        reply = await s.wire.call_record(60, ctx.data_call(60, seq, PROG, 7, KEEP, b"x"))
        ctx.check_reply(seq, reply)
    assert counting.runs == 2


async def test_gss_exact_replay_is_still_dropped_by_the_sequence_window() -> None:
    s, counting = gss_counting()

    a = await s.auth()
    payload = a.data_call(70, a.next_seq(), PROG, 7, KEEP, b"x")
    await s.wire.call_record(70, payload)
    with pytest.raises(Dropped):
        await s.wire.call_record(70, payload)
    assert counting.runs == 1


# ------------------------------------------------------------------ which COMPOUNDs are kept
@pytest.fixture
def nfs(tmp_path: Path) -> Iterator[World]:
    world = make_world(tmp_path)
    yield world
    world.close()


def nfs_rpc(w: World) -> RpcServer:
    rpc = RpcServer(AuthRegistry.default(), ReplyCache(clock=w.clock))
    w.server.register(rpc)
    return rpc


async def compound_call(rpc: RpcServer, xid: int, ops: list[N.nfs_argop4], port: int = 800) -> bytes:
    record = encode_call(xid, 100003, 4, 1, encode_compound(ops), SYS0)
    reply = await rpc.handle_record(record, ConnInfo(("127.0.0.1", port)))
    assert reply is not None
    return reply


def status_of(reply: bytes) -> int:
    return decode_compound(decode_reply(reply)[1]).status


async def test_retransmitted_remove_and_mkdir_answer_as_the_first_time(nfs: World) -> None:
    rpc = nfs_rpc(nfs)
    root = await export_root(nfs.client())
    mkdir = [op.putfh(root), op.mkdir(b"d")]
    remove = [op.putfh(root), op.remove(b"d")]
    for xid, ops in ((1, mkdir), (2, remove)):
        first = await compound_call(rpc, xid, ops, port=800)
        assert status_of(first) == N.NFS4_OK
        assert await compound_call(rpc, xid, ops, port=801) == first
    assert status_of(await compound_call(rpc, 3, remove)) == N.NFS4ERR_NOENT  # removed once only
    assert rpc.drc is not None and rpc.drc.stats["hits"] == 2


@pytest.mark.parametrize(("ops", "kept"), [
    ([op.putrootfh(), op.getattr(N.FATTR4_TYPE)], False),
    ([op.putrootfh(), op.readdir()], False),
    ([op.putrootfh(), op.lookup(b"export"), op.remove(b"nothing")], True),  # errors are kept too
    ([op.putfh(b"\0" * 8), op.remove(b"x")], False),  # never reached the REMOVE
])
async def test_only_compounds_reaching_a_non_idempotent_op_are_kept(
    nfs: World, ops: list[N.nfs_argop4], kept: bool
) -> None:
    rpc = nfs_rpc(nfs)
    await compound_call(rpc, 5, ops)
    assert rpc.drc is not None and len(rpc.drc) == int(kept)


# ------------------------------------------------------------------ option and status
@pytest.mark.parametrize(("text", "size"), [("0", 0), ("4096", 4096), ("64k", 64 << 10),
                                            ("16M", 16 << 20), ("1G", 1 << 30)])
def test_drc_size_option(text: str, size: int) -> None:
    args = build_parser().parse_args(["serve", "--drc-size", text])
    assert args.drc_size == size


def test_drc_size_option_default_and_garbage(capsys: pytest.CaptureFixture[str]) -> None:
    assert build_parser().parse_args(["serve"]).drc_size == DEFAULT_MAX_BYTES
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--drc-size", "lots"])
    assert "not a size" in capsys.readouterr().err


def test_status_reports_the_cache(nfs: World) -> None:
    cache = ReplyCache(max_bytes=1 << 20, clock=nfs.clock)
    stored(cache, key(1), b"r" * 100)
    cache.begin(key(1))
    st = admin.AdminCore(nfs.server, cache).status()
    assert st["drc"] == {"entries": 1, "in_progress": 0, "bytes": 100 + ENTRY_OVERHEAD,
                         "max_bytes": 1 << 20, "max_age": DEFAULT_MAX_AGE, "hits": 1,
                         "in_progress_drops": 0, "stored": 1, "too_large": 0,
                         "evicted_age": 0, "evicted_size": 0}
    assert "reply cache: 1 replies, 0 of 1024 KiB; 1 replayed" in admin.format_status(st)
    assert "reply cache: off" in admin.format_status(admin.AdminCore(nfs.server).status())
