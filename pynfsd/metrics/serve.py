"""Starting the metrics endpoint for `pynfsd serve --metrics HOST:PORT`.

`snapshotter` is the snapshot function over the server's parts (`Sources`); `start_metrics`
starts a `MetricsServer` with it on the running loop and logs where it listens.  The snapshot function is also
what `pynfsd status` reads, whether or not the endpoint runs.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from pynfsd.blocking import Runner
from pynfsd.metrics.http import HttpLimits, MetricsServer
from pynfsd.metrics.snapshot import Snapshot, Sources, take

log = logging.getLogger("pynfsd.metrics")


def snapshotter(sources: Sources) -> Callable[[], Snapshot]:
    return functools.partial(take, sources)


async def start_metrics(address: tuple[str, int], snapshot: Callable[[], Snapshot],
                        runner: Runner, limits: HttpLimits | None = None) -> MetricsServer:
    """Listen on `address` (OSError when it cannot be used) and serve the metrics there."""
    server = MetricsServer(snapshot, runner, limits)
    await server.start(*address)
    host, port = server.address
    shown = f"[{host}]" if ":" in host else host
    log.info("metrics on http://%s:%d/metrics", shown, port)
    return server
