"""Cluster-wide grace over a shared recovery database (sans-IO), after NFS-Ganesha's
`rados_cluster` recovery backend.

Theory of operation
-------------------
The shared database (etcd, `pynfsd.recovery.etcd`) holds:

- one *grace record* (`GraceDb`): the current epoch C and the recovery epoch R.  R == 0 means
  the cluster is not in grace; R != 0 means every node serves only reclaims, and clients that
  held state before epoch C (their record's epoch is below C) may reclaim on any node;
- one *need flag* per node that must see its clients reclaim (it restarted, or it takes over
  a dead node's clients).  It outlives the node (no lease): a node that dies in grace does not
  end the grace early;
- one *membership key* per running node, under the node's etcd lease (it vanishes when the
  node stops renewing it), holding the node's state and the epoch it has *acknowledged*: it
  saw epoch C begin and re-wrote the records of the clients it still serves with epoch C;
- one *client record* per client that holds state (`Record`): co_ownerid, principal, the node
  and the epoch that wrote it.  Records have no lease: they outlive their node.

A node that needs grace runs `begin`: if R == 0, C becomes C+1 and R the old C (a new grace
epoch); else the running grace is joined (its deadline may move later).  The change of the
grace record and the node's need flag are one transaction, conditioned on the grace record's
revision, so two nodes starting at once make one epoch.  Every node watches the grace record;
at a new epoch it loads the records written before C (who may reclaim), re-writes the records
of its own clients with epoch C, acknowledges C, and serves only reclaims.

Reclaims are served only once every other member has acknowledged the epoch (NFS4ERR_DELAY
until then, as Ganesha waits for every node's ENFORCING flag): before that, a node that has
not yet seen the epoch begin could still grant state that conflicts with a reclaim.

A node that needs grace tracks its own clients' reclaims with a local `GracePeriod` (the
clients it expects: records it wrote itself, or written by nodes that are no longer members).
When that ends (all came back and finished, or its time ran out) the node clears its need
flag.  The grace is lifted (R = 0) by whichever node finds no need flag left, or finds the
grace deadline passed; that node then deletes the records of epochs below C once every
member has acknowledged C: those clients reclaimed nowhere (RFC 7530 §9.6.3.4.3).

`ClusterGrace` is the state manager's `GraceTracker` on one node: `in_grace()` is the last
observed R != 0; the reclaim hooks feed the local `GracePeriod` while the node needs grace.
A node that could not renew its membership for a whole lease is *fenced*: the others may be
taking over its clients, so it grants no new state (NFS4ERR_DELAY for every new OPEN, LOCK
and reclaim) until it reaches etcd again; existing state keeps working.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.state.grace import GracePeriod

log = logging.getLogger("pynfsd.recovery")


_T = TypeVar("_T")


def _from_json(data: bytes, build: Callable[[dict[str, Any]], _T], what: str) -> _T:
    """``build(body)`` of a JSON object read from etcd; ValueError for anything else (garbage
    or a field of the wrong type or missing is never more than a value to ignore)."""
    try:
        body = json.loads(data)
        if not isinstance(body, dict):
            raise TypeError("not a JSON object")
        return build(body)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"not a {what}: {e!r}") from None


@dataclass(frozen=True, slots=True)
class GraceDb:
    """The cluster's epochs: C (current) and R (recovering from; 0: no grace); `until` is the
    wall-clock time after which any node may lift the grace."""

    current: int = 1
    recovery: int = 0
    until: float = 0.0

    @property
    def in_grace(self) -> bool:
        return self.recovery != 0

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes | None) -> GraceDb:
        if not data:
            return cls()
        return _from_json(data, lambda b: cls(int(b["current"]), int(b["recovery"]),
                                              float(b.get("until", 0.0))), "grace record")


def begin(db: GraceDb, now: float, duration: float) -> GraceDb:
    """The grace record after a node asks for grace: a new epoch, or the running one joined."""
    if db.in_grace:
        return GraceDb(db.current, db.recovery, max(db.until, now + duration))
    return GraceDb(db.current + 1, db.current, now + duration)


def may_lift(db: GraceDb, needs: Iterable[str], now: float) -> bool:
    """Whether grace may end: no node needs it any more, or its time is over."""
    return db.in_grace and (not list(needs) or now >= db.until)


def lifted(db: GraceDb) -> GraceDb:
    return GraceDb(db.current, 0, 0.0)


@dataclass(frozen=True, slots=True)
class Record:
    """One client's record: who it is, and which node wrote it in which epoch."""

    ownerid: bytes
    principal: str
    time: float
    node: str
    epoch: int

    def encode(self) -> bytes:
        body = {"ownerid": self.ownerid.hex(), "principal": self.principal, "time": self.time,
                "node": self.node, "epoch": self.epoch, "version": 1}
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> Record:
        def build(b: dict[str, Any]) -> Record:
            if b.get("version") != 1:
                raise ValueError("not version 1")
            return cls(bytes.fromhex(b["ownerid"]), str(b["principal"]), float(b["time"]),
                       str(b["node"]), int(b["epoch"]))

        return _from_json(data, build, "version 1 client record")


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A member's announcement: its state (starting, grace, serving, unavailable), the epoch
    it acknowledged, whether it needs grace, its process and start time, its records."""

    name: str
    state: str
    epoch: int
    need: bool = False
    pid: int = 0
    started: float = 0.0
    records: int = 0

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> NodeInfo:
        return _from_json(data, lambda b: cls(
            str(b["name"]), str(b["state"]), int(b["epoch"]), bool(b.get("need")),
            int(b.get("pid", 0)), float(b.get("started", 0.0)), int(b.get("records", 0))),
            "node announcement")


def expected_clients(records: Iterable[Record], node: str, members: Iterable[str],
                     epoch: int) -> list[bytes]:
    """The clients a node that needs grace waits for: records of epochs before `epoch` that
    it wrote itself or that a node no longer a member wrote (their clients come here)."""
    live = set(members) - {node}
    return [r.ownerid for r in records if r.epoch < epoch and r.node not in live]


class ClusterGrace:
    """One node's `GraceTracker` in a cluster (see the module docstring)."""

    def __init__(self, clock: Callable[[], float], duration: float, lease: float,
                 wallclock: Callable[[], float] | None = None) -> None:
        self._clock = clock
        self._wallclock = wallclock or clock  # the grace record's deadline is wall-clock time
        self.duration = duration
        self.lease = lease
        self.db = GraceDb()
        self.local: GracePeriod | None = None  # while this node needs grace
        self.need = False
        self.fenced = False  # membership lost: another node may be taking over our clients

    # -- what the etcd skin tells it ----------------------------------------------------

    def observe(self, db: GraceDb) -> None:
        if db.current < self.db.current:
            return  # read before a newer epoch this node already knows of
        if db.in_grace != self.db.in_grace or db.current != self.db.current:
            log.info("cluster grace: epoch %d, %s", db.current,
                     f"recovering from epoch {db.recovery}" if db.in_grace else "not in grace")
        self.db = db
        if not db.in_grace:
            self.need = False
            self.local = None

    def needs(self, expected: Iterable[bytes]) -> None:
        """This node asked for grace: track the reclaims of the clients it expects."""
        self.need = True
        self.local = GracePeriod(self._clock, self.duration, expected, lease=self.lease)

    def wants_lift(self) -> bool:
        """This node needs grace no more (its clients came back, or its time is over)."""
        return self.need and (self.local is None or not self.local.in_grace())

    # -- GraceTracker -------------------------------------------------------------------

    def in_grace(self) -> bool:
        return self.db.in_grace

    # the progress hooks feed this node's own reclaim tracking while it needs grace

    def client_confirmed(self, ownerid: bytes) -> None:
        self._tell("client_confirmed", ownerid)

    def reclaimed(self, ownerid: bytes) -> None:
        self._tell("reclaimed", ownerid)

    def non_reclaim(self, ownerid: bytes) -> None:
        if self.fenced:  # every new OPEN and LOCK passes here (check_reclaim)
            raise E.NFS4ERR_DELAY("this node lost its cluster membership: no new state")
        self._tell("non_reclaim", ownerid)

    def client_gone(self, ownerid: bytes) -> None:
        self._tell("client_gone", ownerid)

    def _tell(self, hook: str, ownerid: bytes) -> None:
        if self.local is not None:
            getattr(self.local, hook)(ownerid)

    def status(self) -> dict[str, object]:
        local = self.local.status() if self.local is not None else {}
        left = self.db.until - self._wallclock() if self.db.in_grace else 0.0
        return {
            "in_grace": self.db.in_grace,
            "seconds_left": max(0.0, left),
            "recorded": local.get("recorded", 0),
            "reclaimed": local.get("reclaimed", 0),
            "pending": local.get("pending", 0),
            "need": self.need,
            "epoch": self.db.current,
            "recovery_epoch": self.db.recovery,
            "ended_reason": None if self.db.in_grace else "the cluster is not in grace",
        }


def format_cluster(st: dict[str, Any]) -> list[str]:
    """`pynfsd status` lines for a cluster's store (`EtcdRecovery.status()`)."""
    grace = f"in grace (recovering epoch {st.get('recovery_epoch')})" if st.get(
        "recovery_epoch") else "not in grace"
    lines = [f"cluster: {st.get('url')} as node {st.get('node')}, epoch {st.get('epoch')}, "
             f"{grace}, {st.get('records')} client record(s)"
             + ("" if st.get("available") else f"; etcd UNREACHABLE: {st.get('last_error')}")
             + ("; membership lost: no new state" if st.get("fenced") else "")]
    if st.get("pending_writes"):
        lines.append(f"  {st['pending_writes']} record change(s) waiting for etcd")
    for n in st.get("nodes") or []:
        need = ", needs grace" if n.get("need") else ""
        lines.append(f"  node {n.get('name')}: {n.get('state')}, epoch {n.get('epoch')}"
                     f"{need}, pid {n.get('pid')}, {n.get('records')} client(s)")
    return lines
