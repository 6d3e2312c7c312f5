"""Client id negotiation: SETCLIENTID and SETCLIENTID_CONFIRM (RFC 7530 §16.33, §16.34).

Client records are indexed by the client id string x (`nfs_client_id4.id`, "ownerid") and by
the shorthand client id c.  There is at most one confirmed and one unconfirmed record per x.
A confirmed record is replaced only by SETCLIENTID_CONFIRM of a newer unconfirmed record,
which drops the old incarnation's state (§16.34.5, §9.1.1) through the `drop` callback.

Client ids are `boot_tag << 32 | counter`: ids handed out before a restart carry another boot
tag and get NFS4ERR_STALE_CLIENTID.  Clients whose state was dropped for lease expiry or
revocation leave a small bounded tombstone so that their ids get NFS4ERR_EXPIRED (stateids:
NFS4ERR_EXPIRED / NFS4ERR_ADMIN_REVOKED) rather than a misleading STALE/BAD error.  An
incarnation replaced by the client's reboot leaves one too (`REPLACED`): its client id is
NFS4ERR_STALE_CLIENTID and its stateids NFS4ERR_EXPIRED, as knfsd and Ganesha answer.  At
most `MAX_TOMBSTONES` are kept, the oldest forgotten first.

Colliding identifiers (`CollisionTracker`).  Machines that share one client id string (containers
with one hostname: Linux builds the id from the hostname unless `nfs4_unique_id` is set) keep
replacing each other's records.  A SETCLIENTID whose (address, principal) differs from that of a
live record for the same x (a confirmed client within its lease, or a pending unconfirmed one)
is counted as a collision; the first one logs a warning naming the id, the addresses and the
principals, and later ones at most one warning per `warn_interval`.  Only ids that collided are
remembered (a bounded LRU), so the tracker costs nothing per ordinary client.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.state.leases import REPLACED
from pynfsd.nfs4.state.owners import Client
from pynfsd.nfs4.state.store import ClientStore
from pynfsd.nfs4.state.types import SetClientIdResult

MAX_TOMBSTONES = 4096
MAX_UNCONFIRMED = 4096
MAX_COLLIDING_IDS = 4096  # ids whose collision history is kept (LRU)
MAX_USERS_PER_ID = 8  # (address, principal) pairs remembered per colliding id
COLLISION_WARN_INTERVAL = 3600.0  # seconds between two warnings about one id
LOG_ID_MAX = 128  # characters of a client id string shown in a log line

log = logging.getLogger("pynfsd.nfs4.state_clients")  # the name operators filter on


class ClientTable:
    """The client records of one server boot (§16.33.5 notation in the comments)."""

    def __init__(
        self,
        boot_tag: int,
        clock: Callable[[], float],
        rng: Callable[[int], bytes],
        lease: float,
        store: ClientStore,
        drop: Callable[[Client, int], None],
        *,
        collision_warn_interval: float = COLLISION_WARN_INTERVAL,
    ) -> None:
        self.boot_tag = boot_tag
        self._clock = clock
        self._rng = rng
        self._lease = lease
        self._store = store
        self._drop = drop  # drop(client, status): release its state, leave a tombstone
        self._next = 1
        self.confirmed: dict[int, Client] = {}
        self.unconfirmed: dict[int, Client] = {}
        self.confirmed_by_name: dict[bytes, Client] = {}
        self.unconfirmed_by_name: dict[bytes, Client] = {}
        self.tombstones: OrderedDict[int, int] = OrderedDict()
        self.buried: Counter[int] = Counter()  # clients whose state was dropped, by status
        self.collisions = CollisionTracker(collision_warn_interval)

    # -- ids ------------------------------------------------------------------------------

    def new_clientid(self) -> int:
        clientid = self.boot_tag << 32 | self._next
        self._next = self._next % 0xFFFFFFFF + 1
        return clientid

    def new_confirm(self, *avoid: bytes) -> bytes:
        """A fresh setclientid_confirm verifier, different from `avoid` (t != s)."""
        while True:
            confirm = self._rng(8)
            if confirm not in avoid:
                return confirm

    def is_this_boot(self, clientid: int) -> bool:
        return clientid >> 32 == self.boot_tag

    def bury(self, clientid: int, status: int) -> None:
        self.tombstones[clientid] = status
        self.buried[status] += 1
        while len(self.tombstones) > MAX_TOMBSTONES:
            self.tombstones.popitem(last=False)

    # -- SETCLIENTID ----------------------------------------------------------------------

    def setclientid(
        self,
        verifier: bytes,
        ownerid: bytes,
        principal: str,
        callback: object,
        client_addr: str,
        client_port: int = 0,
    ) -> SetClientIdResult:
        """Process SETCLIENTID { v, x, k } per every case of §16.33.5 (the DRC is the RPC layer's)."""
        conf = self.confirmed_by_name.get(ownerid)
        self._note_users(ownerid, client_addr, principal, conf)
        if conf is not None and conf.principal != principal and conf.has_state():
            raise E.NFS4ERR_CLID_INUSE(value=client_address(conf))  # §16.33.5, §9.1.2
        old_unconf = self.unconfirmed_by_name.pop(ownerid, None)
        if old_unconf is not None:
            del self.unconfirmed[old_unconf.clientid]  # any unconfirmed record for x is replaced
        if conf is not None and conf.verifier == verifier and conf.principal == principal:
            clientid = conf.clientid  # same v: probable callback update, keep c
        else:
            clientid = self.new_clientid()  # new client, reboot (v != u) or replacement: d != c
        avoid = [r.confirm for r in (conf, old_unconf) if r is not None]
        record = Client(
            clientid, ownerid, verifier, principal, callback, client_addr, self.new_confirm(*avoid)
        )
        record.client_port = client_port
        record.expires = self._clock() + self._lease  # unconfirmed records are not kept forever
        self._add_unconfirmed(record)
        return SetClientIdResult(clientid, record.confirm)

    def _note_users(self, ownerid: bytes, addr: str, principal: str, conf: Client | None) -> None:
        """Count a collision when a live record for x came from elsewhere (module docstring)."""
        now = self._clock()
        records = (conf, self.unconfirmed_by_name.get(ownerid))
        live = [(r.client_addr, r.principal) for r in records if r is not None and is_live(r, now)]
        self.collisions.observe(ownerid, (addr, principal), live, now)

    def _add_unconfirmed(self, record: Client) -> None:
        if len(self.unconfirmed) >= MAX_UNCONFIRMED:
            oldest = next(iter(self.unconfirmed.values()))
            self._forget_unconfirmed(oldest)
        self.unconfirmed[record.clientid] = record
        self.unconfirmed_by_name[record.ownerid] = record

    def _forget_unconfirmed(self, record: Client) -> None:
        self.unconfirmed.pop(record.clientid, None)
        if self.unconfirmed_by_name.get(record.ownerid) is record:
            del self.unconfirmed_by_name[record.ownerid]

    # -- SETCLIENTID_CONFIRM --------------------------------------------------------------

    def confirm(self, clientid: int, confirm: bytes, principal: str) -> Client:
        """Process SETCLIENTID_CONFIRM { c, s } per every case of §16.34.5."""
        conf = self.confirmed.get(clientid)
        unconf = self.unconfirmed.get(clientid)
        for record in (unconf, conf):
            if record is not None and record.principal != principal:
                raise E.NFS4ERR_CLID_INUSE(value=client_address(record))  # §16.34.5
        if unconf is None or unconf.confirm != confirm:
            if conf is not None and conf.confirm == confirm:
                return conf  # retry of a confirm whose reply was lost: state intact
            raise E.NFS4ERR_STALE_CLIENTID()  # no record { *, *, c, *, s }
        if conf is not None:
            self._forget_unconfirmed(unconf)
            return self._update_callback(conf, unconf)
        return self._confirm_new(unconf)

    def _update_callback(self, conf: Client, unconf: Client) -> Client:
        """Unconfirmed { v, x, c, k, s } + confirmed { v, x, c, l, t }: take k, keep state."""
        conf.callback = unconf.callback
        conf.confirm = unconf.confirm
        conf.client_addr, conf.client_port = unconf.client_addr, unconf.client_port
        return conf

    def _confirm_new(self, unconf: Client) -> Client:
        """No confirmed c: confirm { *, x, c, k, s }; an old confirmed { *, x, d, *, t } goes."""
        old = self.confirmed_by_name.get(unconf.ownerid)
        if old is not None:
            if old.principal != unconf.principal and old.has_state():
                raise E.NFS4ERR_CLID_INUSE(value=client_address(old))  # §9.1.2
            self.remove_confirmed(old)
            self._drop(old, REPLACED)  # §16.34.5: MUST remove x's relevant leased state
        self._forget_unconfirmed(unconf)
        unconf.confirmed = True
        unconf.expires = self._clock() + self._lease
        self.confirmed[unconf.clientid] = unconf
        self.confirmed_by_name[unconf.ownerid] = unconf
        self._store.client_confirmed(unconf.ownerid, unconf.principal)
        return unconf

    def remove_confirmed(self, client: Client) -> None:
        self.confirmed.pop(client.clientid, None)
        if self.confirmed_by_name.get(client.ownerid) is client:
            del self.confirmed_by_name[client.ownerid]

    # -- lookup ---------------------------------------------------------------------------

    def lookup(self, clientid: int) -> Client:
        """The confirmed client for `clientid`, or the error §9.1.2/§9.6 prescribes."""
        client = self.confirmed.get(clientid)
        if client is not None:
            return client
        if self.tombstones.get(clientid, REPLACED) != REPLACED:
            raise E.NFS4ERR_EXPIRED()  # its lease expired or it was revoked
        raise E.NFS4ERR_STALE_CLIENTID()  # another boot, unconfirmed, replaced, or forgotten

    def expire_unconfirmed(self, now: float) -> None:
        for record in [r for r in self.unconfirmed.values() if r.expires <= now]:
            self._forget_unconfirmed(record)


def client_address(client: Client) -> tuple[str, str]:
    """The clientaddr4 (r_netid, r_addr) payload of NFS4ERR_CLID_INUSE."""
    netid = "tcp6" if ":" in client.client_addr else "tcp"
    return (netid, client.client_addr)


def is_live(record: Client, now: float) -> bool:
    """A record whose owner is still around: within its lease, or in use by a COMPOUND."""
    return record.expires > now or record.pins > 0


# -- colliding client ids ---------------------------------------------------------------------

User = tuple[str, str]  # (client address, principal)


@dataclass(slots=True)
class Collisions:
    """What is known about one client id string that more than one machine uses."""

    users: OrderedDict[User, float] = field(default_factory=OrderedDict)  # -> last seen
    count: int = 0
    warned_at: float | None = None
    warned_count: int = 0  # `count` when the last warning was logged


class CollisionTracker:
    """Counts SETCLIENTIDs that collide with a live record of another user of the same id."""

    def __init__(self, warn_interval: float = COLLISION_WARN_INTERVAL) -> None:
        self.warn_interval = warn_interval
        self.ids: OrderedDict[bytes, Collisions] = OrderedDict()
        self.total = 0

    def observe(self, ownerid: bytes, user: User, live: Iterable[User], now: float) -> bool:
        """Note a SETCLIENTID of `ownerid` by `user`; True (and counted) if it collides."""
        others = [u for u in live if u != user]
        entry = self.ids.get(ownerid)
        if not others:
            if entry is not None:
                remember(entry, user, now)
            return False
        if entry is None:
            entry = self.ids[ownerid] = Collisions()
            while len(self.ids) > MAX_COLLIDING_IDS:
                self.ids.popitem(last=False)
        self.ids.move_to_end(ownerid)
        for other in others:
            entry.users.setdefault(other, now)
        remember(entry, user, now)
        entry.count += 1
        self.total += 1
        self._maybe_warn(ownerid, entry, now)
        return True

    def count(self, ownerid: bytes) -> int:
        entry = self.ids.get(ownerid)
        return 0 if entry is None else entry.count

    def _maybe_warn(self, ownerid: bytes, entry: Collisions, now: float) -> None:
        """One warning per id, then at most one per `warn_interval` (never per SETCLIENTID)."""
        if entry.warned_at is not None and now - entry.warned_at < self.warn_interval:
            return
        log.warning("%s", collision_message(ownerid, entry))
        entry.warned_at, entry.warned_count = now, entry.count


def remember(entry: Collisions, user: User, now: float) -> None:
    entry.users[user] = now
    entry.users.move_to_end(user)
    while len(entry.users) > MAX_USERS_PER_ID:
        entry.users.popitem(last=False)


def collision_message(ownerid: bytes, entry: Collisions) -> str:
    users = [f"{addr} ({principal})" for addr, principal in entry.users]
    who = ", ".join(users[:-1]) + " and " + users[-1]
    since = entry.count - entry.warned_count
    repeat = f" ({since} colliding SETCLIENTIDs since the last warning)" if entry.warned_at is not None else ""
    return (
        f'client id "{printable_id(ownerid, LOG_ID_MAX)}" is used by {who}{repeat}: these look '
        "like different machines sharing one NFSv4 client identifier; give each a unique one "
        "(nfs4_unique_id / /sys/fs/nfs/net/nfs_client/identifier)"
    )


def printable_id(ownerid: bytes, limit: int | None = None) -> str:
    """A client id string for people: printable ASCII as is, other bytes as \\xNN escapes."""
    out = []
    for b in ownerid:
        if b in (0x22, 0x5C):
            out.append("\\" + chr(b))
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    text = "".join(out)
    if limit is not None and len(text) > limit:
        return text[:limit] + "..."
    return text
