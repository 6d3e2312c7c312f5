"""Hostile clients against the state manager of a real server: a client that stops renewing
while it holds a lock (the lease bound: announced lease plus min(10 %, 2 s)), a client that
opens files and removes them (at most `MAX_KEPT` removed files are kept open), and clients
that name another client's lock-owner or use the stateids of their previous incarnation."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pynfsd.client.nfs4 import Nfs4Failure, op
from pynfsd.client.session import WRITE_LT, ClientSession, OpenFile
from pynfsd.fs.holds import MAX_KEPT
from pynfsd.gen import nfs4 as N
from tests.serverproc import ServerProcess, assert_log_clean

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the local backend needs root")

LEASE = 4  # announced
ENFORCED = 4.4  # the lease plus min(10 %, 2 s)
RSS_GROWTH_KIB = 32 * 1024  # what one test may add to the server's resident set at most


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    export = tmp_path / "export"
    export.mkdir()
    line = f"{export} *(rw,no_root_squash,insecure)"
    with ServerProcess([line], tmp_path / "state", extra_args=["--lease", str(LEASE)]) as srv:
        yield srv, str(export)
        assert_log_clean(srv.log_text())


async def _session(srv: ServerProcess, name: bytes, verifier: bytes = b"boot-one") -> ClientSession:
    s = ClientSession(await srv.connect(), name, verifier)
    await s.establish()
    return s


async def _status(coro: object) -> int:
    try:
        await coro  # type: ignore[misc]
    except Nfs4Failure as e:
        return e.status
    return N.NFS4_OK


def _open_fds(srv: ServerProcess) -> int:
    return len(os.listdir(f"/proc/{srv.pid}/fd"))


async def test_a_silent_clients_lock_yields_just_after_the_lease_plus_the_margin(
    served: tuple[ServerProcess, str],
) -> None:
    srv, export = served
    rss = srv.rss_kib()

    a = await _session(srv, b"crashed")
    d = await a.lookup_path(export)
    fa = await a.open(d, b"f", create=True)
    await a.lock(fa, WRITE_LT, 0, 100)
    silent_since = time.monotonic()  # A sends nothing more, as if it crashed
    b = await _session(srv, b"waiting")
    fb = await b.open(await b.lookup_path(export), b"f")
    denied = await _status(b.lock(fb, WRITE_LT, 0, 100))
    if time.monotonic() - silent_since < LEASE - 1:  # A's lease surely still ran
        assert denied == N.NFS4ERR_DENIED
    # one step past the bound: with the former 1.5 x (6 s) this LOCK was still DENIED
    deadline = silent_since + ENFORCED + 0.4
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))
    assert await _status(b.lock(fb, WRITE_LT, 0, 100)) == N.NFS4_OK
    assert await _status(a.renew()) == N.NFS4ERR_EXPIRED  # courtesy ended by B's conflict
    assert srv.rss_kib() - rss < RSS_GROWTH_KIB
    await srv.assert_healthy()


async def test_removed_open_files_stay_readable_and_at_most_max_kept_are_held(
    served: tuple[ServerProcess, str],
) -> None:
    srv, export = served
    rss, fds = srv.rss_kib(), _open_fds(srv)

    s = await _session(srv, b"remover")
    d = await s.lookup_path(export)
    files: list[OpenFile] = []
    for i in range(MAX_KEPT + 1):  # one past the bound
        f = await s.open(d, b"f%d" % i, create=True)
        await s.write(f, 0, b"data %d" % i)
        await s.nfs.check([op.putfh(d), op.remove(b"f%d" % i)])
        files.append(f)
    assert not os.listdir(export)
    for i, f in enumerate(files[:MAX_KEPT]):
        assert await s.read(f, 0, 100) == b"data %d" % i
    assert await _status(s.read(files[MAX_KEPT], 0, 100)) == N.NFS4ERR_STALE
    assert _open_fds(srv) <= fds + 2 * 256 + MAX_KEPT + 16  # the cache's and the kept
    for f in files[:MAX_KEPT]:
        await s.close(f)
    assert _open_fds(srv) <= fds + 2 * 256 + 16  # the kept ones are closed again
    assert srv.rss_kib() - rss < RSS_GROWTH_KIB
    await srv.assert_healthy()


async def test_foreign_lock_owner_and_stateids_of_a_previous_incarnation(
    served: tuple[ServerProcess, str],
) -> None:
    srv, export = served

    a = await _session(srv, b"host-a")
    b = await _session(srv, b"host-b")
    f = await a.open(await a.lookup_path(export), b"f", create=True)
    foreign = N.open_to_lock_owner4(
        f.owner.seqid, f.stateid, 0, N.lock_owner4(b.clientid, b"lo")
    )
    lock = op.lock(WRITE_LT, 0, 10, N.locker4(True, foreign))
    res = await a.nfs.compound([op.putfh(f.fh), lock])
    assert res.status == N.NFS4ERR_BAD_STATEID
    rebooted = await _session(srv, b"host-a", verifier=b"boot-two")
    assert rebooted.clientid != a.clientid
    assert await _status(a.read(f, 0, 1)) == N.NFS4ERR_EXPIRED
    assert await _status(a.renew()) == N.NFS4ERR_STALE_CLIENTID
    await srv.assert_healthy()
