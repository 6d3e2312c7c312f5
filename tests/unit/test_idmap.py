"""Identity mapping: round trips, numeric forms, foreign domains, caching with expiry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pynfsd.idmap import IdmapError, IdMapper, conf_domain, default_domain
from tests.clock import ManualClock

USERS = {0: "root", 1000: "alice", 1001: "bob"}
GROUPS = {0: "root", 100: "users", 2000: "staff"}


class Db:
    """A passwd or group database that counts lookups."""

    def __init__(self, table: dict[int, str]) -> None:
        self.table = table
        self.calls = 0

    def name(self, ident: int) -> str | None:
        self.calls += 1
        return self.table.get(ident)

    def ident(self, name: str) -> int | None:
        self.calls += 1
        return next((i for i, n in self.table.items() if n == name), None)


def mapper(numeric: bool = False, clock: ManualClock | None = None) -> tuple[IdMapper, Db, Db]:
    users, groups = Db(dict(USERS)), Db(dict(GROUPS))
    m = IdMapper(
        "Example.ORG.",
        numeric=numeric,
        user_name=users.name,
        user_id=users.ident,
        group_name=groups.name,
        group_id=groups.ident,
        ttl=60.0,
        clock=clock or ManualClock(),
    )
    return m, users, groups


def test_domain_normalised() -> None:
    assert mapper()[0].domain == "example.org"


@pytest.mark.parametrize("uid", sorted(USERS))
def test_user_round_trip(uid: int) -> None:
    m, _, _ = mapper()
    name = m.user_to_name(uid)
    assert name == f"{USERS[uid]}@example.org"
    assert m.name_to_uid(name) == uid


@pytest.mark.parametrize("gid", sorted(GROUPS))
def test_group_round_trip(gid: int) -> None:
    m, _, _ = mapper()
    assert m.group_to_name(gid) == f"{GROUPS[gid]}@example.org"
    assert m.name_to_gid(m.group_to_name(gid)) == gid


def test_unknown_ids_become_numeric_strings() -> None:
    m, _, _ = mapper()
    # RFC 7530 §5.9: no translation -> a string without "@".
    assert m.user_to_name(4242) == "4242"
    assert m.group_to_name(4243) == "4243"
    assert m.name_to_uid("4242") == 4242


def test_numeric_mode() -> None:
    m, users, groups = mapper(numeric=True)
    assert (m.user_to_name(1000), m.group_to_name(100)) == ("1000", "100")
    assert users.calls == groups.calls == 0
    assert m.name_to_uid("alice@example.org") == 1000  # names are still accepted


@pytest.mark.parametrize(
    ("text", "uid"),
    [
        ("alice@example.org", 1000),
        ("alice@EXAMPLE.org", 1000),
        ("alice@example.org.", 1000),
        ("alice", 1000),
        ("1000", 1000),
        ("0", 0),
        ("4294967295", 4294967295),
    ],
)
def test_accepted_owner_strings(text: str, uid: int) -> None:
    assert mapper()[0].name_to_uid(text) == uid


@pytest.mark.parametrize(
    "text",
    [
        "alice@other.org",
        "mallory@example.org",
        "mallory",
        "@example.org",
        "",
        "01000",  # leading zeros are not the numeric form (RFC 7530 §5.9)
        "-1",
        "4294967296",
        "1000@other.org",
        "Alice@example.org",
    ],
)
def test_rejected_owner_strings(text: str) -> None:
    m, _, _ = mapper()
    with pytest.raises(IdmapError):
        m.name_to_uid(text)
    with pytest.raises(IdmapError):
        m.name_to_gid(text)


def test_numeric_refused_when_asked() -> None:
    m, _, _ = mapper()
    with pytest.raises(IdmapError, match="numeric"):
        m.name_to_uid("1000", numeric_ok=False)
    with pytest.raises(IdmapError):
        m.name_to_gid("100", numeric_ok=False)
    assert m.name_to_uid("alice@example.org", numeric_ok=False) == 1000


def test_cache_expires() -> None:
    clock = ManualClock()
    m, users, _ = mapper(clock=clock)
    assert m.user_to_name(1000) == "alice@example.org"
    users.table[1000] = "alicia"
    clock.now += 59.0
    assert m.user_to_name(1000) == "alice@example.org"
    assert users.calls == 1
    clock.now += 2.0
    assert m.user_to_name(1000) == "alicia@example.org"
    assert users.calls == 2


def test_misses_are_cached_and_flush() -> None:
    m, users, _ = mapper()
    for _ in range(3):
        with pytest.raises(IdmapError):
            m.name_to_uid("carol")
    assert users.calls == 1
    users.table[1002] = "carol"
    m.flush()
    assert m.name_to_uid("carol") == 1002


def test_users_and_groups_cached_separately() -> None:
    m, _, _ = mapper()
    assert m.user_to_name(0) == "root@example.org"
    assert m.group_to_name(100) == "users@example.org"
    with pytest.raises(IdmapError):
        m.name_to_uid("users")
    assert m.name_to_gid("users") == 100


def test_conf_domain(tmp_path: Path) -> None:
    conf = tmp_path / "idmapd.conf"
    conf.write_text("[General]\n# comment\nVerbosity = 0\nDomain = Lab.Example.COM\n")
    assert conf_domain(str(conf)) == "Lab.Example.COM"
    assert default_domain(str(conf), fqdn=lambda: "h.other.org") == "lab.example.com"


def test_conf_without_domain_falls_back_to_dns(tmp_path: Path) -> None:
    conf = tmp_path / "idmapd.conf"
    conf.write_text("[Mapping]\nNobody-User = nobody\n")
    assert conf_domain(str(conf)) is None
    assert default_domain(str(conf), fqdn=lambda: "nfs1.corp.example.net") == "corp.example.net"


def test_default_domain_fallbacks(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.conf")
    assert default_domain(missing, fqdn=lambda: "vm") == "localdomain"
    assert default_domain(missing, fqdn=lambda: "vm.") == "localdomain"
    bad = tmp_path / "bad.conf"
    bad.write_text("not an ini file\n")
    assert default_domain(str(bad), fqdn=lambda: "a.b") == "b"


def test_real_passwd_database() -> None:
    # The system databases are the defaults; root and uid 0 exist wherever tests run as root.
    m = IdMapper("example.org")
    assert m.user_to_name(0) == "root@example.org"
    assert m.name_to_uid("root@example.org") == 0
    assert m.name_to_gid(m.group_to_name(os.getgid())) == os.getgid()
