"""The admin view (issue 3 item 7): `AdminCore` over an in-process server with a manual clock,
and `AdminServer` on a real unix socket in a temporary directory (mode, atomic replacement,
SO_PEERCRED refusal of non-root peers, clean removal)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nfs4_fixtures import (
    LEASE,
    World,
    expect,
    export_root,
    make_world,
    mkdir,
    new_clientid,
    open_file,
    ops,
    user,
)

from pynfsd import admin
from pynfsd.client.nfs4 import Nfs4Client, Nfs4Failure, op
from pynfsd.gen import nfs4 as N
from pynfsd.nfs4.state.leases import enforced_lease

WEB = b"Linux NFSv4.0 web-1"
ENFORCED = enforced_lease(LEASE)
NOBODY = 65534


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path)
    yield w
    w.close()


def ask(core: admin.AdminCore, request: object) -> dict[str, Any]:
    reply = core.handle_line(json.dumps(request).encode() + b"\n")
    assert reply.endswith(b"\n") and reply.count(b"\n") == 1
    decoded: dict[str, Any] = json.loads(reply)
    return decoded


@dataclass
class Holder:
    c: Nfs4Client
    clientid: int
    fh: bytes
    open_sid: N.stateid4
    lock_sid: N.stateid4


async def holder(w: World, name: bytes, peer: str, uid: int, fname: bytes) -> Holder:
    """A client at `peer` (AUTH_SYS `uid`) holding one open and one lock on /export/fname."""
    if uid != 0:  # a directory the user may create files in
        admin_c = w.client()
        with contextlib.suppress(Nfs4Failure):
            await mkdir(admin_c, await export_root(admin_c, b"export"), b"pub", 0o777)
    c = w.client(user(uid), (peer, 900))
    clientid = await new_clientid(c, name)
    where = await export_root(c, b"export", *([b"pub"] if uid else []))
    o = await open_file(c, where, clientid, b"oo", fname)
    lock = ops.lock_new(N.WRITE_LT, 0, 10, o.seqid, o.stateid, 1, clientid, b"lo")
    _, resok = await c.check([op.putfh(o.fh), lock])
    return Holder(c, clientid, o.fh, o.stateid, resok.lock_stateid)


def row_of(rows: list[dict[str, Any]], clientid: int) -> dict[str, Any]:
    (row,) = [r for r in rows if r["clientid"] == f"{clientid:016x}"]
    return row


# ------------------------------------------------------------------ AdminCore


async def test_clients_lists_identity_lease_opens_locks(world: World) -> None:
    a = await holder(world, b"client-A", "10.0.0.5", 0, b"a")
    b = await holder(world, b'odd "id"\x01', "10.0.0.7", 1000, b"b")
    world.clock.advance(10)
    reply = ask(admin.AdminCore(world.server), {"cmd": "clients"})
    assert reply["ok"] is True
    ra, rb = row_of(reply["result"], a.clientid), row_of(reply["result"], b.clientid)
    assert ra == {"clientid": f"{a.clientid:016x}", "co_ownerid": "client-A",
                  "principal": "sys:0", "address": "10.0.0.5", "confirmed": True,
                  "lease_left": ENFORCED - 10, "courtesy": False, "opens": 1, "locks": 1,
                  "delegations": 0,
                  "collisions": 0}
    assert rb["co_ownerid"] == 'odd \\"id\\"\\x01'
    assert (rb["principal"], rb["address"], rb["opens"], rb["locks"]) == (
        "sys:1000", "10.0.0.7", 1, 1)


async def test_expired_client_shows_negative_lease_and_courtesy(world: World) -> None:
    a = await holder(world, b"client-A", "10.0.0.5", 0, b"a")
    world.clock.advance(ENFORCED + 30)
    (row,) = ask(admin.AdminCore(world.server), {"cmd": "clients"})["result"]
    assert row["clientid"] == f"{a.clientid:016x}"
    assert row["lease_left"] == -30
    assert row["courtesy"] is True
    assert admin.client_state(row) == "courtesy"


async def test_unconfirmed_client_is_listed_as_such(world: World) -> None:
    c = world.client(user(0), ("10.0.0.5", 900))
    (resok,) = await c.check([op.setclientid(b"v" * 8, b"pending")])
    (row,) = ask(admin.AdminCore(world.server), {"cmd": "clients"})["result"]
    assert row["clientid"] == f"{resok.clientid:016x}"
    assert (row["confirmed"], row["opens"], admin.client_state(row)) == (
        False, 0, "unconfirmed")


async def test_collisions_are_counted_per_id(world: World) -> None:
    c5 = world.client(user(0), ("10.0.0.5", 900))
    c7 = world.client(user(0), ("10.0.0.7", 900))
    await new_clientid(c5, WEB, b"verf-c5!")
    await new_clientid(c7, WEB, b"verf-c7!")  # replaces 10.0.0.5's record
    await new_clientid(c5, WEB, b"verf-c5!")  # ... and back
    await new_clientid(world.client(), b"alone")
    core = admin.AdminCore(world.server)
    rows = ask(core, {"cmd": "clients"})["result"]
    counts = {r["co_ownerid"]: r["collisions"] for r in rows}
    assert counts == {WEB.decode(): 2, "alone": 0}
    assert ask(core, {"cmd": "status"})["result"]["collisions"] == 2


async def test_revoke_makes_later_use_admin_revoked(world: World) -> None:
    a = await holder(world, b"client-A", "10.0.0.5", 0, b"a")
    b = await holder(world, b"client-B", "10.0.0.7", 0, b"b")
    core = admin.AdminCore(world.server)
    reply = ask(core, {"cmd": "revoke", "clientid": f"0x{a.clientid:x}"})
    assert reply["ok"] is True
    assert (reply["result"]["opens"], reply["result"]["locks"]) == (1, 1)
    # RFC 7530 §9.8: the revoked client's stateids are now NFS4ERR_ADMIN_REVOKED.
    await expect(a.c, [op.putfh(a.fh), op.read(a.open_sid, 0, 10)], N.NFS4ERR_ADMIN_REVOKED)
    await expect(a.c, [op.putfh(a.fh), op.locku(N.WRITE_LT, 2, a.lock_sid, 0, 10)],
                 N.NFS4ERR_ADMIN_REVOKED)
    await b.c.check([op.putfh(b.fh), op.read(b.open_sid, 0, 10)])  # others unaffected
    rows = ask(core, {"cmd": "clients"})["result"]
    assert [r["clientid"] for r in rows] == [f"{b.clientid:016x}"]
    again = ask(core, {"cmd": "revoke", "clientid": f"{a.clientid:x}"})
    assert again == {"ok": False, "error": f"no confirmed client with id {a.clientid:016x}"}


@pytest.mark.parametrize(
    ("request_line", "error"),
    [
        (b"not json\n", "Expecting value"),
        (b"[1, 2]\n", "a request is a JSON object"),
        (b'{"cmd": "reboot"}\n', "unknown command 'reboot'"),
        (b'{"cmd": "revoke"}\n', "revoke needs a client id"),
        (b'{"cmd": "revoke", "clientid": "xyz"}\n', "not a client id: 'xyz'"),
        (b'{"cmd": "revoke", "clientid": "1' + b"0" * 20 + b'"}\n', "more than 64 bits"),
    ],
)
def test_bad_requests_get_an_error_reply(world: World, request_line: bytes, error: str) -> None:
    reply = json.loads(admin.AdminCore(world.server).handle_line(request_line))
    assert reply["ok"] is False
    assert error in reply["error"]


async def test_status(world: World) -> None:
    await holder(world, b"client-A", "10.0.0.5", 0, b"a")
    world.clock.advance(42)
    st = ask(admin.AdminCore(world.server), {"cmd": "status"})["result"]
    grace = st.pop("grace")
    assert st == {"version": admin.__version__, "uptime": 42.0, "clients": 1,
                  "unconfirmed_clients": 0, "opens": 1, "locks": 1, "delegations": 0,
                  "lease_time": LEASE, "collisions": 0}
    assert grace == json.loads(json.dumps(world.server.grace.status()))
    assert grace["in_grace"] is False  # a fresh state dir: nobody can reclaim
    assert f"grace: over ({grace['ended_reason']})" in admin.format_status({**st, "grace": grace})
    assert "opens: 1, locks: 1, delegations: 0\n" in admin.format_status(st)


def test_status_without_a_grace_period_object(world: World) -> None:
    del world.server.grace  # as before the grace period existed
    st = ask(admin.AdminCore(world.server), {"cmd": "status"})["result"]
    assert st["grace"] is None
    assert "grace: not reported by this server" in admin.format_status(st)


def test_format_grace_in_progress() -> None:
    grace = {"in_grace": True, "seconds_left": 61.2, "recorded": 3, "reclaimed": 1,
             "pending": 2, "ended_reason": None}
    assert admin.format_grace(grace) == (
        "in grace, 61s left; 1 of 3 recorded clients reclaimed, 2 pending")


def test_format_clients_table() -> None:
    rows = [{"clientid": "00000001", "co_ownerid": "web-1", "principal": "sys:0",
             "address": "10.0.0.5", "confirmed": True, "lease_left": -3.0, "courtesy": True,
             "opens": 2, "locks": 5, "delegations": 3, "collisions": 4}]
    text = admin.format_clients(rows)
    head, line = text.splitlines()[:2]
    assert head.split() == ["CLIENTID", "STATE", "LEASE", "OPENS", "LOCKS", "DELEGS",
                            "COLLISIONS", "PRINCIPAL", "ADDRESS", "CO_OWNERID"]
    assert line.split() == ["00000001", "courtesy", "-3s", "2", "5", "3", "4", "sys:0",
                            "10.0.0.5", '"web-1"']
    assert "1 client id(s) are used by more than one machine" in text
    assert admin.format_clients([]) == "no clients\n"
    assert admin.format_duration(90061) == "1d 1h 01m 01s"


# ------------------------------------------------------------------ the socket


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory path (unix socket paths are limited to 108 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="pynfsd-adm-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


async def raw_exchange(path: Path, data: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    writer.write_eof()
    reply = await reader.read()
    writer.close()
    return reply


async def test_socket_serves_requests_and_is_private(world: World, sock_dir: Path) -> None:
    path = sock_dir / admin.CONTROL_SOCKET

    await holder(world, b"client-A", "10.0.0.5", 0, b"a")
    server = await admin.AdminServer.start(world.server, str(path))
    try:
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        assert sorted(os.listdir(sock_dir)) == [admin.CONTROL_SOCKET]  # no temp leftovers
        reply = await raw_exchange(path, b'{"cmd": "status"}\n{"cmd": "clients"}\n')
        first, second = (json.loads(x) for x in reply.splitlines())
        assert first["result"]["clients"] == 1
        assert second["result"][0]["co_ownerid"] == "client-A"
        rows = await asyncio.to_thread(admin.call, str(sock_dir), {"cmd": "clients"})
        assert rows == second["result"]
        with pytest.raises(admin.AdminClientError, match="no confirmed client"):
            await asyncio.to_thread(admin.call, str(sock_dir), {"cmd": "revoke",
                                                                "clientid": "7"})
    finally:
        server.close()
    assert not path.exists()


async def test_overlong_request_line_is_refused(world: World, sock_dir: Path) -> None:
    server = await admin.AdminServer.start(world.server, str(sock_dir / "c.sock"))
    try:
        reply = await raw_exchange(sock_dir / "c.sock", b"x" * (admin.MAX_REQUEST + 10))
        assert json.loads(reply) == {"ok": False, "error": "request line too long"}
    finally:
        server.close()


async def test_stale_socket_is_replaced_but_a_live_one_is_not(world: World, sock_dir: Path) -> None:
    path = sock_dir / admin.CONTROL_SOCKET
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # left behind by a crashed server: the file exists, nobody listens
    stale.close()

    server = await admin.AdminServer.start(world.server, str(path))
    try:
        with pytest.raises(admin.AdminError, match="in use by another running pynfsd"):
            await admin.AdminServer.start(world.server, str(path))
        assert await admin.start_admin(world.server, str(sock_dir)) is None
        rows = await asyncio.to_thread(admin.call, str(sock_dir), {"cmd": "clients"})
        assert rows == []
    finally:
        server.close()
    assert not path.exists()


async def test_close_leaves_a_newer_servers_socket_alone(world: World, sock_dir: Path) -> None:
    path = sock_dir / admin.CONTROL_SOCKET

    server = await admin.AdminServer.start(world.server, str(path))
    server.close()
    newer = await admin.AdminServer.start(world.server, str(path))
    server.close()  # a second close must not remove the newer socket
    assert path.exists()
    newer.close()
    assert not path.exists()


def test_server_not_running_message(sock_dir: Path) -> None:
    with pytest.raises(admin.AdminClientError, match="pynfsd is not running with state dir"):
        admin.call(str(sock_dir), {"cmd": "status"})
    with pytest.raises(admin.AdminClientError, match="pynfsd is not running"):
        admin.call(str(sock_dir / "missing"), {"cmd": "status"})


def as_nobody(state_dir: str) -> str:
    """Fork; the child drops to uid 65534 and calls the control socket; its outcome."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        try:
            os.close(rd)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                out = json.dumps(admin.call(state_dir, {"cmd": "clients"}, timeout=10))
            except admin.AdminClientError as e:
                out = f"error: {e}"
            except Exception as e:
                out = f"unexpected: {e!r}"
            os.write(wr, out.encode())
        finally:
            os._exit(0)
    os.close(wr)
    with os.fdopen(rd, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


async def test_non_root_peer_is_refused_by_peercred(world: World, sock_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to another uid")
    path = sock_dir / admin.CONTROL_SOCKET

    server = await admin.AdminServer.start(world.server, str(path), allowed_uids={0})
    try:
        out = await asyncio.to_thread(as_nobody, str(sock_dir))
        assert out == f"error: permission denied: only root may use the pynfsd control socket {path}"
        os.chmod(sock_dir, 0o711)
        os.chmod(path, 0o666)  # loosened by mistake: SO_PEERCRED still refuses
        out = await asyncio.to_thread(as_nobody, str(sock_dir))
        assert out == ("error: permission denied: only root may use the pynfsd control "
                       f"socket (you are uid {NOBODY})")
        rows = await asyncio.to_thread(admin.call, str(sock_dir), {"cmd": "clients"})
        assert rows == []  # root still gets in
    finally:
        server.close()
