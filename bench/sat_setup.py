"""What `bench.saturation` does off the hot path, with pynfsd's own client: files, ids, calls.

Before a server starts, `make_files` puts under its export a directory ``sat`` holding ``data``
(1 MiB) and one empty file per generator slot.  For each operation `prepare` then, over a fresh
connection and client id (SETCLIENTID/CONFIRM), finds the file handles, opens and confirms
what must be open, and pre-encodes the calls the generator sends (AUTH_SYS as root):

* ``GETATTR``: PUTFH data, GETATTR of the attributes the Linux client asks to revalidate;
* ``LOOKUP``: PUTFH sat, LOOKUP data, GETFH, GETATTR (the Linux client's lookup);
* ``OPEN+CLOSE``: per slot its own open-owner (opened, confirmed and closed once here) and file:
  PUTFH sat, OPEN (read, no create), GETFH, GETATTR, then PUTFH file, CLOSE; the generator fills
  in the seqids and the stateid at the offsets found here;
* ``READ``: PUTFH data, READ 4 KiB with the stateid of an open made here, at up to 256 offsets.

Every simple call is sent once here first: it must succeed, and its reply length is the one
the generator then demands of every reply.  An OPEN answered NFS4ERR_GRACE is retried until
the server's grace period is over.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from bench.sat_gen import SlotCalls, Spec
from pynfsd.client.nfs4 import Nfs4Client, Nfs4Failure, decode_compound, encode_compound, op
from pynfsd.client.session import ACCESS_READ, ClientSession, OpenFile
from pynfsd.gen import nfs4 as N
from pynfsd.rpc.client import AuthSysCred, encode_call

OPERATIONS = ("GETATTR", "LOOKUP", "OPEN+CLOSE", "READ")
DIR, DATA, DATA_SIZE, BLOCK, READ_OFFSETS = "sat", "data", 1 << 20, 4096, 256
CRED = AuthSysCred(0, 0, machinename="pynfsd-bench")
# What the Linux client asks for when it revalidates a file (nfs4_fattr_bitmap).
ATTRS = (N.FATTR4_TYPE, N.FATTR4_CHANGE, N.FATTR4_SIZE, N.FATTR4_FSID, N.FATTR4_FILEID,
         N.FATTR4_MODE, N.FATTR4_NUMLINKS, N.FATTR4_OWNER, N.FATTR4_OWNER_GROUP,
         N.FATTR4_RAWDEV, N.FATTR4_SPACE_USED, N.FATTR4_TIME_ACCESS, N.FATTR4_TIME_METADATA,
         N.FATTR4_TIME_MODIFY, N.FATTR4_MOUNTED_ON_FILEID)
GRACE_WAIT = 120.0


def make_files(export: Path, slots: int) -> None:
    d = export / DIR
    d.mkdir(parents=True)
    (d / DATA).write_bytes(os.urandom(DATA_SIZE))
    for k in range(slots):
        (d / f"f-{k}").touch()


def call(ops: Sequence[N.nfs_argop4]) -> bytes:
    """An NFSv4 COMPOUND call message (xid 0: the generator writes its own)."""
    return encode_call(0, N.NFS4_PROGRAM, N.NFS_V4, N.NFSPROC4_COMPOUND, encode_compound(ops),
                       cred=CRED.opaque_auth())


def offset_of(build: Callable[[int], bytes], width: int) -> int:
    """Where a field of `width` bytes sits in build(fill): the one span that differs between
    fill 1 and fill 2 (the builder fills the field with bytes 0x11 or 0x22)."""
    a, b = build(1), build(2)
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    if len(a) != len(b) or not diff or diff[-1] - diff[0] + 1 != width:
        raise ValueError("the field is not one span of the call")
    return diff[0]


def _filled(fill: int) -> tuple[int, N.stateid4]:
    return 0x11111111 * fill, N.stateid4(0x11111111 * fill, bytes([0x11 * fill]) * 12)


async def _expect_len(c: Nfs4Client, ops: Sequence[N.nfs_argop4]) -> int:
    raw = await c.compound_raw(encode_compound(ops))
    res = decode_compound(raw)
    if res.status != N.NFS4_OK:
        raise Nfs4Failure(res)
    return len(raw)


async def _open(s: ClientSession, dirfh: bytes, name: str, owner: bytes) -> OpenFile:
    """OPEN for reading (confirmed), retried while the server is in its grace period."""
    deadline = time.monotonic() + GRACE_WAIT
    while True:
        try:
            return await s.open(dirfh, name.encode(), access=ACCESS_READ, owner=owner)
        except Nfs4Failure as e:
            if e.status != N.NFS4ERR_GRACE or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


async def _simple(c: Nfs4Client, load: Spec, calls: list[list[N.nfs_argop4]]) -> Spec:
    lengths = {await _expect_len(c, ops) for ops in calls}
    if len(lengths) != 1:
        raise RuntimeError(f"replies of different lengths {sorted(lengths)}")
    return replace(load, requests=tuple(call(ops) for ops in calls), expect=lengths.pop())


async def _slot(s: ClientSession, dirfh: bytes, k: int) -> SlotCalls:
    owner, name = f"o-{k}".encode(), f"f-{k}".encode()
    f = await _open(s, dirfh, name.decode(), owner)
    await s.close(f)

    def open_call(fill: int) -> bytes:
        seqid, _ = _filled(fill)
        return call([op.putfh(dirfh), op.open(seqid, s.clientid, owner, name, access=ACCESS_READ),
                     op.getfh(), op.getattr(*ATTRS)])

    def close_seqid(fill: int) -> bytes:
        return call([op.putfh(f.fh), op.close(_filled(fill)[0], f.stateid)])

    def close_stateid(fill: int) -> bytes:
        return call([op.putfh(f.fh), op.close(0, _filled(fill)[1])])

    return SlotCalls(f.owner.seqid, open_call(0), offset_of(open_call, 4), close_seqid(0),
                     offset_of(close_seqid, 4), offset_of(close_stateid, 16))


async def _prepare(op_name: str, port: int, export: Path, load: Spec, tag: bytes) -> Spec:
    c = await Nfs4Client.connect("127.0.0.1", port, cred=CRED)
    try:
        s = ClientSession(c, b"pynfsd-bench-" + tag, verifier=os.urandom(8))
        await s.establish()
        dirfh = await s.lookup_path(str(export / DIR))
        datafh = await s.lookup_path(str(export / DIR / DATA))
        if op_name == "GETATTR":
            return await _simple(c, load, [[op.putfh(datafh), op.getattr(*ATTRS)]])
        if op_name == "LOOKUP":
            return await _simple(c, load, [[op.putfh(dirfh), op.lookup(DATA.encode()), op.getfh(),
                                            op.getattr(*ATTRS)]])
        if op_name == "READ":
            f = await _open(s, dirfh, DATA, b"reader")
            return await _simple(c, load, [[op.putfh(f.fh), op.read(f.stateid, i * BLOCK, BLOCK)]
                                           for i in range(min(READ_OFFSETS, load.in_flight))])
        if op_name == "OPEN+CLOSE":
            slots = [await _slot(s, dirfh, k) for k in range(load.in_flight)]
            return replace(load, slots=tuple(slots))
        raise ValueError(f"unknown operation {op_name!r}")
    finally:
        await c.close()


def prepare(op_name: str, port: int, export: Path, load: Spec, tag: str) -> Spec:
    """`load` (connections, depth and times, no calls) with the calls of `op_name` against the
    server on 127.0.0.1:`port` exporting `export`."""
    return asyncio.run(_prepare(op_name, port, export, load, tag.encode()))
