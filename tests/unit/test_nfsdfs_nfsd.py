"""`nfsd/` control files without FUSE (`pynfsd.nfsdfs.nfsd`): export_features, versions as
knfsd reads and rpc.nfsd writes them, threads resizing the real worker pool, bad writes
refused with the kernel's errno and nothing changed."""

from __future__ import annotations

import errno
import logging
import threading

import pytest

from pynfsd.blocking import BlockingPool
from pynfsd.nfsdfs.nfsd import MAX_THREADS, Nfsd, versions_text


def nfsd(pool: BlockingPool | None = None) -> Nfsd:
    return Nfsd(listeners=None, pool=pool, now=lambda: 0.0)


def test_export_features_are_the_kernels_words() -> None:
    assert Nfsd.export_features() == b"0x3feff 0xf\n"


def test_versions_read_as_knfsd_with_only_4_0() -> None:
    assert versions_text() == b"-2 -3 +4 +4.0 -4.1 -4.2\n"


def test_rpc_nfsd_versions_are_accepted_and_the_unserved_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    n = nfsd()
    with caplog.at_level(logging.INFO, "pynfsd.nfsdfs.nfsd"):
        assert n.write_versions(b"-2 -3 +4.0 +4.1 +4.2\n", 1) == 0
        assert n.write_versions(b"-2 -3 +4 +4.1 +4.2\n", 1) == 0
    unserved = [r.message for r in caplog.records if "is not served" in r.message]
    assert len(unserved) == 2 and "4.1" in unserved[0] and "4.2" in unserved[1]
    assert versions_text() == b"-2 -3 +4 +4.0 -4.1 -4.2\n"


@pytest.mark.parametrize("data, code", [
    (b"", errno.EINVAL), (b"+5\n", errno.EINVAL), (b"4.0\n", errno.EINVAL),
    (b"+4.0 junk\n", errno.EINVAL), (b"-4\n", errno.EBUSY), (b"+4.1 -4.0\n", errno.EBUSY)])
def test_bad_versions_writes(data: bytes, code: int) -> None:
    assert nfsd().write_versions(data, 1) == code


def live_workers(name: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith(name + "-"))


def test_threads_resize_the_worker_pool() -> None:
    pool = BlockingPool(4, name="nfsdfs-test", switch_creds=False)
    n = nfsd(pool)
    try:
        assert n.threads() == b"4\n"
        assert n.write_threads(b"8\n", 1) == 0
        assert n.threads() == b"8\n" and live_workers("nfsdfs-test") == 8
        assert n.write_threads(b"2\n", 1) == 0
        assert n.threads() == b"2\n"
        for bad in (b"0\n", b"-1\n", b"many\n", b"%d\n" % (MAX_THREADS + 1)):
            assert n.write_threads(bad, 1) == errno.EINVAL
        assert n.threads() == b"2\n"
    finally:
        pool.shutdown()
