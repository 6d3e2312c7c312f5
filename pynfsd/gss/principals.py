"""Kerberos principal → local uid, gid and groups (what knfsd gets from its gssd/gssproxy upcall).

Rules, first match wins:
1. a static map (`load_map_file`): `principal  user` or `principal  uid:gid[:g1,g2,...]`;
2. machine principals `nfs/host@REALM`, `host/host@REALM`, `root/host@REALM` follow
   `machine_policy`: "root" (default) maps them to uid 0 / gid 0 with no groups, as the Linux
   server treats a client's machine credential (so an export's root_squash still squashes
   them); "anon" maps them to the anonymous identity;
3. `user@REALM` with REALM in `local_realms` (None: any realm the KDC vouches for) → the local
   user `user` through the passwd database and getgrouplist(3), as idmapd's nsswitch method;
4. anything else (unknown user, foreign realm, other instances like `user/admin`) → anonymous.

Lookups go through NSS and may block (LDAP, sssd): call `lookup` off the event loop.  Results,
negative ones included, are cached for `ttl` seconds on the injected clock, bounded in count.
"""

from __future__ import annotations

import logging
import os
import pwd
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

NOBODY = 65534
MACHINE_SERVICES = frozenset({"nfs", "host", "root"})
MACHINE_POLICIES = ("root", "anon")


@dataclass(frozen=True, slots=True)
class Identity:
    uid: int
    gid: int
    gids: tuple[int, ...] = ()


ROOT = Identity(0, 0, ())


class PrincipalMapError(ValueError):
    """A static map file line that cannot be parsed."""


def split_principal(principal: str) -> tuple[list[str], str]:
    """'nfs/host@REALM' → (['nfs', 'host'], 'REALM'); the realm is '' when absent."""
    name, _, realm = principal.rpartition("@") if "@" in principal else (principal, "", "")
    return name.split("/"), realm


def passwd_identity(user: str) -> Identity | None:
    """The local user's uid, primary gid and all groups (getgrouplist), or None."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    try:
        groups = os.getgrouplist(user, pw.pw_gid)
    except OSError:
        groups = [pw.pw_gid]
    return Identity(pw.pw_uid, pw.pw_gid, tuple(groups))


class PrincipalMapper:
    """Maps initiator names to identities, with an expiring cache."""

    def __init__(
        self,
        *,
        static: dict[str, Identity] | None = None,
        machine_policy: str = "root",
        local_realms: Iterable[str] | None = None,
        anon: Identity = Identity(NOBODY, NOBODY),
        ttl: float = 600.0,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
        passwd: Callable[[str], Identity | None] = passwd_identity,
    ) -> None:
        if machine_policy not in MACHINE_POLICIES:
            raise ValueError(f"machine policy must be one of {MACHINE_POLICIES}")
        self.static = dict(static or {})
        self.machine_policy = machine_policy
        self.local_realms = None if local_realms is None else frozenset(local_realms)
        self.anon = anon
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._passwd = passwd
        self._cache: OrderedDict[str, tuple[float, Identity]] = OrderedDict()

    def lookup(self, principal: str) -> Identity:
        """The identity for `principal` (blocking on a cache miss: NSS)."""
        now = self._clock()
        hit = self._cache.get(principal)
        if hit is not None and hit[0] > now:
            return hit[1]
        ident = self.resolve(principal)
        self._cache[principal] = (now + self.ttl, ident)
        self._cache.move_to_end(principal)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return ident

    def resolve(self, principal: str) -> Identity:
        """Apply the rules without the cache."""
        if principal in self.static:
            return self.static[principal]
        parts, realm = split_principal(principal)
        if len(parts) == 2 and parts[0] in MACHINE_SERVICES:
            return ROOT if self.machine_policy == "root" else self.anon
        if len(parts) != 1 or not parts[0] or not self._realm_ok(realm):
            return self._anonymous(principal, "not a local user principal")
        ident = self._passwd(parts[0])
        return ident if ident is not None else self._anonymous(principal, "no such local user")

    def _realm_ok(self, realm: str) -> bool:
        return self.local_realms is None or realm in self.local_realms

    def _anonymous(self, principal: str, why: str) -> Identity:
        log.info("principal %s maps to the anonymous user: %s", principal, why)
        return self.anon


def parse_map_line(line: str, passwd: Callable[[str], Identity | None] = passwd_identity) -> tuple[str, Identity] | None:
    """One static map line → (principal, identity); None for blanks and comments."""
    text = line.split("#", 1)[0].strip()
    if not text:
        return None
    fields = text.split()
    if len(fields) != 2:
        raise PrincipalMapError(f"expected 'principal user' or 'principal uid:gid[:gids]': {line!r}")
    principal, target = fields
    if ":" not in target:
        ident = passwd(target)
        if ident is None:
            raise PrincipalMapError(f"no such local user {target!r}")
        return principal, ident
    return principal, _numeric_identity(target)


def _numeric_identity(target: str) -> Identity:
    parts = target.split(":")
    try:
        uid, gid = int(parts[0]), int(parts[1])
        gids = tuple(int(g) for g in parts[2].split(",") if g) if len(parts) == 3 else ()
    except (ValueError, IndexError):
        raise PrincipalMapError(f"bad uid:gid[:gids] {target!r}") from None
    if len(parts) > 3 or min((uid, gid, *gids)) < 0 or max((uid, gid, *gids)) > 0xFFFFFFFF:
        raise PrincipalMapError(f"bad uid:gid[:gids] {target!r}")
    return Identity(uid, gid, gids)


def load_map_file(path: str) -> dict[str, Identity]:
    """A static principal map file (see the module docstring for the line format)."""
    out: dict[str, Identity] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            try:
                entry = parse_map_line(line)
            except PrincipalMapError as e:
                raise PrincipalMapError(f"{path}:{number}: {e}") from None
            if entry is not None:
                out[entry[0]] = entry[1]
    return out
