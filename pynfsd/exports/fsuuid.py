"""The uuid rpc.mountd gives an export that has no `fsid=`: its `uuid_by_path`, reproduced.

Theory of operation.  knfsd must name an exported filesystem in its filehandles.  For an
export without `fsid=`, rpc.mountd (nfs-utils `support/export/cache.c`, `dump_to_cache`) adds
`uuid <16 bytes>` to its nfsd.export answer, made by `uuid_by_path(path, 0, 16)`:

1. `statfs64(path)`; unless the filesystem's magic number is in `NONBLKID` (ZFS, btrfs, CIFS,
   devfs, Coda, NCP, NFS, proc, sysfs, SMB, tmpfs: network or pseudo filesystems, and those
   whose statfs fsid says more than the device's uuid), libblkid's `UUID` tag of the block
   device the path lives on (`blkid_devno_to_devname(st_dev)`, `blkid_get_dev(...,
   BLKID_DEV_NORMAL)`; a device whose `TYPE` is `btrfs` gives none);
2. else, when `f_fsid` is not zero, the text `%08x%08x` of its two words;
3. else no uuid (mountd then sends none, and the kernel names the filesystem by its device).

The text is folded into 16 bytes by `get_uuid` (`resolver.uuid_fold`).  `uuid_by_path` here
makes the same calls, through the same libblkid (ctypes), so the embedded resolver sends the
uuid rpc.mountd would send, and a filehandle made before rpc.mountd attached names the export
as it does after.  It blocks (statfs, and libblkid may read the device): call it on a worker.
libblkid's cache is not thread-safe: one lock guards it.  Without libblkid (not installed),
only steps 2 and 3 are made, as an rpc.mountd built without blkid does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from dataclasses import replace

from pynfsd.fs.linux import statfs

from .resolver import uuid_fold
from .types import ExportOptions

#: magic numbers of the filesystems rpc.mountd never asks libblkid about
NONBLKID = frozenset({
    0x2FC12FC1, 0x9123683E, 0xFF534D42, 0x1373, 0x73757245, 0x564C, 0x6969, 0x9FA0,
    0x62656572, 0x517B, 0x01021994,
})  # fmt: skip
BLKID_DEV_NORMAL = 3  # BLKID_DEV_CREATE | BLKID_DEV_VERIFY
UUID_LEN = 16


class _Blkid:
    """The libblkid calls of rpc.mountd's `get_uuid_blkdev`, with its one process-wide cache."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.libc = ctypes.CDLL(None)
        lib.blkid_devno_to_devname.restype = ctypes.c_void_p
        lib.blkid_devno_to_devname.argtypes = [ctypes.c_ulong]
        lib.blkid_get_dev.restype = ctypes.c_void_p
        lib.blkid_get_dev.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        lib.blkid_tag_iterate_begin.restype = ctypes.c_void_p
        lib.blkid_tag_iterate_begin.argtypes = [ctypes.c_void_p]
        lib.blkid_tag_next.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p),
                                       ctypes.POINTER(ctypes.c_char_p)]
        lib.blkid_tag_iterate_end.argtypes = [ctypes.c_void_p]
        self.libc.free.argtypes = [ctypes.c_void_p]
        self.cache = ctypes.c_void_p()
        self.lock = threading.Lock()
        self.ready = lib.blkid_get_cache(ctypes.byref(self.cache), None) == 0

    def uuid(self, st_dev: int) -> str | None:
        """The `UUID` tag of the device `st_dev` (None for none, or a btrfs device)."""
        with self.lock:
            if not self.ready:
                return None
            devname = self.lib.blkid_devno_to_devname(st_dev)
            if not devname:
                return None
            try:
                dev = self.lib.blkid_get_dev(self.cache, devname, BLKID_DEV_NORMAL)
            finally:
                self.libc.free(devname)
            return self._tags(dev) if dev else None

    def _tags(self, dev: int) -> str | None:
        it = self.lib.blkid_tag_iterate_begin(dev)
        if not it:
            return None
        kind, value = ctypes.c_char_p(), ctypes.c_char_p()
        uuid: bytes | None = None
        try:
            while self.lib.blkid_tag_next(it, ctypes.byref(kind), ctypes.byref(value)) == 0:
                if kind.value == b"UUID":
                    uuid = value.value
                if kind.value == b"TYPE" and value.value == b"btrfs":
                    return None
        finally:
            self.lib.blkid_tag_iterate_end(it)
        return None if uuid is None else uuid.decode("ascii", "replace")


_blkid: list[_Blkid | None] = []  # loaded once: [the library] or [None]
_blkid_lock = threading.Lock()


def _library() -> _Blkid | None:
    """libblkid, loaded at the first call; None when it is not installed."""
    with _blkid_lock:
        if not _blkid:
            name = ctypes.util.find_library("blkid") or "libblkid.so.1"
            try:
                _blkid.append(_Blkid(ctypes.CDLL(name)))
            except (OSError, AttributeError):
                _blkid.append(None)
        return _blkid[0]


def uuid_text(path: str) -> str | None:
    """The text rpc.mountd folds into an export's uuid: libblkid's UUID or the statfs fsid
    (see the module docstring); None when there is none (blocking)."""
    raw = os.fsencode(path)
    try:
        magic, (word0, word1) = statfs(raw)
    except OSError:
        return None
    if magic not in NONBLKID:
        blkid = _library()
        try:
            found = blkid.uuid(os.stat(raw).st_dev) if blkid is not None else None
        except OSError:
            found = None
        if found:
            return found
    if word0 or word1:
        return f"{word0:08x}{word1:08x}"
    return None


def uuid_by_path(path: str) -> bytes | None:
    """rpc.mountd's `uuid_by_path(path, 0, 16, ...)`: the 16-byte uuid of the filesystem at
    `path`, or None (blocking)."""
    text = uuid_text(path)
    return None if text is None else uuid_fold(text, UUID_LEN)


def with_fs_uuid(path: str, options: ExportOptions) -> ExportOptions:
    """`options` with the uuid rpc.mountd would send for `path` when they give no `fsid=`
    (as `fsid=<32 hex digits>`, what a kernel-form answer with that uuid reads back as);
    unchanged when they give one, or when the filesystem has no uuid (blocking)."""
    if options.fsid is not None or options.pseudo_root:
        return options
    uuid = uuid_by_path(path)
    return options if uuid is None else replace(options, fsid=uuid.hex())
