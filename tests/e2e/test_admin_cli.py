"""End-to-end tests of the admin view (issue 3 items 6 and 7): a running `pynfsd serve`, clients
made with the NFS client library, and the `pynfsd clients` / `pynfsd status` commands."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pynfsd.client.nfs4 import Nfs4Client, op, unchecked
from pynfsd.gen import nfs4 as N
from tests.e2e.helpers import pynfsd
from tests.serverproc import HOST, ServerProcess, assert_log_clean, lookup_path

NOBODY = 65534
WEB = b"Linux NFSv4.0 web-1"


def admin_json(state_dir: Path, *args: str) -> Any:
    done = pynfsd(*args, "--state-dir", str(state_dir), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    export = tmp_path / "export"
    export.mkdir()
    export.chmod(0o777)
    srv = ServerProcess([f"{export} *(rw,no_root_squash,insecure)"], tmp_path / "state")
    with srv:
        yield srv


@dataclass
class Holder:
    c: Nfs4Client
    clientid: int
    fh: bytes
    open_sid: N.stateid4
    lock_sid: N.stateid4


async def new_clientid(c: Nfs4Client, name: bytes, verifier: bytes = b"verifier") -> int:
    (resok,) = await c.check([op.setclientid(verifier, name)])
    await c.check([op.setclientid_confirm(resok.clientid, resok.setclientid_confirm)])
    clientid: int = resok.clientid
    return clientid


async def holder(srv: ServerProcess, name: bytes, fname: bytes) -> Holder:
    """A client holding an open (with 4 bytes written) and a write lock on <export>/fname."""
    c = await srv.connect()
    clientid = await new_clientid(c, name)
    path = lookup_path(srv.export_lines[0].split()[0])
    opened = op.open(1, clientid, b"oo", fname, access=3, create=unchecked(0o644))
    *_, resok, got = await c.check([*path, opened, op.getfh()])
    fh, sid = got.object, resok.stateid
    if resok.rflags & N.OPEN4_RESULT_CONFIRM:
        _, conf = await c.check([op.putfh(fh), op.open_confirm(sid, 2)])
        sid = conf.open_stateid
    await c.check([op.putfh(fh), op.write(sid, 0, b"data")])
    new = N.open_to_lock_owner4(3, sid, 1, N.lock_owner4(clientid, b"lo"))
    _, lock = await c.check([op.putfh(fh), op.lock(N.WRITE_LT, 0, 4, N.locker4(True, new))])
    return Holder(c, clientid, fh, sid, lock.lock_stateid)


async def status_of(c: Nfs4Client, ops: list[N.nfs_argop4]) -> str:
    res = await c.compound(ops)
    return N.nfsstat4_names.get(res.status, str(res.status))


def test_help_lists_every_command() -> None:
    done = pynfsd("--help")
    assert done.returncode == 0
    for command in ("serve", "clients", "status"):
        assert re.search(rf"^\s+{command}\s", done.stdout, re.M), done.stdout
    assert "revoke" in pynfsd("clients", "--help").stdout


async def test_clients_status_and_revoke(server: ServerProcess) -> None:
    state = server.state_dir
    mode = os.stat(state / "control.sock").st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600

    a = await holder(server, b"client-A", b"a")
    b = await holder(server, b"client-B", b"b")
    rows = {r["co_ownerid"]: r for r in admin_json(state, "clients")}
    assert set(rows) == {"client-A", "client-B"}
    for name, h in (("client-A", a), ("client-B", b)):
        r = rows[name]
        assert r["clientid"] == f"{h.clientid:016x}"
        assert (r["opens"], r["locks"], r["principal"], r["address"]) == (1, 1, "sys:0", HOST)
        assert r["confirmed"] and not r["courtesy"] and 0 < r["lease_left"] <= 135
    table = pynfsd("clients", "--state-dir", str(state))
    assert table.returncode == 0, table.stderr
    assert re.search(rf"^{a.clientid:016x}\s+active\s+\d+s\s+1\s+1\s+0\s+0\s+sys:0\s+{HOST}\s+"
                     r'"client-A"$', table.stdout, re.M), table.stdout
    st = admin_json(state, "status")
    assert (st["clients"], st["opens"], st["locks"]) == (2, 2, 2)

    done = pynfsd("clients", "revoke", f"{a.clientid:x}", "--state-dir", str(state))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f'revoked client {a.clientid:016x} ("client-A"): 1 open(s), 1 lock(s)\n'
    # RFC 7530 §9.8: later use of the revoked state is NFS4ERR_ADMIN_REVOKED.
    assert await status_of(a.c, [op.putfh(a.fh), op.read(a.open_sid, 0, 4)]) == \
        "NFS4ERR_ADMIN_REVOKED"
    unlock = op.locku(N.WRITE_LT, 2, a.lock_sid, 0, 4)
    assert await status_of(a.c, [op.putfh(a.fh), unlock]) == "NFS4ERR_ADMIN_REVOKED"
    (_, read) = await b.c.check([op.putfh(b.fh), op.read(b.open_sid, 0, 4)])
    assert read.data == b"data"  # the other client is untouched
    assert [r["co_ownerid"] for r in admin_json(state, "clients")] == ["client-B"]
    again = pynfsd("clients", "revoke", f"{a.clientid:x}", "--state-dir", str(state))
    assert again.returncode == 1
    assert again.stderr == f"pynfsd: no confirmed client with id {a.clientid:016x}\n"
    await a.c.close()
    await b.c.close()
    log = server.log_text()
    assert f'admin revoked client {a.clientid:016x} ("client-A", sys:0, {HOST}): 1 opens, 1 locks' in log
    assert_log_clean(log)


def test_control_socket_is_removed_on_clean_exit(server: ServerProcess) -> None:
    sock = server.state_dir / "control.sock"
    assert sock.exists()
    server.stop()
    assert not sock.exists()
    done = pynfsd("status", "--state-dir", str(server.state_dir))
    assert done.returncode == 1
    assert "pynfsd is not running with state dir" in done.stderr
    server.start()  # and it comes back on restart (a kill -9 leftover is replaced)
    server.kill9()
    assert sock.exists()
    server.start()
    assert admin_json(server.state_dir, "status")["clients"] == 0


def as_nobody(argv: list[str]) -> tuple[int, str]:
    """Run `pynfsd <argv>` in a forked child as uid 65534; (exit code, stderr)."""
    from pynfsd import cli

    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        code = 99
        try:
            sys.stderr = open(wr, "w", closefd=False)  # pytest captures fd 2
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            code = cli.main(argv)
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(wr)
    with os.fdopen(rd) as f:
        err = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err


def test_non_root_is_refused(server: ServerProcess) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to another uid")
    for argv in (["clients"], ["clients", "revoke", "1"], ["status"]):
        code, err = as_nobody([*argv, "--state-dir", str(server.state_dir)])
        assert code == 1
        assert err.startswith("pynfsd: permission denied: only root may use the pynfsd control "
                              "socket"), err
    assert admin_json(server.state_dir, "status")["clients"] == 0


async def test_shared_client_id_gives_one_warning(server: ServerProcess) -> None:
    mark = server.log_mark()

    a = await holder(server, WEB, b"web")  # holds state as sys:0
    intruder = await server.connect(1000)
    for _ in range(5):  # another machine with the same hostname keeps trying
        res = await intruder.compound([op.setclientid(b"other-vf", WEB)])
        assert res.status == N.NFS4ERR_CLID_INUSE  # RFC 7530 §16.33.5
    await intruder.close()
    await a.c.close()
    log = server.log_text(mark)
    warnings = [line for line in log.splitlines() if "sharing one NFSv4 client identifier" in line]
    assert len(warnings) == 1, log
    assert " WARNING " in warnings[0]
    assert (f'client id "Linux NFSv4.0 web-1" is used by {HOST} (sys:0) and {HOST} (sys:1000): '
            "these look like different machines") in warnings[0]
    (row,) = admin_json(server.state_dir, "clients")
    assert (row["co_ownerid"], row["collisions"]) == ("Linux NFSv4.0 web-1", 5)
    assert admin_json(server.state_dir, "status")["collisions"] == 5
