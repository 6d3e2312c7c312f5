"""Filehandles of exports named by a uuid, checked by the real rpc.mountd: a handle a client got
through LOOKUP is put (PUTFH) on a new connection, so the server asks nfsd.fh, and rpc.mountd
finds the export from the key pynfsd sends, as it finds knfsd's: `FSID_UUID4_INUM` (inode and
folded uuid) for a directory, `FSID_UUID8` (folded uuid) for the root of a filesystem; with
`fsid=<uuid>` or with the uuid mountd itself reads from the filesystem (no `fsid=`).

An export without `fsid=` gets from the embedded resolver the uuid mountd reads from its
filesystem (the test directory's, a tmpfs's, a loop-mounted ext4's blkid UUID): a handle
given out before rpc.mountd attached is still good once mountd answers."""

from __future__ import annotations

import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest

from pynfsd.client.nfs4 import op
from pynfsd.exports import ExportOptions, export_fsid
from pynfsd.exports.fsuuid import uuid_by_path
from pynfsd.gen import nfs4 as N
from tests.e2e.test_nfs_utils import live, live_server, mountd
from tests.e2e.test_nfs_utils import pytestmark as needs_tools
from tests.serverproc import ServerProcess, lookup_path
from tests.support_nfsutils import in_sandbox

pytestmark = needs_tools
UUID = "3b241101-e2bb-4255-8caf-4136c566a962"


@live
@pytest.mark.parametrize(("fsid", "mounted", "fsidtype"), [
    (f",fsid={UUID}", False, 4), ("", True, 5),
])  # fmt: skip
async def test_putfh_of_a_uuid_export_through_mountd(tmp_path: Path, fsid: str, mounted: bool,
                                                     fsidtype: int) -> None:
    share, state = tmp_path / "share", tmp_path / "state"
    (tmp_path / "sandbox").mkdir()
    with ExitStack() as stack:
        srv = stack.enter_context(live_server(tmp_path, "192.0.2.1(rw,insecure)"))
        if mounted:
            subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(share)], check=True)
            stack.callback(subprocess.run, ["umount", "-l", str(share)], check=False)
        sandbox = in_sandbox(tmp_path / "sandbox",
                             f"{share} 127.0.0.1(rw,insecure,no_subtree_check{fsid})\n",
                             "exportfs -ra && exec rpc.mountd -F -d all -N 2 -N 3 --no-udp")
        with mountd(state, sandbox) as proc:
            c = await srv.connect()
            try:
                fh = bytes((await c.check([*lookup_path(share), op.getfh()]))[-1].object)
            finally:
                await c.close()
            c = await srv.connect()  # a new client: its view is resolved, then nfsd.fh asked
            try:
                res = await c.compound([op.putfh(fh), op.getattr(N.FATTR4_TYPE)])
            finally:
                await c.close()
            rpc = tmp_path / "ctl" / "rpc"
            export = (rpc / "nfsd.export" / "content").read_text()
            fh_content = (rpc / "nfsd.fh" / "content").read_text()
        log = proc.stdout.read() if proc.stdout else ""
    assert N.nfsstat4_names[res.status] == "NFS4_OK", log
    uuid = export.split("uuid=")[1].split(",")[0]  # the uuid mountd sent, e.g. from the fs
    if fsid:
        assert uuid.replace(":", "") == UUID.replace("-", "")
    # the handle's fsid: from the uuid and the path, stable while they are
    assert int.from_bytes(fh[2:10], "big") == export_fsid(str(share), ExportOptions(fsid=uuid))
    line = next(x for x in fh_content.splitlines() if x.endswith(f" {share}"))
    assert line.split()[1] == str(fsidtype), fh_content
    assert "nfsd_fh: found" in log and f"path {share}" in log, log


def mountd_uuid(uuid: bytes) -> str:
    """A uuid as nfsd.export's content shows it (`uuid=0f1e2d3c:4b5a6978:...`)."""
    return ":".join(uuid[i:i + 4].hex() for i in range(0, 16, 4))


async def handles(srv: ServerProcess, share: Path) -> tuple[bytes, bytes]:
    """The handles of `share` and of `share/f`, from LOOKUPs on a new connection."""
    c = await srv.connect()
    try:
        got = await c.check([*lookup_path(share), op.getfh(), op.lookup(b"f"), op.getfh()])
    finally:
        await c.close()
    return bytes(got[-3].object), bytes(got[-1].object)


async def putfh_status(srv: ServerProcess, fh: bytes) -> str:
    c = await srv.connect()  # a new client: its view is resolved, then nfsd.fh asked
    try:
        res = await c.compound([op.putfh(fh), op.getattr(N.FATTR4_TYPE)])
    finally:
        await c.close()
    return N.nfsstat4_names[res.status]


def mount_on(share: Path, fs: str, stack: ExitStack) -> None:
    """A tmpfs, or an ext4 image on a loop device (whose uuid blkid reads), on `share`."""
    if fs == "tmpfs":
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(share)], check=True)
    else:
        image = share.parent / "ext4.img"
        with open(image, "wb") as f:
            f.truncate(16 << 20)
        subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
        if subprocess.run(["mount", "-o", "loop", str(image), str(share)]).returncode != 0:
            pytest.skip("no loop device to mount an ext4 image on")
    stack.callback(subprocess.run, ["umount", "-l", str(share)], check=False)
    share.chmod(0o777)


def blkid_uuid(path: Path) -> str:
    """The UUID blkid(8) reads from the device mounted on `path`."""
    device = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(path)], capture_output=True,
                            text=True, check=True).stdout.strip()
    return subprocess.run(["blkid", "-o", "value", "-s", "UUID", device], capture_output=True,
                          text=True, check=True).stdout.strip()


@live
@pytest.mark.parametrize("fs", ["directory", "tmpfs", "ext4"])
async def test_a_handle_from_before_mountd_is_good_after(tmp_path: Path, fs: str) -> None:
    """No fsid=: the embedded resolver answers first, with the uuid mountd reads from the
    filesystem (the test directory's, a tmpfs's statfs fsid, a loop-mounted ext4's blkid
    UUID); the handles it gave out stay good when rpc.mountd answers instead."""
    share, state = tmp_path / "share", tmp_path / "state"
    (tmp_path / "sandbox").mkdir()
    clients = "127.0.0.1(rw,insecure,no_subtree_check)"
    with ExitStack() as stack:
        srv = stack.enter_context(live_server(tmp_path, clients))
        if fs != "directory":
            mount_on(share, fs, stack)
        (share / "f").write_text("before and after\n")
        uuid = uuid_by_path(str(share))
        assert uuid is not None
        if fs == "ext4":
            assert uuid == bytes.fromhex(blkid_uuid(share).replace("-", ""))
        rpc = tmp_path / "ctl" / "rpc"
        before = await handles(srv, share)
        embedded = (rpc / "nfsd.export" / "content").read_text()
        sandbox = in_sandbox(tmp_path / "sandbox", f"{share} {clients}\n",
                             "exportfs -ra && exec rpc.mountd -F -d all -N 2 -N 3 --no-udp")
        with mountd(state, sandbox) as proc:  # exportfs -ra flushed the embedded answers
            after = [await putfh_status(srv, fh) for fh in before]
            again = await handles(srv, share)
            export = (rpc / "nfsd.export" / "content").read_text()
            fh_content = (rpc / "nfsd.fh" / "content").read_text()
        log = proc.stdout.read() if proc.stdout else ""
    assert f"uuid={mountd_uuid(uuid)}" in embedded, embedded  # the embedded resolver's ...
    assert f"uuid={mountd_uuid(uuid)}" in export, export  # ... is what mountd read
    assert after == ["NFS4_OK", "NFS4_OK"], log
    assert again == before  # the same handles, whoever answers
    assert f" {share}" in fh_content and "nfsd_fh: found" in log, log  # mountd found it
