"""`EtcdRecovery` (pynfsd.recovery.etcd) against a real 3-member etcd cluster: records durable
after `sync` and outliving their node, cluster-wide grace over two nodes (a new epoch, a
takeover when a member's lease expires, reclaim on the other node, the lift, the clean-up of
records nobody reclaimed), etcd unreachable (StoreUnavailable at once, the queue kept and
written when etcd is back, the queue's bound), and kill -9 of members and a leader change
while records are written."""

from __future__ import annotations

import asyncio

import pytest

from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.state.store import StoreUnavailable, record_id
from pynfsd.recovery.cluster import ClusterGrace, Record
from pynfsd.recovery.etcd import EtcdRecovery
from pynfsd.recovery.etcdkv import EtcdUnavailable, EtcdUrl
from tests.clock import ManualClock
from tests.etcd_cluster import EtcdCluster

pytestmark = pytest.mark.slow


def node(url: str, name: str, clock: ManualClock, *, ttl: int = 2, grace: float = 60,
         timeout: float = 3.0, max_pending: int = 4096) -> EtcdRecovery:
    return EtcdRecovery(EtcdUrl.parse(url), name, ClusterGrace(clock, grace, 5.0),
                        timeout=timeout, ttl=ttl, wallclock=clock, max_pending=max_pending)


async def stored(url: str, ownerid: bytes) -> Record | None:
    probe = EtcdUrl.parse(url)
    recovery = EtcdRecovery(probe, "probe", ClusterGrace(ManualClock(), 1, 1))
    try:
        kv = await recovery.kv.get(probe.key("clients", record_id(ownerid)))
        return None if kv is None else Record.decode(kv.value)
    finally:
        await recovery.kv.close()


async def test_records_are_in_etcd_after_sync_and_outlive_their_node(url: str) -> None:
    clock = ManualClock()
    a = node(url, "a", clock)
    key = await a.start()
    assert len(key) == 32
    a.client_has_state(b"client-1", "root")
    a.client_has_state(b"client-2", "alice@EXAMPLE")
    await a.sync()
    rec = await stored(url, b"client-1")
    assert rec is not None and (rec.node, rec.principal) == ("a", "root")
    a.client_removed(b"client-2")
    await a.sync()
    assert await stored(url, b"client-2") is None
    await a.close()  # the node leaves; its clients' records stay
    assert await stored(url, b"client-1") is not None
    b = node(url, "b", clock)
    assert await b.start() == key  # one handle key for the cluster
    await b.close()


async def test_restart_begins_grace_and_every_node_enters_it(url: str) -> None:
    clock = ManualClock()
    a, b = node(url, "a", clock), node(url, "b", clock)
    await a.start()
    await b.start()
    assert not a.grace.in_grace() and not b.grace.in_grace()
    a.client_has_state(b"held-by-a", "root")
    await a.sync()
    await a.close()
    a2 = node(url, "a", clock)  # a restarts: it had a client
    await a2.start()
    assert a2.grace.in_grace() and a2.grace.need
    with pytest.raises(E.NFS4ERR_DELAY):  # b may still grant conflicting state: wait
        a2.may_reclaim(b"held-by-a")
    await b.tick()  # b learns it from etcd, and acknowledges the epoch
    assert b.grace.in_grace() and b.grace.db.current == a2.grace.db.current == 2
    await a2.tick()
    assert a2.may_reclaim(b"held-by-a")
    assert b.may_reclaim(b"held-by-a")  # a's client may reclaim on b too
    a2.grace.client_confirmed(b"held-by-a")
    a2.grace.reclaimed(b"held-by-a")
    a2.client_has_state(b"held-by-a", "root")
    a2.grace.non_reclaim(b"held-by-a")  # its reclaims are over
    await a2.tick()
    assert not a2.grace.in_grace()
    await b.tick()
    assert not b.grace.in_grace()
    assert (await stored(url, b"held-by-a")).epoch == 2  # type: ignore[union-attr]
    await a2.close()
    await b.close()


async def test_takeover_when_a_member_expires(url: str) -> None:
    clock = ManualClock()
    a, b = node(url, "a", clock, ttl=1), node(url, "b", clock)
    await a.start()
    await b.start()
    for ownerid in (b"comes-back", b"never-returns"):
        a.client_has_state(ownerid, "root")
    b.client_has_state(b"stays-on-b", "root")
    await a.sync()
    await b.sync()
    await b.tick()
    assert set(b.members) == {"a", "b"}
    await a.kv.close()  # a dies: no lease renewal, no clean leave
    for _ in range(80):  # a's lease (TTL 1 s, etcd grants at least 2) expires
        await asyncio.sleep(0.25)
        await b.tick()
        if b.grace.in_grace():
            break
    assert b.grace.in_grace() and b.grace.need and set(b.members) == {"b"}
    assert b.may_reclaim(b"comes-back") and not b.may_reclaim(b"stays-on-b")
    assert b.grace.status()["recorded"] == 2  # a's clients, not b's own
    b.grace.client_confirmed(b"comes-back")
    b.grace.reclaimed(b"comes-back")
    b.client_has_state(b"comes-back", "root")
    await b.sync()
    await b.tick()
    assert b.grace.in_grace()  # one of a's clients has not come back yet
    clock.advance(61)  # the grace time runs out
    await b.tick()
    await b.tick()
    assert not b.grace.in_grace()
    assert await stored(url, b"never-returns") is None  # §9.6.3.4.3: it may not reclaim later
    assert await stored(url, b"comes-back") is not None
    assert await stored(url, b"stays-on-b") is not None
    await b.close()


async def test_unreachable_at_start(tmp_path: object) -> None:
    clock = ManualClock()
    a = node("etcd://127.0.0.1:9/nowhere", "a", clock, timeout=1.0)
    with pytest.raises(EtcdUnavailable):
        await a.start()
    await a.kv.close()


async def test_etcd_down_refuses_then_recovers(url: str, cluster: EtcdCluster) -> None:
    clock = ManualClock()
    a = node(url, "a", clock, timeout=1.0, max_pending=3)
    await a.start()
    a.client_has_state(b"before", "root")
    await a.sync()
    for i in range(3):
        cluster.kill(i)
    a.client_has_state(b"during-1", "root")
    with pytest.raises(StoreUnavailable):
        await a.sync()  # within the timeout
    with pytest.raises(StoreUnavailable):
        await a.sync()  # at once now: etcd is known to be down
    a.client_removed(b"before")
    a.client_has_state(b"during-2", "root")
    with pytest.raises(E.NFS4ERR_DELAY):  # the queue's bound: 3 changes wait
        a.client_has_state(b"during-3", "root")
    assert a.status()["pending_writes"] == 3
    for i in range(3):
        cluster.restart(i, wait=False)
    cluster.wait_healthy()
    for _ in range(40):
        try:
            await a.tick()
            break
        except EtcdUnavailable:
            await asyncio.sleep(0.25)
    assert a.status()["pending_writes"] == 0
    assert await stored(url, b"during-1") is not None
    assert await stored(url, b"during-2") is not None
    assert await stored(url, b"before") is None
    await a.close()


async def test_member_kill9_and_leader_change_under_load(url: str, cluster: EtcdCluster) -> None:
    """Writers record clients continuously while a follower and then the leader are killed
    with SIGKILL; every record whose sync returned is in etcd afterwards, and a failed sync
    is StoreUnavailable, retried until it succeeds."""
    clock = ManualClock()
    a = node(url, "a", clock, timeout=3.0)
    await a.start()
    confirmed: list[bytes] = []
    failures = 0
    stop = asyncio.Event()

    async def writer(w: int) -> None:
        nonlocal failures
        n = 0
        while not stop.is_set():
            ownerid = b"w%d-%d" % (w, n)
            a.client_has_state(ownerid, "root")
            while True:
                try:
                    await a.sync()
                    break
                except StoreUnavailable:
                    failures += 1
                    a.available = True  # retry now, as the tick would
                    await asyncio.sleep(0.1)
            confirmed.append(ownerid)
            n += 1

    tasks = [asyncio.create_task(writer(w)) for w in range(4)]
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.5)
    leader = await loop.run_in_executor(None, cluster.leader)
    follower = next(i for i in range(3) if i != leader)
    await loop.run_in_executor(None, cluster.kill, follower)
    await asyncio.sleep(1.0)
    before = len(confirmed)
    await loop.run_in_executor(None, cluster.kill, leader)  # the leader: an election
    await asyncio.sleep(0.2)
    await loop.run_in_executor(None, cluster.restart, follower)  # quorum again
    new_leader = await loop.run_in_executor(None, cluster.leader)
    healed = len(confirmed)
    for _ in range(300):  # writes resume once two members have quorum again
        await asyncio.sleep(0.1)
        if len(confirmed) > healed + 20:
            break
    stop.set()
    await asyncio.gather(*tasks)
    print(f"kill -9 under load: {len(confirmed)} records confirmed ({before} before the "
          f"leader's kill, {healed} when quorum was back), {failures} sync(s) refused")
    assert new_leader != leader
    assert len(confirmed) > healed + 20 and before > 0  # writes went on after both kills
    for ownerid in confirmed:
        assert await stored(url, ownerid) is not None, ownerid
    await a.close()


async def test_a_running_node_learns_of_a_new_epoch_by_its_watch(url: str) -> None:
    """b's tick runs every 20 s (a third of its 60 s lease); the watch wakes it at once."""
    clock = ManualClock()
    b = node(url, "b", clock, ttl=60)
    await b.start()
    runner = asyncio.create_task(b.run())
    await asyncio.wait_for(b.watching.wait(), 20)
    a = node(url, "a", clock)
    await a.start()
    a.client_has_state(b"client", "root")
    await a.sync()
    await a.close()
    a2 = node(url, "a", clock)
    await a2.start()  # a restarts and asks for grace
    for _ in range(100):  # 10 s, half of b's tick interval
        if b.grace.in_grace() and b.acked == a2.grace.db.current:
            break
        await asyncio.sleep(0.1)
    assert b.grace.in_grace() and b.acked == 2
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    await a2.close()
    await b.close()


async def test_a_garbage_grace_record_refuses_new_state_until_mended(url: str) -> None:
    """Someone writes garbage over the grace record: the node's loop survives, names the key,
    refuses new clients' records (StoreUnavailable -> NFS4ERR_DELAY) and serves again once
    the key is deleted or restored."""
    clock = ManualClock()
    a = node(url, "a", clock, ttl=60)
    await a.start()
    good = await a.kv.get(a.url.key("grace"))
    runner = asyncio.create_task(a.run())
    await asyncio.wait_for(a.watching.wait(), 20)
    for garbage in (b"\xff\x00 not json", b'{"current": "x"}', b"[1, 2]"):
        await a.kv.call(a.kv.client.put, a.url.key("grace"), garbage)
        for _ in range(100):
            if not a.available:
                break
            await asyncio.sleep(0.05)
        assert not a.available and "is not a grace record" in a.last_error
        a.client_has_state(b"while-garbage", "root")
        with pytest.raises(StoreUnavailable, match="grace"):
            await a.sync()
        if good is None:  # no grace record yet: deleting the garbage mends it
            await a.kv.call(a.kv.client.delete, a.url.key("grace"))
        else:
            await a.kv.call(a.kv.client.put, a.url.key("grace"), good.value)
        for _ in range(100):
            if a.available:
                break
            await asyncio.sleep(0.05)
        assert a.available and not runner.done()
        await a.sync()
        assert await stored(url, b"while-garbage") is not None
        a.client_removed(b"while-garbage")
        await a.sync()
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    await a.close()
