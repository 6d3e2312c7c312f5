"""Worker threads for blocking filesystem calls, with less overhead per call than
`loop.run_in_executor`.

Every NFS operation that touches the disk makes one or more of these calls, so their fixed cost
matters: `run_in_executor` wraps each call in a `concurrent.futures.Future`, chains it to an
asyncio future and takes two locks.  Here a worker takes `(fn, args, future)` from a
`SimpleQueue`, runs it, and hands the outcome straight to the event loop with one
`call_soon_threadsafe`.  The pool is bounded; the event loop never blocks.

Each call carries the identity its filesystem calls act as (`pynfsd.fs.creds`): a worker
switches its own thread's fsuid, fsgid and groups only when the call's identity differs from
the one it already has, so a run of calls for one user costs no system call.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pynfsd.fs import creds
from pynfsd.fs.creds import Identity

T = TypeVar("T")
_STOP = object()


def _deliver(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.cancelled():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class BlockingPool:
    """A fixed set of daemon threads that run blocking calls for one event loop at a time."""

    def __init__(self, workers: int, name: str = "pynfsd-fs", switch_creds: bool = True) -> None:
        self._switch = switch_creds and creds.supported()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a worker acting as root."""
        return await self.run_as(creds.ROOT, fn, *args)

    async def run_as(self, ident: Identity, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a worker whose filesystem calls act as ``ident``."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put((ident, fn, args, loop, fut))
        return await fut

    def _work(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is _STOP:
                return
            ident, fn, args, loop, fut = item
            try:
                if self._switch:
                    creds.assume(ident)
                value = fn(*args)
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
                ok, value = False, e
            else:
                ok = True
            try:
                loop.call_soon_threadsafe(_deliver, fut, ok, value)
            except RuntimeError:
                pass  # the loop is closed: nobody is waiting any more

    def shutdown(self) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)
