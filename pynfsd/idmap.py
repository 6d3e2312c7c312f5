"""Identity mapping: uid/gid <-> ``owner``/``owner_group`` strings (RFC 7530 §5.9).

Theory of operation: replies carry ``name@domain`` (or, in ``numeric`` mode, the decimal id,
as knfsd does for AUTH_SYS); requests may carry ``name@domain``, a bare ``name`` (taken to be
in our domain) or a decimal id without leading zeros. Strings that cannot be translated raise
:class:`IdmapError`, which the NFS layer turns into NFS4ERR_BADOWNER (RFC 7530 §5.9).
Lookups go through injectable functions (the passwd and group databases by default) and are
cached, hits and misses alike, for ``ttl`` seconds of an injectable clock.
"""

from __future__ import annotations

import configparser
import grp
import pwd
import re
import socket
import time
from collections.abc import Callable
from typing import Final, TypeVar

DEFAULT_CONF = "/etc/idmapd.conf"
DEFAULT_TTL = 600.0
_MAX_ID = 2**32 - 1
#: RFC 7530 §5.9: "ASCII-encoded decimal numeric values with no leading zeros".
_NUMERIC_RE = re.compile(r"0|[1-9][0-9]*")

K = TypeVar("K")
V = TypeVar("V")
E = TypeVar("E")


class IdmapError(ValueError):
    """A user or group string with no translation (NFS4ERR_BADOWNER)."""


#: What the passwd and group lookups raise for a key with no entry: by id, KeyError or (past
#: the C type) OverflowError; by name, KeyError or (a NUL in the name) ValueError.
_NO_ID: Final = (KeyError, OverflowError)
_NO_NAME: Final = (KeyError, ValueError)


def _lookup(
    get: Callable[[K], E], missing: tuple[type[Exception], ...], field: Callable[[E], V]
) -> Callable[[K], V | None]:
    """A lookup of `field` of the database entry ``get(key)``: None when `get` raises one of
    `missing`."""

    def lookup(key: K) -> V | None:
        try:
            entry = get(key)
        except missing:
            return None
        return field(entry)

    return lookup


_passwd_name: Callable[[int], str | None] = _lookup(pwd.getpwuid, _NO_ID, lambda e: e.pw_name)
_passwd_uid: Callable[[str], int | None] = _lookup(pwd.getpwnam, _NO_NAME, lambda e: e.pw_uid)
_group_name: Callable[[int], str | None] = _lookup(grp.getgrgid, _NO_ID, lambda e: e.gr_name)
_group_gid: Callable[[str], int | None] = _lookup(grp.getgrnam, _NO_NAME, lambda e: e.gr_gid)


def conf_domain(conf_path: str = DEFAULT_CONF) -> str | None:
    """``Domain =`` from the ``[General]`` section of an idmapd.conf, or None."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        with open(conf_path, encoding="utf-8", errors="replace") as f:
            parser.read_file(f)
    except (OSError, configparser.Error):
        return None
    for section in parser.sections():
        if section.lower() == "general":
            value = parser[section].get("domain", "").strip()
            return value or None
    return None


def default_domain(conf_path: str = DEFAULT_CONF, fqdn: Callable[[], str] = socket.getfqdn) -> str:
    """idmapd.conf's Domain, else the host's DNS domain, else ``localdomain`` (lower case)."""
    domain = conf_domain(conf_path)
    if domain is None:
        _, dot, rest = fqdn().partition(".")
        domain = rest if dot and rest else None
    return (domain or "localdomain").rstrip(".").lower()


class _TtlCache:
    """A dict whose entries expire ``ttl`` seconds after they were stored."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self.ttl, self.clock = ttl, clock
        self._data: dict[object, tuple[float, object]] = {}

    def get(self, key: K, compute: Callable[[K], V]) -> V:
        now = self.clock()
        hit = self._data.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]  # type: ignore[return-value]
        value = compute(key)
        self._data[key] = (now + self.ttl, value)
        return value

    def clear(self) -> None:
        self._data.clear()


class IdMapper:
    """uid/gid <-> ``name@domain``; see the module docstring."""

    def __init__(
        self,
        domain: str | None = None,
        *,
        numeric: bool = False,
        user_name: Callable[[int], str | None] = _passwd_name,
        user_id: Callable[[str], int | None] = _passwd_uid,
        group_name: Callable[[int], str | None] = _group_name,
        group_id: Callable[[str], int | None] = _group_gid,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.domain = (domain if domain is not None else default_domain()).rstrip(".").lower()
        self.numeric = numeric
        self._user_name, self._user_id = user_name, user_id
        self._group_name, self._group_id = group_name, group_id
        self._cache = _TtlCache(ttl, clock)

    def user_to_name(self, uid: int) -> str:
        """The ``owner`` string for ``uid``: ``name@domain``, or the number when unknown."""
        return self._to_name("u", uid, self._user_name)

    def group_to_name(self, gid: int) -> str:
        """The ``owner_group`` string for ``gid``."""
        return self._to_name("g", gid, self._group_name)

    def name_to_uid(self, owner: str, *, numeric_ok: bool = True) -> int:
        """The uid for an ``owner`` string; IdmapError when it has no translation.

        Pass ``numeric_ok=False`` under Kerberos: RFC 7530 §5.9 says the server SHOULD then
        reject the numeric form.
        """
        return self._to_id("u", owner, self._user_id, numeric_ok)

    def name_to_gid(self, group: str, *, numeric_ok: bool = True) -> int:
        """The gid for an ``owner_group`` string; IdmapError when it has no translation."""
        return self._to_id("g", group, self._group_id, numeric_ok)

    def flush(self) -> None:
        """Forget every cached translation."""
        self._cache.clear()

    def _to_name(self, kind: str, ident: int, lookup: Callable[[int], str | None]) -> str:
        if self.numeric:
            return str(ident)
        name = self._cache.get((kind, ident), lambda k: lookup(k[1]))
        # RFC 7530 §5.9: without a translation the string is sent without "@".
        return f"{name}@{self.domain}" if name is not None else str(ident)

    def _to_id(
        self, kind: str, text: str, lookup: Callable[[str], int | None], numeric_ok: bool
    ) -> int:
        if _NUMERIC_RE.fullmatch(text):
            if not numeric_ok:
                raise IdmapError(f"{text!r}: numeric ids are not accepted here (RFC 7530 §5.9)")
            return _checked_number(text)
        name, at, domain = text.rpartition("@") if "@" in text else (text, "", "")
        if at and domain.rstrip(".").lower() != self.domain:
            raise IdmapError(f"{text!r}: domain {domain!r} is not {self.domain!r}")
        if not name:
            raise IdmapError(f"{text!r}: empty name")
        ident = self._cache.get((kind, "name", name), lambda k: lookup(k[2]))
        if ident is None:
            raise IdmapError(f"{text!r}: unknown {'user' if kind == 'u' else 'group'}")
        return ident


def _checked_number(text: str) -> int:
    value = int(text)
    if value > _MAX_ID:
        raise IdmapError(f"{text!r}: id out of range")
    return value
