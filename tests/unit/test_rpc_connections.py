"""The connection table: cap, idle rule, partial-record budget (sans-IO, manual time)."""

from __future__ import annotations

import logging

import pytest

from pynfsd.rpc.connections import ConnectionTable, RateLimitedLog, sweep_interval

PEER = ("192.0.2.1", 800)


def table(cap: int = 10, idle: float = 100, budget: int = 1000) -> ConnectionTable[str]:
    return ConnectionTable(cap, idle, budget)


def test_cap_refuses_past_the_limit_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    t = table(cap=2)
    assert t.admit("a", PEER, 0) and t.admit("b", PEER, 0)
    assert not t.admit("c", PEER, 1) and not t.admit("d", PEER, 2)
    assert t.refused == 2 and len(t) == 2 and list(t) == ["a", "b"]
    t.remove("a")
    assert t.admit("e", PEER, 3)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_rate_limited_log_counts_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    rl = RateLimitedLog(60)
    for now in (0, 1, 2, 59):
        rl.warning(now, "refused %s", "x")
    rl.warning(60, "refused %s", "y")
    assert [r.getMessage() for r in caplog.records] == [
        "refused x", "refused y (3 more since the last message)"]


def test_idle_after_timeout_only_without_calls() -> None:
    t = table(idle=100)
    for c in "abc":
        t.admit(c, PEER, 0)
    t.calls("b", 1, 50)  # a call in progress
    t.received("c", 0, False, 1, 60)  # a record completed at 60
    assert t.idle(99) == []
    assert t.idle(100) == ["a"]
    assert t.idle(500) == ["c"] and t.idle_closed == 2
    t.calls("b", 0, 510)  # the call finished: activity
    assert t.idle(609) == [] and t.idle(610) == ["b"]


def test_partial_bytes_are_not_activity() -> None:
    t = table(idle=10)
    t.admit("slow", PEER, 0)
    for now in range(1, 10):
        t.received("slow", now, True, 0, now)
        t.calls("slow", 0, now)  # no change in calls: not activity either
    assert t.idle(10) == ["slow"] and t.partial_held == 0


def test_idle_timeout_zero_never_closes() -> None:
    t = table(idle=0)
    t.admit("a", PEER, 0)
    assert t.idle(1e9) == []


def test_budget_closes_the_oldest_record_first() -> None:
    t = table(budget=1000)
    for c in "abc":
        t.admit(c, PEER, 0)
    assert t.received("a", 400, True, 0, 1) == []
    assert t.received("b", 400, True, 0, 2) == []
    assert t.received("a", 0, True, 1, 3) == []  # a completed and began anew: now the youngest
    assert t.received("a", 300, True, 0, 4) == []
    assert t.received("c", 400, True, 0, 5) == ["b"]  # 1100 > 1000: b's record is oldest
    assert t.partial_held == 700 and t.evicted == 1 and len(t) == 2
    assert t.received("c", 2000, True, 0, 6) == ["a", "c"]  # itself, if need be
    assert t.partial_held == 0 and len(t) == 0


def test_remove_releases_held_bytes_and_unknown_is_ignored() -> None:
    t = table()
    t.admit("a", PEER, 0)
    t.received("a", 500, True, 0, 1)
    t.remove("a")
    t.remove("a")
    assert t.partial_held == 0 and t.received("a", 10, True, 0, 2) == []
    assert t.partial_held == 0


def test_invalid_settings_and_sweep_interval() -> None:
    with pytest.raises(ValueError):
        ConnectionTable(0, 1, 1)
    assert sweep_interval(360) == 30 and sweep_interval(1) == 0.25 and sweep_interval(0.01) == 0.05


def test_status_reports_the_bounds_and_what_they_did() -> None:
    from pynfsd.admin import format_connections

    t = table(cap=1, idle=100, budget=1000)
    assert t.admit("a", PEER, 0) and not t.admit("b", PEER, 0)
    st = t.status()
    assert st == {"open": 1, "max": 1, "idle_timeout": 100, "partial_bytes": 0,
                  "partial_budget": 1000, "admitted": 1, "refused": 1, "idle_closed": 0,
                  "evicted": 0}
    assert format_connections(st).startswith("1 of 1 open; 1 refused, 0 closed idle, 0 closed")
