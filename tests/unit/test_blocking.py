"""The one way to run blocking work off the event loop: `Runner` / `BlockingPool`."""

from __future__ import annotations

import threading

import pytest

from pynfsd.blocking import BlockingPool, Runner, default_runner
from pynfsd.exports import parse_exports
from pynfsd.exports.resolver import StaticExportResolver


def _thread_name() -> str:
    return threading.current_thread().name


async def test_the_default_runner_is_one_shared_pool_off_the_loop() -> None:
    runner: Runner = default_runner()
    assert runner is default_runner()
    name = await runner.run(_thread_name)
    assert name.startswith("pynfsd-blocking-") and name != _thread_name()


async def test_a_call_s_exception_is_raised_in_the_caller() -> None:
    def boom(what: str) -> None:
        raise LookupError(what)

    with pytest.raises(LookupError, match="nobody"):
        await default_runner().run(boom, "nobody")


async def test_the_resolver_looks_names_up_on_the_runner_it_is_given() -> None:
    pool = BlockingPool(1, name="test-resolver", switch_creds=False)
    seen: list[str] = []

    def dns(addr: str) -> list[str]:
        seen.append(_thread_name())
        return ["ws.ex.com"] if addr == "192.0.2.10" else []

    try:
        resolver = StaticExportResolver(parse_exports("/a *.ex.com"), dns, runner=pool)
        got = await resolver.exports_for("192.0.2.10")
    finally:
        pool.shutdown()
    assert [e.path for e in got] == ["/a"] and seen == ["test-resolver-0"]
