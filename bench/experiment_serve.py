"""``python -m bench.experiment_serve VARIANT serve ...``: pynfsd with one change patched in.

For measuring what a suggested change would buy before anyone makes it in ``pynfsd/``;
nothing here is used in production. Variants:

* ``inline-fs``: the server's worker pool (``BlockingPool.run`` and ``run_as``) calls the
  function directly on the event loop thread instead of handing it to a worker (no thread hop
  per backend call; the identity switch is made on the loop thread, and a slow disk call then
  stalls every connection, so this is an experiment, not a fix).
* ``count-hops``: every call handed to a worker thread is counted by its function's name; on
  SIGUSR1 the counts so far are written as JSON to the file named by ``PYNFSD_HOPS`` (what
  ``bench.server_cpu --hops`` reads around each sample: thread round trips per operation).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

VARIANTS = ("inline-fs", "count-hops")


def _inline_fs() -> None:
    from pynfsd.blocking import BlockingPool
    from pynfsd.fs import creds
    from pynfsd.fs.creds import Identity

    async def run_inline(self: BlockingPool, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    async def run_as_inline(
        self: BlockingPool, ident: Identity, fn: Callable[..., Any], *args: Any
    ) -> Any:
        creds.assume(ident)
        return fn(*args)

    BlockingPool.run = run_inline  # type: ignore[method-assign]
    BlockingPool.run_as = run_as_inline  # type: ignore[method-assign]


def _count_hops() -> None:
    from pynfsd.blocking import BlockingPool
    from pynfsd.fs.creds import Identity

    counts: collections.Counter[str] = collections.Counter()
    plain = BlockingPool.run_as

    async def run_as_counted(
        self: BlockingPool, ident: Identity, fn: Callable[..., Any], *args: Any
    ) -> Any:
        counts[getattr(fn, "__qualname__", repr(fn))] += 1
        return await plain(self, ident, fn, *args)

    def dump(signum: int, frame: object) -> None:
        with open(os.environ["PYNFSD_HOPS"], "w", encoding="utf-8") as out:
            json.dump(dict(counts), out)

    BlockingPool.run_as = run_as_counted  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, dump)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in VARIANTS:
        print(f"usage: python -m bench.experiment_serve {{{','.join(VARIANTS)}}} serve ...",
              file=sys.stderr)
        return 2
    (_inline_fs if argv[0] == "inline-fs" else _count_hops)()
    from pynfsd.cli import main as pynfsd_main
    return pynfsd_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
