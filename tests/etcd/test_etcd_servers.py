"""Two `pynfsd serve --recovery etcd://...` processes on loopback ports sharing one real
3-member etcd cluster, driven by the project's NFSv4.0 client (pynfsd.client):

- a node's restart: both nodes enter grace, the restarted node's client reclaims there,
  and the grace ends on both once it has (not when the grace time runs out);
- takeover: a client holds an open, a lock and written data on node a; a is killed -9; node b
  sees a's membership expire and begins a cluster grace; the client reclaims its open and
  lock on b with a filehandle node a gave it; another client's conflicting LOCK gets
  NFS4ERR_GRACE until the reclaim is over, then NFS4ERR_DENIED, then the lock once released;
- `pynfsd takeover NODE`: the same at once, without waiting for the dead node's lease;
- etcd down during service: existing state keeps working (READ, WRITE, RENEW, LOCKU, CLOSE),
  a new client's OPEN gets NFS4ERR_DELAY (never state without its record), at most
  --recovery-queue record changes wait, once the membership lease is surely gone a new LOCK
  gets NFS4ERR_DELAY too (another node may be taking over), and it all recovers by itself
  when etcd is back;
- etcd unreachable at start: exit code 3 and a one-line reason.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pynfsd.client.nfs4 import Nfs4Client, Nfs4Failure, op
from pynfsd.client.session import WRITE_LT, ClientSession
from pynfsd.gen import nfs4 as N
from tests.etcd_cluster import EtcdCluster
from tests.serverproc import HOST, ServerProcess, assert_log_clean

pytestmark = pytest.mark.slow
LEASE, GRACE, TTL = 4, 30, 2


def node(tmp: Path, export: Path, url: str, name: str, *extra: str) -> ServerProcess:
    return ServerProcess(
        [f"{export} *(rw,no_root_squash,insecure)"], tmp / f"state-{name}",
        extra_args=["--recovery", url, "--node-id", name, "--node-ttl", str(TTL),
                    "--lease", str(LEASE), "--grace", str(GRACE), "--delegations", "off",
                    "--recovery-timeout", "2", *extra])


def pair(tmp: Path, url: str, *extra: str) -> tuple[Path, ServerProcess, ServerProcess]:
    """The shared export directory and nodes a and b serving it."""
    export = tmp / "export"
    export.mkdir()
    return export, node(tmp, export, url, "a", *extra), node(tmp, export, url, "b", *extra)


async def move(s: ClientSession, srv: ServerProcess) -> None:
    """The client's server address now leads to `srv`: a new connection and client id."""
    await s.nfs.close()
    s.nfs = await Nfs4Client.connect(HOST, srv.port)
    s.open_owners.clear()
    await s.establish()


def status(srv: ServerProcess) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "pynfsd", "status", "--json", "--state-dir",
                          str(srv.state_dir)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


async def session(srv: ServerProcess, ownerid: bytes) -> ClientSession:
    s = ClientSession(await Nfs4Client.connect(HOST, srv.port), ownerid, b"verf0001")
    await s.establish()
    return s


async def status_of(step: Any) -> int:
    try:
        await step
    except Nfs4Failure as e:
        return int(e.status)
    return N.NFS4_OK


async def until(predicate: Any, what: str, limit: float = 30.0) -> None:
    for _ in range(int(limit / 0.25)):
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"not within {limit}s: {what}")


async def keep_renewing(sessions: list[ClientSession]) -> None:
    while True:
        await asyncio.sleep(1.0)
        for s in sessions:
            await s.renew()


async def test_takeover_reclaim_on_the_other_node(tmp_path: Path, url: str) -> None:
    export, a, b = pair(tmp_path, url)
    with a, b:
        one = await session(a, b"client-one")
        root = await one.lookup_path(str(export))
        f = await one.open(root, b"shared", create=True)
        await one.write(f, 0, b"written through node a")
        await one.lock(f, WRITE_LT, 0, 10)
        two = await session(b, b"client-two")
        f2 = await two.open(await two.lookup_path(str(export)), b"shared")
        st = status(b)["cluster"]
        assert {n["name"] for n in st["nodes"]} == {"a", "b"}
        # the record count is as of the node's last tick (every third of --node-ttl)
        await until(lambda: status(b)["cluster"]["records"] >= 1, "b counts a's record")

        a.kill9()
        await until(lambda: status(b)["grace"]["in_grace"], "node b enters grace")
        st = status(b)["cluster"]
        assert [n["name"] for n in st["nodes"]] == ["b"] and st["recovery_epoch"] > 0
        assert await status_of(two.lock(f2, WRITE_LT, 0, 10)) == N.NFS4ERR_GRACE

        old_id = one.clientid
        await move(one, b)  # the address moved to b
        assert await status_of(one.nfs.check([op.renew(old_id)])) == N.NFS4ERR_STALE_CLIENTID
        g = await one.reclaim_open(f.fh)  # node a's filehandle is valid on node b
        await one.lock(g, WRITE_LT, 0, 10, reclaim=True)
        assert await one.read(g, 0, 22) == b"written through node a"
        assert await status_of(two.lock(f2, WRITE_LT, 0, 10)) == N.NFS4ERR_GRACE
        await status_of(one.open(await one.lookup_path(str(export)), b"after", create=True))
        await until(lambda: not status(b)["grace"]["in_grace"], "the cluster grace is lifted")

        assert await status_of(two.lock(f2, WRITE_LT, 0, 10)) == N.NFS4ERR_DENIED
        await one.unlock(g, WRITE_LT, 0, 10)
        await two.lock(f2, WRITE_LT, 0, 10)
        await one.nfs.close()
        await two.nfs.close()
        assert_log_clean(b.log_text())
        assert "taking over their clients" in b.log_text()


async def test_takeover_by_command(tmp_path: Path, url: str) -> None:
    """`pynfsd takeover a` on b ends a's membership at once (its lease would last 30 s) and
    begins the grace in which a's client reclaims on b."""
    export, a, b = pair(tmp_path, url, "--node-ttl", "30")
    with a, b:
        one = await session(a, b"client-one")
        f = await one.open(await one.lookup_path(str(export)), b"file", create=True)
        await one.lock(f, WRITE_LT, 0, 1)
        a.kill9()
        out = subprocess.run([sys.executable, "-m", "pynfsd", "takeover", "a", "--state-dir",
                              str(b.state_dir)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert "takes over the clients of a" in out.stdout
        st = status(b)
        assert st["grace"]["in_grace"] and [n["name"] for n in st["cluster"]["nodes"]] == ["b"]
        assert (st["grace"]["recorded"], st["grace"]["pending"]) == (1, 1)  # a's client
        await move(one, b)
        g = await one.reclaim_open(f.fh)
        await one.lock(g, WRITE_LT, 0, 1, reclaim=True)
        await one.nfs.close()
        refused = subprocess.run([sys.executable, "-m", "pynfsd", "takeover", "b",
                                  "--state-dir", str(b.state_dir)], capture_output=True,
                                 text=True, timeout=30)
        assert refused.returncode == 1 and "name another node" in refused.stderr
        assert_log_clean(b.log_text())


async def test_a_restart_puts_every_node_in_grace(tmp_path: Path, url: str) -> None:
    export, a, b = pair(tmp_path, url, "--grace", "90")
    with a, b:
        one = await session(a, b"client-one")
        root = await one.lookup_path(str(export))
        f = await one.open(root, b"on-a", create=True)
        await one.lock(f, WRITE_LT, 0, 10)
        two = await session(b, b"client-two")
        g = await two.open(root, b"on-b", create=True)
        a.restart()
        await until(lambda: status(a)["grace"]["in_grace"] and status(b)["grace"]["in_grace"],
                    "both nodes are in grace")
        assert await status_of(two.open(root, b"new-on-b", create=True)) == N.NFS4ERR_GRACE
        await two.write(g, 0, b"existing state works in grace")  # b's own clients keep theirs
        await move(one, a)
        f = await one.reclaim_open(f.fh)
        await one.lock(f, WRITE_LT, 0, 10, reclaim=True)
        await status_of(one.open(root, b"after", create=True))  # its reclaims are over
        await until(lambda: not status(a)["grace"]["in_grace"]
                    and not status(b)["grace"]["in_grace"], "the grace ends on both nodes",
                    limit=30)  # long before its time (90 s) runs out
        await two.open(root, b"new-on-b", create=True)
        await one.nfs.close()
        await two.nfs.close()
        assert_log_clean(a.log_text())
        assert_log_clean(b.log_text())


async def test_etcd_down_during_service(tmp_path: Path, url: str, cluster: EtcdCluster) -> None:
    export = tmp_path / "export"
    export.mkdir()
    with node(tmp_path, export, url, "a", "--recovery-queue", "2") as a:
        one = await session(a, b"holder")
        root = await one.lookup_path(str(export))
        f = await one.open(root, b"data", create=True)
        await one.lock(f, WRITE_LT, 0, 1)
        for i in range(3):
            cluster.kill(i)
        await until(lambda: not status(a)["cluster"]["available"], "node a notices")
        # existing state keeps working
        await one.write(f, 0, b"still writing")
        assert await one.read(f, 0, 13) == b"still writing"
        await one.renew()
        await one.unlock(f, WRITE_LT, 0, 1)
        # after a whole lease without renewal, another node may take over: no new state
        await until(lambda: status(a)["cluster"]["fenced"], "node a fences itself")
        assert await status_of(one.lock(f, WRITE_LT, 0, 1)) == N.NFS4ERR_DELAY
        await one.renew()
        await one.close(f)
        # a new client's first state needs its record: NFS4ERR_DELAY, nothing created
        newcomers = [await session(a, b"new-%d" % i) for i in range(3)]
        for s in newcomers:
            assert await status_of(s.open(root, b"data")) == N.NFS4ERR_DELAY
        st = status(a)
        assert st["opens"] == 0 and st["cluster"]["pending_writes"] <= 2  # the queue's bound
        renewing = asyncio.create_task(keep_renewing([one, *newcomers]))  # clients do
        for i in range(3):
            cluster.restart(i, wait=False)
        await asyncio.to_thread(cluster.wait_healthy)
        for s in newcomers:  # it recovers by itself: the client's retry succeeds
            for _ in range(60):
                code = await status_of(s.open(root, b"data"))
                if code != N.NFS4ERR_DELAY:
                    break
                await asyncio.sleep(0.5)
            assert code == N.NFS4_OK
        renewing.cancel()
        st = status(a)["cluster"]
        assert st["available"] and st["pending_writes"] == 0
        out = cluster.etcdctl("get", "--prefix", "--keys-only", f"/{url.rsplit('/', 1)[1]}/clients/")
        assert len([k for k in out.stdout.split() if k]) == 4  # holder and the three newcomers
        for s in [one, *newcomers]:
            await s.nfs.close()
        assert_log_clean(a.log_text())


def test_etcd_unreachable_at_start(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "pynfsd", "serve", "--bind", HOST, "--port", "0", "--export",
         f"{export} *(rw)", "--state-dir", str(tmp_path / "state"), "--recovery",
         "etcd://127.0.0.1:9/pynfsd", "--recovery-timeout", "1"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 3, out.stderr
    assert "etcd does not answer" in out.stderr.splitlines()[-1]


