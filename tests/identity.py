"""Running a backend call as another user, the way a server worker does.

`in_thread_as(ident, fn, *args)` runs ``fn(*args)`` in a scratch thread whose filesystem
calls act as `ident` (`pynfsd.fs.creds.assume`: per-thread fsuid, fsgid and groups), so the
test's own thread never changes identity; the thread is back to root before it ends.  It
returns what `fn` returns and raises what it raises.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pynfsd.fs import creds
from pynfsd.fs.creds import Identity

T = TypeVar("T")


def in_thread_as(ident: Identity, fn: Callable[..., T], *args: Any) -> T:
    out: list[T] = []
    err: list[BaseException] = []

    def run() -> None:
        creds.assume(ident)
        try:
            out.append(fn(*args))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            err.append(e)
        finally:
            creds.assume(creds.ROOT)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]
