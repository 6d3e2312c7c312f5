"""``python -m bench.experiment_serve VARIANT serve ...``: pynfsd with one change patched in.

For measuring what a suggested change would buy before anyone makes it in ``pynfsd/``;
nothing here is used in production. Variants:

* ``inline-fs``: ``NFSServer.run_blocking`` calls the backend function directly on the event
  loop thread instead of handing it to the worker pool (no thread hop per backend call; a
  slow disk call then stalls every connection, so this is an experiment, not a fix).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

VARIANTS = ("inline-fs",)


def _inline_fs() -> None:
    from pynfsd.nfs4.server import NFSServer

    async def run_inline(self: NFSServer, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    NFSServer.run_blocking = run_inline  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in VARIANTS:
        print(f"usage: python -m bench.experiment_serve {{{','.join(VARIANTS)}}} serve ...",
              file=sys.stderr)
        return 2
    _inline_fs()
    from pynfsd.cli import main as pynfsd_main
    return pynfsd_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
