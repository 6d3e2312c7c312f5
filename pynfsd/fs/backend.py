"""Filesystem backend interface: what the NFS layer needs from a filesystem, and nothing of NFS.

Theory of operation
-------------------
A backend exposes a tree of objects named by opaque *handles* (``bytes``, at most
``MAX_HANDLE_SIZE`` = 100 bytes). All calls are blocking and thread-safe; the NFS layer runs
them on worker threads. The exceptions are ``read_cached``, ``getattr_cached``,
``lookup_cached`` and ``access_cached``, which never block (they answer only from memory, or decline) and are
called on the event loop first.
A backend never imports the NFS layer: every failure is an ``OSError`` whose ``errno`` says
what went wrong, and the NFS layer maps errno -> nfsstat4 in one table.

Errors (the errno values a caller must expect):

* ``ESTALE``   -- the handle is malformed, forged or tampered with (bad MAC), names an object
  outside the export root, or names an object that has since been removed (and is not held:
  ``hold``).
* ``ENOENT``   -- a name does not exist; ``parent()`` of the root (never leaves the root).
* ``EEXIST``, ``ENOTDIR``, ``EISDIR``, ``ENOTEMPTY``, ``EXDEV``, ``EMLINK``, ``ENOSPC``,
  ``EFBIG``, ``EROFS``, ``EPERM``, ``EACCES``, ``ENAMETOOLONG`` -- as in POSIX.
* ``ELOOP``    -- a non-exclusive ``create_file`` found a symlink under the name.
* ``EINVAL``   -- a bad name (empty, ``.``, ``..``, containing ``/`` or NUL), a bad argument
  (``mknod`` of a type that is not a device/socket/FIFO, read/write/truncate of a non-file that
  is not a directory) and, from ``readdir`` only, a bad cookie or verifier (the NFS layer maps
  ``EINVAL`` from ``readdir`` to NFS4ERR_BAD_COOKIE).
* ``EXDEV``    -- ``lookup`` of a mount point inside the export: a backend never crosses into
  another filesystem. ``mount_point`` then describes it, and ``readdir`` lists it with
  ``DirEntry.mount`` set; the caller decides whether to cross (another backend rooted there).

Names are single path components as ``bytes`` (at most ``NAME_MAX`` = 255 bytes).

Identity and permissions
------------------------
A call acts as the identity of the thread that makes it (``pynfsd.fs.creds.current()``: the
already-squashed fsuid, fsgid and groups the worker pool set for the request). A backend with
``enforces_permissions`` (the local backend: the kernel decides, ACLs included) refuses with
``EACCES``/``EPERM`` what that identity may not do, also on READ, WRITE and truncation, with
the owner override (the owner may use a file it opened after a chmod). The caller then checks
nothing itself and asks ``access()`` where the protocol needs an answer without doing the
operation (ACCESS, OPEN of an existing file). A backend without it (the in-memory backend)
leaves permission checks to the caller, which applies ``pynfsd.fs.perm`` to the attributes.

Attributes
----------
``Attrs.fileid`` is unique within the backend and stable for an object's lifetime.
``Attrs.change`` (the NFSv4 change attribute) differs after every modification of the object
made through the backend, also changes when the object is modified by other means, and never
goes backwards for an object -- across server restarts too (see each backend for its scheme).
Directory modifications (create/remove/rename/link inside it) change the directory's
``change``, ``mtime_ns`` and ``ctime_ns``.

readdir
-------
``readdir(dir_h, cookie, verifier, max_entries)`` returns up to ``max_entries`` entries after
``cookie`` (0 = from the start), skipping ``.`` and ``..``. Every entry carries its own
cookie: resuming from *any* returned entry's cookie continues right after that entry, so a
caller that can only encode part of a batch resumes from the last entry it sent. Cookies are
never 0, 1 or 2 (reserved in NFSv4, RFC 7530 section 16.24.4) and stay valid while the
directory changes: an entry present for the whole listing is returned exactly once; entries
added or removed meanwhile may or may not appear. The returned 8-byte verifier is constant
for a directory; a non-zero verifier that this backend did not issue for the directory, or a
cookie of 1 or 2, raises ``EINVAL``. A zero verifier is always accepted. ``eof`` is true when
no entries follow the returned ones.

Listing a directory needs read permission on it; reaching its entries needs search
permission too. A backend with ``enforces_permissions`` lists a directory the caller may read
but not search (mode 0744 for others) as ``ls`` does locally: every entry keeps its name,
cookie and ``fileid`` (what the directory lists for the name, ``getdents``' ``d_ino``) and
carries the errno (``EACCES``) in ``DirEntry.error`` instead of a handle and attributes. The
caller then reports that error per entry (NFSv4 ``rdattr_error``). A backend without it
lists every entry in full and the caller applies the same rule.

I/O
---
``read`` returns ``(data, eof)`` with eof true when the read reached the end of the file.
``write(..., sync=True)`` and ``commit`` put data and metadata on stable storage before they
return. ``write`` returns the number of bytes written.

Times
-----
All times are integer nanoseconds since the Unix epoch. ``setattr`` takes an ``int`` or the
``SET_TO_NOW`` sentinel for ``atime``/``mtime``; ``None`` leaves a field unchanged.
``setattr(mode=...)`` on a symlink is ignored (as knfsd does); ``size`` on a directory is
``EISDIR`` and on other non-files ``EINVAL``.

ACLs
----
A backend whose filesystem holds POSIX ACLs says so (``acl_support``) and reads and writes
them (``get_acl``/``set_acl``, ``pynfsd.fs.posixacl`` values) as the kernel does: setting an
access ACL sets the permission bits of the mode to what it implies (an ACL that says no more
than a mode is kept as the mode alone), chmod rewrites the ACL's owner, mask (or group) and
other entries, and an object created in a directory with a default ACL inherits it, masked by
the mode asked for. Setting an ACL needs ownership of the object (``EPERM``). Symlinks have
no ACL (``EOPNOTSUPP``); nor does any object of a backend without support.
"""

from __future__ import annotations

import abc
import enum
import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final, NamedTuple

from pynfsd.fs.posixacl import PosixAcl

if TYPE_CHECKING:
    from pynfsd.fs.creds import Identity

MAX_HANDLE_SIZE: Final = 100
NAME_MAX: Final = 255


class FileType(enum.IntEnum):
    """Object types; values equal NFSv4 nfs_ftype4 for the types a filesystem holds."""

    REG = 1
    DIR = 2
    BLK = 3
    CHR = 4
    LNK = 5
    SOCK = 6
    FIFO = 7


class SetToNow(enum.Enum):
    """Type of the ``SET_TO_NOW`` sentinel."""

    SET_TO_NOW = "SET_TO_NOW"


SET_TO_NOW: Final = SetToNow.SET_TO_NOW

TimeArg = int | SetToNow | None


@dataclass(slots=True, frozen=True)
class AttrChanges:
    """What one ``setattr`` changes; ``None`` leaves a field as it is (see "Times")."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime: TimeArg = None
    mtime: TimeArg = None

    def changes_anything(self) -> bool:
        """Whether any field is to change (the object's change attribute moves only then)."""
        fields = (self.mode, self.uid, self.gid, self.size, self.atime, self.mtime)
        return any(v is not None for v in fields)


class Attrs(NamedTuple):
    """Attributes of one object (``mode`` holds only the 0o7777 permission bits).

    A named tuple, not a frozen dataclass: one is made for every object a READDIR lists, and a
    frozen dataclass's ``__init__`` sets each of the 13 fields through ``object.__setattr__``.
    """

    type: FileType
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    space_used: int
    rdev: tuple[int, int]
    fileid: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    change: int


@dataclass(slots=True, frozen=True)
class FsStat:
    """Filesystem space and file counts; ``*_avail`` is what an unprivileged user may use."""

    bytes_total: int
    bytes_free: int
    bytes_avail: int
    files_total: int
    files_free: int
    files_avail: int
    name_max: int


@dataclass(slots=True, frozen=True)
class MountPoint:
    """A filesystem mounted on a directory of the backend's tree.

    ``path`` is the mount point's absolute path on the server, ``covered_fileid`` the fileid of
    the directory it covers (which cannot be opened), ``fs_key`` stable bytes that tell this
    mounted filesystem apart from any other (the same while it stays mounted there).
    """

    path: str
    covered_fileid: int
    fs_key: bytes


class DirEntry(NamedTuple):
    """One readdir entry; ``cookie`` resumes the listing right after this entry (a named
    tuple: one is made per entry listed).

    For a mount point, ``mount`` describes it, ``handle`` is empty and ``attrs`` are those of
    the mounted root as ``stat`` shows them (change 0): the caller crosses or skips it.
    ``fileid`` is what the directory lists for the name (``d_ino``: for a mount point the
    covered directory's). When the entry's object could not be reached, ``error`` holds the
    errno, ``handle`` is empty and ``attrs`` None (see "readdir" in the module docstring).
    """

    name: bytes
    cookie: int
    handle: bytes
    attrs: Attrs | None
    mount: MountPoint | None = None
    fileid: int = 0
    error: int = 0


class Backend(abc.ABC):
    """A filesystem tree addressed by opaque handles. See the module docstring."""

    enforces_permissions: ClassVar[bool] = False

    @abc.abstractmethod
    def root(self) -> bytes:
        """Handle of the export root."""

    @abc.abstractmethod
    def getattr(self, h: bytes) -> Attrs:
        """Attributes of ``h``."""

    @abc.abstractmethod
    def lookup(self, dir_h: bytes, name: bytes) -> tuple[bytes, Attrs]:
        """Find ``name`` in directory ``dir_h`` (symlinks are never followed)."""

    @abc.abstractmethod
    def parent(self, dir_h: bytes) -> tuple[bytes, Attrs]:
        """The parent directory of ``dir_h``; ``ENOENT`` for the root."""

    @abc.abstractmethod
    def readdir(
        self, dir_h: bytes, cookie: int, verifier: bytes, max_entries: int
    ) -> tuple[list[DirEntry], bool, bytes]:
        """Entries after ``cookie``: ``(entries, eof, verifier8)``."""

    @abc.abstractmethod
    def read(self, h: bytes, offset: int, count: int) -> tuple[bytes, bool]:
        """Up to ``count`` bytes at ``offset``: ``(data, eof)``."""

    def getattr_cached(self, h: bytes) -> Attrs | None:
        """``getattr`` if it can be answered without blocking, else None (the caller then
        calls ``getattr`` on a worker thread). Never blocks; the default always declines."""
        return None

    def access_cached(self, h: bytes, want: int, who: Identity) -> int | None:
        """``access`` by ``who`` if it can be answered without blocking and without switching
        credentials, else None (the caller then calls ``access`` on a worker thread acting as
        ``who``). Never blocks; the default always declines."""
        return None

    def lookup_cached(self, dir_h: bytes, name: bytes, who: Identity) -> tuple[bytes, Attrs] | None:
        """``lookup`` by ``who`` if it can be answered without blocking and without switching
        credentials, else None (the caller then calls ``lookup`` on a worker thread acting as
        ``who``). Never blocks; the default always declines."""
        return None

    def read_cached(
        self, h: bytes, offset: int, count: int, who: Identity
    ) -> tuple[bytes | bytearray, bool] | None:
        """``read`` by ``who`` if it can be answered without blocking on I/O, else None (the
        caller then calls ``read`` on a worker thread acting as ``who``). Never blocks and
        never switches credentials; the default always declines."""
        return None

    def access(self, h: bytes, want: int) -> int:
        """The subset of ``want`` (``perm.READ|WRITE|EXEC`` bits) the calling thread's identity
        is granted on ``h``. Asked only of a backend that ``enforces_permissions``; for the
        others the caller applies ``pynfsd.fs.perm`` to the attributes."""
        raise OSError(errno.ENOTSUP, "this backend leaves permissions to the caller")

    @abc.abstractmethod
    def write(self, h: bytes, offset: int, data: bytes, sync: bool) -> int:
        """Write ``data`` at ``offset``; with ``sync`` it is on stable storage on return."""

    @abc.abstractmethod
    def commit(self, h: bytes) -> None:
        """Put all written data and metadata of ``h`` on stable storage."""

    @abc.abstractmethod
    def create_file(
        self, dir_h: bytes, name: bytes, mode: int, uid: int, gid: int, exclusive: bool
    ) -> tuple[bytes, Attrs, bool]:
        """Create a regular file: ``(handle, attrs, created)``.

        ``exclusive``: ``EEXIST`` if the name exists. Otherwise an existing regular file is
        returned unchanged with ``created=False`` (a directory is ``EISDIR``, a symlink
        ``ELOOP``, another type ``EINVAL``).
        """

    @abc.abstractmethod
    def mkdir(
        self, dir_h: bytes, name: bytes, mode: int, uid: int, gid: int
    ) -> tuple[bytes, Attrs]:
        """Create a directory."""

    @abc.abstractmethod
    def symlink(
        self, dir_h: bytes, name: bytes, target: bytes, uid: int, gid: int
    ) -> tuple[bytes, Attrs]:
        """Create a symlink to ``target`` (never interpreted by the backend)."""

    @abc.abstractmethod
    def mknod(
        self, dir_h: bytes, name: bytes, ftype: FileType, mode: int, rdev: tuple[int, int],
        uid: int, gid: int
    ) -> tuple[bytes, Attrs]:
        """Create a BLK/CHR device, SOCK or FIFO (other types: ``EINVAL``)."""

    @abc.abstractmethod
    def readlink(self, h: bytes) -> bytes:
        """Target of symlink ``h`` (``EINVAL`` if not a symlink)."""

    @abc.abstractmethod
    def remove(self, dir_h: bytes, name: bytes) -> None:
        """Remove a non-directory or an empty directory."""

    @abc.abstractmethod
    def rename(
        self, src_dir_h: bytes, src_name: bytes, dst_dir_h: bytes, dst_name: bytes
    ) -> None:
        """POSIX rename(2), replacing an existing compatible target."""

    @abc.abstractmethod
    def link(self, h: bytes, dir_h: bytes, name: bytes) -> Attrs:
        """Hard link ``h`` as ``name`` in ``dir_h``; returns the new attributes of ``h``."""

    def setattr(
        self,
        h: bytes,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size: int | None = None,
        atime: TimeArg = None,
        mtime: TimeArg = None,
    ) -> Attrs:
        """Change the given attributes; returns the attributes afterwards."""
        return self.change_attrs(h, AttrChanges(mode, uid, gid, size, atime, mtime))

    @abc.abstractmethod
    def change_attrs(self, h: bytes, c: AttrChanges) -> Attrs:
        """``setattr`` with its keywords as one value ``c``: what a backend implements."""

    @abc.abstractmethod
    def statfs(self, h: bytes) -> FsStat:
        """Space and file counts of the filesystem holding ``h``."""

    def acl_support(self) -> bool:
        """Whether the filesystem holds POSIX ACLs (blocking: it may ask the filesystem)."""
        return False

    def get_acl(self, h: bytes) -> tuple[PosixAcl | None, PosixAcl | None]:
        """The access ACL of ``h`` and, for a directory, its default ACL (None: none; an
        object without an access ACL follows its mode)."""
        raise OSError(errno.EOPNOTSUPP, "no ACLs on this backend")

    def set_acl(self, h: bytes, access: PosixAcl, default: PosixAcl | None) -> Attrs:
        """Replace the access ACL of ``h`` and, for a directory, its default ACL (None:
        removed); returns the attributes afterwards (the mode follows the access ACL)."""
        raise OSError(errno.EOPNOTSUPP, "no ACLs on this backend")

    def acl_cached(self, h: bytes) -> PosixAcl | None:
        """The access ACL of ``h`` when it can be told without blocking, for a backend that
        leaves permission checks to the caller (``pynfsd.fs.perm``); None: none or unknown."""
        return None

    def mount_point(self, dir_h: bytes, name: bytes) -> MountPoint:
        """The filesystem mounted on ``name`` in ``dir_h`` (after ``lookup`` gave ``EXDEV``);
        ``EXDEV`` when the backend has no mount points, ``ENOENT``/``ENOTDIR`` as ``lookup``."""
        raise OSError(errno.EXDEV, "no mount points here")

    def where(self, h: bytes) -> tuple[int, int, str]:
        """``(st_dev, fileid, path)`` of ``h``, for administrators (knfsd's `states` file:
        superblock and file name); the path is "" when the backend has none.  Default: from
        ``getattr``."""
        return 0, self.getattr(h).fileid, ""

    def hold(self, h: bytes) -> None:
        """Keep ``h`` usable through its handle after its last link is removed, until
        ``release``, as an open file descriptor keeps a file (NFSv4 opens use this, as knfsd
        holds an open file).  Holds of one handle nest.  Default: no holding."""
        return None

    def release(self, h: bytes) -> None:
        """End one ``hold`` of ``h``; once none is left a removed ``h`` is ESTALE."""
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Release cached resources (open fds). The backend may not be used afterwards."""
