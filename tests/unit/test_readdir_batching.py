"""READDIR reads from the backend about as many entries as its reply holds, no more: every
entry read beyond is a wasted lstat and filehandle (the local backend, the kernel client's
attribute mask)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from nfs4_fixtures import entries, export_root, make_world, readdir_all

from bench.readdir_loop import LINUX_READDIR_ATTRS
from pynfsd.client.nfs4 import op
from pynfsd.nfs4.ops import dirs
from pynfsd.nfs4.ops.dirs import _first_batch, _next_batch

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="LocalBackend needs root")


def test_next_batch_fills_the_room_left_at_the_average_size() -> None:
    assert _next_batch(room=2000, encoded=1000, n=10) == 21  # 100 bytes an entry, plus one
    assert _next_batch(room=50, encoded=1000, n=10) == 1  # never 0: the reply may hold one
    assert _next_batch(room=10**9, encoded=100, n=10) == 512  # bounded per round trip


def test_first_batch_from_the_last_readdir_of_the_same_attributes() -> None:
    assert _first_batch(room=2000, entry_bytes=None) == 16  # nothing known: measure
    assert _first_batch(room=2000, entry_bytes=100) == 21  # 20 fit, plus one
    assert _first_batch(room=32000, entry_bytes=200) == 163  # 160 fit, 2 more, plus one
    assert _first_batch(room=10**9, entry_bytes=1) == 512


async def test_readdir_reads_little_beyond_what_fits(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    (exp / "big").mkdir(parents=True)
    for i in range(600):
        (exp / "big" / f"file-{i:04d}").write_bytes(b"")
    w = make_world(tmp_path, [f"{exp} *(rw,no_root_squash)"], local=True)
    try:
        c = w.client()
        root = await export_root(c, *(os.fsencode(p) for p in exp.parts[1:]))
        (_, _, big) = await c.check([op.putfh(root), op.lookup(b"big"), op.getfh()])
        backend = w.backends[str(exp)]
        read: list[int] = []
        plain = backend.readdir

        def counting(*args: Any) -> Any:
            got = plain(*args)
            read.append(len(got[0]))
            return got

        backend.readdir = counting  # type: ignore[method-assign]
        dirs._ENTRY_BYTES.clear()  # the first READDIR measures the entries' size
        rpcs = 0
        cookie, verf, listed = 0, bytes(8), []
        while True:
            _, resok = await c.check([op.putfh(big.object), op.readdir(
                cookie, verf, 1024, 4096, LINUX_READDIR_ATTRS)])
            rpcs, got = rpcs + 1, entries(resok)
            listed += [e.name for e in got]
            if resok.reply.eof:
                break
            cookie, verf = got[-1].cookie, resok.cookieverf
        assert sorted(listed) == sorted(os.fsencode(n) for n in os.listdir(exp / "big"))
        assert rpcs > 10  # a 4 KiB reply holds a few dozen entries with these attributes
        # at most a few entries a reply read and not sent (the one that did not fit)
        assert sum(read) <= len(listed) + 3 * rpcs, (sum(read), len(listed), rpcs)
        # after the first READDIR, each is one round trip to a worker (the first takes two:
        # it measures the entries; the last may, when the backend says eof in a call of its own)
        assert len(read) <= rpcs + 2, (len(read), rpcs)
        assert len(await readdir_all(c, big.object, attrs=LINUX_READDIR_ATTRS)) == 600
    finally:
        w.close()
