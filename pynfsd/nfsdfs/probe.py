"""exportfs's test export (`-test-client-`), answered on the channels as knfsd answers it.

Theory of operation.  `exportfs -r`/`-a` checks each export before it writes it
(nfs-utils `validate_export`): `can_test` writes `nfsd 0.0.0.0 2147483647 -test-client-` to
`auth.unix.ip/channel` (a failed write: no test at all); then `test_export` writes
`-test-client- PATH 3 FLAGS 65534 65534 0` to `nfsd.export/channel`, with NFSEXP_FSID in FLAGS
when the export has `fsid=` or a uuid or its filesystem a statfs fsid.  A failed write is an
error line (exit status 1): "PATH does not support NFS export", or, when only the write
without NFSEXP_FSID failed and the one with it succeeds, "PATH requires fsid= for NFS export".

knfsd (fs/nfsd/export.c) takes the first line as any `ip_map` reply: the auth domain
`-test-client-` now exists.  It answers the second one in `svc_export_parse`: an unknown
domain ENOENT; a path `kern_path` cannot find (the last component not followed) its errno; a
malformed line EINVAL; no flags: a negative entry, accepted; else `check_export`: not a
directory, regular file or symlink ENOTDIR; a filesystem type without FS_REQUIRES_DEV and
neither NFSEXP_FSID nor a uuid EINVAL; a filesystem that cannot decode file handles EINVAL;
then, the entry being already expired (expiry 3), it is dropped: success.

`Probes.write` gives the same answers: None for every line that is not a probe (it goes to
the channel), else the errno (0: accepted).  Nothing is stored: no client has address
0.0.0.0 nor domain `-test-client-`.  The path checks block and run on a worker (`check_path`):
`lstat`; `name_to_handle_at` (pynfsd exports a filesystem through its file handles, as knfsd
does: one that gives none is refused, as knfsd refuses one without export operations); the
mount's type (`/proc/self/mountinfo`) against the `nodev` types of `/proc/filesystems`.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Awaitable

from pynfsd.blocking import Runner, default_runner
from pynfsd.cache import lines as L
from pynfsd.cache.qword import LineError
from pynfsd.fs.linux import fs_type as mount_type
from pynfsd.fs.linux import name_to_handle_at

log = logging.getLogger(__name__)

TEST_CLIENT = "-test-client-"
AT_FDCWD = -100
EXPORTABLE = (stat.S_ISDIR, stat.S_ISREG, stat.S_ISLNK)


def nodev_types(text: str) -> frozenset[str]:
    """The filesystem types `/proc/filesystems` marks `nodev` (no FS_REQUIRES_DEV)."""
    return frozenset(line.split()[1] for line in text.splitlines()
                     if len(line.split()) == 2 and line.split()[0] == "nodev")


def needs_fsid(fstype: str | None, nodev: frozenset[str]) -> bool:
    """Does knfsd need `fsid=` or a uuid to name this filesystem type (it has no device)?
    A subtype (`fuse.sshfs`) is its type's; an unknown type is taken as having a device."""
    return fstype is not None and fstype.partition(".")[0] in nodev


def check_path(path: str, with_fsid: bool) -> int:
    """`check_export` of knfsd for an export of `path` (blocking): 0 or the errno."""
    raw = os.fsencode(path)
    try:
        st = os.lstat(raw)
    except OSError as e:
        return e.errno or errno.ENOENT
    if not any(kind(st.st_mode) for kind in EXPORTABLE):
        return errno.ENOTDIR
    if not with_fsid:
        try:
            with open("/proc/filesystems", encoding="ascii", errors="replace") as f:
                nodev = nodev_types(f.read())
        except OSError:
            nodev = frozenset()
        if needs_fsid(mount_type(st.st_dev), nodev):
            return errno.EINVAL
    try:
        name_to_handle_at(AT_FDCWD, raw, 0)
    except OSError as e:
        return errno.EINVAL if e.errno in (errno.EOPNOTSUPP, errno.ENOTSUP) else e.errno or errno.EINVAL
    return 0


class Probes:
    """exportfs's `-test-client-` lines on the channels (see the module docstring)."""

    def __init__(self, runner: Runner | None = None) -> None:
        self.runner = runner
        self.known = False  # the auth domain `-test-client-` exists

    def write(self, cache: str, data: bytes) -> int | Awaitable[int] | None:
        """The answer to a probe line, None when `data` is not one."""
        try:
            if cache == "auth.unix.ip":
                return self._domain(L.decode_ip_reply(data))
            if cache == "nfsd.export":
                return self._export(L.decode_export_reply(data))
        except LineError:
            return None  # the channel refuses it as malformed (EINVAL)
        return None

    def _domain(self, reply: L.IpReply) -> int | None:
        if reply.value != TEST_CLIENT:
            return None
        self.known = True
        return 0

    def _export(self, reply: L.ExportReply) -> int | Awaitable[int] | None:
        if reply.key.domain != TEST_CLIENT:
            return None
        if not self.known:
            return errno.ENOENT  # auth_domain_find: no such domain yet
        info = reply.value
        if info is None:
            return 0  # a negative entry: no check
        with_fsid = bool(info.flags & L.NFSEXP_FSID) or info.uuid is not None
        return self._check(reply.key.path, with_fsid)

    async def _check(self, path: str, with_fsid: bool) -> int:
        code = await (self.runner or default_runner()).run(check_path, path, with_fsid)
        log.info("exportfs test of %s (%s fsid): %s", path, "with" if with_fsid else "without",
                 os.strerror(code) if code else "exportable")
        return code
