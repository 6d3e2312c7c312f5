"""Filesystems mounted inside an export: when a LOOKUP or READDIR crosses into them.

Theory of operation: a backend never crosses a mount point; it reports one (``EXDEV`` from
``lookup``, ``DirEntry.mount`` from ``readdir``, ``Backend.mount_point`` for the details) and
the Vfs asks :meth:`Crossings.enter` what lies beyond, as knfsd's ``nfsd_cross_mnt`` does for
NFSv4 clients:

* a mount point that is itself exported to the client is crossed into that export (its own
  options and fsid; NFSv4 ignores ``hide``/``nohide``, as knfsd does for v4 clients);
* below an export with ``crossmnt``, the mount becomes a *submount*: an export of the mount
  point with the parent's options (sec, squash, ro, crossmnt again, so mounts inside it are
  crossed too) and a stable fsid from :func:`pynfsd.exports.mounts.mount_fsid`; its
  ``mounted_on_fileid`` is the covered directory's fileid (RFC 7530 §5.8.2.33);
* otherwise the mount is not crossed. knfsd then shows the covered directory, which user space
  cannot open; pynfsd answers LOOKUP with NFS4ERR_NOENT and leaves the name out of READDIR
  (never NFS4ERR_XDEV, not a LOOKUP error in RFC 7530 §15.2), and logs it once per mount
  point (:class:`OnceLog`). When an export lies below it, the mount point is instead a
  read-only pseudo directory leading to that export (as knfsd's v4root entries).

A view's submounts are remembered by fsid (at most ``max_mounts``; past that the table starts
afresh and is refilled as handles are used). After a restart a filehandle of a submount names
an fsid nobody has crossed yet: the Vfs then walks every mount point below the view's
``crossmnt`` exports once per version of the mount table, which registers them again.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass

from pynfsd.exports.mounts import DEFAULT_MAX_MOUNTS, mount_fsid
from pynfsd.exports.types import ClientExport
from pynfsd.fs.backend import MountPoint

log = logging.getLogger(__name__)

#: Mount points remembered by :class:`OnceLog` before it starts afresh.
ONCE_LOG_SIZE = 1024


@dataclass(frozen=True, slots=True)
class Submount:
    """A mount crossed under ``crossmnt``: its export, the export it is mounted in, and the
    fileid of the directory it covers."""

    export: ClientExport
    parent: ClientExport
    covered_fileid: int


class Crossings:
    """One client view's exports by server path and the submounts crossed so far."""

    def __init__(
        self, exports: tuple[ClientExport, ...], max_mounts: int = DEFAULT_MAX_MOUNTS
    ) -> None:
        self._by_path = {e.path: e for e in exports}
        self._taken = {e.fsid for e in exports}
        self._max = max_mounts
        self.submounts: dict[int, Submount] = {}
        #: The exports whose mounts are crossed (``crossmnt``), where a restart looks again.
        self.crossmnt = tuple(e for e in exports if e.options.has("crossmnt"))
        #: The mount table version last walked whole for lost submounts, and the number of
        #: times ``submounts`` started afresh (a walk during which it did must not count).
        self.scanned = -1
        self.epoch = 0

    def enter(self, parent: ClientExport, mount: MountPoint) -> ClientExport | None:
        """The export beyond ``mount`` (found in ``parent``), or None: not crossed."""
        exported = self._by_path.get(mount.path)
        if exported is not None:
            return exported
        if not parent.options.has("crossmnt"):
            return None
        fsid = mount_fsid(mount.fs_key)
        if fsid in self._taken:
            return None  # a (63-bit) hash collision with an export: never an ambiguous handle
        sub = self.submounts.get(fsid)
        if sub is None:
            if len(self.submounts) >= self._max:
                self.submounts.clear()  # those dropped are found again from the mount table
                self.epoch += 1
            options = dataclasses.replace(parent.options, fsid=None, pseudo_root=False)
            sub = Submount(ClientExport(mount.path, options, fsid), parent, mount.covered_fileid)
            self.submounts[fsid] = sub
        return sub.export

    def export(self, fsid: int) -> ClientExport | None:
        """The submount export with ``fsid``, if crossed since this view was built."""
        sub = self.submounts.get(fsid)
        return sub.export if sub is not None else None


class OnceLog:
    """Logs each mount point that is not crossed once (a bounded memory of those logged)."""

    def __init__(self, size: int = ONCE_LOG_SIZE) -> None:
        self._seen: set[str] = set()
        self._size = size
        self._lock = threading.Lock()

    def not_crossed(self, mount: MountPoint, parent: ClientExport) -> None:
        with self._lock:
            if mount.path in self._seen:
                return
            if len(self._seen) >= self._size:
                self._seen.clear()
            self._seen.add(mount.path)
        log.warning(
            "%s is a mount point inside export %s without crossmnt and is not exported: "
            "not crossed (LOOKUP gives NFS4ERR_NOENT, READDIR leaves it out, unless it leads "
            "to an export below it)", mount.path, parent.path,
        )  # fmt: skip
