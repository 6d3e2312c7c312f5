"""Hostile peers against a real `pynfsd serve`: record layouts, connection cap, idle and slow
connections, the partial-record budget, and one server per state directory.

Each server runs with small limits given as options so that going one past them is quick.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pynfsd import admin
from pynfsd.client.nfs4 import decode_compound, encode_compound, op
from pynfsd.gen import nfs4 as N
from pynfsd.rpc.client import ConnectionClosed, decode_reply, encode_call
from pynfsd.rpc.record import DEFAULT_MAX_EMPTY_FRAGMENTS, encode_record, marker
from tests.serverproc import (
    HOST,
    NFS_PROGRAM,
    NFS_V4,
    NFSPROC4_COMPOUND,
    REPO,
    BlockingRpc,
    ServerProcess,
    assert_log_clean,
    lookup_path,
)

ANON = N.stateid4(0, b"\0" * 12)
MAXWRITE = 1 << 20  # what the server announces (FATTR4_MAXWRITE)
WAIT = 30.0  # generous bound on waiting for the server to act; never asserted as a duration


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("transport")
    (root / "exp").mkdir()
    (root / "exp" / "data").write_bytes(b"")
    return root


def start(base: Path, name: str, *options: str) -> ServerProcess:
    export = f"{base / 'exp'} *(rw,no_root_squash,insecure)"
    return ServerProcess([export], base / name, extra_args=options, log_level="INFO")


@pytest.fixture(scope="module")
def server(base: Path) -> Iterator[ServerProcess]:
    with start(base, "state") as srv:
        yield srv
    assert_log_clean(srv.log_text())


def raw_connect(port: int) -> socket.socket:
    return socket.create_connection((HOST, port), timeout=WAIT)


def closed_by_server(sock: socket.socket) -> bool:
    """Wait (up to WAIT) for the server to close `sock`; read and drop anything it sends."""
    try:
        while sock.recv(1 << 16):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


def one_byte_fragments(payload: bytes) -> bytes:
    """`payload` as one record of 1-byte fragments (5 bytes of stream per byte)."""
    stream = bytearray(5 * len(payload))
    stream[3::5] = b"\x01" * len(payload)
    stream[4::5] = payload
    stream[-5] = 0x80  # the last fragment
    return bytes(stream)


def fragmented_write(port: int, path: Path, data: bytes, layout: str) -> N.COMPOUND4res:
    ops = [*lookup_path(path), op.write(ANON, 0, data, N.FILE_SYNC4)]
    with BlockingRpc(port) as conn:
        call = encode_call(7, NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND, encode_compound(ops), conn.cred)
        stream = one_byte_fragments(call) if layout == "1" else encode_record(call, int(layout))
        conn.sock.sendall(stream)
        xid, results = decode_reply(conn.recv_record())
    assert xid == 7
    return decode_compound(results)


# ------------------------------------------------------------------ record layouts


@pytest.mark.parametrize("layout", ["4096", "1"])
def test_write_at_maxwrite_in_small_fragments_completes(
    server: ServerProcess, base: Path, layout: str
) -> None:
    data = os.urandom(MAXWRITE)
    rss = server.rss_kib()
    res = fragmented_write(server.port, base / "exp" / "data", data, layout)
    assert res.status == N.NFS4_OK, N.nfsstat4_names.get(res.status)
    assert res.resarray[-1].value.value.count == MAXWRITE
    assert (base / "exp" / "data").read_bytes() == data
    grown = server.rss_kib() - rss
    assert grown < 16 * 1024, f"RSS grew by {grown} KiB for one 1 MiB record"
    server.healthy()


def test_endless_empty_fragments_are_cut(server: ServerProcess) -> None:
    mark = server.log_mark()
    with raw_connect(server.port) as sock:
        try:
            for _ in range(100):  # far past the cap: the server hangs up long before
                sock.sendall(marker(0, last=False) * 1000)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert closed_by_server(sock)
    assert f"more than {DEFAULT_MAX_EMPTY_FRAGMENTS} empty fragments" in server.log_text(mark)
    server.healthy()


def test_empty_fragments_up_to_the_cap_are_served(server: ServerProcess) -> None:
    with BlockingRpc(server.port) as conn:
        call = encode_call(9, NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND,
                           encode_compound([op.putrootfh(), op.getfh()]), conn.cred)
        conn.sock.sendall(marker(0, last=False) * DEFAULT_MAX_EMPTY_FRAGMENTS + encode_record(call))
        xid, results = decode_reply(conn.recv_record())
    assert xid == 9 and decode_compound(results).status == N.NFS4_OK


# ------------------------------------------------------------------ one server per state dir


def test_second_server_on_the_state_dir_exits_3_naming_the_holder(
    server: ServerProcess, base: Path
) -> None:
    mark = server.log_mark()
    second = subprocess.run(
        [sys.executable, "-m", "pynfsd", "serve", "--bind", HOST, "--port", "0",
         "--export", f"{base / 'exp'} *(rw,insecure)", "--state-dir", str(base / "state")],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert second.returncode == 3
    assert second.stderr == f"pynfsd: state directory {base / 'state'} is in use by pid {server.pid}\n"
    assert "ERROR" not in server.log_text(mark)
    server.healthy()


# ------------------------------------------------------------------ connection cap


def test_one_past_the_connection_cap_is_refused(base: Path) -> None:
    cap = 4
    with start(base, "state-cap", "--max-connections", str(cap)) as srv:
        held = [BlockingRpc(srv.port) for _ in range(cap)]
        for conn in held:
            conn.compound([op.putrootfh()])
        rss = srv.rss_kib()
        for _ in range(20):  # one past the cap, twenty times
            with raw_connect(srv.port) as extra:
                assert closed_by_server(extra)
        for conn in held:  # every established client is still served
            assert decode_compound(conn.compound([op.putrootfh(), op.getfh()])).status == N.NFS4_OK
        assert srv.rss_kib() - rss < 8 * 1024
        log = srv.log_text()
        assert log.count("refusing connection from 127.0.0.1") == 1  # rate-limited
        conns = admin.call(str(srv.state_dir), {"cmd": "status"})["connections"]
        assert (conns["open"], conns["max"], conns["refused"]) == (cap, cap, 20)
        held.pop().close()
        wait_for(lambda: healthy(srv))  # a slot is free again: a new client is served
        for conn in held:
            conn.close()
    assert_log_clean(srv.log_text())


def healthy(srv: ServerProcess) -> bool:
    try:
        srv.healthy()
    except (AssertionError, ConnectionError, ConnectionClosed):
        return False
    return True


def wait_for(cond: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# ------------------------------------------------------------------ idle and slow connections


def test_idle_and_one_byte_a_second_connections_are_closed(base: Path) -> None:
    with start(base, "state-idle", "--idle-timeout", "2") as srv:
        idle = raw_connect(srv.port)
        slow = raw_connect(srv.port)
        active = BlockingRpc(srv.port)
        slow.sendall(marker(1000))
        slow.settimeout(0.25)
        sent = 0
        while sent < 100:  # a byte every quarter second: its record never completes
            try:
                slow.send(b"x")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            active.compound([op.putrootfh()])  # completed calls keep this one open
            try:
                if slow.recv(1) == b"":
                    break
            except TimeoutError:
                pass
        assert sent < 100, "the slow sender was never closed"
        idle.settimeout(WAIT)
        assert closed_by_server(idle)
        assert decode_compound(active.compound([op.putrootfh(), op.getfh()])).status == N.NFS4_OK
        for s in (idle, slow):
            s.close()
        active.close()
        srv.healthy()
    assert_log_clean(srv.log_text())


# ------------------------------------------------------------------ partial-record budget


def still_open(socks: list[socket.socket]) -> int:
    """How many of `socks` the server has not closed (EOF or reset) yet."""
    count = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            count += sock.recv(1) != b""
        except BlockingIOError:  # nothing to read: open
            count += 1
        except ConnectionError:
            pass
    return count


def test_partial_records_past_the_budget_close_the_oldest(base: Path) -> None:
    budget_mib, count, size = 4, 60, 900 << 10  # 60 × 900 KiB = 53 MiB without the budget
    with start(base, "state-budget", "--partial-record-budget", f"{budget_mib}M") as srv:
        rss = srv.rss_kib()
        socks = [raw_connect(srv.port) for _ in range(count)]
        for i, sock in enumerate(socks):  # each announces a 1 MiB record and sends 900 KiB
            try:
                sock.sendall(marker(1 << 20) + bytes([i]) * size)
            except ConnectionError:
                pass  # already closed for the budget
        wait_for(lambda: still_open(socks) <= budget_mib)  # 4 × 900 KiB fit, a fifth does not
        assert still_open(socks[:1]) == 0 and still_open(socks[-1:]) == 1  # oldest record first
        grown = srv.rss_kib() - rss
        assert grown < 24 * 1024, f"RSS grew by {grown} KiB with a {budget_mib} MiB budget"
        assert "over the budget of 4194304 bytes" in srv.log_text()
        conns = admin.call(str(srv.state_dir), {"cmd": "status"})["connections"]
        assert conns["evicted"] >= len(socks) - budget_mib
        assert conns["partial_bytes"] <= conns["partial_budget"] == budget_mib << 20
        srv.healthy()
        for sock in socks:
            sock.close()
    assert_log_clean(srv.log_text())
