"""What the Vfs deals in, and what it is given by the server.

Theory of operation: an `Obj` is a filehandle resolved for one COMPOUND (an object in an export
with its backend, or a pure pseudo-fs directory), `Listed` one READDIR entry, and `ClientView`
what one client may see (its exports joined into a pseudo-fs, cached per set of exports).
`VfsHost` holds what outlives a COMPOUND and the Vfs only uses: the backend of each export
(`BackendRegistry`), the worker threads for blocking calls (`BlockingRunner`), the attributes of
pure pseudo-fs directories, the mount table and the log of mount points not crossed.  The
server builds one `VfsHost`; the Vfs never knows the server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar

from pynfsd.exports.mounts import DEFAULT_MAX_MOUNTS, MountTable
from pynfsd.exports.pseudofs import PseudoFs, PseudoNode
from pynfsd.exports.types import ClientExport
from pynfsd.fs.backend import Attrs, Backend
from pynfsd.fs.creds import Identity
from pynfsd.nfs4 import errors
from pynfsd.nfs4.crossing import Crossings, OnceLog

T = TypeVar("T")


class BackendRegistry(Protocol):
    """The backend of each export (made on first use)."""

    def backend_for(self, export: ClientExport) -> Backend: ...


class BlockingRunner(Protocol):
    """Worker threads for blocking calls, off the event loop."""

    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def run_as(self, ident: Identity, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a worker whose filesystem calls act as ``ident``."""
        ...


#: nfsd.fh for one client: a filehandle's fsid -> the path of its export (None: none).
FhPath = Callable[[ClientExport], Awaitable[str | None]]

#: The export option (and `serve --manage-gids`) that takes an AUTH_SYS caller's groups from the
#: server's group database (auth.unix.gid) instead of the at most 16 the client sends.
MANAGE_GIDS = "manage-gids"

#: The attributes of a pure pseudo-fs directory (None: the root of an empty pseudo-fs).
PseudoAttrSource = Callable[[PseudoNode | None], Attrs]


@dataclass(frozen=True, slots=True)
class VfsHost:
    """What a Vfs uses that lives longer than one COMPOUND."""

    backends: BackendRegistry
    runner: BlockingRunner
    pseudo_attrs: PseudoAttrSource
    mounts: MountTable
    hidden_mounts: OnceLog


class NotCrossed(errors.NFS4ERR_NOENT):
    """LOOKUP of a mount point that is not crossed (see `pynfsd.nfs4.crossing`)."""


@dataclass(slots=True)
class Obj:
    """A resolved filehandle: a pure pseudo directory (export None) or an object in an export."""

    fh: bytes
    export: ClientExport | None
    backend: Backend | None
    handle: bytes
    node: PseudoNode | None = None  # pseudo node at this object, when known
    # Attributes read during this COMPOUND (Objs live for one COMPOUND): every modification
    # made through the Vfs drops or replaces them, so a later op never sees stale values.
    attrs: Attrs | None = None
    # The kernel's whole access answer (perm bits) for this COMPOUND's identity, asked on a
    # worker thread in this COMPOUND while ``attrs`` was the object here; it holds only as long
    # as ``attrs`` is still that object (a change through the Vfs replaces or drops it).
    granted: tuple[Attrs, int] | None = None

    @property
    def is_pseudo(self) -> bool:
        return self.export is None

    def be(self) -> Backend:
        if self.backend is None:
            raise errors.NFS4ERR_ROFS("pseudo-filesystem directory")
        return self.backend


class Listed(NamedTuple):
    """One READDIR entry: the object and its attributes, or -- when they could not be had --
    ``status`` (an nfsstat4) and ``fileid``, what the directory lists for the name (a named
    tuple: one is made per entry)."""

    name: bytes
    cookie: int
    obj: Obj | None
    attrs: Attrs | None
    status: int = 0
    fileid: int = 0


@dataclass(slots=True)
class ClientView:
    """What one client may see: its exports joined into a pseudo-fs (cached per export set)."""

    exports: tuple[ClientExport, ...]
    pseudofs: PseudoFs
    by_fsid: dict[int, ClientExport]
    node_by_fsid: dict[int, PseudoNode]
    crossings: Crossings
    by_path: dict[str, ClientExport]

    @classmethod
    def build(
        cls, exports: tuple[ClientExport, ...], max_mounts: int = DEFAULT_MAX_MOUNTS
    ) -> ClientView:
        pfs = PseudoFs.build(exports)
        nodes = {n.export.fsid: n for n in pfs if n.export is not None}
        return cls(exports, pfs, {e.fsid: e for e in exports}, nodes,
                   Crossings(exports, max_mounts), {e.path: e for e in exports})
