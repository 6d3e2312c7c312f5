"""Contract tests every filesystem backend must pass (run against LocalBackend and MemoryBackend)."""

from __future__ import annotations

import errno
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pynfsd.fs import creds
from pynfsd.fs.backend import MAX_HANDLE_SIZE, SET_TO_NOW, Attrs, Backend, DirEntry, FileType
from pynfsd.fs.creds import Identity
from pynfsd.fs.local import LocalBackend
from pynfsd.fs.memory import MemoryBackend
from tests.identity import in_thread_as

Z8 = bytes(8)
T = TypeVar("T")


@pytest.fixture(params=["local", "memory"])
def fs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    backend: Backend
    if request.param == "local":
        (tmp_path / "export").mkdir()
        backend = LocalBackend(str(tmp_path / "export"), str(tmp_path / "state"))
    else:
        backend = MemoryBackend()
    yield backend
    backend.close()


def expect(code: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    with pytest.raises(OSError) as info:
        fn(*args, **kwargs)
    assert info.value.errno == code, f"expected {errno.errorcode[code]}, got {info.value!r}"


def mkfile(fs: Backend, name: bytes, data: bytes = b"", d: bytes | None = None) -> bytes:
    h, _, created = fs.create_file(fs.root() if d is None else d, name, 0o644, 0, 0, True)
    assert created
    if data:
        fs.write(h, 0, data, False)
    return h


def listing(fs: Backend, d: bytes, batch: int = 1000) -> list[DirEntry]:
    out: list[DirEntry] = []
    cookie, verf, eof = 0, Z8, False
    while not eof:
        entries, eof, verf = fs.readdir(d, cookie, verf, batch)
        out += entries
        if entries:
            cookie = entries[-1].cookie
    return out


# -- root, getattr, lookup, names ----------------------------------------------------------


def test_root_is_a_directory_with_small_handle(fs: Backend) -> None:
    root = fs.root()
    assert 0 < len(root) <= MAX_HANDLE_SIZE
    attrs = fs.getattr(root)
    assert attrs.type == FileType.DIR and attrs.nlink >= 2


def test_lookup_finds_created_objects_with_the_same_handle(fs: Backend) -> None:
    h = mkfile(fs, b"a")
    found, attrs = fs.lookup(fs.root(), b"a")
    assert found == h and attrs.type == FileType.REG
    assert attrs.fileid == fs.getattr(h).fileid


def test_lookup_errors(fs: Backend) -> None:
    h = mkfile(fs, b"f")
    expect(errno.ENOENT, fs.lookup, fs.root(), b"missing")
    expect(errno.ENOTDIR, fs.lookup, h, b"x")


@pytest.mark.parametrize("name", [b"", b".", b"..", b"a/b", b"/", b"a\0b"])
def test_bad_names_are_einval(fs: Backend, name: bytes) -> None:
    root = fs.root()
    expect(errno.EINVAL, fs.lookup, root, name)
    expect(errno.EINVAL, fs.create_file, root, name, 0o644, 0, 0, False)
    expect(errno.EINVAL, fs.mkdir, root, name, 0o755, 0, 0)
    expect(errno.EINVAL, fs.remove, root, name)


def test_name_too_long(fs: Backend) -> None:
    expect(errno.ENAMETOOLONG, fs.lookup, fs.root(), b"x" * 256)
    expect(errno.ENAMETOOLONG, fs.mkdir, fs.root(), b"x" * 256, 0o755, 0, 0)
    fs.mkdir(fs.root(), b"x" * 255, 0o755, 0, 0)


def test_parent(fs: Backend) -> None:
    root = fs.root()
    expect(errno.ENOENT, fs.parent, root)
    d, _ = fs.mkdir(root, b"d", 0o755, 0, 0)
    e, _ = fs.mkdir(d, b"e", 0o755, 0, 0)
    assert fs.parent(e)[0] == d
    assert fs.parent(d)[0] == root
    expect(errno.ENOTDIR, fs.parent, mkfile(fs, b"f"))


# -- handles -------------------------------------------------------------------------------


def test_forged_and_tampered_handles_are_stale(fs: Backend) -> None:
    h = mkfile(fs, b"f")
    for i in range(len(h)):
        bad = bytearray(h)
        bad[i] ^= 0x01
        expect(errno.ESTALE, fs.getattr, bytes(bad))
    for junk in (b"", h[:-1], h + b"\0", bytes(len(h)), bytes(MAX_HANDLE_SIZE + 1)):
        expect(errno.ESTALE, fs.getattr, junk)


def test_handle_goes_stale_after_removal(fs: Backend) -> None:
    h = mkfile(fs, b"f", b"data")
    d, _ = fs.mkdir(fs.root(), b"d", 0o755, 0, 0)
    fs.remove(fs.root(), b"f")
    fs.remove(fs.root(), b"d")
    for call in (fs.getattr, lambda x: fs.read(x, 0, 1), fs.commit, fs.readlink):
        expect(errno.ESTALE, call, h)
    expect(errno.ESTALE, fs.getattr, d)
    expect(errno.ESTALE, fs.lookup, d, b"x")
    expect(errno.ESTALE, fs.readdir, d, 0, Z8, 10)


# -- creation ------------------------------------------------------------------------------


def test_create_file_sets_mode_and_owner(fs: Backend) -> None:
    h, attrs, created = fs.create_file(fs.root(), b"f", 0o2751, 1234, 5678, True)
    assert created and attrs.type == FileType.REG
    assert (attrs.mode, attrs.uid, attrs.gid, attrs.size, attrs.nlink) == (0o2751, 1234, 5678, 0, 1)
    assert fs.getattr(h) == attrs


def test_create_file_exclusive_and_unchecked(fs: Backend) -> None:
    h = mkfile(fs, b"f", b"keep")
    expect(errno.EEXIST, fs.create_file, fs.root(), b"f", 0o600, 0, 0, True)
    h2, attrs, created = fs.create_file(fs.root(), b"f", 0o600, 1, 1, False)
    assert (h2, created, attrs.size, attrs.mode) == (h, False, 4, 0o644)


def test_create_file_over_other_types(fs: Backend) -> None:
    root = fs.root()
    fs.mkdir(root, b"d", 0o755, 0, 0)
    fs.symlink(root, b"l", b"target", 0, 0)
    fs.mknod(root, b"p", FileType.FIFO, 0o644, (0, 0), 0, 0)
    expect(errno.EISDIR, fs.create_file, root, b"d", 0o644, 0, 0, False)
    expect(errno.ELOOP, fs.create_file, root, b"l", 0o644, 0, 0, False)
    expect(errno.EINVAL, fs.create_file, root, b"p", 0o644, 0, 0, False)
    for name in (b"d", b"l", b"p"):
        expect(errno.EEXIST, fs.create_file, root, name, 0o644, 0, 0, True)


def test_mkdir(fs: Backend) -> None:
    root = fs.root()
    before = fs.getattr(root)
    d, attrs = fs.mkdir(root, b"d", 0o1750, 7, 8)
    assert (attrs.type, attrs.mode, attrs.uid, attrs.gid, attrs.nlink) == (
        FileType.DIR, 0o1750, 7, 8, 2)
    after = fs.getattr(root)
    assert after.nlink == before.nlink + 1 and after.change != before.change
    expect(errno.EEXIST, fs.mkdir, root, b"d", 0o755, 0, 0)
    expect(errno.ENOTDIR, fs.mkdir, mkfile(fs, b"f"), b"x", 0o755, 0, 0)


def test_symlink_and_readlink(fs: Backend) -> None:
    target = b"../../etc/\xffpasswd"
    h, attrs = fs.symlink(fs.root(), b"l", target, 11, 12)
    assert (attrs.type, attrs.mode, attrs.uid, attrs.gid, attrs.size) == (
        FileType.LNK, 0o777, 11, 12, len(target))
    assert fs.readlink(h) == target
    assert fs.lookup(fs.root(), b"l")[0] == h
    expect(errno.EINVAL, fs.readlink, mkfile(fs, b"f"))
    expect(errno.EINVAL, fs.readlink, fs.root())
    expect(errno.ENOENT, fs.symlink, fs.root(), b"empty", b"", 0, 0)
    expect(errno.EEXIST, fs.symlink, fs.root(), b"l", b"x", 0, 0)


@pytest.mark.parametrize("ftype", [FileType.FIFO, FileType.SOCK, FileType.CHR, FileType.BLK])
def test_mknod(fs: Backend, ftype: FileType) -> None:
    h, attrs = fs.mknod(fs.root(), b"n", ftype, 0o640, (1, 3), 21, 22)
    assert (attrs.type, attrs.mode, attrs.uid, attrs.gid) == (ftype, 0o640, 21, 22)
    if ftype in (FileType.CHR, FileType.BLK):
        assert attrs.rdev == (1, 3)
    assert fs.getattr(h) == attrs
    expect(errno.EINVAL, fs.read, h, 0, 1)
    expect(errno.EINVAL, fs.write, h, 0, b"x", False)


@pytest.mark.parametrize("ftype", [FileType.REG, FileType.DIR, FileType.LNK])
def test_mknod_rejects_other_types(fs: Backend, ftype: FileType) -> None:
    expect(errno.EINVAL, fs.mknod, fs.root(), b"n", ftype, 0o640, (0, 0), 0, 0)


# -- I/O -----------------------------------------------------------------------------------


def test_read_write_and_eof(fs: Backend) -> None:
    h = mkfile(fs, b"f")
    assert fs.read(h, 0, 10) == (b"", True)
    assert fs.write(h, 0, b"hello world", False) == 11
    assert fs.read(h, 0, 5) == (b"hello", False)
    assert fs.read(h, 6, 5) == (b"world", True)
    assert fs.read(h, 6, 100) == (b"world", True)
    assert fs.read(h, 100, 10) == (b"", True)
    assert fs.write(h, 20, b"!", True) == 1
    assert fs.read(h, 0, 100) == (b"hello world" + bytes(9) + b"!", True)
    assert fs.getattr(h).size == 21
    fs.commit(h)


def test_concurrent_writes_to_one_file(fs: Backend) -> None:
    """Writes from many worker threads at once (the server's pool) all land."""
    from concurrent.futures import ThreadPoolExecutor

    h = mkfile(fs, b"f")
    chunk = 4096
    with ThreadPoolExecutor(8) as pool:
        done = list(pool.map(lambda i: fs.write(h, i * chunk, bytes([i]) * chunk, False), range(64)))
    assert done == [chunk] * 64
    assert fs.read(h, 0, 64 * chunk) == (b"".join(bytes([i]) * chunk for i in range(64)), True)


def test_io_on_non_files(fs: Backend) -> None:
    d, _ = fs.mkdir(fs.root(), b"d", 0o755, 0, 0)
    lnk, _ = fs.symlink(fs.root(), b"l", b"f", 0, 0)
    expect(errno.EISDIR, fs.read, d, 0, 1)
    expect(errno.EISDIR, fs.write, d, 0, b"x", False)
    expect(errno.EISDIR, fs.commit, d)
    expect(errno.EINVAL, fs.read, lnk, 0, 1)
    expect(errno.EINVAL, fs.write, lnk, 0, b"x", True)


def test_change_differs_after_every_write(fs: Backend) -> None:
    h = mkfile(fs, b"f")
    seen = [fs.getattr(h).change]
    for i in range(200):
        fs.write(h, i, b"x", False)
        seen.append(fs.getattr(h).change)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


def test_change_differs_after_every_modification(fs: Backend) -> None:
    root = fs.root()
    h = mkfile(fs, b"f")
    d, _ = fs.mkdir(root, b"d", 0o755, 0, 0)
    steps: list[Callable[[], object]] = [
        lambda: fs.setattr(h, mode=0o600),
        lambda: fs.setattr(h, uid=5),
        lambda: fs.setattr(h, size=10),
        lambda: fs.setattr(h, mtime=SET_TO_NOW),
        lambda: fs.link(h, d, b"hl"),
        lambda: fs.remove(d, b"hl"),
        lambda: fs.rename(root, b"f", d, b"g"),
        lambda: fs.rename(d, b"g", root, b"f"),
    ]
    values = [(fs.getattr(h).change, fs.getattr(d).change)]
    for step in steps:
        step()
        values.append((fs.getattr(h).change, fs.getattr(d).change))
    file_changes = [v[0] for v in values]
    assert len(set(file_changes)) == len(file_changes) and file_changes == sorted(file_changes)
    dir_changes = [v[1] for v in values[4:]]  # link, remove, rename, rename modify d
    assert len(set(dir_changes)) == len(dir_changes)


def test_concurrent_writers(fs: Backend) -> None:
    h = mkfile(fs, b"f")
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(50):
                fs.write(h, (k * 50 + i) * 4, b"%04d" % k, False)
                fs.getattr(h)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    data, _ = fs.read(h, 0, 4 * 200)
    assert data == b"".join(b"%04d" % (i // 50) for i in range(200))


# -- remove, rename, link ------------------------------------------------------------------


def test_remove(fs: Backend) -> None:
    root = fs.root()
    d, _ = fs.mkdir(root, b"d", 0o755, 0, 0)
    mkfile(fs, b"inner", d=d)
    expect(errno.ENOTEMPTY, fs.remove, root, b"d")
    expect(errno.ENOENT, fs.remove, root, b"missing")
    expect(errno.ENOTDIR, fs.remove, mkfile(fs, b"f"), b"x")
    fs.remove(d, b"inner")
    nlink = fs.getattr(root).nlink
    fs.remove(root, b"d")
    assert fs.getattr(root).nlink == nlink - 1
    expect(errno.ENOENT, fs.lookup, root, b"d")


def test_hard_links(fs: Backend) -> None:
    root = fs.root()
    h = mkfile(fs, b"a", b"x")
    d, _ = fs.mkdir(root, b"d", 0o755, 0, 0)
    attrs = fs.link(h, d, b"b")
    assert attrs.nlink == 2 and fs.lookup(d, b"b")[0] == h
    fs.remove(root, b"a")
    assert fs.getattr(h).nlink == 1 and fs.read(h, 0, 1) == (b"x", True)
    expect(errno.EEXIST, fs.link, h, root, b"d")
    expect(errno.EPERM, fs.link, d, root, b"dlink")
    expect(errno.ENOTDIR, fs.link, h, h, b"x")


def test_rename_moves_and_replaces(fs: Backend) -> None:
    root = fs.root()
    a = mkfile(fs, b"a", b"A")
    b = mkfile(fs, b"b", b"B")
    fs.rename(root, b"a", root, b"b")
    assert fs.lookup(root, b"b")[0] == a
    expect(errno.ENOENT, fs.lookup, root, b"a")
    expect(errno.ESTALE, fs.getattr, b)
    expect(errno.ENOENT, fs.rename, root, b"a", root, b"c")


def test_rename_directories(fs: Backend) -> None:
    root = fs.root()
    d1, _ = fs.mkdir(root, b"d1", 0o755, 0, 0)
    d2, _ = fs.mkdir(root, b"d2", 0o755, 0, 0)
    sub, _ = fs.mkdir(d1, b"sub", 0o755, 0, 0)
    fs.rename(d1, b"sub", d2, b"moved")
    assert fs.getattr(d1).nlink == 2 and fs.getattr(d2).nlink == 3
    assert fs.parent(sub)[0] == d2
    expect(errno.EINVAL, fs.rename, root, b"d2", sub, b"loop")
    empty, _ = fs.mkdir(root, b"empty", 0o755, 0, 0)
    fs.rename(root, b"d1", root, b"empty")
    expect(errno.ESTALE, fs.getattr, empty)
    assert fs.lookup(root, b"empty")[0] == d1


def test_rename_type_errors(fs: Backend) -> None:
    root = fs.root()
    d, _ = fs.mkdir(root, b"d", 0o755, 0, 0)
    fs.mkdir(root, b"full", 0o755, 0, 0)
    mkfile(fs, b"x", d=fs.lookup(root, b"full")[0])
    mkfile(fs, b"f")
    expect(errno.ENOTDIR, fs.rename, root, b"d", root, b"f")
    expect(errno.EISDIR, fs.rename, root, b"f", root, b"d")
    with pytest.raises(OSError) as info:
        fs.rename(root, b"d", root, b"full")
    assert info.value.errno in (errno.ENOTEMPTY, errno.EEXIST)
    expect(errno.EINVAL, fs.rename, root, b"f", root, b"")


def test_rename_onto_hard_link_of_itself_is_a_no_op(fs: Backend) -> None:
    root = fs.root()
    h = mkfile(fs, b"a")
    fs.link(h, root, b"b")
    fs.rename(root, b"a", root, b"b")
    assert fs.lookup(root, b"a")[0] == h and fs.lookup(root, b"b")[0] == h
    fs.rename(root, b"a", root, b"a")
    assert fs.getattr(h).nlink == 2


# -- setattr, statfs -----------------------------------------------------------------------


def test_setattr_mode_owner_size(fs: Backend) -> None:
    h = mkfile(fs, b"f", b"0123456789")
    attrs = fs.setattr(h, mode=0o4711, uid=42, gid=43)
    assert (attrs.mode, attrs.uid, attrs.gid) == (0o4711, 42, 43)
    assert fs.setattr(h, uid=44).mode == 0o711  # chown clears set-uid
    assert fs.setattr(h, size=4).size == 4
    assert fs.read(h, 0, 100) == (b"0123", True)
    assert fs.setattr(h, size=8).size == 8
    assert fs.read(h, 0, 100) == (b"0123" + bytes(4), True)
    assert fs.setattr(h) == fs.getattr(h)


def test_setattr_times(fs: Backend) -> None:
    h = mkfile(fs, b"f")
    attrs = fs.setattr(h, atime=1_000_000_001, mtime=2_000_000_002)
    assert (attrs.atime_ns, attrs.mtime_ns) == (1_000_000_001, 2_000_000_002)
    attrs = fs.setattr(h, mtime=SET_TO_NOW)
    assert attrs.atime_ns == 1_000_000_001 and attrs.mtime_ns > 2_000_000_002
    assert attrs.ctime_ns >= attrs.mtime_ns


def test_setattr_on_directories_and_symlinks(fs: Backend) -> None:
    d, _ = fs.mkdir(fs.root(), b"d", 0o755, 0, 0)
    lnk, _ = fs.symlink(fs.root(), b"l", b"d", 0, 0)
    expect(errno.EISDIR, fs.setattr, d, size=0)
    expect(errno.EINVAL, fs.setattr, lnk, size=0)
    attrs = fs.setattr(lnk, mode=0o600, uid=9, gid=9, mtime=3_000_000_000)
    assert (attrs.mode, attrs.uid, attrs.mtime_ns) == (0o777, 9, 3_000_000_000)
    assert fs.getattr(d).uid == 0  # the link was not followed
    assert fs.setattr(d, mode=0o3777).mode == 0o3777


def test_statfs(fs: Backend) -> None:
    st = fs.statfs(fs.root())
    assert st.bytes_total >= st.bytes_free >= st.bytes_avail >= 0
    assert st.files_total >= st.files_free >= st.files_avail >= 0
    assert st.name_max == 255


# -- readdir -------------------------------------------------------------------------------


def test_readdir_empty_and_small(fs: Backend) -> None:
    root = fs.root()
    entries, eof, verf = fs.readdir(root, 0, Z8, 10)
    assert (entries, eof, len(verf)) == ([], True, 8)
    handles = {name: mkfile(fs, name) for name in (b"a", b"b", b"c")}
    entries = listing(fs, root)
    assert {e.name: e.handle for e in entries} == handles
    assert all(e.cookie > 2 for e in entries)
    assert all(e.attrs == fs.getattr(e.handle) for e in entries)


def test_readdir_cookies_and_verifiers(fs: Backend) -> None:
    root = fs.root()
    for i in range(10):
        mkfile(fs, b"f%d" % i)
    first, eof, verf = fs.readdir(root, 0, Z8, 4)
    assert len(first) == 4 and not eof
    rest, eof, verf2 = fs.readdir(root, first[1].cookie, verf, 100)
    assert eof and verf2 == verf
    assert [e.name for e in rest[:2]] == [e.name for e in first[2:]]
    assert len(rest) == 8
    expect(errno.EINVAL, fs.readdir, root, 1, Z8, 10)
    expect(errno.EINVAL, fs.readdir, root, 2, Z8, 10)
    expect(errno.EINVAL, fs.readdir, root, first[0].cookie, b"\x01" * 8, 10)
    d, _ = fs.mkdir(root, b"d", 0o755, 0, 0)
    assert fs.readdir(d, 0, Z8, 1)[2] != verf
    expect(errno.ENOTDIR, fs.readdir, first[0].handle, 0, Z8, 10)


def test_readdir_exact_batch_reports_eof(fs: Backend) -> None:
    for i in range(3):
        mkfile(fs, b"f%d" % i)
    entries, eof, _ = fs.readdir(fs.root(), 0, Z8, 3)
    assert len(entries) == 3 and eof
    entries, eof, _ = fs.readdir(fs.root(), 0, Z8, 0)
    assert entries == [] and not eof


def test_readdir_10000_entries_with_concurrent_changes(fs: Backend) -> None:
    root = fs.root()
    names = [b"entry-%05d" % i for i in range(10_000)]
    for name in names:
        fs.create_file(root, name, 0o644, 0, 0, True)
    rng = random.Random(7)
    alive, removed = set(names), set()
    seen: list[bytes] = []
    cookie, verf, eof, added = 0, Z8, False, 0
    while not eof:
        entries, eof, verf = fs.readdir(root, cookie, verf, 97)
        seen += [e.name for e in entries]
        if entries:
            cookie = entries[-1].cookie
        for victim in rng.sample(sorted(alive), min(len(alive), 20)):
            fs.remove(root, victim)
            alive.discard(victim)
            removed.add(victim)
        fs.create_file(root, b"new-%05d" % added, 0o644, 0, 0, True)
        added += 1
    assert len(seen) == len(set(seen)), "an entry was returned twice"
    assert alive <= set(seen), "an entry present throughout was skipped"
    assert set(seen) <= set(names) | {b"new-%05d" % i for i in range(added)}


def test_readdir_resumes_after_the_entry_at_the_cookie_is_removed(fs: Backend) -> None:
    root = fs.root()
    for i in range(50):
        mkfile(fs, b"f%02d" % i)
    first, _, verf = fs.readdir(root, 0, Z8, 10)
    fs.remove(root, first[-1].name)
    rest = listing(fs, root)
    tail, eof, _ = fs.readdir(root, first[-1].cookie, verf, 100)
    assert eof
    assert {e.name for e in first[:-1]} | {e.name for e in tail} == {e.name for e in rest}


def test_readdir_attrs_are_lstat(fs: Backend) -> None:
    fs.symlink(fs.root(), b"l", b"/", 0, 0)
    (entry,) = listing(fs, fs.root())
    assert entry.attrs is not None and entry.attrs.type == FileType.LNK
    assert entry.fileid == entry.attrs.fileid


def _as_user(fn: Callable[[], T]) -> T:
    """``fn()`` in a thread acting as uid/gid 1000 (no groups), as a backend's caller."""
    return in_thread_as(Identity(1000, 1000, ()), fn)


@pytest.mark.skipif(not creds.supported(), reason="needs root on Linux")
def test_readdir_of_a_directory_readable_but_not_searchable(fs: Backend) -> None:
    """A backend that enforces permissions lists the names with EACCES instead of a handle
    and attributes; the fileids and cookies are those of a full listing (the others list in
    full: the caller applies the rule)."""
    d, _ = fs.mkdir(fs.root(), b"d", 0o744, 0, 0)
    for i in range(7):
        mkfile(fs, b"f%d" % i, d=d)
    full = listing(fs, d)
    theirs = _as_user(lambda: listing(fs, d, batch=3))
    assert [(e.name, e.cookie, e.fileid) for e in theirs] == [
        (e.name, e.cookie, e.attrs.fileid if e.attrs else -1) for e in full
    ]
    if fs.enforces_permissions:
        assert {(e.error, e.handle, e.attrs) for e in theirs} == {(errno.EACCES, b"", None)}
    else:
        assert [(e.handle, e.attrs) for e in theirs] == [(e.handle, e.attrs) for e in full]
    first, _, verf = _as_user(lambda: fs.readdir(d, 0, Z8, 2))
    rest, eof, _ = fs.readdir(d, first[-1].cookie, verf, 100)  # a user's cookie resumes
    assert eof and [e.name for e in rest] == [e.name for e in full[2:]]


def test_a_held_file_outlives_its_last_link_until_released(fs: Backend) -> None:
    f = mkfile(fs, b"f", b"held")
    g = mkfile(fs, b"g", b"new")
    fs.hold(f)
    fs.rename(fs.root(), b"g", fs.root(), b"f")  # over the held file
    assert fs.getattr(f).nlink == 0
    assert fs.read(f, 0, 10) == (b"held", True)
    fs.write(f, 4, b"!", True)
    assert fs.read(f, 0, 10) == (b"held!", True)
    assert fs.read(fs.lookup(fs.root(), b"f")[0], 0, 10) == (b"new", True)
    expect(errno.ENOENT, fs.link, f, fs.root(), b"back")
    fs.release(f)
    expect(errno.ESTALE, fs.getattr, f)
    assert fs.getattr(g).nlink == 1


def test_attrs_is_frozen(fs: Backend) -> None:
    attrs: Attrs = fs.getattr(fs.root())
    with pytest.raises(AttributeError):
        attrs.size = 1  # type: ignore[misc]
