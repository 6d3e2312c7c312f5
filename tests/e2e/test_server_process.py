"""End-to-end tests of a running `pynfsd serve` process: CLI contract, hostile peers, export
policy (RFC 7530 §3.2, §7) and persistence across restarts and `kill -9`."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pynfsd.client.nfs4 import Nfs4Client, decode_compound, op, unchecked
from pynfsd.gen import nfs4 as N
from pynfsd.rpc.client import encode_call
from pynfsd.rpc.record import encode_record, marker
from tests.e2e.helpers import pynfsd
from tests.serverproc import (
    HOST,
    BlockingRpc,
    ServerProcess,
    assert_log_clean,
    lookup_path,
    probe,
)

ANON = N.stateid4(0, b"\0" * 12)
CONTENT = bytes(range(256)) * 64


def status_of(res: N.COMPOUND4res) -> str:
    return N.nfsstat4_names.get(res.status, str(res.status))


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    for name in ("rw", "ro", "squash", "hidden"):
        (root / name).mkdir()
    (root / "squash").chmod(0o777)
    (root / "rw" / "data").write_bytes(CONTENT)
    (root / "ro" / "file").write_bytes(b"read only\n")
    os.symlink("/etc", root / "rw" / "etc-link")
    (root / "secret-sibling").mkdir()
    return root


@pytest.fixture(scope="module")
def shared_server(base: Path) -> Iterator[ServerProcess]:
    exports = [
        f"{base / 'rw'} *(rw,no_root_squash,insecure)",
        f"{base / 'ro'} *(ro,no_root_squash,insecure)",
        f"{base / 'squash'} *(rw,root_squash,insecure)",
        f"{base / 'hidden'} 10.9.9.9/32(rw,no_root_squash,insecure)",
    ]
    with ServerProcess(exports, base / "state") as srv:
        yield srv


@pytest.fixture()
def server(shared_server: ServerProcess) -> Iterator[ServerProcess]:
    """The shared server; after the test its log since the start of the test must be clean."""
    mark = shared_server.log_mark()
    yield shared_server
    assert_log_clean(shared_server.log_text(since=mark))


async def compound(srv: ServerProcess, ops: list[N.nfs_argop4]) -> N.COMPOUND4res:
    c = await srv.connect()
    try:
        return await c.compound(ops)
    finally:
        await c.close()


async def new_clientid(c: Nfs4Client) -> int:
    """SETCLIENTID + SETCLIENTID_CONFIRM (RFC 7530 §16.33, §16.34)."""
    ok = (await c.check([op.setclientid(os.urandom(8), os.urandom(8))]))[0]
    await c.check([op.setclientid_confirm(ok.clientid, ok.setclientid_confirm)])
    return int(ok.clientid)


async def open_file(c: Nfs4Client, dir_ops: list[N.nfs_argop4], name: bytes, create: bool) -> tuple[N.stateid4, bytes]:
    """OPEN (and OPEN_CONFIRM when asked, §16.18.5) of `name`; (stateid, filehandle)."""
    clientid, owner = await new_clientid(c), os.urandom(8)
    vals = await c.check([*dir_ops, op.open(0, clientid, owner, name, create=unchecked() if create else None),
                          op.getfh()])
    resok, fh = vals[-2], vals[-1].object
    stateid = resok.stateid
    if resok.rflags & N.OPEN4_RESULT_CONFIRM:
        stateid = (await c.check([op.putfh(fh), op.open_confirm(stateid, 1)]))[-1].open_stateid
    return stateid, fh


# ------------------------------------------------------------------ CLI contract


def test_help_explains_the_options() -> None:
    top = pynfsd("--help")
    assert top.returncode == 0 and "serve" in top.stdout
    serve = pynfsd("serve", "--help")
    assert serve.returncode == 0
    for option in ("--export", "--exports", "--bind", "--port", "--state-dir", "--log-level"):
        assert option in serve.stdout, option


@pytest.mark.parametrize("line", ["/tmp *(((", "/tmp *(bogus_option)", "relative *(rw)", "/tmp 10.0.0.0/33(rw)",
                                  "/nonexistent-pynfsd-dir *(rw)"])
def test_bad_export_line_exits_2_with_one_line(tmp_path: Path, line: str) -> None:
    done = pynfsd("serve", "--export", line, "--bind", HOST, "--port", "0", "--state-dir", str(tmp_path))
    assert done.returncode == 2, done
    assert done.stderr.startswith("pynfsd: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = pynfsd("serve", "--export", f"{tmp_path} *(rw)", "--bind", HOST, "--port", str(port),
                      "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 3
    last = done.stderr.splitlines()[-1]
    assert last.startswith("pynfsd: ") and "in use" in last, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(tmp_path: Path, sig: int) -> None:
    srv = ServerProcess([f"{tmp_path} *(rw,insecure)"], tmp_path / "state").start()
    try:
        assert f"listening on 127.0.0.1 port {srv.port}" in srv.log_text()
        srv.healthy()
    finally:
        code = srv.stop(sig)
    assert code == 0, srv.log_text()
    assert "stopping" in srv.log_text().splitlines()[-1]
    assert_log_clean(srv.log_text())


# ------------------------------------------------------------------ hostile peers


def test_oversized_marker_closes_only_that_connection(server: ServerProcess) -> None:
    with BlockingRpc(server.port) as bad, BlockingRpc(server.port) as good:
        bad.sock.sendall(marker(0x7FFFFFFF))
        assert bad.sock.recv(1) == b""  # closed, no reply
        res = decode_compound(good.compound([op.putrootfh(), op.getattr(N.FATTR4_TYPE)]))
        assert res.status == N.NFS4_OK
    server.healthy()


async def garbage_peer(port: int, stop: asyncio.Event, seed: int) -> int:
    """Keep sending junk (raw bytes, junk records, junk COMPOUNDs) until `stop`; reconnect on close."""
    rng, sent = random.Random(seed), 0
    while not stop.is_set():
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while not stop.is_set():
                kind = rng.randrange(3)
                if kind == 0:
                    junk = rng.randbytes(rng.randrange(1, 200))
                elif kind == 1:
                    junk = encode_record(rng.randbytes(rng.randrange(0, 200)))
                else:
                    call = encode_call(rng.getrandbits(32), 100003, 4, 1, rng.randbytes(rng.randrange(0, 200)))
                    junk = encode_record(call)
                writer.write(junk)
                await writer.drain()
                sent += 1
                try:
                    if await asyncio.wait_for(reader.read(65536), 0.01) == b"":
                        break
                except TimeoutError:
                    pass
        except ConnectionError:
            pass
        finally:
            writer.close()
    return sent


async def good_workload(srv: ServerProcess, base: Path, ops_total: int) -> None:
    c = await srv.connect()
    try:
        fh = (await c.check([*lookup_path(base / "rw" / "data"), op.getfh()]))[-1].object

        async def one(i: int) -> None:
            if i % 2:
                attrs = (await c.check([op.putfh(fh), op.getattr(N.FATTR4_SIZE)]))[-1]
                assert attrs.obj_attributes.attr_vals == len(CONTENT).to_bytes(8, "big")
            else:
                offset = (i * 37) % len(CONTENT)
                got = (await c.check([op.putfh(fh), op.read(ANON, offset, 512)]))[-1]
                assert got.data == CONTENT[offset : offset + 512]

        for start in range(0, ops_total, 20):
            await asyncio.gather(*(one(i) for i in range(start, min(start + 20, ops_total))))
    finally:
        await c.close()


async def test_garbage_connections_do_not_disturb_a_good_client(server: ServerProcess, base: Path) -> None:
    stop = asyncio.Event()
    peers = [asyncio.create_task(garbage_peer(server.port, stop, seed)) for seed in range(50)]
    try:
        await good_workload(server, base, 1000)
    finally:
        stop.set()
    sent = await asyncio.gather(*peers)
    assert sum(sent) >= 50
    await server.assert_healthy()


async def hold_huge_records(port: int, conns: int, fragment: int, send: int) -> list[asyncio.StreamWriter]:
    """Open `conns` connections that each announce a `fragment`-byte record and send `send` bytes of it."""
    writers = []
    body = b"\0" * send
    for _ in range(conns):
        _, writer = await asyncio.open_connection(HOST, port)
        writer.write(marker(fragment, last=False) + body)
        writers.append(writer)
    for writer in writers:
        await writer.drain()
    return writers


async def test_rss_bounded_while_clients_announce_huge_records(server: ServerProcess) -> None:
    writers = await hold_huge_records(server.port, 80, 1 << 20, (1 << 20) - 1)
    writers += await hold_huge_records(server.port, 20, 0x7FFFFFFF, 1 << 16)
    try:
        await asyncio.sleep(0.5)
        await probe(server.port)
        rss = server.rss_kib()
    finally:
        for writer in writers:
            writer.close()
    assert rss < 300 * 1024, f"server RSS {rss} KiB"
    await server.assert_healthy()


# ------------------------------------------------------------------ export policy


async def test_client_matching_no_export_gets_access(tmp_path: Path) -> None:
    (tmp_path / "exp").mkdir()
    with ServerProcess([f"{tmp_path / 'exp'} 10.9.9.9/32(rw,no_root_squash,insecure)"], tmp_path / "state") as srv:
        res = await compound(srv, [op.putrootfh(), op.getfh()])
        assert res.status == N.NFS4ERR_ACCESS, status_of(res)
        res = await compound(srv, [op.putrootfh(), *lookup_path(tmp_path / "exp")[1:]])
        assert res.status != N.NFS4_OK
    assert_log_clean(srv.log_text())


async def test_export_for_other_client_is_invisible(server: ServerProcess, base: Path) -> None:
    res = await compound(server, lookup_path(base / "hidden"))
    assert res.status in (N.NFS4ERR_NOENT, N.NFS4ERR_ACCESS), status_of(res)


async def test_read_only_export_refuses_changes(server: ServerProcess, base: Path) -> None:
    ro = lookup_path(base / "ro")
    c = await server.connect()
    try:
        statuses = {}
        statuses["write"] = (await c.compound([*ro, op.lookup(b"file"), op.write(ANON, 0, b"x", N.FILE_SYNC4)])).status
        statuses["mkdir"] = (await c.compound([*ro, op.mkdir(b"newdir")])).status
        statuses["remove"] = (await c.compound([*ro, op.remove(b"file")])).status
        clientid = await new_clientid(c)
        opened = await c.compound([*ro, op.open(0, clientid, b"o", b"new", create=unchecked())])
        statuses["open-create"] = opened.status
    finally:
        await c.close()
    assert statuses == dict.fromkeys(statuses, N.NFS4ERR_ROFS), statuses  # RFC 7530 §13.1.2.8
    assert sorted(p.name for p in (base / "ro").iterdir()) == ["file"]
    assert (base / "ro" / "file").read_bytes() == b"read only\n"


async def test_root_squash_maps_uid_0_to_nobody(server: ServerProcess, base: Path) -> None:
    c = await server.connect()
    try:
        await open_file(c, lookup_path(base / "squash"), b"by-root", create=True)
    finally:
        await c.close()
    st = (base / "squash" / "by-root").stat()
    assert (st.st_uid, st.st_gid) == (65534, 65534)


async def test_symlink_to_etc_cannot_be_followed(server: ServerProcess, base: Path) -> None:
    rw = lookup_path(base / "rw")
    c = await server.connect()
    try:
        attrs = (await c.check([*rw, op.lookup(b"etc-link"), op.getattr(N.FATTR4_TYPE)]))[-1]
        through = (await c.compound([*rw, op.lookup(b"etc-link"), op.lookup(b"passwd")])).status
        clientid = await new_clientid(c)
        plain = (await c.compound([*rw, op.open(0, clientid, b"o1", b"etc-link")])).status
        create = (await c.compound([*rw, op.open(0, clientid, b"o2", b"etc-link", create=unchecked())])).status
        readdir = (await c.compound([*rw, op.lookup(b"etc-link"), op.readdir()])).status
    finally:
        await c.close()
    assert attrs.obj_attributes.attr_vals == N.NF4LNK.to_bytes(4, "big")  # the link itself
    assert through in (N.NFS4ERR_NOTDIR, N.NFS4ERR_SYMLINK)
    assert plain == N.NFS4ERR_SYMLINK  # RFC 7530 §16.16.5
    assert create == N.NFS4ERR_SYMLINK, N.nfsstat4_names.get(create, create)
    assert readdir in (N.NFS4ERR_NOTDIR, N.NFS4ERR_SYMLINK)


async def test_lookupp_from_export_root_stays_in_pseudo_fs(server: ServerProcess, base: Path) -> None:
    c = await server.connect()
    try:
        vals = await c.check([*lookup_path(base / "rw"), op.lookupp(), op.readdir()])
        names, entry = [], vals[-1].reply.entries
        while entry is not None:
            names.append(entry.name)
            entry = entry.nextentry
        sibling = await c.compound([*lookup_path(base / "rw"), op.lookupp(), op.lookup(b"secret-sibling")])
        assert sibling.status == N.NFS4ERR_NOENT, status_of(sibling)
    finally:
        await c.close()
    assert b"secret-sibling" not in names and b"state" not in names
    assert set(names) <= {b"rw", b"ro", b"squash"}


async def test_lookupp_from_fsid0_root(tmp_path: Path) -> None:
    (tmp_path / "exp").mkdir()
    (tmp_path / "outside").mkdir()
    with ServerProcess([f"{tmp_path / 'exp'} *(rw,no_root_squash,insecure,fsid=0)"], tmp_path / "state") as srv:
        res = await compound(srv, [op.putrootfh(), op.lookupp(), op.getfh()])
        assert res.status == N.NFS4ERR_NOENT, status_of(res)  # RFC 7530 §16.15.5: no parent of root
        res = await compound(srv, [op.putrootfh(), op.lookup(b".."), op.getfh()])
        assert res.status in (N.NFS4ERR_BADNAME, N.NFS4ERR_NOENT), status_of(res)
    assert_log_clean(srv.log_text())


# ------------------------------------------------------------------ persistence


async def test_filehandle_survives_restart_and_file_sync_survives_kill9(tmp_path: Path) -> None:
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "keep").write_bytes(b"before restart")
    srv = ServerProcess([f"{tmp_path / 'exp'} *(rw,no_root_squash,insecure,fsid=0)"], tmp_path / "state")
    with srv:
        fh = (await compound(srv, [op.putrootfh(), op.lookup(b"keep"), op.getfh()])).resarray[-1].value.value.object
        srv.restart()
        res = await compound(srv, [op.putfh(fh), op.read(ANON, 0, 100)])
        assert res.status == N.NFS4_OK, status_of(res)
        assert res.resarray[-1].value.value.data == b"before restart"
        c = await srv.connect()
        try:
            stateid, wfh = await open_file(c, [op.putrootfh()], b"synced", create=True)
            w = (await c.check([op.putfh(wfh), op.write(stateid, 0, b"durable", N.FILE_SYNC4)]))[-1]
        finally:
            await c.close()
        assert int(w.committed) == N.FILE_SYNC4
        srv.kill9()
        assert srv.returncode == -signal.SIGKILL
        assert (tmp_path / "exp" / "synced").read_bytes() == b"durable"
        srv.start()
        res = await compound(srv, [op.putfh(fh), op.getattr(N.FATTR4_SIZE)])
        assert res.status == N.NFS4_OK, status_of(res)
    assert_log_clean(srv.log_text())
