"""Per-thread filesystem credentials (pynfsd.fs.creds), checked against the running kernel.

Each test switches identities in threads of its own, never in pytest's main thread."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from pynfsd.blocking import BlockingPool
from pynfsd.fs import creds
from pynfsd.fs.creds import ROOT, Identity
from tests.localuser import NOBODY, acls_supported, as_user, kernel_dir, set_acl

pytestmark = pytest.mark.skipif(not creds.supported(), reason="needs root on Linux x86_64/aarch64")
T = TypeVar("T")
USER = Identity(NOBODY, NOBODY, (1234,))
CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_LINUX_IMMUTABLE, CAP_SYS_RESOURCE = 1, 3, 4, 9, 24


def in_thread(fn: Callable[[], T]) -> T:
    """``fn()`` in a new thread; its result or its exception."""
    out: list[T] = []
    err: list[BaseException] = []

    def target() -> None:
        try:
            out.append(fn())
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            err.append(e)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]


def thread_ids() -> tuple[str, str, str]:
    """The calling thread's Uid:, Gid: and Groups: lines of /proc/thread-self/status."""
    lines = Path("/proc/thread-self/status").read_text().splitlines()
    pick = {ln.split(":")[0]: ln.split(":", 1)[1].split() for ln in lines}
    return " ".join(pick["Uid"]), " ".join(pick["Gid"]), " ".join(pick["Groups"])


@pytest.fixture
def kdir() -> Iterator[Path]:
    with kernel_dir() as d:
        yield d


def test_a_thread_switches_only_itself(kdir: Path) -> None:
    secret = kdir / "secret"
    secret.write_bytes(b"x")
    secret.chmod(0o600)
    switched = threading.Event()
    done = threading.Event()
    seen: dict[str, object] = {}

    def user_thread() -> None:
        creds.assume(USER)
        seen["ids"] = thread_ids()
        switched.set()
        done.wait(10)
        try:
            secret.read_bytes()
            seen["read"] = True
        except PermissionError:
            seen["read"] = False

    t = threading.Thread(target=user_thread)
    t.start()
    assert switched.wait(10)
    assert thread_ids()[0].split()[3] == "0" and secret.read_bytes() == b"x"  # this thread: root
    done.set()
    t.join()
    assert seen["ids"] == ("0 0 0 65534", "0 0 0 65534", "1234")  # real, eff, saved, fs
    assert seen["read"] is False


def test_a_user_loses_the_capabilities_root_gets_them_back() -> None:
    def caps() -> tuple[int, int, int]:
        before = creds.effective_caps()
        creds.assume(USER)
        as_user = creds.effective_caps()
        creds.assume(ROOT)
        return before, as_user, creds.effective_caps()

    before, user, after = in_thread(caps)
    for cap in (CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_LINUX_IMMUTABLE, CAP_SYS_RESOURCE):
        assert not user & (1 << cap), cap
    for cap in (CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID):
        assert before & (1 << cap), cap  # (a container may lack CAP_SYS_RESOURCE altogether)
    assert after == before


def test_assume_makes_no_system_call_for_the_same_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Identity] = []
    real = creds._apply

    def counting(ident: Identity, prev: Identity | None) -> None:
        calls.append(ident)
        real(ident, prev)

    monkeypatch.setattr(creds, "_apply", counting)

    def run() -> None:
        for ident in (USER, USER, USER, ROOT, ROOT, USER):
            creds.assume(ident)

    in_thread(run)
    assert calls == [USER, ROOT, USER]


def test_as_root_restores_the_caller(kdir: Path) -> None:
    (kdir / "f").write_bytes(b"")
    (kdir / "f").chmod(0o600)
    fd = os.open(kdir / "f", os.O_PATH)

    def run() -> tuple[bool, bool, Identity]:
        creds.assume(USER)
        with creds.as_root():
            inside = creds.faccess_fd(fd, os.R_OK)
        return inside, creds.faccess_fd(fd, os.R_OK), creds.current()

    try:
        assert in_thread(run) == (True, False, USER)
    finally:
        os.close(fd)


def test_supplementary_groups_apply(kdir: Path) -> None:
    f = kdir / "g"
    f.write_bytes(b"")
    os.chown(f, 0, 1234)
    f.chmod(0o060)
    fd = os.open(f, os.O_PATH)

    def run(ident: Identity) -> Callable[[], bool]:
        def check() -> bool:
            creds.assume(ident)
            return creds.faccess_fd(fd, os.R_OK | os.W_OK)

        return check

    try:
        assert in_thread(run(USER)) is True
        assert in_thread(run(Identity(NOBODY, NOBODY, ()))) is False
    finally:
        os.close(fd)


def test_more_groups_than_the_kernel_holds_keep_the_first_ngroups_max() -> None:
    many = tuple(range(100_000, 100_000 + creds.NGROUPS_MAX + 500))

    def check() -> tuple[int, int, int]:
        creds.assume(Identity(USER.uid, USER.gid, many))
        groups = os.getgroups()  # the calling thread's own groups (getgroups(2))
        creds.assume(creds.ROOT)
        return len(groups), groups[0], groups[-1]

    assert in_thread(check) == (creds.NGROUPS_MAX, many[0], many[creds.NGROUPS_MAX - 1])


def test_faccess_fd_is_the_kernels_answer_acls_included(kdir: Path) -> None:
    if not acls_supported(kdir):
        pytest.skip("no POSIX ACLs on /tmp")
    denied, granted = kdir / "denied", kdir / "granted"
    for path, mode, acl in ((denied, 0o644, 0), (granted, 0o600, 4)):
        path.write_bytes(b"data")
        path.chmod(mode)
        set_acl(path, {NOBODY: acl})
    fds = [os.open(p, os.O_PATH) for p in (denied, granted)]

    def run() -> list[bool]:
        creds.assume(Identity(NOBODY, NOBODY, ()))
        return [creds.faccess_fd(fd, os.R_OK) for fd in fds]

    try:
        local = [as_user(["cat", str(p)]) == 0 for p in (denied, granted)]
        assert local == [False, True]
        assert in_thread(run) == local
    finally:
        for fd in fds:
            os.close(fd)


async def test_the_pool_runs_each_call_as_its_identity() -> None:
    pool = BlockingPool(2)
    try:
        uids = [
            (await pool.run_as(ident, thread_ids))[0].split()[3]
            for ident in (USER, ROOT, Identity(4321, 4321, ()))
        ] + [(await pool.run(thread_ids))[0].split()[3]]
        assert uids == ["65534", "0", "4321", "0"]
    finally:
        pool.shutdown()


def test_a_failed_switch_is_redone_in_full_by_the_next() -> None:
    def run() -> tuple[str, str, str]:
        creds.assume(USER)
        with pytest.raises(OSError):
            creds.assume(Identity(4321, 4321, (0xFFFFFFFF,)))  # no such gid: EINVAL
        creds.assume(USER)
        ids = thread_ids()
        creds.assume(ROOT)
        return ids

    assert in_thread(run) == ("0 0 0 65534", "0 0 0 65534", "1234")
