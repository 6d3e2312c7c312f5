"""Backend over a real directory tree (Linux, run as root).

Theory of operation
-------------------
Handles are the kernel's own persistent file handles under an HMAC bound to the export root;
every operation starts from a descriptor opened from a handle, never from a path, and never
follows a symlink or crosses a mount point. The concepts live in one module each, every one
a layer of ``LocalBackend`` over the descriptors of ``objects``:

- ``objects``: handles to descriptors, confinement to the export, the descriptor cache, the
  removed-but-open objects NFSv4 opens hold, attributes and the change attribute;
- ``lookup``: names, parents, symlink targets, ACCESS, statfs, and mount points;
- ``readdir``: listing a directory, its cookies and the entries a caller may not reach;
- ``data``: READ, WRITE, COMMIT and SETATTR, with the access checks the shared I/O
  descriptor needs and the READ grants the event-loop read path uses;
- ``namespace``: creation, remove, rename and hard links;
- ``acls``: POSIX ACLs through the kernel's xattrs.

Identity: every call runs with the caller's filesystem identity (``creds``: fsuid, fsgid and
groups of the worker thread, without the capabilities a user lacks), so the kernel makes every
permission decision -- ACLs, set-id clearing on write and chown, setgid directory inheritance,
sticky directories, protected hard links, owners of new objects -- exactly as for a local
user. Only what a user cannot do runs as root, in short ``creds.as_root()`` sections: turning
handles into descriptors (``open_by_handle_at`` needs CAP_DAC_READ_SEARCH), checking that a
directory lies inside the export, and opening the cached I/O descriptor (see ``data``).
"""

from __future__ import annotations

from pynfsd.fs.local.acls import LocalAcls
from pynfsd.fs.local.data import LocalData
from pynfsd.fs.local.namespace import LocalNamespace
from pynfsd.fs.local.readdir import LocalReaddir

__all__ = ["LocalBackend"]


class LocalBackend(LocalData, LocalNamespace, LocalReaddir, LocalAcls):
    """The directory ``root_path`` as a backend; persistent state lives in ``state_dir``."""

    enforces_permissions = True
