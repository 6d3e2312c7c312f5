"""`pynfsd serve --recovery ...`: the options, their checks, and joining the cluster.

Theory of operation: without `--recovery` (or with `--recovery file`) the server keeps its
client records in files under `--state-dir` (`pynfsd.nfs4.state.store`).  With
`--recovery etcd://HOST:PORT[,HOST:PORT...]/PREFIX` it joins the cluster of nodes sharing
that PREFIX before it listens (`join`): the client records, membership and grace live in
etcd (`pynfsd.recovery.etcd`), and the handle key is the cluster's.  `join` raises
`EtcdUnavailable` (the CLI exits 3, as for a port in use) when etcd does not answer.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass

from pynfsd.nfs4.config import ServerConfig
from pynfsd.nfs4.state.leases import enforced_lease
from pynfsd.recovery.cluster import ClusterGrace
from pynfsd.recovery.etcd import DEFAULT_MAX_PENDING, DEFAULT_TIMEOUT, DEFAULT_TTL, EtcdRecovery
from pynfsd.recovery.etcdkv import EtcdUnavailable, EtcdUrl

__all__ = ["Cluster", "EtcdUnavailable", "add_arguments", "check", "join"]


def add_arguments(s: argparse.ArgumentParser, positive: Callable[[str], int]) -> None:
    s.add_argument("--recovery", default="file", metavar="URL",
                   help="where client records and grace live: 'file' (default: under "
                   "--state-dir) or etcd://HOST:PORT[,HOST:PORT...]/PREFIX, shared by the "
                   "nodes of a cluster (needs the etcd extra: aetcd)")
    s.add_argument("--node-id", default=socket.gethostname(), metavar="NAME",
                   help="this node's name in the cluster (default: the host name)")
    s.add_argument("--node-ttl", type=positive, default=DEFAULT_TTL, metavar="SECONDS",
                   help="membership lease: a node that stops renewing it for this long has "
                   f"left, and the others take over its clients (default {DEFAULT_TTL})")
    s.add_argument("--recovery-timeout", type=positive, default=int(DEFAULT_TIMEOUT),
                   metavar="SECONDS", help="longest wait for one etcd call; an OPEN whose "
                   f"record cannot be written by then gets NFS4ERR_DELAY (default "
                   f"{int(DEFAULT_TIMEOUT)})")
    s.add_argument("--recovery-queue", type=positive, default=DEFAULT_MAX_PENDING, metavar="N",
                   help="client record changes waiting for etcd at most; beyond, new "
                   f"clients' OPENs get NFS4ERR_DELAY (default {DEFAULT_MAX_PENDING})")


def check(args: argparse.Namespace) -> None:
    """ValueError (a configuration error) if --recovery cannot be used."""
    if args.recovery == "file":
        return
    EtcdUrl.parse(args.recovery)
    try:
        import aetcd  # noqa: F401
    except ImportError:
        raise ValueError("--recovery etcd:// needs the Python package aetcd "
                         "(pip install 'pynfsd[etcd]')") from None
    if not args.node_id or "/" in args.node_id:
        raise ValueError(f"--node-id {args.node_id!r}: a non-empty name without '/'")


@dataclass
class Cluster:
    """A joined cluster: the store and grace to give the server, the shared handle key."""

    recovery: EtcdRecovery
    grace: ClusterGrace
    key: bytes
    task: asyncio.Task[None] | None = None

    def run(self) -> None:
        self.task = asyncio.create_task(self.recovery.run())

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.recovery.close()


async def join(args: argparse.Namespace, config: ServerConfig) -> Cluster | None:
    """Join the etcd cluster of --recovery (None for the file store)."""
    if args.recovery == "file":
        return None
    url = EtcdUrl.parse(args.recovery)
    grace = ClusterGrace(config.clock, config.grace_time, enforced_lease(config.lease_time))
    recovery = EtcdRecovery(url, args.node_id, grace, timeout=float(args.recovery_timeout),
                            ttl=args.node_ttl, max_pending=args.recovery_queue)
    try:
        key = await recovery.start()
    except EtcdUnavailable as e:
        await recovery.kv.close()
        raise EtcdUnavailable(f"--recovery {url}: etcd does not answer ({e}); start etcd "
                              "or name reachable members") from None
    return Cluster(recovery, grace, key)
