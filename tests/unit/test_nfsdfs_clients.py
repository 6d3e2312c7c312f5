"""The pieces of knfsd's `clients/<n>/states` lines (`pynfsd.nfsdfs.clients`): access and deny
words, the superblock word, the file name (last two components) and the stateid in hex; the
`info` address with the port of the client's SETCLIENTID; and that only the directories the
server is making can be made."""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest

from pynfsd.nfs4.state.types import Stateid
from pynfsd.nfsdfs.clients import (
    ClientDirs,
    last_two,
    rw,
    sockaddr_text,
    stateid_hex,
    superblock,
)
from pynfsd.nfsdfs.tree import Tree, TreeError
from tests.unit.state_support import make_world


def test_state_words_as_knfsd_prints_them() -> None:
    assert [rw(0), rw(1), rw(2), rw(3)] == ["--", "r-", "-w", "rw"]
    assert superblock(os.makedev(0xFD, 1), 1234) == "fd:01:1234"
    assert last_two("/srv/export/dir/a.txt") == "dir/a.txt" and last_two("/a") == "/a"
    assert last_two("") == ""
    assert stateid_hex(Stateid(2, bytes(range(12)))) == "0x00000002" + bytes(range(12)).hex()


def test_only_the_servers_own_client_directories_are_made() -> None:
    tree = Tree()
    dirs = ClientDirs(tree, state=None, backends=None, runner=None, clock=lambda: 0.0)
    with pytest.raises(TreeError) as e:
        dirs.make_dir(dirs.folder, "1")
    assert e.value.errno == errno.EPERM
    dirs._coming["1"] = 0x1234
    node = dirs.make_dir(dirs.folder, "1")
    assert sorted(n.name for n in tree.listdir(node.inode)) == ["ctl", "info", "states"]
    with pytest.raises(TreeError):  # made already
        dirs.make_dir(dirs.folder, "1")
    with pytest.raises(TreeError):  # not in clients/
        dirs.make_dir(node, "1")


def test_addresses_with_their_port_as_knfsd_prints_them() -> None:
    assert sockaddr_text("192.0.2.1", 851) == "192.0.2.1:851"
    assert sockaddr_text("2001:db8:0:0:0:0:0:1", 851) == "[2001:db8::1]:851"
    assert sockaddr_text("fe80::1%eth0", 2049) == "[fe80::1]:2049"  # %pISpc: no scope
    assert sockaddr_text("2001:db8:0:1:1:1:1:1", 7) == "[2001:db8:0:1:1:1:1:1]:7"  # one 0: kept


def test_info_gives_the_port_the_client_called_setclientid_from() -> None:
    world = make_world()
    sm = world.sm
    clientid, confirm = sm.setclientid(b"verf0001", b"client-A", "root", None, "192.0.2.7",
                                       client_port=851)
    sm.setclientid_confirm(clientid, confirm, "root")
    dirs = ClientDirs(Tree(), state=sm, backends=None, runner=None, clock=world.clock)
    assert 'address: "192.0.2.7:851"' in dirs.info(clientid).decode().splitlines()
    # a callback update from a new connection (same verifier): the record's address is its
    again, confirm = sm.setclientid(b"verf0001", b"client-A", "root", None, "2001:db8::7",
                                    client_port=1023)
    assert again == clientid
    sm.setclientid_confirm(clientid, confirm, "root")
    assert 'address: "[2001:db8::7]:1023"' in dirs.info(clientid).decode().splitlines()


class _Runner:
    async def run(self, fn: Any, *args: Any) -> Any:
        return fn(*args)


async def test_delegations_are_listed_as_knfsd_lists_them() -> None:
    """`type: deleg, access: r|w`, the file's superblock and name, no owner (knfsd)."""
    from tests.unit.test_deleg_state import READ, WRITE, F, G, setup

    s = setup()
    r = s.open(s.a, F, READ)
    w = s.open(s.a, G, WRITE)
    assert r is not None and w is not None
    dirs = ClientDirs(Tree(), state=s.sm, backends={}, runner=_Runner(), clock=lambda: 0.0)
    lines = (await dirs.states(s.a)).decode().splitlines()
    delegs = [line for line in lines if "type: deleg" in line]
    assert delegs == [
        f'- {stateid_hex(r.stateid())}: {{ type: deleg, access: r, superblock: "00:00:0", '
        'filename: "" }',
        f'- {stateid_hex(w.stateid())}: {{ type: deleg, access: w, superblock: "00:00:0", '
        'filename: "" }',
    ]
