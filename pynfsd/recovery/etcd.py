"""Client records, membership and cluster-wide grace in etcd (`--recovery etcd://...`).

Theory of operation
-------------------
`EtcdRecovery` is the `ClientStore` of a node in a cluster and the asyncio skin of its
`ClusterGrace` (the layout and the grace rules are in `pynfsd.recovery.cluster`).  Under the
URL's PREFIX:

    PREFIX/fh-key            the handle key shared by every node (created once)
    PREFIX/grace             GraceDb: current epoch, recovery epoch, deadline
    PREFIX/need/NODE         the node needs grace (no lease: outlives the node)
    PREFIX/nodes/NODE        NodeInfo under the node's lease (membership)
    PREFIX/clients/HASH      one Record per client holding state (no lease)

`start()` (before the server listens; `EtcdUnavailable` if etcd does not answer in time)
takes a lease, reads the grace record and the client records and, if some record may belong
to clients that must reclaim here (this node wrote it, or its node is not a member), asks for
grace (`begin`) in one transaction with its need flag.  Then `run()` ticks every
`interval` seconds (a third of the lease), and at once when a watch on the grace record,
the need flags and the members reports a change: it renews the lease (a new one and a fresh
membership key if it had expired), reads the grace record, the need flags and the members, enters a new epoch when
one began (load who may reclaim, re-write its own clients' records with the new epoch,
acknowledge), begins grace itself when a member vanished that had written records (it takes
over that node's clients), clears its need flag when its own reclaims are done, lifts the
grace when no flag is left or its deadline passed, deletes the records nobody reclaimed once
every member acknowledged the epoch, and retries record writes that failed.

Records: `client_has_state`/`client_removed` queue a put/delete keyed by co_ownerid (one
entry per client at most, and at most `max_pending` entries: beyond, a new client's record
is refused with NFS4ERR_DELAY before it gets any state), and `sync()` writes the queue in transactions of at most `TXN_OPS` operations.  `sync` is bounded
by the timeout; if etcd cannot be reached it raises `StoreUnavailable` (at once while etcd is
known to be down): OPEN answers NFS4ERR_DELAY before creating any state, and the queued
change stays queued and is written by the next tick that reaches etcd.  A node whose ticks
have not renewed its lease for a whole `ttl` fences itself (`ClusterGrace.fenced`: no new
state) until a tick succeeds again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.state.store import RunBlocking, StoreUnavailable, record_id
from pynfsd.recovery.cluster import (
    ClusterGrace,
    GraceDb,
    NodeInfo,
    Record,
    begin,
    expected_clients,
    lifted,
    may_lift,
)
from pynfsd.recovery.etcdkv import EtcdKv, EtcdUnavailable, EtcdUrl

log = logging.getLogger("pynfsd.recovery")
TXN_OPS = 64  # etcd refuses transactions of more than 128 operations by default
DEFAULT_TIMEOUT = 5.0  # seconds an etcd call (and so an OPEN awaiting its record) may take
DEFAULT_TTL = 10  # seconds of the membership lease
DEFAULT_MAX_PENDING = 4096  # record changes waiting for etcd (one per client at most)


class EtcdRecovery:
    """A node's client records and grace in etcd (see the module docstring)."""

    def __init__(self, url: EtcdUrl, node: str, grace: ClusterGrace, *, timeout: float =
                 DEFAULT_TIMEOUT, ttl: int = DEFAULT_TTL,
                 wallclock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self.url, self.node, self.grace = url, node, grace
        self.timeout, self.ttl = timeout, ttl
        self.interval = max(0.2, ttl / 3)  # lease renewals; a watch wakes the tick sooner
        self._now = wallclock
        self._mono = monotonic
        self._renewed = monotonic()  # the last renewal of the membership lease
        self.kv = EtcdKv(url, timeout)
        self.lease_id = 0
        self.acked = 0  # the epoch whose start this node has acknowledged
        self.epoch = 1  # the epoch new records are written with
        self.max_pending = max_pending
        self.available = False
        self.last_error = ""
        self.members: dict[str, NodeInfo] = {}
        self.needs: list[str] = []
        self.record_count = 0
        self.enforcing = True  # every other member acknowledged the current epoch
        self._previous: dict[bytes, Record] | None = {}  # may reclaim (None: loading)
        self._current: dict[bytes, Record] = {}  # recorded by this node in this boot
        self._pending: dict[bytes, Record | None] = {}
        self._queued = self._durable = 0
        self._flush_lock = asyncio.Lock()
        self._tick_lock = asyncio.Lock()  # a tick and an admin takeover, one at a time
        self._cleanup_epoch = 0
        self._started = wallclock()
        self._wake = asyncio.Event()
        self.watching = asyncio.Event()  # the watch is in place

    # -- start-up and the tick ------------------------------------------------------------

    async def start(self) -> bytes:
        """Join the cluster (grace if needed); returns the shared handle key."""
        key = await self.kv.shared_key()
        self.lease_id = (await self.kv.call(self.kv.client.lease, self.ttl)).id
        db, _ = await self._grace_db()
        records = await self._records()
        await self._read_members()
        self._previous = {}
        if expected_clients(records, self.node, self.members, db.current + 1):
            db = await self._begin(records)
        else:
            self.grace.observe(db)
            await self._enter(db)
        self.available = True
        log.info("recovery: node %s joined %s (epoch %d%s, %d client record(s))", self.node,
                 self.url, db.current, ", in grace" if db.in_grace else "", len(records))
        return key

    async def run(self) -> None:
        watcher = asyncio.create_task(self._watch())
        try:
            await self._loop()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _watch(self) -> None:
        """Wake the tick at once when the grace record, a need flag or a member changes (the
        keys from PREFIX/grace to PREFIX/nodes/*, not the client records)."""
        while True:
            try:
                watch = await self.kv.call(self.kv.client.watch, self.url.key("grace"),
                                           range_end=self.url.key("nodes0"))
                self.watching.set()
                async for _event in watch:
                    self._wake.set()
            except Exception as e:  # etcd unreachable: the tick notices; watch again later
                log.debug("recovery: watch ended: %s", e)
            self.watching.clear()
            await asyncio.sleep(self.interval)

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.tick()
                if not self.available:
                    log.warning("recovery: %s reachable again", self.url)
                self.available, self.last_error, self.grace.fenced = True, "", False
            except EtcdUnavailable as e:
                if self.available:
                    log.error("recovery: etcd unusable: %s (new clients' state is refused "
                              "with NFS4ERR_DELAY until it is back)", e)
                self.available, self.last_error = False, str(e)
                self._fence()
            except Exception as e:  # a bug must not end the node's membership loop
                log.exception("recovery: tick failed")
                self.available, self.last_error = False, repr(e)
                self._fence()

    def _fence(self) -> None:
        """No renewal for a whole lease: our membership is gone, and with it our clients
        may be going to another node; grant no new state until etcd answers again."""
        if not self.grace.fenced and self._mono() - self._renewed > self.ttl:
            log.error("recovery: node %s could not renew its membership for %d s: another "
                      "node may take over its clients; no new state until etcd answers",
                      self.node, self.ttl)
            self.grace.fenced = True

    async def tick(self) -> None:
        async with self._tick_lock:
            await self._tick()

    async def _tick(self) -> None:
        await self._keepalive()
        db, rev = await self._grace_db()
        gone = await self._read_members()
        self.needs = [k.key.rsplit(b"/", 1)[-1].decode()
                      for k in await self.kv.get_prefix(self.url.key("need"))]
        self.enforcing = all(m.epoch >= db.current for m in self.members.values()
                             if m.name != self.node)
        if db.current > self.acked:
            await self._enter(db)
        self.grace.observe(db)
        if self._pending:
            await self._flush()
        if not db.in_grace:
            self._previous = {}
        elif self.grace.local is not None and self.grace.local.waiting():
            await self._reclaimed_elsewhere(db)
        if gone and not self.grace.need:  # their clients may come here: grace for them
            records = await self._records()
            if any(r.node in gone for r in records):
                log.info("recovery: node(s) %s left the cluster: taking over their clients",
                         ", ".join(sorted(gone)))
                db = await self._begin(records)
        await self._maybe_lift(db, rev)
        await self._cleanup()
        self.record_count = await self.kv.count(self.url.key("clients"))

    async def _keepalive(self) -> None:
        reply = await self.kv.call(self.kv.client.refresh_lease, self.lease_id)
        self._renewed = self._mono()
        if reply is None or reply.TTL <= 0:
            log.warning("recovery: the membership lease of %s had expired: joining again",
                        self.node)
            self.lease_id = (await self.kv.call(self.kv.client.lease, self.ttl)).id
            await self._announce()

    async def _grace_db(self) -> tuple[GraceDb, int]:
        key = self.url.key("grace")
        kv = await self.kv.get(key)
        if kv is None:
            return GraceDb(), 0
        try:
            return GraceDb.decode(kv.value), kv.mod_revision
        except ValueError as e:  # the cluster's epochs are unknown: as if etcd did not answer
            raise EtcdUnavailable(f"{self.url}: {key.decode()} is not a grace record ({e}); "
                                  "restore or delete it") from None

    async def _read_members(self) -> set[str]:
        found = {}
        for kv in await self.kv.get_prefix(self.url.key("nodes")):
            try:
                info = NodeInfo.decode(kv.value)
            except ValueError as e:
                log.warning("recovery: ignoring %r: %s", kv.key, e)
                continue
            found[info.name] = info
        gone = set(self.members) - set(found) - {self.node}
        self.members = found
        return gone

    async def _records(self) -> list[Record]:
        out = []
        for kv in await self.kv.get_prefix(self.url.key("clients")):
            try:
                out.append(Record.decode(kv.value))
            except ValueError as e:
                log.warning("recovery: ignoring client record %r: %s", kv.key, e)
        self.record_count = len(out)
        return out

    # -- grace transactions ---------------------------------------------------------------

    async def _begin(self, records: list[Record]) -> GraceDb:
        """Ask for grace: a new epoch (or join the running one) and this node's need flag."""
        gkey, need = self.url.key("grace"), self.url.key("need", self.node)
        for _ in range(20):  # other nodes' transactions may win a few times
            old, rev = await self._grace_db()
            new = begin(old, self._now(), self.grace.duration)
            cmp = [self.kv.tx.mod(gkey) == rev] if rev else [self.kv.tx.version(gkey) == 0]
            ok, _ = await self.kv.txn(cmp, [self.kv.tx.put(gkey, new.encode()),
                                            self.kv.tx.put(need, b"1")])
            if ok:
                log.info("recovery: node %s asked for grace: epoch %d, recovering from %d",
                         self.node, new.current, new.recovery)
                self.enforcing = not (set(self.members) - {self.node})
                expected = expected_clients(records, self.node, self.members, new.current)
                self.grace.needs([o for o in expected if o not in self._current])
                await self._enter(new)
                self.grace.observe(new)
                return new
        raise EtcdUnavailable(f"{self.url}: the grace record keeps changing")

    async def takeover(self, node: str) -> dict[str, Any]:
        """`pynfsd takeover NODE`: NODE is down; end its membership now (revoke its lease)
        and ask for grace so that its clients reclaim here (`rados_cluster`'s `start`)."""
        if node == self.node or not node or "/" in node:
            raise ValueError(f"cannot take over {node!r}: name another node")
        async with self._tick_lock:
            kv = await self.kv.get(self.url.key("nodes", node))
            if kv is not None and kv.lease:
                await self.kv.call(self.kv.client.revoke_lease, kv.lease)
            await self._read_members()
            log.info("recovery: taking over the clients of node %s (by request)", node)
            db = await self._begin(await self._records())
        return {"node": self.node, "took_over": node, "epoch": db.current,
                "recovery_epoch": db.recovery}

    def admin_commands(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        """The control socket's `takeover` request."""
        async def takeover(request: dict[str, Any]) -> dict[str, Any]:
            try:
                return await self.takeover(str(request.get("node", "")))
            except EtcdUnavailable as e:  # the admin reply names it
                raise ValueError(f"etcd unreachable: {e}") from None

        return {"takeover": takeover}

    async def _enter(self, db: GraceDb) -> None:
        """A new epoch began: who may reclaim, our clients re-written, then acknowledged."""
        self.epoch = max(self.epoch, db.current)  # new records are written with it from now
        if db.in_grace:
            self._previous = None  # reclaims wait (NFS4ERR_DELAY) until loaded
            self._previous = {r.ownerid: r for r in await self._records()  # not our own
                              if r.epoch < db.current and r.ownerid not in self._current}
        for ownerid, rec in self._current.items():
            self._queue(ownerid, Record(ownerid, rec.principal, rec.time, self.node, db.current))
        await self._flush()
        await self._ack(db)

    async def _reclaimed_elsewhere(self, db: GraceDb) -> None:
        """Clients this node waits for that reclaimed on another node (it re-wrote their
        record in this epoch), or whose record went, will not come here: done."""
        assert self.grace.local is not None
        by_id = {r.ownerid: r for r in await self._records()}
        for ownerid in self.grace.local.waiting():
            rec = by_id.get(ownerid)
            if rec is None or rec.epoch >= db.current and rec.node != self.node:
                self.grace.client_gone(ownerid)

    async def _ack(self, db: GraceDb) -> None:
        self.acked = max(self.acked, db.current)
        await self._announce(db)

    async def _announce(self, db: GraceDb | None = None) -> None:
        in_grace = (db or self.grace.db).in_grace
        info = NodeInfo(self.node, "grace" if in_grace else "serving", self.acked,
                        self.grace.need, os.getpid(), self._started, len(self._current))
        await self.kv.call(self.kv.client.put, self.url.key("nodes", self.node), info.encode(),
                           lease=self.lease_id)
        self.members[self.node] = info

    async def _maybe_lift(self, db: GraceDb, rev: int) -> None:
        if self.grace.wants_lift():
            await self.kv.call(self.kv.client.delete, self.url.key("need", self.node))
            self.needs = [n for n in self.needs if n != self.node]
            self.grace.need = False
            log.info("recovery: node %s finished its reclaims", self.node)
            await self._announce(db)
        if not may_lift(db, self.needs, self._now()):
            return
        gkey = self.url.key("grace")
        ok, _ = await self.kv.txn([self.kv.tx.mod(gkey) == rev], [
            self.kv.tx.put(gkey, lifted(db).encode()),
            self.kv.tx.delete(self.url.key("need") + b"/", self.url.key("need") + b"0")])
        if ok:
            log.info("recovery: cluster grace lifted (epoch %d)%s", db.current,
                     "" if not self.needs else f", time over for {', '.join(self.needs)}")
            self._cleanup_epoch = db.current
            self.grace.observe(lifted(db))
            await self._announce(lifted(db))

    async def _cleanup(self) -> None:
        """After a lift: records of epochs before it that nobody reclaimed go (§9.6.3.4.3)."""
        epoch = self._cleanup_epoch
        if not epoch or any(m.epoch < epoch for m in self.members.values()):
            return
        stale = [kv for kv in await self.kv.get_prefix(self.url.key("clients"))
                 if _epoch_of(kv.value) < epoch]
        for kv in stale:  # each only if unchanged: a node may just have re-written it
            await self.kv.txn([self.kv.tx.mod(kv.key) == kv.mod_revision],
                              [self.kv.tx.delete(kv.key)])
        if stale:
            log.info("recovery: removed %d record(s) of clients that did not reclaim", len(stale))
        self._cleanup_epoch = 0

    # -- the ClientStore hooks ------------------------------------------------------------

    def recorded(self) -> frozenset[bytes]:
        return frozenset(self._previous or ())

    def client_confirmed(self, ownerid: bytes, principal: str) -> None:
        return None

    def client_has_state(self, ownerid: bytes, principal: str) -> None:
        if len(self._pending) >= self.max_pending and ownerid not in self._pending:
            raise E.NFS4ERR_DELAY(f"{len(self._pending)} client record changes wait for etcd")
        rec = Record(ownerid, principal, self._now(), self.node, self.epoch)
        self._current[ownerid] = rec
        self._queue(ownerid, rec)

    def client_removed(self, ownerid: bytes) -> None:
        current = self._current.pop(ownerid, None)
        previous = (self._previous or {}).pop(ownerid, None)
        if current is not None or previous is not None:
            self._queue(ownerid, None)

    def may_reclaim(self, ownerid: bytes) -> bool:
        if self._previous is None:
            raise E.NFS4ERR_DELAY("the client records of this grace period are loading")
        if not self.enforcing or self.grace.fenced:  # a node may grant conflicting state
            raise E.NFS4ERR_DELAY("not every node has entered the grace period yet")
        return ownerid in self._previous

    def grace_done(self) -> None:
        self._previous = {}

    def _queue(self, ownerid: bytes, rec: Record | None) -> None:
        self._pending[ownerid] = rec
        self._queued += 1

    async def sync(self, run_blocking: RunBlocking | None = None) -> None:
        """Return once every change queued before the call is in etcd; StoreUnavailable if
        etcd is down or does not answer within the timeout (the change stays queued)."""
        target = self._queued
        while self._durable < target:
            if not self.available:
                raise StoreUnavailable(f"etcd unusable: {self.last_error}")
            try:
                await self._flush()
            except EtcdUnavailable as e:
                self.available, self.last_error = False, str(e)
                self._wake.set()
                raise StoreUnavailable(str(e)) from None

    async def _flush(self) -> None:
        async with self._flush_lock:
            batch, upto = self._pending, self._queued
            self._pending = {}
            try:
                items = list(batch.items())
                for i in range(0, len(items), TXN_OPS):
                    await self.kv.txn([], [self._op(o, r) for o, r in items[i:i + TXN_OPS]])
            except BaseException:
                for ownerid, rec in batch.items():  # newer changes win
                    self._pending.setdefault(ownerid, rec)
                raise
            self._durable = max(self._durable, upto)

    def _op(self, ownerid: bytes, rec: Record | None) -> Any:
        key = self.url.key("clients", record_id(ownerid))
        return self.kv.tx.delete(key) if rec is None else self.kv.tx.put(key, rec.encode())

    def flush(self) -> None:
        return None  # shutdown writes through close()

    # -- status and shutdown --------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        db = self.grace.db
        return {
            "backend": "etcd", "url": str(self.url), "node": self.node,
            "available": self.available, "last_error": self.last_error,
            "fenced": self.grace.fenced,
            "epoch": db.current, "recovery_epoch": db.recovery,
            "grace_until": db.until, "records": self.record_count,
            "pending_writes": len(self._pending),
            "nodes": [{"name": m.name, "state": m.state, "epoch": m.epoch,
                       "need": m.name in self.needs, "pid": m.pid, "records": m.records}
                      for m in sorted(self.members.values(), key=lambda m: m.name)],
        }

    async def close(self) -> None:
        """Write what is queued and leave the cluster (the lease goes: membership ends)."""
        try:
            await self.sync()
            await self.kv.call(self.kv.client.revoke_lease, self.lease_id)
        except (StoreUnavailable, EtcdUnavailable) as e:
            log.warning("recovery: leaving the cluster uncleanly: %s", e)
        await self.kv.close()


def _epoch_of(data: bytes) -> int:
    try:
        return Record.decode(data).epoch
    except ValueError:
        return 1 << 62  # not ours to delete
