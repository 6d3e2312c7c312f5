"""Running a coroutine to completion in the tests.

An `async def test_*` needs nothing of this module's: the hook in `conftest.py` runs it on a
fresh event loop of its own.  Sync code that must run a coroutine itself (a sync fixture, a
sync helper such as `ServerProcess.healthy()`, a test that restarts a server process between
client steps) calls `run`, which does the same for one coroutine: a fresh loop, and a failure
after `timeout` seconds rather than a hang.  The hook uses it too, so both bound alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

HANG_GUARD = 60.0


def run(coro: Awaitable[T], timeout: float = HANG_GUARD,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None) -> T:
    """Run `coro` on a new event loop (from `loop_factory` if given), failing after `timeout` s."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(bounded())
