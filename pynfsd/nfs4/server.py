"""The NFSv4.0 service: program 100003 version 4 (RFC 7530 §15, §16.1-16.2).

Theory of operation: `NFSServer` owns what lives longer than one COMPOUND and wires it
together: the export resolver, one backend per export (`pynfsd.nfs4.backends`), the state
manager with its client store and grace period, the idmappers, the callback client, the
worker threads that run blocking filesystem calls, and the server's boot-time write verifier.
Randomness (``rng``) and clocks (the config's) are passed in.  It builds, once, the op table
(`pynfsd.nfs4.ops.build_op_table`), the handlers' collaborators (`pynfsd.nfs4.context.Services`)
and the Vfs's (`pynfsd.nfs4.vfstypes.VfsHost`); nothing below this module imports it.
`compound()` is the RPC procedure: it decodes the COMPOUND header, takes the client's view of
the exports from the export caches (`pynfsd.nfs4.views`: at once when memoised, else at the
first op that needs it, where the request may be parked), and hands the operations, a `Vfs`
and a `CompoundContext` to `pynfsd.nfs4.compound`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from pynfsd.blocking import BlockingPool
from pynfsd.exports.mounts import MountTable
from pynfsd.exports.pseudofs import PseudoNode
from pynfsd.exports.resolver import StaticExportResolver
from pynfsd.exports.types import ClientExport
from pynfsd.fs.backend import Attrs, FileType
from pynfsd.gen import nfs4 as N
from pynfsd.idmap import IdMapper
from pynfsd.metrics.stats import Stats
from pynfsd.nfs4 import compound
from pynfsd.nfs4.backends import BackendOpenFiles, Backends, local_backend
from pynfsd.nfs4.callback import CallbackClient, CallbackTarget, ServerGssIdentity
from pynfsd.nfs4.config import (
    DEFAULT_IO_SIZE,
    DEFAULT_MAX_COMPOUND_OPS,
    DEFAULT_MAX_REPLY,
    REPLY_HEADROOM,
    ServerConfig,
)
from pynfsd.nfs4.context import CompoundContext, Services
from pynfsd.nfs4.crossing import OnceLog
from pynfsd.nfs4.errors import NFS4ERR_DELAY
from pynfsd.nfs4.ops import build_op_table
from pynfsd.nfs4.recall import Recaller
from pynfsd.nfs4.state import StateManager
from pynfsd.nfs4.state.grace import GracePeriod, GraceTracker
from pynfsd.nfs4.state.leases import enforced_lease
from pynfsd.nfs4.state.store import FileClientStore, ServerStore, StoreUnavailable
from pynfsd.nfs4.vfs import Vfs
from pynfsd.nfs4.vfstypes import ClientView, VfsHost
from pynfsd.nfs4.views import ExportViews, Resolved, static_views
from pynfsd.rpc.errors import GarbageArgs
from pynfsd.rpc.flavors import AUTH_SYS
from pynfsd.rpc.server import RpcCall, RpcServer
from pynfsd.xdr.runtime import Unpacker, XdrError

log = logging.getLogger(__name__)
T = TypeVar("T")

NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND = N.NFS4_PROGRAM, N.NFS_V4, N.NFSPROC4_COMPOUND
__all__ = [  # the configuration is defined in pynfsd.nfs4.config and re-exported here
    "DEFAULT_IO_SIZE", "DEFAULT_MAX_COMPOUND_OPS", "DEFAULT_MAX_REPLY", "NFSPROC4_COMPOUND",
    "NFS_PROGRAM", "NFS_V4", "REPLY_HEADROOM", "BackendOpenFiles", "NFSServer",
    "ServerConfig", "local_backend",
]


class NFSServer:
    """The wiring of the NFSv4 service (see the module docstring).

    ``exports``: the client views from the export caches (`pynfsd.nfs4.views.ExportViews`),
    or a `StaticExportResolver` whose table the embedded resolver then answers from (tests).
    ``rng`` makes the random bytes (write verifier, boot id, state ids and verifiers);
    ``client_store`` the client records (default: the files under ``<state-dir>/clients``,
    read when the store is made) and ``grace`` its grace period (default: this server's own,
    from the records; a cluster passes `pynfsd.recovery.cluster.ClusterGrace`); the clocks are the config's; ``stats`` the counters of
    operations (`pynfsd.metrics.stats`, shared with the RPC server by `pynfsd serve`).
    """

    def __init__(
        self,
        config: ServerConfig,
        exports: ExportViews | StaticExportResolver,
        idmap: IdMapper | None = None,
        *,
        rng: Callable[[int], bytes] = secrets.token_bytes,
        client_store: ServerStore | None = None,
        grace: GraceTracker | None = None,
        stats: Stats | None = None,
    ) -> None:
        self.config = config
        self.resolver = exports  # as given (tests build a second server from it)
        self.views = exports if isinstance(exports, ExportViews) else static_views(
            exports, max_mounts=config.max_mounts)
        # Owners go out as numeric strings under AUTH_SYS (knfsd's nfs4_disable_idmapping
        # default: clients without an idmapper still see the right ids) and as user@domain
        # under Kerberos; both forms are accepted from clients.
        self.idmap = idmap or IdMapper()
        self.idmap_numeric = IdMapper(self.idmap.domain, numeric=True)
        self.boot_ns = config.wallclock_ns()
        # The write verifier changes on every server start (RFC 7530 §16.36.5).
        self.write_verifier = rng(8)
        # Client records on stable storage decide who may reclaim after a restart, and the
        # grace period during which only reclaims are served (RFC 7530 §9.6.2).
        self.client_store: ServerStore = client_store if client_store is not None else (
            FileClientStore(os.path.join(config.state_dir, "clients"),
                            lambda: config.wallclock_ns() / 1e9))
        self.grace: GraceTracker = grace if grace is not None else GracePeriod(
            config.clock,
            config.grace_time,
            self.client_store.recorded(),
            lease=enforced_lease(config.lease_time),
            on_end=self.client_store.grace_done,
        )
        self.backends = Backends(config.state_dir, config.backend_factory)
        self.callbacks = CallbackClient(
            ServerGssIdentity(config.callback_gss_name, config.callback_keytab)
            if config.callback_keytab else None,
            clock=config.clock,
        )
        self.recaller = Recaller(self.callbacks)
        self.state = StateManager(
            clock=config.clock,
            rng=rng,
            lease_time=config.lease_time,
            server_boot_id=rng(4),
            store=self.client_store,
            open_files=BackendOpenFiles(self.backends),
            grace=self.grace,
            on_client_dropped=self.callbacks.forget,  # its callback path goes with it
            delegation_hooks=self.recaller,
        )
        self.state.delegations.enabled = config.delegations
        self.state.delegations.max_total = config.max_delegations
        self.state.delegations.max_per_client = config.max_client_delegations
        self._pool = BlockingPool(config.workers)
        # filesystems mounted inside exports (pynfsd.nfs4.crossing)
        self.mounts = MountTable()
        self.hidden_mounts = OnceLog()
        self.vfs_host = VfsHost(
            self.backends, self._pool, self.pseudo_attrs, self.mounts, self.hidden_mounts
        )
        self.services = Services(
            config=config,
            state=self.state,
            idmap=self.idmap,
            idmap_numeric=self.idmap_numeric,
            durable=self.durable,
            write_verifier=self.write_verifier,
            start_callback=self.start_callback,
            stats=Stats() if stats is None else stats,
            recaller=self.recaller,
        )
        self.ops = build_op_table()

    # ------------------------------------------------------------ resources
    @property
    def pool(self) -> BlockingPool:
        """The worker threads of filesystem calls (resized by the control tree's `threads`)."""
        return self._pool

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._pool.run(fn, *args)

    async def durable(self, strict: bool = False) -> None:
        """Wait until the client records changed so far are on stable storage.  If the store
        cannot be reached: NFS4ERR_DELAY when ``strict`` (a record that must exist before new
        state); else the changes (removals) stay queued and are written when it is back."""
        try:
            await self.client_store.sync(self.run_blocking)
        except StoreUnavailable as e:
            if strict:
                raise NFS4ERR_DELAY(f"client records: {e}") from None

    async def view_for(self, client_addr: str) -> ClientView:
        """The client's view of the exports, through the export caches."""
        return (await self.views.resolve(client_addr)).view

    def pseudo_attrs(self, node: PseudoNode | None) -> Attrs:
        """Attributes of a pure pseudo-fs directory: read-only, owned by root."""
        nlink = 2 + (len(node.children) if node is not None else 0)
        fileid = node.fileid if node is not None else 1
        t = self.boot_ns
        return Attrs(FileType.DIR, 0o555, nlink, 0, 0, 4096, 4096, (0, 0), fileid, t, t, t, t)

    async def housekeeping(self) -> None:
        """Expire lapsed leases now and then, so idle clients' state does not linger; and
        the export caches' cleaner (deadlines of parked requests, expired entries)."""
        cleaner = asyncio.create_task(self.views.caches.run())
        try:
            await self._leases()
        finally:
            cleaner.cancel()

    async def _leases(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.config.lease_time / 4))
            expired = self.expire_lapsed()
            if expired:
                log.info("expired the state of %d client(s) whose lease ran out", expired)
            self.grace.in_grace()  # ends the grace period on time even when nobody asks
            await self.durable()

    def expire_lapsed(self) -> int:
        """Expire lapsed leases (`StateManager.sweep`), then forget the callback paths of the
        clients no longer confirmed (expired, revoked, replaced): their entries and connections
        would otherwise accumulate per client id.  Returns how many clients expired."""
        expired = self.state.sweep()
        self.callbacks.retain(self.state.clients.confirmed)
        return expired

    def start_callback(self, clientid: int, target: object, client_addr: str) -> None:
        """Probe a newly confirmed client's callback path (CB_NULL) in the background.

        Only an address the client itself calls from is probed: a client cannot make the
        server connect to another host (as knfsd, callbacks go to the client; unlike it, a
        third-party address is refused, so the server cannot be used to reach other hosts).
        """
        if not isinstance(target, CallbackTarget):
            return
        try:
            host = target.address().host
        except Exception as e:  # a malformed r_addr: the path is simply down
            log.debug("client %#x: no callback path: %s", clientid, e)
            return
        if host != client_addr:
            log.debug("client %#x: callback address %s is not its own (%s): not probed",
                      clientid, host, client_addr)
            return
        self.callbacks.confirmed(clientid, target)

    async def shutdown(self) -> None:
        """Stop callback work and the caches' upcalls, then release backends and threads."""
        await self.recaller.close()
        await self.callbacks.close()
        await self.views.caches.close()
        self.close()

    def close(self) -> None:
        self.client_store.flush()
        self.backends.close()
        self.mounts.close()
        self._pool.shutdown()

    # ------------------------------------------------------------ RPC
    def register(self, rpc: RpcServer) -> None:
        rpc.register(NFS_PROGRAM, NFS_V4, {NFSPROC4_COMPOUND: self.compound})

    async def compound(self, call: RpcCall) -> list[bytes]:
        u = Unpacker(call.args)
        try:
            tag = u.unpack_opaque()
            minorversion = u.unpack_uint()
            count = u.unpack_uint()
        except XdrError as e:
            raise GarbageArgs(str(e)) from None
        if minorversion != 0:
            # RFC 7530 §16.2.3: an unsupported minor version gets no results at all.
            return compound.encode_reply(N.NFS4ERR_MINOR_VERS_MISMATCH, tag, 0, None)
        ctx = self._context(call)
        ctx.tag = tag
        status, results, numres = await compound.process(ctx, self.ops, u, count)
        call.cacheable = ctx.non_idempotent
        return compound.encode_reply(status, tag, numres, results)

    def _context(self, call: RpcCall) -> CompoundContext:
        """The COMPOUND's context, with its Vfs when the client's view is memoised (the hot
        path: no await); else with an empty one and `prepare`, run at the first op that needs
        the exports (`pynfsd.nfs4.compound`)."""
        addr, port = call.peer
        resolved = self.views.ready(addr)
        if resolved is not None:
            gids = self.views.groups_ready(call.cred) if self._manages(resolved, call) else None
            if gids is not False:
                vfs = self._vfs(resolved, call, gids)  # type: ignore[arg-type]
                return CompoundContext(self.services, vfs, call.cred, addr, port)
        ctx = CompoundContext(self.services, self._vfs(None, call, None), call.cred, addr, port)

        async def prepare() -> None:
            found = await self.views.resolve(addr)
            gids = await self.views.groups(call.cred, addr) if self._manages(found, call) else None
            ctx.vfs = self._vfs(found, call, gids)
            ctx.prepare = None

        ctx.prepare = prepare
        return ctx

    @staticmethod
    def _manages(resolved: Resolved, call: RpcCall) -> bool:
        return resolved.manages_gids and call.cred.flavor == AUTH_SYS

    def _vfs(self, resolved: Resolved | None, call: RpcCall,
             gids: tuple[int, ...] | None) -> Vfs:
        if resolved is None:
            return Vfs(self.vfs_host, self.views.empty, call.cred, call.peer[1])
        domain = resolved.domain
        views = self.views

        async def fh_path(export: ClientExport) -> str | None:
            return await views.fh_path(domain, export)

        return Vfs(self.vfs_host, resolved.view, call.cred, call.peer[1], fh_path=fh_path,
                   managed_gids=gids, manage_all=views.manage_gids)

