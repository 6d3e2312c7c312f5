"""One filesystem backend per export, made on first use, and the opened files they hold.

Theory of operation: `Backends` makes an export's backend the first time a filehandle or
LOOKUP reaches the export (with the configured factory and a private state directory
``<state-dir>/exports/<fsid>``) and keeps it for the server's life; the Vfs asks it by export,
the state manager's `OpenFiles` hook (`BackendOpenFiles`) by fsid.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from pynfsd.exports.types import ClientExport
from pynfsd.fs.backend import Backend
from pynfsd.nfs4.fh import KIND_EXPORT, decode_fh

log = logging.getLogger("pynfsd.nfs4.server")

BackendFactory = Callable[[ClientExport, str], Backend]


def local_backend(export: ClientExport, state_dir: str) -> Backend:
    from pynfsd.fs.local import LocalBackend

    return LocalBackend(export.path, state_dir)


def keyed_local_backend(key: bytes) -> BackendFactory:
    """Local backends whose handles are signed with ``key`` (a cluster's shared handle key)
    instead of the key in each export's state directory."""

    def make(export: ClientExport, state_dir: str) -> Backend:
        from pynfsd.fs.local import LocalBackend

        return LocalBackend(export.path, state_dir, key=key)

    return make


class Backends:
    """The backends of the exports used so far, by fsid."""

    def __init__(self, state_dir: str, factory: BackendFactory | None = None) -> None:
        self._state_dir = state_dir
        self._factory = factory or local_backend
        self._by_fsid: dict[int, Backend] = {}

    def backend_for(self, export: ClientExport) -> Backend:
        backend = self._by_fsid.get(export.fsid)
        if backend is None:
            state_dir = os.path.join(self._state_dir, "exports", f"{export.fsid:016x}")
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
            backend = self._factory(export, state_dir)
            self._by_fsid[export.fsid] = backend
        return backend

    def get(self, fsid: int) -> Backend | None:
        """The backend of export ``fsid`` if it was made, else None."""
        return self._by_fsid.get(fsid)

    def close(self) -> None:
        for backend in self._by_fsid.values():
            backend.close()


class BackendOpenFiles:
    """The state manager's `OpenFiles`: an opened file is held in its backend, so that its
    open stateids keep working after its last link is removed (RENAME over it, REMOVE)."""

    def __init__(self, backends: Backends) -> None:
        self._backends = backends

    def hold(self, file_key: bytes) -> None:
        self._call(file_key, hold=True)

    def release(self, file_key: bytes) -> None:
        self._call(file_key, hold=False)

    def _call(self, file_key: bytes, *, hold: bool) -> None:
        d = decode_fh(file_key)
        backend = self._backends.get(d.fsid) if d.kind == KIND_EXPORT else None
        if backend is None:
            return
        try:
            (backend.hold if hold else backend.release)(d.ident)
        except OSError as e:  # removed already: nothing to hold
            log.debug("cannot hold an opened file: %s", e)
