"""Lease arithmetic and courtesy bounds for the state manager (RFC 7530 §9.5, §9.6.3.1),
and the admin views of clients and state counts.

A client's lease runs until `client.expires`, pushed `enforced_lease` seconds ahead by every
renewal; it never lapses while pinned by a COMPOUND in progress.  The enforced lease is the
announced one plus one small margin, `lease_margin` (10 % of the lease, at most 2 s), for
network and scheduling delays: every place that computes an expiry (leases, the sweep, the
lease left shown by `pynfsd clients`, the grace period's wait for silent clients) uses
`enforced_lease`, and no other factor.  A lapsed client that still
holds opens is *courteous* (§9.6.3.1) for at most `courtesy_limit` seconds, and at most
`max_courteous` clients are; what the state manager does with lapsed and courteous clients
is described in `pynfsd.nfs4.state`.  Pure arithmetic on the injected clock: no I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass

from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.state.locks import count_locks
from pynfsd.nfs4.state.owners import Client
from pynfsd.nfs4.state.types import ClientInfo, StateCounts

log = logging.getLogger("pynfsd.nfs4.state")

LEASE_MARGIN_SHARE = 0.1  # the margin is at most this share of the announced lease ...
LEASE_MARGIN_MAX = 2.0  # ... and at most this many seconds
COURTESY_LIMIT = 24 * 3600.0  # seconds a lapsed client's state is kept at most (§9.6.3.1)
MAX_COURTEOUS = 1024  # courteous clients kept at most; the longest-lapsed go first beyond
EXPIRED = E.NFS4ERR_EXPIRED.status
ADMIN_REVOKED = E.NFS4ERR_ADMIN_REVOKED.status
REPLACED = E.NFS4ERR_STALE_CLIENTID.status  # tombstone of an incarnation its client replaced


def lease_margin(lease_time: float) -> float:
    """Seconds a lease is enforced beyond the announced `lease_time`: min(10 %, 2 s).

    Enough for a renewal delayed in the network or a busy server; small, because every
    extra second is one in which a crashed client's opens and locks block everyone else
    (knfsd enforces the lease itself, its laundromat adding a delay of the same order)."""
    return min(lease_time * LEASE_MARGIN_SHARE, LEASE_MARGIN_MAX)


def enforced_lease(lease_time: float) -> float:
    """The lease the server enforces for an announced `lease_time` (§9.5)."""
    return lease_time + lease_margin(lease_time)


@dataclass(slots=True)
class Leases:
    """When leases lapse (`enforced_lease` seconds after a renewal, on `clock`) and how long
    lapsed clients are kept as a courtesy (at most `courtesy_limit` seconds, `max_courteous`
    clients)."""

    clock: Callable[[], float]
    enforced_lease: float
    courtesy_limit: float = COURTESY_LIMIT
    max_courteous: int = MAX_COURTEOUS

    def renew(self, client: Client) -> None:
        client.expires = self.clock() + self.enforced_lease  # §9.5
        client.courteous = False

    def lapsed(self, client: Client) -> bool:
        return client.pins == 0 and self.clock() >= client.expires

    def courteous(self, client: Client) -> bool:
        """Lapsed but still holding state within the courtesy bound (§9.6.3.1)."""
        return (
            self.lapsed(client)
            and self.clock() < client.expires + self.courtesy_limit
            and client.has_state()
        )

    def over_bound(self, courteous: list[Client]) -> list[Client]:
        """Mark (and log) newly courteous clients; return those beyond `max_courteous`,
        longest-lapsed first, whose leases must now be cancelled."""
        for client in courteous:
            if not client.courteous:
                client.courteous = True
                log.info(
                    "lease of client %r expired; its state is kept as a courtesy until "
                    "another client conflicts with it",
                    client.ownerid,
                )
        overflow = len(courteous) - self.max_courteous
        if overflow <= 0:
            return []
        excess = sorted(courteous, key=lambda c: c.expires)[:overflow]
        log.info("%d courteous clients, at most %d kept", len(courteous), self.max_courteous)
        return excess


def tombstone_error(status: int | None) -> E.NFS4Error:
    """The error for a stateid of a client that is gone, by its tombstone's status."""
    if status == ADMIN_REVOKED:
        return E.NFS4ERR_ADMIN_REVOKED()  # §9.8
    if status in (EXPIRED, REPLACED):
        # §9.1.4.4: state lost to lease expiration, or (as knfsd and Ganesha answer) to
        # the client's own reboot (§9.1.1: the new incarnation's confirm released it)
        return E.NFS4ERR_EXPIRED()
    return E.NFS4ERR_BAD_STATEID()


def client_info(c: Client, now: float) -> ClientInfo:
    opens = sum(len(oo.opens) for oo in c.open_owners.values())
    locks = count_locks(ls for lo in c.lock_owners.values() for ls in lo.lock_states)
    left = max(0.0, c.expires - now)
    delegs = len(c.delegations)
    courteous = c.confirmed and c.pins == 0 and now >= c.expires and opens + delegs > 0
    return ClientInfo(
        c.clientid,
        c.ownerid,
        c.principal,
        c.client_addr,
        c.confirmed,
        left,
        opens,
        locks,
        courteous,
        delegs,
    )


def state_counts(confirmed: Collection[Client], unconfirmed: int) -> StateCounts:
    """How much state the confirmed clients hold (for `pynfsd status` and tests)."""
    owners = [oo for c in confirmed for oo in c.open_owners.values()]
    lock_sets = [ls for c in confirmed for lo in c.lock_owners.values() for ls in lo.lock_states]
    return StateCounts(
        clients=len(confirmed),
        unconfirmed_clients=unconfirmed,
        open_owners=len(owners),
        opens=sum(len(oo.opens) for oo in owners),
        lock_states=len(lock_sets),
        locks=count_locks(lock_sets),
        delegations=sum(len(c.delegations) for c in confirmed),
    )
