"""Deferral: the parked-request bookkeeping (bounds, fairness, waking, deadlines) and its
asyncio skin on real futures with a manual clock (answer → woken, timeout → CacheDelay,
bounds → CacheDelay at once, other clients served meanwhile)."""

from __future__ import annotations

import asyncio

import pytest

from pynfsd.cache.core import NEGATIVE, Cache, UpdateResult
from pynfsd.cache.deferral import SWEEP_INTERVAL, CacheDelay, Deferral
from pynfsd.cache.waiters import Refusal, Waiters
from tests.clock import ManualClock

T0 = 1_700_000_000


# ------------------------------------------------------------ sans-IO bookkeeping
def test_park_and_wake_in_order() -> None:
    w: Waiters[str, str, str] = Waiters(10, 5)
    for name in ("r1", "r2"):
        assert w.park("k", "c1", name, 10.0).ticket is not None
    w.park("other", "c1", "r3", 10.0)
    assert w.wake("k") == ["r1", "r2"]
    assert len(w) == 1 and w.parked("c1") == 1 and w.wake("k") == []


def test_per_client_bound() -> None:
    w: Waiters[str, str, int] = Waiters(100, 3)
    for i in range(3):
        assert w.park(f"k{i}", "greedy", i, 10.0).ticket is not None
    refused = w.park("k9", "greedy", 9, 10.0)
    assert refused.ticket is None and refused.refused is Refusal.CLIENT
    assert w.park("k9", "polite", 9, 10.0).ticket is not None
    assert w.stats["refused_client"] == 1


def test_total_bound_refuses_when_shares_are_even() -> None:
    w: Waiters[str, str, int] = Waiters(4, 4)
    for i, client in enumerate(["a", "a", "b", "b"]):
        w.park(f"k{i}", client, i, 10.0)
    out = w.park("k", "c", 99, 10.0)
    assert out.ticket is not None and out.displaced is not None  # a and b hold 2 > 0 + 1
    w2: Waiters[str, str, int] = Waiters(2, 4)
    w2.park("k", "a", 1, 10.0)
    w2.park("k", "b", 2, 10.0)
    refused = w2.park("k", "c", 3, 10.0)
    assert refused.ticket is None and refused.refused is Refusal.TOTAL


def test_a_flood_from_one_client_cannot_keep_others_out() -> None:
    w: Waiters[str, str, str] = Waiters(10, 10)
    for i in range(10):
        w.park(f"k{i}", "flood", f"f{i}", 10.0)
    displaced = []
    for client in ("c1", "c2", "c3", "c4"):
        out = w.park("k", client, client, 10.0)
        assert out.ticket is not None
        displaced.append(out.displaced)
    assert displaced == ["f0", "f1", "f2", "f3"]  # the flooder's oldest first
    assert w.parked("flood") == 6 and len(w) == 10


def test_fair_share_converges() -> None:
    """Two clients competing for 10 slots end with 5 each."""
    w: Waiters[str, str, int] = Waiters(10, 10)
    for i in range(10):
        w.park("k", "a", i, 10.0)
    for i in range(20):
        w.park("k", "b", i, 10.0)
    assert (w.parked("a"), w.parked("b")) == (5, 5)


def test_expire_hands_back_due_waiters_only() -> None:
    w: Waiters[str, str, str] = Waiters()
    w.park("k", "c", "early", 5.0)
    w.park("k", "c", "late", 9.0)
    assert w.next_deadline() == 5.0
    assert w.expire(4.9) == []
    assert w.expire(5.0) == ["early"]
    assert w.wake("k") == ["late"] and w.next_deadline() is None


def test_cancel_and_heap_stays_bounded() -> None:
    w: Waiters[str, str, int] = Waiters(1000, 1000)
    for i in range(5000):
        out = w.park("k", "c", i, float(i))
        assert out.ticket is not None
        assert w.cancel(out.ticket) and not w.cancel(out.ticket)
    assert len(w) == 0 and w.keys() == 0 and len(w._heap) <= 16
    assert w.stats["cancelled"] == 5000


def test_bad_bounds() -> None:
    with pytest.raises(ValueError):
        Waiters(0, 1)


# ------------------------------------------------------------ the asyncio skin
class Daemon:
    """Records upcalls as rpc.mountd would read them; `listening` False: no reader."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.listening = True

    def __call__(self, key: str) -> bool:
        self.asked.append(key)
        return self.listening


def deferral(clock: ManualClock, daemon: Daemon, total: int = 300, per_client: int = 30,
             **kw: int) -> Deferral[str, str, str]:
    cache: Cache[str, str] = Cache("nfsd.export", clock=clock, **kw)  # type: ignore[arg-type]
    return Deferral(cache, Waiters(total, per_client), daemon, wait=5.0)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_parked_request_gets_the_answer() -> None:
    clock, daemon = ManualClock(float(T0)), Daemon()
    d = deferral(clock, daemon)
    waiting = [asyncio.ensure_future(d.get("/srv/a", c)) for c in ("c1", "c2", "c3")]
    await settle()
    assert daemon.asked == ["/srv/a"] and len(d.waiters) == 3
    assert d.update("/srv/a", "export-a", T0 + 60) is UpdateResult.STORED
    entries = await asyncio.gather(*waiting)
    assert {e.value for e in entries} == {"export-a"} and len(d.waiters) == 0
    hit = await d.get("/srv/a", "c2")  # no wait, no upcall
    assert hit.value == "export-a" and daemon.asked == ["/srv/a"]


async def test_one_clients_requests_for_one_key_share_one_slot() -> None:
    clock, daemon = ManualClock(float(T0)), Daemon()
    d = deferral(clock, daemon)
    burst = [asyncio.ensure_future(d.get("/srv/a", "c1")) for _ in range(5)]
    other = asyncio.ensure_future(d.get("/srv/a", "c2"))
    await settle()
    assert len(d.waiters) == 2 and daemon.asked == ["/srv/a"]  # a burst waits once
    burst[0].cancel()  # its connection went away: the others keep the slot
    await settle()
    assert len(d.waiters) == 2 and not any(t.done() for t in burst[1:])
    d.update("/srv/a", "export-a", T0 + 60)
    for task in [*burst[1:], other]:
        assert (await task).value == "export-a"
    assert len(d.waiters) == 0
    gone = [asyncio.ensure_future(d.get("/srv/b", "c1")) for _ in range(2)]
    await settle()
    assert len(d.waiters) == 1
    for task in gone:  # the last sharer to leave gives the slot back
        task.cancel()
    await settle()
    assert len(d.waiters) == 0


async def test_a_negative_answer_wakes_with_a_negative_entry() -> None:
    clock, daemon = ManualClock(float(T0)), Daemon()
    d = deferral(clock, daemon)
    task = asyncio.ensure_future(d.get("/nonexistent", "c1"))
    await settle()
    d.update("/nonexistent", NEGATIVE, T0 + 60)
    assert (await task).negative


async def test_timeout_gives_cache_delay_and_others_are_served() -> None:
    clock, daemon = ManualClock(float(T0)), Daemon()
    d = deferral(clock, daemon, accept_unsolicited=True)
    d.update("/srv/b", "export-b", T0 + 600)
    slow = asyncio.ensure_future(d.get("/srv/slow", "c1"))
    await settle()
    assert (await d.get("/srv/b", "c2")).value == "export-b"  # served while c1 waits
    clock.advance(4.9)
    assert d.tick() == 0 and not slow.done()
    clock.advance(0.1)
    assert d.tick() == 1
    with pytest.raises(CacheDelay):
        await slow
    assert len(d.waiters) == 0


async def test_per_client_bound_refuses_at_once_and_others_still_park() -> None:
    clock, daemon = ManualClock(float(T0)), Daemon()
    d = deferral(clock, daemon, total=10, per_client=2)
    held = [asyncio.ensure_future(d.get(f"/k{i}", "greedy")) for i in range(2)]
    await settle()
    with pytest.raises(CacheDelay):
        await d.get("/k9", "greedy")
    polite = asyncio.ensure_future(d.get("/k0", "polite"))
    await settle()
    d.update("/k0", "v0", T0 + 60)
    assert (await polite).value == "v0" and (await held[0]).value == "v0"
    d.update("/k1", "v1", T0 + 60)
    assert (await held[1]).value == "v1"


async def test_displaced_waiter_gets_cache_delay() -> None:
    clock, daemon = ManualClock(float(T0)), Daemon()
    d = deferral(clock, daemon, total=2, per_client=2)
    first = [asyncio.ensure_future(d.get(f"/k{i}", "flood")) for i in range(2)]
    await settle()
    newcomer = asyncio.ensure_future(d.get("/k5", "newcomer"))
    await settle()
    with pytest.raises(CacheDelay):
        await first[0]
    d.update("/k5", "v5", T0 + 60)
    assert (await newcomer).value == "v5"
    d.update("/k1", "v1", T0 + 60)
    assert (await first[1]).value == "v1"


async def test_no_daemon_listening_answers_negative_at_once() -> None:
    clock, daemon = ManualClock(float(T0)), Daemon()
    daemon.listening = False
    d = deferral(clock, daemon)
    entry = await d.get("/srv/a", "c1")
    assert entry.negative and len(d.waiters) == 0


async def test_evicted_pending_key_fails_its_waiters() -> None:
    clock, daemon = ManualClock(float(T0)), Daemon()
    d = deferral(clock, daemon, max_entries=1)
    first = asyncio.ensure_future(d.get("/a", "c1"))
    await settle()
    second = asyncio.ensure_future(d.get("/b", "c2"))  # evicts /a, still pending
    await settle()
    with pytest.raises(CacheDelay):
        await first
    assert d.update("/a", "late", T0 + 60) is UpdateResult.UNSOLICITED
    d.update("/b", "vb", T0 + 60)
    assert (await second).value == "vb"


async def test_cancelled_request_leaves_no_waiter() -> None:
    clock, daemon = ManualClock(float(T0)), Daemon()
    d = deferral(clock, daemon)
    task = asyncio.ensure_future(d.get("/a", "c1"))
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(d.waiters) == 0 and d.waiters.parked("c1") == 0


async def test_refresh_ahead_sends_an_upcall_and_serves_the_entry() -> None:
    clock, daemon = ManualClock(float(T0)), Daemon()
    d = deferral(clock, daemon)
    task = asyncio.ensure_future(d.get("/a", "c1"))
    await settle()
    d.update("/a", "v1", T0 + 100)
    await task
    clock.advance(60)
    assert (await d.get("/a", "c1")).value == "v1"
    assert daemon.asked == ["/a", "/a"]


async def test_run_cleaner_ticks_until_cancelled() -> None:
    clock, daemon = ManualClock(float(T0)), Daemon()
    d = deferral(clock, daemon)
    slow = asyncio.ensure_future(d.get("/a", "c1"))
    await settle()
    clock.advance(10)
    cleaner = asyncio.ensure_future(d.run_cleaner(interval=0))
    with pytest.raises(CacheDelay):
        await slow
    cleaner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cleaner


async def test_tick_cleans_the_cache_every_sweep_interval() -> None:
    clock, daemon = ManualClock(float(T0)), Daemon()
    d = deferral(clock, daemon, accept_unsolicited=True)
    d.tick()  # the first tick cleans
    d.update("/a", "v", T0 + 5)
    clock.advance(10)
    d.tick()
    assert len(d.cache) == 1  # not yet: the last cleaning was under SWEEP_INTERVAL ago
    clock.advance(SWEEP_INTERVAL)
    d.tick()
    assert len(d.cache) == 0 and d.cache.stats["expired"] == 1
