"""LocalBackend specifics: persistent and unforgeable handles, confinement, change, caches."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pynfsd.fs import creds, fdcache, statedir
from pynfsd.fs.backend import FileType
from pynfsd.fs.change import STEP, ChangeTracker
from pynfsd.fs.fdcache import FdCache
from pynfsd.fs.local import LocalBackend
from tests.identity import in_thread_as

Z8 = bytes(8)


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.root = tmp / "export"
        self.state = tmp / "state"
        self.root.mkdir()
        self.opened: list[LocalBackend] = []

    def backend(self, root: Path | None = None, state: Path | None = None,
                **kw: Any) -> LocalBackend:
        b = LocalBackend(str(root or self.root), str(state or self.state), **kw)
        self.opened.append(b)
        return b


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    for b in e.opened:
        b.close()


def expect(code: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    with pytest.raises(OSError) as info:
        fn(*args, **kwargs)
    assert info.value.errno == code, f"expected {errno.errorcode[code]}, got {info.value!r}"


# -- persistence ---------------------------------------------------------------------------


def test_handles_survive_a_restart(env: Env) -> None:
    b1 = env.backend()
    d, _ = b1.mkdir(b1.root(), b"d", 0o755, 0, 0)
    f, _, _ = b1.create_file(d, b"f", 0o644, 0, 0, True)
    b1.write(f, 0, b"persist", True)
    lnk, _ = b1.symlink(d, b"l", b"f", 0, 0)
    b1.close()
    b2 = env.backend()
    assert b2.root() == b1.root()
    assert b2.read(f, 0, 100) == (b"persist", True)
    assert b2.lookup(d, b"f")[0] == f
    assert b2.readlink(lnk) == b"f"
    assert b2.parent(d)[0] == b2.root()


def test_objects_made_on_disk_directly_are_reachable(env: Env) -> None:
    (env.root / "sub").mkdir()
    (env.root / "sub" / "x").write_bytes(b"direct")
    b = env.backend()
    sub, _ = b.lookup(b.root(), b"sub")
    x, attrs = b.lookup(sub, b"x")
    assert attrs.fileid == os.stat(env.root / "sub" / "x").st_ino
    assert b.read(x, 0, 10) == (b"direct", True)


def test_removed_objects_are_stale_before_and_after_restart(env: Env) -> None:
    b1 = env.backend()
    f, _, _ = b1.create_file(b1.root(), b"f", 0o644, 0, 0, True)
    b1.read(f, 0, 1)  # cached descriptors
    os.unlink(env.root / "f")  # removed behind the backend's back
    expect(errno.ESTALE, b1.getattr, f)
    expect(errno.ESTALE, b1.write, f, 0, b"x", False)
    expect(errno.ESTALE, env.backend().getattr, f)


def test_readdir_cookies_survive_a_restart(env: Env) -> None:
    for i in range(100):
        (env.root / f"f{i:03}").touch()
    b1 = env.backend()
    first, _, verf = b1.readdir(b1.root(), 0, Z8, 30)
    b2 = env.backend()
    rest, eof, _ = b2.readdir(b2.root(), first[-1].cookie, verf, 1000)
    names = [e.name for e in first + rest]
    assert eof and sorted(names) == [b"f%03d" % i for i in range(100)]


# -- unforgeable handles -------------------------------------------------------------------


def test_handles_from_another_state_dir_are_stale(env: Env) -> None:
    b1 = env.backend()
    f, _, _ = b1.create_file(b1.root(), b"f", 0o644, 0, 0, True)
    other = env.backend(state=env.tmp / "other-state")
    expect(errno.ESTALE, other.getattr, f)
    expect(errno.ESTALE, other.getattr, b1.root())


def test_handles_are_bound_to_their_export(env: Env) -> None:
    b1 = env.backend()
    d, _ = b1.mkdir(b1.root(), b"d", 0o755, 0, 0)
    f, _, _ = b1.create_file(d, b"f", 0o644, 0, 0, True)
    sub = env.backend(root=env.root / "d")  # same key, different export root
    expect(errno.ESTALE, sub.getattr, f)
    expect(errno.ESTALE, b1.getattr, sub.lookup(sub.root(), b"f")[0])


def test_key_file_is_private_and_created_once(env: Env) -> None:
    env.backend()
    key_path = env.state / statedir.KEY_FILE
    st = os.stat(key_path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == statedir.KEY_LEN
    key = key_path.read_bytes()
    env.backend()
    assert key_path.read_bytes() == key
    assert [p.name for p in env.state.iterdir() if p.name.startswith(".")] == []
    os.chmod(key_path, 0o644)
    expect(errno.EACCES, env.backend)


def test_boot_count_increments(tmp_path: Path) -> None:
    assert [statedir.next_boot_count(str(tmp_path)) for _ in range(3)] == [1, 2, 3]


# -- confinement ---------------------------------------------------------------------------


def test_symlinks_are_never_followed(env: Env) -> None:
    outside = env.tmp / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    os.symlink(outside, env.root / "esc")
    os.symlink("..", env.root / "up")
    b = env.backend()
    for name in (b"esc", b"up"):
        h, attrs = b.lookup(b.root(), name)
        assert attrs.type == FileType.LNK
        expect(errno.ENOTDIR, b.lookup, h, b"secret")
        expect(errno.ENOTDIR, b.create_file, h, b"new", 0o644, 0, 0, False)
        expect(errno.ENOTDIR, b.readdir, h, 0, Z8, 10)
        expect(errno.EINVAL, b.read, h, 0, 10)
        b.setattr(h, uid=1000)
    assert os.stat(outside).st_uid == 0
    expect(errno.ELOOP, b.create_file, b.root(), b"esc", 0o644, 0, 0, False)
    assert sorted(os.listdir(outside)) == ["secret"]


def test_parent_never_leaves_the_root(env: Env) -> None:
    b = env.backend()
    expect(errno.ENOENT, b.parent, b.root())
    expect(errno.EINVAL, b.lookup, b.root(), b"..")


def test_directory_moved_out_of_the_export_goes_stale(env: Env) -> None:
    b1 = env.backend()
    d, _ = b1.mkdir(b1.root(), b"d", 0o755, 0, 0)
    inner, _ = b1.mkdir(d, b"inner", 0o755, 0, 0)
    os.rename(env.root / "d", env.tmp / "moved-out")
    b2 = env.backend()
    expect(errno.ESTALE, b2.getattr, d)
    expect(errno.ESTALE, b2.lookup, inner, b"x")
    expect(errno.ESTALE, b1.parent, inner)  # cached descriptor, parent re-checked


def test_rename_races_cannot_redirect_operations_outside(env: Env) -> None:
    outside = env.tmp / "outside"
    outside.mkdir()
    (env.root / "real").mkdir()
    os.symlink(outside, env.root / "evil")
    b = env.backend()
    stop = threading.Event()

    def swapper() -> None:
        root = str(env.root)
        while not stop.is_set():
            for a, c in (("real", "x"), ("x", "real"), ("evil", "x"), ("x", "evil")):
                try:
                    os.rename(os.path.join(root, a), os.path.join(root, c))
                except FileNotFoundError:
                    pass

    t = threading.Thread(target=swapper)
    t.start()
    try:
        for i in range(300):
            try:
                h, _ = b.lookup(b.root(), b"x")
                b.create_file(h, b"f%d" % i, 0o644, 1000, 1000, True)
                b.mkdir(h, b"d%d" % i, 0o755, 1000, 1000)
                b.symlink(h, b"s%d" % i, b"t", 1000, 1000)
                b.readdir(h, 0, Z8, 5)
            except OSError as e:
                assert e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ESTALE)
    finally:
        stop.set()
        t.join()
    assert os.listdir(outside) == []
    assert os.stat(outside).st_uid == 0


# -- change attribute ----------------------------------------------------------------------


def test_change_follows_modifications_made_on_disk(env: Env) -> None:
    b = env.backend()
    f, _, _ = b.create_file(b.root(), b"f", 0o644, 0, 0, True)
    values = [b.getattr(f).change]
    for i in range(20):
        with open(env.root / "f", "ab") as out:
            out.write(b"%d" % i)
        values.append(b.getattr(f).change)
    os.chmod(env.root / "f", 0o600)
    values.append(b.getattr(f).change)
    assert values == sorted(values) and len(set(values)) == len(values)


def test_change_never_goes_back_across_a_restart(env: Env) -> None:
    b1 = env.backend()
    f, _, _ = b1.create_file(b1.root(), b"f", 0o644, 0, 0, True)
    for i in range(50):
        b1.write(f, i, b"x", False)
    before = b1.getattr(f).change
    b1.close()
    assert env.backend().getattr(f).change > before


def test_change_tracker_bumps_within_one_ctime_tick() -> None:
    t = ChangeTracker(boot_count=1)
    assert t.observe(7, 1000) == 1000 + STEP
    t.bump(7, 1000)
    t.bump(7, 1000)
    assert t.observe(7, 1000) == 1002 + STEP
    assert t.observe(7, 1001) == 1003 + STEP  # new ctime, still above the bumps
    assert t.observe(7, 5000) == 5000 + STEP  # record no longer needed
    restarted = ChangeTracker(boot_count=2)
    assert restarted.observe(7, 1000) > 1002 + STEP


# -- descriptor cache ----------------------------------------------------------------------


def test_a_held_object_outlives_its_last_link_until_released(env: Env) -> None:
    b = env.backend(cache_size=2)
    f, _, _ = b.create_file(b.root(), b"f", 0o644, 0, 0, True)
    b.write(f, 0, b"kept", True)
    b.hold(f)
    b.hold(f)  # holds nest
    b.remove(b.root(), b"f")
    for i in range(4):  # evicts f's entry from the descriptor cache
        b.create_file(b.root(), b"other%d" % i, 0o644, 0, 0, True)
    fds = len(os.listdir("/proc/self/fd"))
    assert b.getattr(f).nlink == 0
    assert b.read(f, 0, 10) == (b"kept", True)
    b.write(f, 4, b"!", True)
    b.release(f)
    assert b.read(f, 0, 10) == (b"kept!", True)
    b.release(f)
    expect(errno.ESTALE, b.getattr, f)
    assert len(os.listdir("/proc/self/fd")) < fds  # its descriptors are closed
    b.release(f)  # releasing what is not held does nothing


def test_holding_costs_no_descriptor_while_the_file_is_linked(env: Env) -> None:
    b = env.backend(cache_size=4)
    handles = [b.create_file(b.root(), b"f%d" % i, 0o644, 0, 0, True)[0] for i in range(50)]
    before = len(os.listdir("/proc/self/fd"))
    for h in handles:
        b.hold(h)
    assert len(os.listdir("/proc/self/fd")) <= before + 4  # the cache's, no more
    os.unlink(env.root / "f0")  # behind the backend's back: not kept
    expect(errno.ESTALE, b.getattr, handles[0])
    for h in handles:
        b.release(h)


def test_at_most_max_kept_removed_files_are_kept(env: Env) -> None:
    b = env.backend(max_kept=2)
    handles = [b.create_file(b.root(), b"f%d" % i, 0o644, 0, 0, True)[0] for i in range(3)]
    for i, h in enumerate(handles):
        b.hold(h)
        b.remove(b.root(), b"f%d" % i)
    assert [b.getattr(h).nlink for h in handles[:2]] == [0, 0]
    expect(errno.ESTALE, b.getattr, handles[2])  # one past the bound: stale, as unheld
    b.release(handles[0])
    b.hold(handles[2])
    f, _, _ = b.create_file(b.root(), b"again", 0o644, 0, 0, True)
    b.hold(f)
    b.remove(b.root(), b"again")
    assert b.getattr(f).nlink == 0  # a released slot is free again


def test_descriptor_cache_is_bounded(env: Env) -> None:
    b = env.backend(cache_size=8)
    handles = [b.create_file(b.root(), b"f%d" % i, 0o644, 0, 0, True)[0] for i in range(40)]
    for i, h in enumerate(handles):
        b.write(h, 0, b"%d" % i, False)
    assert len(b._cache) <= 8
    assert [b.read(h, 0, 10)[0] for h in handles] == [b"%d" % i for i in range(40)]


def test_evicted_descriptor_stays_open_while_borrowed(tmp_path: Path) -> None:
    cache = FdCache(1)
    first = cache.put(b"a", os.open(tmp_path, os.O_PATH), 1)
    cache.release(cache.put(b"b", os.open(tmp_path, os.O_PATH), 2))  # evicts "a"
    assert cache.get(b"a") is None and first.dead
    os.fstat(first.fd)  # still open
    fd = first.fd
    cache.release(first)
    assert first.fd == -1
    with pytest.raises(OSError):
        os.fstat(fd)
    cache.close_all()
    assert len(cache) == 0


@pytest.fixture
def settle_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answers are remembered at any ctime, however recent (the tests' files are new)."""
    monkeypatch.setattr(fdcache, "SETTLE_NS", -1)
    monkeypatch.setattr(fdcache, "SETTLE_COARSE_NS", -1)


def test_answers_are_remembered_only_at_a_settled_ctime(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ctime younger than a few clock ticks is not trusted: a change by another process in
    the same tick could leave it unchanged, so the kernel is asked each time (a filesystem
    without multigrain timestamps: here, as if the kernel were older than 6.13)."""
    monkeypatch.setattr(fdcache, "MULTIGRAIN_SINCE", (99, 0))
    now = 1_700_000_000_123_456_789
    assert not fdcache.settled(now - 1_000_000, now)  # 1 ms old
    assert fdcache.settled(now - fdcache.SETTLE_NS - 1, now)
    whole = 1_700_000_000_000_000_000  # a whole-second ctime: a coarse filesystem
    assert not fdcache.settled(whole, whole + 1_000_000_000)
    assert fdcache.settled(whole, whole + fdcache.SETTLE_COARSE_NS + 1)
    assert not fdcache.settled(now + 5, now)  # a ctime ahead of the clock
    b = env.backend()
    f, _, _ = b.create_file(b.root(), b"f", 0o644, 0, 0, True)
    b.write(f, 0, b"fresh", False)
    b.read(f, 0, 1)  # granted by the kernel, at a ctime a moment old: not remembered
    assert b.read_cached(f, 0, 5) is None
    assert b.access(f, 0x3F) and b.access_cached(f, 0x3F, creds.current()) is None


def test_multigrain_timestamps_are_told_by_kernel_and_filesystem() -> None:
    assert fdcache.fine_ctime("ext4", "6.13.0") and fdcache.fine_ctime("tmpfs", "6.18.44-fc")
    assert fdcache.fine_ctime("xfs", "7.0.1") and fdcache.fine_ctime("btrfs", "6.14-rc1")
    assert not fdcache.fine_ctime("ext4", "6.12.9") and not fdcache.fine_ctime("ext4", "5.15.0")
    assert not fdcache.fine_ctime("ext3", "6.18.0") and not fdcache.fine_ctime("nfs", "6.18.0")
    assert not fdcache.fine_ctime(None, "6.18.0") and not fdcache.fine_ctime("ext4", "weird")


def test_with_multigrain_ctimes_an_answer_is_remembered_at_once_and_a_change_right_after_is_seen(
    env: Env,
) -> None:
    """On a filesystem with multigrain timestamps an answer taken after the fstat that read
    its ctime is remembered at once; a chmod or setfacl by another process right after it
    (the same clock tick, over and over) always moves the ctime, so the next answer from
    memory is never the old one."""
    from pynfsd.fs import linux, perm
    from pynfsd.fs.creds import Identity

    if not fdcache.fine_ctime(linux.fs_type(os.stat(env.root).st_dev)):
        pytest.skip("no multigrain timestamps here")
    b = env.backend()
    user = Identity(3000, 3000, ())
    rwx = perm.READ | perm.WRITE | perm.EXEC
    env.root.chmod(0o777)
    f = _as(user, b.create_file, b.root(), b"f", 0o600, 3000, 3000, True)[0]
    path = env.root / "f"
    modes = (0o600, 0o400, 0o000, 0o700)
    for i in range(400):
        answer = _as(user, b.access, f, rwx)
        assert b.access_cached(f, rwx, user) == answer  # remembered at once
        os.chmod(path, modes[i % 4])  # at once, as another process would
        cached = b.access_cached(f, rwx, user)
        assert cached is None, (i, answer, cached)  # the ctime moved: the kernel decides
    os.chmod(path, 0o600)
    _as(user, b.access, f, rwx)
    assert b.access_cached(f, rwx, user) == perm.READ | perm.WRITE
    denied = subprocess.run(["setfacl", "-m", "u::---", str(path)], capture_output=True)
    if denied.returncode == 0:  # an ACL set by another process right after: seen too
        assert b.access_cached(f, rwx, user) is None
        assert _as(user, b.access, f, rwx) == 0 == b.access_cached(f, rwx, user)
    d, _ = b.mkdir(b.root(), b"d", 0o755, 0, 0)
    x, _, _ = b.create_file(d, b"x", 0o644, 0, 0, True)
    assert b.lookup_cached(d, b"x", user) is None  # search not granted yet
    assert _as(user, b.access, d, rwx) == perm.READ | perm.EXEC
    assert b.lookup_cached(d, b"x", user) == (x, b.getattr(x))  # granted by that ACCESS
    os.chmod(env.root / "d", 0o700)  # right after, by another process: seen
    assert b.lookup_cached(d, b"x", user) is None
    assert isinstance(_as(user, b.lookup, d, b"x"), PermissionError)


def test_with_multigrain_ctimes_a_create_or_remove_answers_the_next_access_of_its_directory(
    env: Env,
) -> None:
    """The worker that adds or removes a name also asks the kernel the caller's access to
    the directory at its new ctime: the ACCESS and LOOKUP a client sends before its next
    create or remove there come from memory, and a chmod right after is still seen."""
    from pynfsd.fs import linux, perm
    from pynfsd.fs.creds import Identity

    if not fdcache.fine_ctime(linux.fs_type(os.stat(env.root).st_dev)):
        pytest.skip("no multigrain timestamps here")
    b = env.backend()
    user, other = Identity(3000, 3000, ()), Identity(3001, 3001, ())
    rwx = perm.READ | perm.WRITE | perm.EXEC
    env.root.chmod(0o777)
    root = b.root()
    _as(user, b.create_file, root, b"first", 0o600, 3000, 3000, True)
    assert b.access_cached(root, rwx, user) is None  # never asked: not asked at a create
    assert _as(user, b.access, root, rwx) == rwx
    for i in range(50):
        _as(user, b.create_file, root, b"f%d" % i, 0o600, 3000, 3000, True)
        assert b.access_cached(root, rwx, user) == rwx  # the create's worker asked
        assert b.access_cached(root, rwx, other) is None  # for the caller only
        assert b.lookup_cached(root, b"f%d" % i, user) is not None
        _as(user, b.remove, root, b"f%d" % i)
        assert b.access_cached(root, rwx, user) == rwx  # the remove's worker asked
    _as(user, b.create_file, root, b"last", 0o600, 3000, 3000, True)
    sub, _ = b.mkdir(root, b"sub", 0o777, 0, 0)
    assert _as(user, b.access, sub, rwx) == rwx
    _as(user, b.rename, root, b"last", sub, b"moved")
    assert b.access_cached(root, rwx, user) == rwx == b.access_cached(sub, rwx, user)
    _as(user, b.rename, sub, b"moved", root, b"last")
    env.root.chmod(0o755)  # right after, by another process
    assert b.access_cached(root, rwx, user) is None
    assert _as(user, b.access, root, rwx) == perm.READ | perm.EXEC


@pytest.mark.usefixtures("settle_at_once")
def test_read_cached_answers_like_read_or_declines(env: Env) -> None:
    b = env.backend()
    f, _, _ = b.create_file(b.root(), b"f", 0o644, 0, 0, True)
    assert b.read_cached(f, 0, 10) is None  # not open for I/O yet: declined
    data = os.urandom(100_000)
    b.write(f, 0, data, False)  # opens the descriptor; the data is in the page cache
    assert b.read_cached(f, 0, 10) is None  # read access not yet granted: declined
    b.read(f, 0, 1)  # the kernel grants it (to root, the calling thread's identity)
    for offset, count in [(0, 10), (5, 99_995), (5, 200_000), (100_000, 1), (300_000, 5)]:
        got = b.read_cached(f, offset, count)
        assert got is not None and (bytes(got[0]), got[1]) == b.read(f, offset, count)
    assert b.read_cached(f, 0, 0) is None
    d, _ = b.mkdir(b.root(), b"d", 0o755, 0, 0)
    assert b.read_cached(d, 0, 10) is None  # never opened for I/O
    assert b.read_cached(b"\0" * 40, 0, 10) is None  # unknown handle: the worker says why
    os.unlink(env.root / "f")
    expect(errno.ESTALE, b.read_cached, f, 0, 10)


def test_getattr_cached_answers_like_getattr_or_declines(env: Env) -> None:
    b = env.backend()
    f, _, _ = b.create_file(b.root(), b"f", 0o644, 0, 0, True)
    b.write(f, 0, b"abc", False)
    assert b.getattr_cached(f) == b.getattr(f)
    assert b.getattr_cached(b"\0" * 40) is None  # not cached: the worker thread says why
    os.unlink(env.root / "f")
    expect(errno.ESTALE, b.getattr_cached, f)


def test_no_event_loop_answers_on_filesystems_that_may_block(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pynfsd.fs import linux

    monkeypatch.setattr(linux, "fs_type", lambda dev: "fuse.sshfs")
    b = env.backend()
    f, _, _ = b.create_file(b.root(), b"f", 0o644, 0, 0, True)
    b.write(f, 0, b"abc", False)
    assert b.getattr_cached(f) is None and b.read_cached(f, 0, 3) is None
    assert b.read(f, 0, 3) == (b"abc", True)
    b.lookup(b.root(), b"f")
    assert b.lookup_cached(b.root(), b"f", creds.ROOT) is None


def test_fs_type_reads_mountinfo(tmp_path: Path) -> None:
    from pynfsd.fs import linux

    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "40 22 0:45 / /mnt/remote rw,nosuid shared:20 - fuse.sshfs host:/ rw,user_id=0\n"
    )
    assert linux.fs_type(os.makedev(8, 1), str(info)) == "ext4"
    assert linux.fs_type(os.makedev(0, 45), str(info)) == "fuse.sshfs"
    assert linux.fs_type(os.makedev(9, 9), str(info)) is None
    assert linux.fs_type(os.makedev(8, 1), str(tmp_path / "missing")) is None
    assert linux.fs_type(os.stat(tmp_path).st_dev) is not None  # this machine's own table


def test_ownership_and_fsync_paths(env: Env) -> None:
    b = env.backend()
    f, _, _ = b.create_file(b.root(), b"f", 0o640, 1000, 1001, True)
    b.write(f, 0, b"x", True)
    b.commit(f)
    st = os.lstat(env.root / "f")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1001, 0o640)
    b.symlink(b.root(), b"l", b"f", 1002, 1003)
    st = os.lstat(env.root / "l")
    assert (st.st_uid, st.st_gid) == (1002, 1003) and stat.S_ISLNK(st.st_mode)
    b.mkdir(b.root(), b"d", 0o2770, 1004, 1005)
    st = os.lstat(env.root / "d")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1004, 1005, 0o2770)


def _as(ident: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a scratch thread acting as ``ident``; its result or its OSError."""

    def attempt() -> Any:
        try:
            return fn(*args)
        except OSError as e:
            return e

    return in_thread_as(ident, attempt)


@pytest.mark.usefixtures("settle_at_once")
def test_read_grants_are_per_identity_bounded_and_follow_ctime(env: Env) -> None:
    from pynfsd.fs.creds import Identity
    from pynfsd.fs.fdcache import MAX_GRANTS

    b = env.backend()
    f, _, _ = b.create_file(b.root(), b"f", 0o644, 0, 0, True)
    b.write(f, 0, b"shared", False)
    b.read(f, 0, 1)
    users = [Identity(3000 + i, 3000 + i, ()) for i in range(3 * MAX_GRANTS)]
    assert b.read_cached(f, 0, 6, users[0]) is None  # granted to root only so far
    assert _as(users[0], b.read, f, 0, 6) == (b"shared", True)
    assert bytes(b.read_cached(f, 0, 6, users[0])[0]) == b"shared"  # type: ignore[index]
    for u in users:
        assert _as(u, b.read, f, 0, 6) == (b"shared", True)
    obj = b._cache.get(f)
    assert obj is not None and len(obj.grants) == MAX_GRANTS  # the oldest are forgotten
    b._cache.release(obj)
    assert b.read_cached(f, 0, 6, users[0]) is None and b.read_cached(f, 0, 6, users[-1])
    os.chmod(env.root / "f", 0o600)  # the ctime moves: no grant holds any more
    assert b.read_cached(f, 0, 6, users[-1]) is None
    err = _as(users[-1], b.read, f, 0, 6)
    assert isinstance(err, OSError) and err.errno == errno.EACCES


@pytest.mark.usefixtures("settle_at_once")
def test_lookup_cached_answers_for_whom_the_kernel_let_search_while_the_ctime_holds(env: Env) -> None:
    from pynfsd.fs.creds import ROOT, Identity

    b = env.backend()
    d, _ = b.mkdir(b.root(), b"d", 0o711, 0, 0)
    f, _, _ = b.create_file(d, b"f", 0o644, 0, 0, True)
    user, other = Identity(3000, 3000, ()), Identity(3001, 3001, ())
    b._cache.invalidate(d)
    d = b.lookup(b.root(), b"d")[0]  # a fresh entry: no grant yet
    assert b.lookup_cached(d, b"f", ROOT) is None
    assert _as(user, b.lookup, d, b"f") == b.lookup(d, b"f")  # both searched as themselves
    for who in (ROOT, user):
        assert b.lookup_cached(d, b"f", who) == b.lookup(d, b"f")
    assert b.lookup_cached(d, b"f", other) is None  # granted to others only
    os.chmod(env.root / "d", 0o700)  # the ctime moves: the kernel decides again
    assert b.lookup_cached(d, b"f", user) is None
    err = _as(user, b.lookup, d, b"f")
    assert isinstance(err, OSError) and err.errno == errno.EACCES
    assert b.lookup_cached(d, b"f", user) is None  # a refusal grants nothing
    b.lookup(d, b"f")
    (env.root / "d" / "new").touch()  # a name added moves the ctime too
    assert b.lookup_cached(d, b"new", ROOT) is None


@pytest.mark.usefixtures("settle_at_once")
def test_lookup_cached_leaves_what_it_cannot_answer_from_memory_to_the_worker(env: Env) -> None:
    from pynfsd.fs.creds import ROOT

    b = env.backend()
    d, _ = b.mkdir(b.root(), b"d", 0o755, 0, 0)
    b.symlink(d, b"ln", b"/etc/passwd", 0, 0)
    b.lookup(d, b"ln")
    ln = b.lookup_cached(d, b"ln", ROOT)
    assert ln is not None and ln[1].type == FileType.LNK  # the link itself, never followed
    assert b.lookup_cached(b"\0" * 40, b"ln", ROOT) is None  # directory not open here
    expect(errno.EINVAL, b.lookup_cached, d, b"..", ROOT)
    got: Any = None
    try:
        got = b.lookup_cached(d, b"absent", ROOT)  # not in the dentry cache: EAGAIN
    except OSError as e:
        got = e.errno  # a negative dentry the kernel keeps: the answer without I/O
    assert got in (None, errno.ENOENT)
    f, _, _ = b.create_file(d, b"f", 0o644, 0, 0, True)
    b.lookup(d, b"f")
    assert b.lookup_cached(f, b"x", ROOT) is None  # not a directory: the worker's ENOTDIR
    b._cached_lookups = False  # as after ENOSYS/EINVAL from a kernel without RESOLVE_CACHED
    assert b.lookup_cached(d, b"f", ROOT) is None


@pytest.mark.usefixtures("settle_at_once")
def test_lookup_cached_never_crosses_a_mount_point(env: Env) -> None:
    import subprocess

    from pynfsd.fs.creds import ROOT

    b = env.backend()
    b.mkdir(b.root(), b"m", 0o755, 0, 0)
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(env.root / "m")],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        b.create_file(b.root(), b"x", 0o644, 0, 0, True)
        b.lookup(b.root(), b"x")  # root may search the export root at this ctime
        expect(errno.EXDEV, b.lookup, b.root(), b"m")
        assert b.lookup_cached(b.root(), b"x", ROOT) is not None
        assert b.lookup_cached(b.root(), b"m", ROOT) is None  # the worker's EXDEV decides
        assert b._cached_lookups
    finally:
        subprocess.run(["umount", str(env.root / "m")], check=True)


@pytest.mark.usefixtures("settle_at_once")
def test_access_cached_is_the_kernels_answer_for_that_identity_at_that_ctime(env: Env) -> None:
    from pynfsd.fs import perm
    from pynfsd.fs.creds import ROOT, Identity

    b = env.backend()
    rwx = perm.READ | perm.WRITE | perm.EXEC
    user, other = Identity(3000, 3000, ()), Identity(3001, 3001, ())
    env.root.chmod(0o777)
    f = _as(user, b.create_file, b.root(), b"f", 0o640, 3000, 3000, True)[0]
    assert b.access_cached(f, rwx, user) is None  # nothing remembered until ACCESS asks
    assert _as(user, b.access, f, rwx) == perm.READ | perm.WRITE
    assert b.access_cached(f, rwx, user) == perm.READ | perm.WRITE
    assert b.access_cached(f, rwx, other) is None and b.access_cached(f, rwx, ROOT) is None
    assert _as(other, b.access, f, rwx) == 0
    assert b.access_cached(f, rwx, other) == 0 and b.access_cached(f, perm.READ, user) == perm.READ
    os.chmod(env.root / "f", 0o444)  # the ctime moves: the kernel decides again
    assert b.access_cached(f, rwx, user) is None and b.access_cached(f, rwx, other) is None
    assert _as(other, b.access, f, rwx) == perm.READ == b.access_cached(f, rwx, other)
    b.setattr(f, mode=0o400)  # a change made here forgets at once, moved ctime or not
    obj = b._cache.get(f)
    assert obj is not None and obj.access == {} and obj.grants == {}
    b._cache.release(obj)
    assert b.access_cached(f, rwx, other) is None
    assert b.access_cached(b"\0" * 40, rwx, user) is None  # not open here: the worker says why
