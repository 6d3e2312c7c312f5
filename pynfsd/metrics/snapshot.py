"""One consistent reading of everything the metrics and `pynfsd status` report.

Theory of operation: `Sources` names the server's parts that count: the hot-path `Stats`, the
state manager (clients, opens, locks, dropped clients), the grace period, and, when present,
the duplicate request cache, the connection table and the RPCSEC_GSS flavour.  `take` reads
them on the event loop, where they change, and copies what it reads into a `Snapshot` of
plain values (dicts and numbers): a few dict copies and one pass over the confirmed clients.
A `Snapshot` is never updated afterwards, so it may be rendered in another thread
(`pynfsd.metrics.collector`).  `headline` is the short form `pynfsd status` shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sized
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from pynfsd.gen import nfs4 as N
from pynfsd.metrics.stats import Stats, StatsCopy
from pynfsd.nfs4.state.leases import ADMIN_REVOKED, EXPIRED, REPLACED
from pynfsd.rpc.flavors import RPCSEC_GSS, sec_name

if TYPE_CHECKING:
    from pynfsd.nfs4.optable import OpTable
    from pynfsd.nfs4.state import StateManager
    from pynfsd.rpc.auth import AuthRegistry
    from pynfsd.rpc.connections import ConnectionTable
    from pynfsd.rpc.drc import ReplyCache

#: why a client's state was dropped, by the status of its tombstone
DROP_REASONS = {EXPIRED: "expired", ADMIN_REVOKED: "revoked", REPLACED: "replaced"}
#: RPCSEC_GSS events that are not refusals (`RpcsecGss.stats`)
GSS_LIFECYCLE = ("established", "destroyed", "evicted")


class GssCounts(Protocol):
    """What is read of the RPCSEC_GSS flavour (`pynfsd.rpc.gss.RpcsecGss`)."""

    @property
    def stats(self) -> Mapping[str, int]: ...

    @property
    def contexts(self) -> Sized: ...


def gss_of(auth: AuthRegistry) -> GssCounts | None:
    """The registry's RPCSEC_GSS flavour, if it has one."""
    if RPCSEC_GSS not in auth.flavors():
        return None
    flavour = auth.lookup(RPCSEC_GSS)
    return cast(GssCounts, flavour) if hasattr(flavour, "contexts") else None


def op_names(ops: OpTable) -> dict[int, str]:
    return {opnum: spec.name for opnum, spec in ops.items()}


@dataclass(slots=True)
class Sources:
    """What a snapshot reads (see the module docstring); `op_names` names op numbers."""

    stats: Stats
    state: StateManager
    grace: Any = None  # has status() -> dict (`pynfsd.nfs4.state.grace.GracePeriod`)
    drc: ReplyCache | None = None
    connections: ConnectionTable[Any] | None = None
    gss: GssCounts | None = None
    op_names: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Snapshot:
    stats: StatsCopy
    op_names: Mapping[int, str]
    clients: dict[str, int]  # active, courtesy, expired, unconfirmed
    clients_dropped: dict[str, int]  # expired, revoked, replaced
    state: dict[str, int]  # open_owners, opens, lock_states, locks, delegations
    collisions: int
    grace: dict[str, Any] | None
    drc: dict[str, Any] | None
    connections: dict[str, Any] | None
    gss: dict[str, int] | None  # events by name, plus "contexts"

    def op_name(self, opnum: int) -> str:
        """The op table's name (GETATTR), else the wire name without OP_ (ILLEGAL)."""
        name = self.op_names.get(opnum) or N.nfs_opnum4_names.get(opnum, str(opnum))
        return name.removeprefix("OP_")

    def calls_by_flavour(self) -> dict[str, int]:
        return {flavour_name(f): n for f, n in sorted(self.stats.calls.items())}


def flavour_name(sec_flavor: int) -> str:
    """The exports(5) name of a security flavour (krb5i, sys, ...), or its number."""
    return sec_name(sec_flavor) or str(sec_flavor)


def status_name(status: int) -> str:
    return N.nfsstat4_names.get(status, str(status))


def take(src: Sources) -> Snapshot:
    """Read every source now (on the event loop) into plain values."""
    counts = src.state.counts()
    table = src.state.clients
    return Snapshot(
        stats=src.stats.copy(),
        op_names=src.op_names,
        clients=client_states(src.state),
        clients_dropped={DROP_REASONS.get(s, str(s)): n for s, n in table.buried.items()},
        state={"open_owners": counts.open_owners, "opens": counts.opens,
               "lock_states": counts.lock_states, "locks": counts.locks,
               "delegations": counts.delegations},
        collisions=table.collisions.total,
        grace=None if src.grace is None else dict(src.grace.status()),
        drc=None if src.drc is None else dict(src.drc.status()),
        connections=None if src.connections is None else dict(src.connections.status()),
        gss=None if src.gss is None else {**src.gss.stats, "contexts": len(src.gss.contexts)},
    )


def client_states(state: StateManager) -> dict[str, int]:
    """Confirmed clients by lease state: active (lease running), courtesy (lease over, state
    kept until someone needs it), expired (lease over, no state, awaiting the sweep); and the
    unconfirmed ones."""
    out = {"active": 0, "courtesy": 0, "expired": 0,
           "unconfirmed": len(state.clients.unconfirmed)}
    leases = state.leases
    for client in state.clients.confirmed.values():
        if not leases.lapsed(client):
            out["active"] += 1
        elif client.has_state():
            out["courtesy"] += 1
        else:
            out["expired"] += 1
    return out


def headline(snap: Snapshot) -> dict[str, Any]:
    """The numbers `pynfsd status` shows beside its own (a JSON-friendly dict)."""
    drc = snap.drc or {}
    return {
        "ops": snap.stats.ops_total(),
        "rpc_calls": snap.calls_by_flavour(),
        "read_bytes": snap.stats.read_bytes,
        "write_bytes": snap.stats.write_bytes,
        "clients_by_state": dict(snap.clients),
        "opens": snap.state["opens"],
        "locks": snap.state["locks"],
        "drc_hits": drc.get("hits", 0),
    }
