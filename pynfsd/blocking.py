"""Running blocking calls off the event loop: one way for the whole server.

Theory of operation: whatever must block (a filesystem call, a GSS-API step that reads the
keytab, a name-service or reverse-DNS lookup) is awaited through a `Runner`,
``await runner.run(fn, *args)``.  `BlockingPool` is the one implementation: a fixed set of
daemon threads fed from a `SimpleQueue`.  A worker runs ``fn(*args)`` and hands the outcome
straight to the event loop with one `call_soon_threadsafe`, with less overhead per call than
`loop.run_in_executor` (which wraps each call in a `concurrent.futures.Future`, chains it to an
asyncio future and takes two locks).  The pool is bounded; the event loop never blocks.

Each call carries the identity its filesystem calls act as (`pynfsd.fs.creds`): a worker
switches its own thread's fsuid, fsgid and groups only when the call's identity differs from
the one it already has, so a run of calls for one user costs no system call.  A pool built with
``switch_creds=False`` leaves its threads as the process is (work that is not filesystem
access on behalf of a client).  `default_runner()` is such a pool, shared by the components
built without one (tests, the client library).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

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


class Runner(Protocol):
    """Something that runs a blocking call off the event loop."""

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread; its result, or its exception raised here."""
        ...


class BlockingPool:
    """A fixed set of daemon threads that run blocking calls for one event loop at a time."""

    def __init__(self, workers: int, name: str = "pynfsd-fs", switch_creds: bool = True) -> None:
        self._switch = switch_creds and creds.supported()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._name = name
        self._started = 0
        self.size = 0
        self.resize(workers)

    def resize(self, workers: int) -> None:
        """Run `workers` threads from now on: new ones start at once, a surplus thread ends
        after the call it is running (`rpc.nfsd N` through the control tree)."""
        if workers < 1:
            raise ValueError("a pool needs at least one worker")
        for _ in range(workers - self.size):
            threading.Thread(target=self._work, name=f"{self._name}-{self._started}",
                             daemon=True).start()
            self._started += 1
        for _ in range(self.size - workers):
            self._queue.put(_STOP)
        self.size = workers

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
        for _ in range(self.size):
            self._queue.put(_STOP)
        self.size = 0


DEFAULT_WORKERS = 8
_default: BlockingPool | None = None
_default_lock = threading.Lock()


def default_runner() -> BlockingPool:
    """The process-wide pool (started on first use) for components given no runner."""
    global _default
    with _default_lock:
        if _default is None:
            _default = BlockingPool(DEFAULT_WORKERS, name="pynfsd-blocking", switch_creds=False)
        return _default
