"""Principal → identity mapping (pynfsd.gss.principals): rules, cache, map file."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from pynfsd.gss.principals import (
    ROOT,
    Identity,
    PrincipalMapError,
    PrincipalMapper,
    load_map_file,
    passwd_identity,
    split_principal,
)
from tests.clock import ManualClock

ANON = Identity(65534, 65534)


class Passwd:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, user: str) -> Identity | None:
        self.calls.append(user)
        return {"alice": Identity(1000, 100, (100, 27))}.get(user)


def test_split_principal() -> None:
    assert split_principal("nfs/host.example@EX.COM") == (["nfs", "host.example"], "EX.COM")
    assert split_principal("alice") == (["alice"], "")


@pytest.mark.parametrize("principal, expected", [
    ("alice@EX.COM", Identity(1000, 100, (100, 27))),
    ("nfs/client.example@EX.COM", ROOT),
    ("host/client.example@EX.COM", ROOT),
    ("root/client.example@EX.COM", ROOT),
    ("zed@EX.COM", ANON),  # no such local user
    ("alice@OTHER.COM", ANON),  # foreign realm
    ("alice/admin@EX.COM", ANON),  # another instance
    ("@EX.COM", ANON),
])
def test_rules(principal: str, expected: Identity) -> None:
    m = PrincipalMapper(local_realms=["EX.COM"], passwd=Passwd())
    assert m.lookup(principal) == expected


def test_machine_policy_anon_and_static_override() -> None:
    m = PrincipalMapper(machine_policy="anon", passwd=Passwd(),
                        static={"nfs/special@EX.COM": Identity(5, 6, (7,))})
    assert m.lookup("nfs/client@EX.COM") == ANON
    assert m.lookup("nfs/special@EX.COM") == Identity(5, 6, (7,))
    with pytest.raises(ValueError):
        PrincipalMapper(machine_policy="admin")


def test_any_realm_by_default() -> None:
    assert PrincipalMapper(passwd=Passwd()).lookup("alice@ANY.REALM").uid == 1000


def test_cache_expires_on_the_injected_clock() -> None:
    passwd, clock = Passwd(), ManualClock(0.0)
    m = PrincipalMapper(passwd=passwd, clock=clock, ttl=10)
    m.lookup("alice@R")
    m.lookup("zed@R")
    m.lookup("alice@R")
    m.lookup("zed@R")  # negative results are cached too
    assert passwd.calls == ["alice", "zed"]
    clock.now = 10
    m.lookup("alice@R")
    assert passwd.calls == ["alice", "zed", "alice"]


def test_cache_is_bounded() -> None:
    passwd = Passwd()
    m = PrincipalMapper(passwd=passwd, max_entries=2)
    for name in ("a@R", "b@R", "c@R", "a@R"):
        m.lookup(name)
    assert passwd.calls == ["a", "b", "c", "a"]


def test_passwd_identity_for_root() -> None:
    ident = passwd_identity(pwd.getpwuid(0).pw_name)
    assert ident is not None and ident.uid == 0 and ident.gid in ident.gids
    assert passwd_identity("no-such-user-pynfsd") is None


def test_map_file(tmp_path: Path) -> None:
    f = tmp_path / "map"
    root = pwd.getpwuid(0).pw_name
    f.write_text(f"# comment\n\nalice@EX 1000:100:100,27\nsvc@EX  {root}  # trailing\nnum@EX 7:8\n")
    assert load_map_file(str(f)) == {
        "alice@EX": Identity(1000, 100, (100, 27)),
        "svc@EX": passwd_identity(root),
        "num@EX": Identity(7, 8, ()),
    }


@pytest.mark.parametrize("line", ["alice@EX", "a@EX 1:x", "a@EX 1:2:3:4", "a@EX -1:2",
                                  "a@EX no-such-user-pynfsd", "a b c"])
def test_map_file_errors_name_the_line(tmp_path: Path, line: str) -> None:
    f = tmp_path / "map"
    f.write_text("ok@EX 1:1\n" + line + "\n")
    with pytest.raises(PrincipalMapError, match=f"{os.fspath(f)}:2:"):
        load_map_file(str(f))
