"""The embedded client store: records on disk, atomic writes, garbage, durability order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from nfs4_fixtures import export_root, make_world, new_clientid, open_file

from pynfsd.nfs4.state.store import (
    TEMP_PREFIX,
    ClientRecord,
    FileClientStore,
    decode_record,
    encode_record,
    record_name,
)


def reopened(path: Path) -> FileClientStore:
    return FileClientStore(path, wallclock=lambda: 1234.5)


def rec_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_round_trip_across_a_restart(tmp_path: Path) -> None:
    store = reopened(tmp_path)
    assert store.recorded() == frozenset()
    store.client_has_state(b"host-a", "root")
    store.client_has_state(b"\xffbinary", "alice@EXAMPLE")
    store.flush()
    after = reopened(tmp_path)
    assert after.recorded() == {b"host-a", b"\xffbinary"}
    assert after.may_reclaim(b"host-a") and not after.may_reclaim(b"host-b")
    assert [r.principal for r in after.records()] == ["root", "alice@EXAMPLE"]
    assert after.records()[0].time == 1234.5


def test_hooks_do_no_io_until_flushed(tmp_path: Path) -> None:
    store = reopened(tmp_path)
    store.client_has_state(b"a", "root")
    assert rec_files(tmp_path) == []
    store.flush()
    assert rec_files(tmp_path) == [record_name(b"a")]


def test_removed_client_loses_its_record_and_reclaim(tmp_path: Path) -> None:
    first = reopened(tmp_path)
    first.client_has_state(b"a", "root")
    first.client_has_state(b"b", "root")
    first.flush()
    store = reopened(tmp_path)
    store.client_removed(b"a")
    assert not store.may_reclaim(b"a") and store.may_reclaim(b"b")
    store.flush()
    assert rec_files(tmp_path) == [record_name(b"b")]
    store.client_removed(b"never-recorded")  # nothing to remove, nothing queued
    assert store._pending == {}


def test_grace_done_forgets_clients_that_did_not_come_back(tmp_path: Path) -> None:
    first = reopened(tmp_path)
    for name in (b"back", b"gone"):
        first.client_has_state(name, "root")
    first.flush()
    store = reopened(tmp_path)
    store.client_has_state(b"back", "root")  # re-established in this boot
    store.grace_done()
    assert not store.may_reclaim(b"back")  # grace is over for everyone
    store.flush()
    assert reopened(tmp_path).recorded() == {b"back"}  # §9.6.3.4.2 second edge condition


def test_write_is_atomic_and_leaves_no_temp_file(tmp_path: Path) -> None:
    store = reopened(tmp_path)
    store.client_has_state(b"a", "root")
    store.flush()
    store.client_has_state(b"a", "other")  # rewritten by rename over the old record
    store.flush()
    assert rec_files(tmp_path) == [record_name(b"a")]
    assert decode_record((tmp_path / record_name(b"a")).read_bytes()).principal == "other"


def test_crash_mid_write_keeps_the_old_record(tmp_path: Path) -> None:
    store = reopened(tmp_path)
    store.client_has_state(b"a", "root")
    store.flush()
    partial = encode_record(ClientRecord(b"a", "new", 1.0))[:20]
    (tmp_path / (TEMP_PREFIX + record_name(b"a"))).write_bytes(partial)  # died before rename
    after = reopened(tmp_path)
    assert after.recorded() == {b"a"}
    assert after.records()[0].principal == "root"
    assert rec_files(tmp_path) == [record_name(b"a")]  # the leftover is cleaned up


@pytest.mark.parametrize(
    "name, content",
    [
        ("notes.txt", b"hello"),
        ("0" * 32 + ".rec", b"{not json"),
        ("1" * 32 + ".rec", b'{"version": 2}'),
        ("2" * 32 + ".rec", b'{"version": 1, "ownerid": "zz", "principal": "p", "time": 1}'),
        ("3" * 32 + ".rec", b'{"version": 1, "ownerid": "00", "principal": 5, "time": 1}'),
        ("4" * 32 + ".rec", b'{"version": 1, "ownerid": "00", "principal": "p", "time": true}'),
        ("5" * 32 + ".rec", b"[1, 2]"),
        ("6" * 32 + ".rec", b"\xff\xfe"),
        ("7" * 32 + ".rec", b" " * 20000),
        ("8" * 32 + ".rec", encode_record(ClientRecord(b"x", "p", 1.0))),  # name mismatch
    ],
)
def test_garbage_is_logged_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, content: bytes
) -> None:
    good = reopened(tmp_path)
    good.client_has_state(b"good", "root")
    good.flush()
    (tmp_path / name).write_bytes(content)
    with caplog.at_level(logging.WARNING, "pynfsd.nfs4.clientstore"):
        store = reopened(tmp_path)
    assert store.recorded() == {b"good"}
    assert name in caplog.text


def test_a_subdirectory_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / ("9" * 32 + ".rec")).mkdir()
    with caplog.at_level(logging.WARNING, "pynfsd.nfs4.clientstore"):
        assert reopened(tmp_path).recorded() == frozenset()
    assert "not a client record" in caplog.text


def gated() -> tuple[
    Callable[[Callable[[], None]], asyncio.Future[None]], list[str], asyncio.Event
]:
    """A run_blocking that runs in a thread once `gate` is set, logging each call."""
    calls: list[str] = []
    gate = asyncio.Event()

    async def run(fn: Callable[[], None]) -> None:
        calls.append("start")
        await gate.wait()
        await asyncio.to_thread(fn)
        calls.append("done")

    return run, calls, gate  # type: ignore[return-value]


async def test_sync_returns_only_once_the_record_is_on_disk(tmp_path: Path) -> None:
    store = reopened(tmp_path)
    run, calls, gate = gated()
    store.client_has_state(b"a", "root")
    first = asyncio.ensure_future(store.sync(run))
    while not calls:
        await asyncio.sleep(0)
    store.client_has_state(b"b", "root")  # queued while the first flush is in flight
    second = asyncio.ensure_future(store.sync(run))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not first.done() and not second.done() and rec_files(tmp_path) == []
    gate.set()
    await first
    assert (tmp_path / record_name(b"a")).exists()
    await second
    assert rec_files(tmp_path) == sorted([record_name(b"a"), record_name(b"b")])
    assert calls == ["start", "done", "start", "done"]  # one flush at a time, in order
    await store.sync(run)  # nothing queued: no flush at all
    assert len(calls) == 4


async def test_open_reply_comes_after_the_record_is_durable(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    records = w.state_dir / "clients"

    try:
        c = w.client()
        root = await export_root(c)
        cid = await new_clientid(c, b"host-a")
        assert list(records.iterdir()) == []  # SETCLIENTID_CONFIRM records nothing
        await open_file(c, root, cid, b"o", b"f")
        assert [p.name for p in records.iterdir()] == [record_name(b"host-a")]
    finally:
        w.close()
