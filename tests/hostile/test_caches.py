"""The export caches' bounds against a real `pynfsd serve`: parked requests per client and in
all (`--max-deferred-per-client`, `--max-deferred`), how long one waits (`--cache-wait`),
entries per cache (`--cache-max-entries`), and an upcall command that hangs or prints garbage.

`auth.unix.ip` is filled by a command the test writes: for addresses in 127.0.1.0/24 it
sleeps (an upcall that does not come back), for 127.0.2.0/24 it prints garbage, for the others
it answers the domain `*` at once; the other caches are filled by the embedded resolver, but
`auth.unix.gid` (with `--manage-gids`) by the same command where one test says so: it sleeps
for uids from 5000 on.  Calls of one client waiting for the same answer share one parked slot,
so the per-client bound is reached with calls of different users (each its own groups).
Requests waiting on the sleeper are parked; everybody else must be served meanwhile, and the
parked ones end in NFS4ERR_DELAY: at once past a bound, after `--cache-wait` otherwise.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pynfsd.client.nfs4 import op
from pynfsd.gen import nfs4 as N
from tests.e2e.helpers import pynfsd
from tests.serverproc import ServerProcess, assert_log_clean

WAIT = 30.0  # a bound on waiting for the server, never asserted as a duration
UPCALL = """\
import sys, time
if sys.argv[1] == "auth.unix.gid":  # users from uid 5000 on: a group database that hangs
    uid = int(sys.argv[2])
    if uid >= 5000:
        time.sleep(120)
    print(f"{uid} {int(time.time()) + 600} 0")
    sys.exit(0)
cache, cls, addr = sys.argv[1:4]
if addr.startswith("127.0.1."):
    time.sleep(120)
if addr.startswith("127.0.2."):
    print("this is not a reply line \\\\x")
    sys.exit(0)
print(f"{cls} {addr} {int(time.time()) + 600} *")
"""


@pytest.fixture
def export(tmp_path: Path) -> Path:
    root = tmp_path / "export"
    root.mkdir()
    return root


def start(tmp_path: Path, export: Path, *extra: str) -> ServerProcess:
    script = tmp_path / "upcall"
    script.write_text(f"#!{sys.executable}\n{UPCALL}")
    script.chmod(0o755)
    args = ["--upcall-command", str(script), "--upcall", "auth.unix.ip=command", *extra]
    return ServerProcess([f"{export} *(rw,no_root_squash,insecure)"], tmp_path / "state",
                         extra_args=args, log_level="INFO").start()


@pytest.fixture
def make(tmp_path: Path, export: Path) -> Iterator[Any]:
    servers: list[ServerProcess] = []

    def factory(*extra: str) -> ServerProcess:
        servers.append(start(tmp_path, export, *extra))
        return servers[-1]

    yield factory
    for srv in servers:
        srv.stop()
        assert_log_clean(srv.log_text())


def cache_status(srv: ServerProcess) -> dict[str, Any]:
    done = pynfsd("cache", "status", "--state-dir", str(srv.state_dir), "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


async def getattr_from(srv: ServerProcess, addr: str) -> N.COMPOUND4res:
    c = await srv.connect(local_addr=addr)
    try:
        return await asyncio.wait_for(c.compound([op.putrootfh(), op.getattr(N.FATTR4_TYPE)]), WAIT)
    finally:
        await c.close()


def status(res: N.COMPOUND4res) -> str:
    return N.nfsstat4_names.get(res.status, str(res.status))


async def parked(srv: ServerProcess, count: int) -> None:
    """Wait until `count` requests are parked (the server's own count)."""
    for _ in range(int(WAIT / 0.05)):
        if cache_status(srv)["deferred"]["parked"] >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never {count} parked: {cache_status(srv)}")


async def test_a_hanging_upcall_parks_its_clients_and_others_are_served(make: Any) -> None:
    srv = make("--cache-wait", "60", "--upcall-timeout", "60")
    slow = [asyncio.create_task(getattr_from(srv, f"127.0.1.{i}")) for i in range(1, 6)]
    await parked(srv, 5)
    for i in range(20):  # other clients, first seen now, are answered while five wait
        assert status(await getattr_from(srv, f"127.0.0.{10 + i}")) == "NFS4_OK"
    assert not any(t.done() for t in slow)
    for t in slow:
        t.cancel()
    await asyncio.gather(*slow, return_exceptions=True)
    await srv.assert_healthy()


async def test_a_parked_request_gets_delay_after_cache_wait(make: Any) -> None:
    srv = make("--cache-wait", "1", "--upcall-timeout", "60")
    res = await getattr_from(srv, "127.0.1.1")
    assert status(res) == "NFS4ERR_DELAY"
    assert res.resarray[0].resop == N.OP_PUTROOTFH  # the op that needed the exports
    assert status(await getattr_from(srv, "127.0.0.2")) == "NFS4_OK"


async def test_past_max_deferred_per_client_delay_at_once(make: Any) -> None:
    srv = make("--cache-wait", "60", "--upcall-timeout", "60", "--max-deferred-per-client", "2",
               "--manage-gids", "--upcall", "auth.unix.gid=command")
    assert status(await getattr_from(srv, "127.0.0.7")) == "NFS4_OK"  # the address is cached
    clients = [await srv.connect(uid=5001 + i, local_addr="127.0.0.7") for i in range(5)]
    ops = [op.putrootfh(), op.getattr(N.FATTR4_TYPE)]
    first = [asyncio.create_task(c.compound(ops)) for c in clients[:2]]
    await parked(srv, 2)
    for c in clients[2:]:  # more users of the same client, past its bound: answered at once
        assert status(await asyncio.wait_for(c.compound(ops), WAIT)) == "NFS4ERR_DELAY"
    burst = [asyncio.create_task(clients[0].compound(ops)) for _ in range(10)]
    await asyncio.sleep(0.5)  # the burst joins the first user's slot: nothing more is parked
    assert cache_status(srv)["deferred"]["parked"] == 2
    assert not any(t.done() for t in [*first, *burst])
    assert status(await getattr_from(srv, "127.0.0.3")) == "NFS4_OK"
    for t in [*first, *burst]:
        t.cancel()
    await asyncio.gather(*first, *burst, return_exceptions=True)
    for c in clients:
        await c.close()


async def test_past_max_deferred_in_all_delay_at_once(make: Any) -> None:
    srv = make("--cache-wait", "60", "--upcall-timeout", "60", "--max-deferred", "4")
    assert status(await getattr_from(srv, "127.0.0.4")) == "NFS4_OK"  # now cached
    first = [asyncio.create_task(getattr_from(srv, f"127.0.1.{i}")) for i in range(1, 5)]
    await parked(srv, 4)
    for i in range(5, 9):  # four more waiting clients: no room, each holds no more than they
        assert status(await getattr_from(srv, f"127.0.1.{i}")) == "NFS4ERR_DELAY"
    # a client whose entries are cached needs no parking: still served; one that is not
    # cached would need to wait and gets NFS4ERR_DELAY at once
    assert status(await getattr_from(srv, "127.0.0.4")) == "NFS4_OK"
    assert status(await getattr_from(srv, "127.0.0.5")) == "NFS4ERR_DELAY"
    assert cache_status(srv)["deferred"]["parked"] == 4
    for t in first:
        t.cancel()
    await asyncio.gather(*first, return_exceptions=True)


async def test_entries_stay_within_cache_max_entries(make: Any) -> None:
    srv = make("--cache-max-entries", "16")
    for i in range(64):
        assert status(await getattr_from(srv, f"127.0.3.{i + 1}")) == "NFS4_OK"
    caches = cache_status(srv)
    assert caches["auth.unix.ip"]["entries"] <= 16
    assert caches["auth.unix.ip"]["evictions"] >= 64 - 16
    await srv.assert_healthy()


async def test_garbage_from_the_command_is_delay_and_logged_once_a_while(make: Any) -> None:
    srv = make("--cache-wait", "30", "--upcall-timeout", "30")
    for i in range(1, 6):
        assert status(await getattr_from(srv, f"127.0.2.{i}")) == "NFS4ERR_DELAY"
    log = srv.wait_log("malformed")
    assert log.count("malformed") <= 2, log  # rate-limited
    assert status(await getattr_from(srv, "127.0.0.5")) == "NFS4_OK"


def test_cache_show_and_flush(make: Any) -> None:
    srv = make()
    srv.healthy()
    shown = pynfsd("cache", "show", "auth.unix.ip", "--state-dir", str(srv.state_dir))
    assert shown.returncode == 0, shown.stderr
    assert "#class IP domain" in shown.stdout
    assert "nfsd 127.0.0.1 *" in shown.stdout, shown.stdout
    flushed = pynfsd("cache", "flush", "--state-dir", str(srv.state_dir))
    assert flushed.returncode == 0, flushed.stderr
    after = pynfsd("cache", "show", "auth.unix.ip", "--state-dir", str(srv.state_dir)).stdout
    assert "127.0.0.1" not in after
    srv.healthy()
    bad = pynfsd("cache", "show", "nfsd.nope", "--state-dir", str(srv.state_dir))
    assert bad.returncode != 0
