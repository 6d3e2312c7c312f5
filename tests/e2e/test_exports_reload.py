"""Live reload of the exports against a real `pynfsd serve --exports FILE`: `pynfsd exportfs -r`
and SIGHUP re-read the file and flush the caches while the server keeps serving; a removed
export's filehandles get NFS4ERR_STALE, a changed `sec=` NFS4ERR_WRONGSEC, ro→rw applies to the
next request, unchanged exports notice nothing, and a broken file is refused with its
`file:line` while the running table stays.  `pynfsd exportfs -v` shows the table."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from pynfsd.client.nfs4 import Nfs4Client, op
from pynfsd.gen import nfs4 as N
from tests.e2e.helpers import pynfsd
from tests.serverproc import ServerProcess, assert_log_clean, lookup_path

OPTS = "insecure,no_root_squash"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in ("keep", "gone", "ro", "sec", "later"):
        (tmp_path / name).mkdir()
        (tmp_path / name).chmod(0o777)
    return tmp_path


def write_exports(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


@pytest.fixture
def server(tree: Path) -> Iterator[ServerProcess]:
    exports = tree / "exports"
    write_exports(exports, [f"{tree}/keep *(rw,{OPTS})", f"{tree}/gone *(rw,{OPTS})",
                            f"{tree}/ro *(ro,{OPTS})", f"{tree}/sec *(rw,{OPTS},sec=sys)"])
    srv = ServerProcess([], tree / "state", extra_args=["--exports", str(exports)],
                        log_level="INFO")
    with srv:
        yield srv
        assert_log_clean(srv.log_text())


def exportfs(srv: ServerProcess, *args: str) -> tuple[int, str]:
    done = pynfsd("exportfs", *args, "--state-dir", str(srv.state_dir))
    return done.returncode, done.stdout + done.stderr


async def fh_of(c: Nfs4Client, path: Path) -> bytes:
    res = await c.check([*lookup_path(path), op.getfh()])
    return bytes(res[-1].object)


async def status_of(c: Nfs4Client, ops: list[N.nfs_argop4]) -> str:
    res = await c.compound(ops)
    return N.nfsstat4_names.get(res.status, str(res.status))


def create(fh: bytes, name: bytes) -> list[N.nfs_argop4]:
    return [op.putfh(fh), op.mkdir(name)]


async def test_exportfs_r_applies_the_new_table_to_mounted_clients(
    server: ServerProcess, tree: Path
) -> None:
    c = await server.connect()
    fhs = {name: await fh_of(c, tree / name) for name in ("keep", "gone", "ro", "sec")}
    assert await status_of(c, create(fhs["ro"], b"d1")) == "NFS4ERR_ROFS"
    write_exports(tree / "exports", [f"{tree}/keep *(rw,{OPTS})", f"{tree}/ro *(rw,{OPTS})",
                                     f"{tree}/sec *(rw,{OPTS},sec=none)"])
    code, out = exportfs(server, "-r")
    assert code == 0, out
    assert "removed" in out and f"{tree}/gone" in out, out
    # the same connection, no new mount: each change applies to the next request
    assert await status_of(c, [op.putfh(fhs["keep"]), op.getattr(N.FATTR4_TYPE)]) == "NFS4_OK"
    assert await status_of(c, [op.putfh(fhs["gone"]), op.getattr(N.FATTR4_TYPE)]) == "NFS4ERR_STALE"
    assert await status_of(c, create(fhs["ro"], b"d2")) == "NFS4_OK"
    assert await status_of(c, [op.putfh(fhs["sec"]), op.getattr(N.FATTR4_TYPE)]) == "NFS4ERR_WRONGSEC"
    shown = exportfs(server, "-v")[1]
    assert f"{tree}/ro" in shown and "rw" in shown and f"{tree}/gone" not in shown, shown
    await c.close()


async def test_a_broken_table_is_refused_and_the_old_one_stays(
    server: ServerProcess, tree: Path
) -> None:
    write_exports(tree / "exports", [f"{tree}/keep *(rw,{OPTS})", f"{tree}/missing *(rw)"])
    code, out = exportfs(server, "-r")
    assert code == 1, out
    assert f"{tree / 'exports'}:2:" in out and "does not exist" in out, out
    assert "the old table stays" in out
    c = await server.connect()
    await fh_of(c, tree / "gone")  # still exported
    await c.close()


async def test_sighup_reloads(server: ServerProcess, tree: Path) -> None:
    c = await server.connect()
    res = await c.compound(lookup_path(tree / "later"))
    assert res.status == N.NFS4ERR_NOENT
    write_exports(tree / "exports", [f"{tree}/keep *(rw,{OPTS})", f"{tree}/later *(rw,{OPTS})"])
    server.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    server.wait_log("exports reloaded")
    await fh_of(c, tree / "later")
    await c.close()
    await server.assert_healthy()
